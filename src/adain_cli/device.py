"""Choosing the compute device: CUDA, then Apple MPS, then CPU, unless told otherwise."""

from __future__ import annotations

import torch

from .errors import DeviceError


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
