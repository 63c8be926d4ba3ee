"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless told otherwise.

A machine can show an NVIDIA GPU that torch cannot use: the torch wheels on PyPI are
built for a recent CUDA and need a recent driver, and a CPU-only build sees no GPU at
all. `auto` then runs on the CPU, 30-100x slower; `unusable_gpu` says why and what to
install, for the command line to say once.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path
from typing import Literal

import torch

from .errors import DeviceError, UsageError

# Signs of an NVIDIA GPU and its driver, whether or not torch can use them (tests point these elsewhere).
NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")
NVIDIA_DEVICE = Path("/dev/nvidiactl")
TORCH_INSTALL_HELP = "https://pytorch.org/get-started/locally/"

_cuda_failure: list[str] = []  # torch's reason, kept: it may warn only the first time it is asked


def cuda_available() -> bool:
    """torch.cuda.is_available(), keeping the reason torch gives (as a warning) when it is not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    for warning in caught:
        text = str(warning.message).strip()
        if "CUDA" in text or "driver" in text.lower():
            _cuda_failure[:] = [re.sub(r"^CUDA initialization:\s*", "", text).splitlines()[0]]
    return available


def nvidia_gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU: driver files, or nvidia-smi on the PATH."""
    return NVIDIA_DRIVER_VERSION.exists() or NVIDIA_DEVICE.exists() or shutil.which("nvidia-smi") is not None


def _driver_version() -> str | None:
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)", NVIDIA_DRIVER_VERSION.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def unusable_gpu() -> str | None:
    """Why the NVIDIA GPU this machine shows is not used, and the fix; None if there is none or it works."""
    if not nvidia_gpu_visible() or cuda_available():
        return None
    driver = _driver_version()
    shown = f"an NVIDIA GPU is visible{f' (driver {driver})' if driver else ''}"
    if torch.version.cuda is None:
        return (f"{shown} but this torch {torch.__version__} is a CPU-only build: install a CUDA build of torch "
                f"({TORCH_INSTALL_HELP})")
    reason = _cuda_failure[0] if _cuda_failure else "CUDA could not be initialised"
    return (f"{shown} but torch {torch.__version__}, built for CUDA {torch.version.cuda}, cannot use it ({reason}): "
            f"update the NVIDIA driver, or install a torch built for the CUDA version this driver supports "
            f"({TORCH_INSTALL_HELP})")


def explain_auto_device() -> tuple[torch.device, str]:
    """The device `auto` picks, and why."""
    if cuda_available():
        return torch.device("cuda"), f"CUDA is available ({torch.cuda.get_device_name(0)})"
    if torch.backends.mps.is_available():
        return torch.device("mps"), "Apple MPS is available and CUDA is not"
    if nvidia_gpu_visible():
        return torch.device("cpu"), "an NVIDIA GPU is visible but torch cannot use it (see the GPU line)"
    return torch.device("cpu"), "neither CUDA nor Apple MPS is available"


def auto_device() -> torch.device:
    return explain_auto_device()[0]


def pick_device(name: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`; anything unavailable is a DeviceError."""
    if name == "auto":
        return auto_device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda":
        if not cuda_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r} requested but only {count} CUDA device(s) exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {name!r} requested but Apple MPS is not available here")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    return device


Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX-512 BF16 / AMX class CPUs)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def compute_dtype(precision: str, device: torch.device, *, training: bool = False) -> torch.dtype:
    """The dtype the networks run in for `precision` on `device`, for inference and training alike;
    UsageError where it cannot. fp16 is refused on a CPU for both: CPUs have no fast fp16, and bf16 or
    fp32 do the same work better there. `training`: bf16 is also taken on a CPU without native bf16,
    where autocast emulates it (slowly), as `adain train` always has."""
    if precision not in DTYPES:
        raise UsageError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is for GPUs; on a CPU use --precision bf16 (where supported) or fp32")
    if precision == "bf16" and device.type == "cpu" and not training and not cpu_has_fast_bf16():
        raise UsageError("this CPU has no fast bf16 support (AVX-512 BF16 or AMX); use --precision fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{torch.cuda.get_device_name(device)} does not support bf16; use --precision fp16")
    return DTYPES[precision]
