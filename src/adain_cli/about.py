"""What `adain info` and the server's /v1/info say about this installation: versions, the device
that would be used and why, the memory budget, and the state of the weights. Gathered here, once."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import __version__, device, install, memory, weights


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


def facts() -> dict[str, Any]:
    """Everything `adain info` reports, JSON-ready. Verifies the installed weights (reads them)."""
    target, why = device.explain_auto_device()
    limit = memory.cgroup_room()
    return {
        **versions(full=True),
        "device": str(target),
        "device_reason": why,
        "gpu_problem": device.unusable_gpu(),
        "cpu_bf16": device.cpu_has_fast_bf16(),
        "memory_budget": memory.default_budget(target),
        "memory_limit": limit[0] if limit else None,
        "weights_dir": str(weights.weights_dir()),
        "weights_dir_from": f"${weights.HOME_ENV}" if weights.HOME_ENV in os.environ
                            else "platform user data directory",
        "mirror": os.environ.get(install.URL_ENV),
        "offline": install.offline_requested(),
        "weights": {c.name: {"ok": c.ok, "detail": c.detail, "sha256": c.sha256} for c in install.verify_installed()},
    }
