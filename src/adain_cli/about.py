"""What `adain info` and the server's /v1/info say about this installation: versions, the device
that would be used and why, the CPU and its bf16 instructions, the memory budget, and the state of
the weights. Gathered here, once."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

from . import __version__, device, install, memory, weights

# The kernel's description of the CPU (tests point this elsewhere); absent off Linux.
CPUINFO = Path("/proc/cpuinfo")
# The instruction sets oneDNN runs bf16 convolutions on, by their /proc/cpuinfo flag: machines
# differ (bf16 refused on one, 2.2x over fp32 on another), so a benchmark figure must say which.
BF16_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"))


def versions(*, full: bool = False) -> dict[str, str]:
    """adain-cli's, Python's and torch's versions; `full` adds the platform and torchvision's."""
    import torch

    found = {"adain_cli": __version__, "python": platform.python_version()}
    if full:
        found["platform"] = platform.platform()
    found["torch"] = torch.__version__
    if full:
        import torchvision  # imported here: it is slow to import, and only `adain info` says it

        found["torchvision"] = torchvision.__version__
    return found


def _cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field ("model name", "flags"), or None."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.M)
    return found.group(1).strip() if found else None


def cpu_model() -> str:
    """The CPU's name as the kernel gives it, else as Python's platform module does."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_features() -> list[str]:
    """The bf16 instruction sets this CPU announces ("AMX", "AVX-512 BF16"); [] where it has
    none, or where there is no /proc/cpuinfo to say (macOS, Windows)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return [label for flag, label in BF16_FLAGS if flag in flags]


def facts() -> dict[str, Any]:
    """Everything `adain info` reports, JSON-ready. Verifies the installed weights (reads them)."""
    target, why = device.explain_auto_device()
    limit = memory.cgroup_room()
    return {
        **versions(full=True),
        "device": str(target),
        "device_reason": why,
        "gpu_problem": device.unusable_gpu(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_bf16": device.cpu_has_fast_bf16(),
        "cpu_bf16_features": cpu_bf16_features(),
        "memory_budget": memory.default_budget(target),
        "memory_limit": limit[0] if limit else None,
        "weights_dir": str(weights.weights_dir()),
        "weights_dir_from": f"${weights.HOME_ENV}" if weights.HOME_ENV in os.environ
                            else "platform user data directory",
        "mirror": os.environ.get(install.URL_ENV),
        "offline": install.offline_requested(),
        "weights": {c.name: {"ok": c.ok, "detail": c.detail, "sha256": c.sha256} for c in install.verify_installed()},
    }
