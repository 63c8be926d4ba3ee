"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless told otherwise."""

from __future__ import annotations

from typing import Literal

import torch

from .errors import DeviceError, UsageError


def explain_auto_device() -> tuple[torch.device, str]:
    """The device `auto` picks, and why."""
    if torch.cuda.is_available():
        return torch.device("cuda"), f"CUDA is available ({torch.cuda.get_device_name(0)})"
    if torch.backends.mps.is_available():
        return torch.device("mps"), "Apple MPS is available and CUDA is not"
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
        if not torch.cuda.is_available():
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


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the networks run in for `precision` on `device`; UsageError where it cannot."""
    if precision not in DTYPES:
        raise UsageError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is for GPUs; on a CPU use --precision bf16 (where supported) or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        raise UsageError("this CPU has no fast bf16 support (AVX-512 BF16 or AMX); use --precision fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{torch.cuda.get_device_name(device)} does not support bf16; use --precision fp16")
    return DTYPES[precision]
