"""Memory budgets: how much a run may use, and the tile size that keeps a pass inside it.

A budget covers the whole process (CPU) or everything torch holds on the device (CUDA,
MPS). What is already in use (torch itself, the weights) and the buffers that grow with
the image whatever the tiling (the image, its relu4_1 features, the output) come off
first; the rest is what one network pass may take. The working memory per pixel of a
pass was fitted to measured peaks (BENCHMARKS.md, "Speed and scale scenarios", whose 4K
rows check the model: 1.28 GB under a 1.5 GB budget); the estimates err on the large side.

On a CPU, what is free is the smaller of the machine's MemAvailable and the room left
under the cgroup limit of the container or batch job the process runs in (cgroup v2
`memory.max`, v1 `memory.limit_in_bytes`): a container limited to 2 GB on a 64 GB host
must tile, not be killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import resource
import sys
from functools import cache
from pathlib import Path

import torch

from .errors import UsageError

# Working memory of one encoder or decoder pass, bytes per input pixel, per byte of the
# compute dtype: the widest stage (64 channels at full resolution) holds about three
# 64-channel maps at once, plus allocator slack.
PASS_BYTES_PER_PIXEL_PER_ELEMENT_BYTE = 320
# Buffers still to come once a pass starts, bytes per pixel: the float32 image out (12)
# and the 8-bit copies made to save it (3 x 3), with some slack...
IMAGE_BYTES_PER_PIXEL = 24
# ...plus the relu4_1 features, 512 channels per 64 pixels, in the compute dtype.
FEATURE_ELEMENTS_PER_PIXEL = 8
# Tiles smaller than this spend most of their work on halos; never go below it.
MIN_TILE = 64
# Share of the memory available at start-up that the default budget takes.
DEFAULT_SHARE = 0.5

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """'1.5G', '800M', '2GiB', '1073741824' -> bytes (decimal units; 'Ki', 'Mi', 'Gi' binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not match:
        raise UsageError(f"memory size {text!r} is not a size like 1.5G, 800M or 2GiB")
    value = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if value < 1:
        raise UsageError(f"memory size {text!r} must be positive")
    return int(value)


def format_size(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# Where cgroups are read from (tests point these at fake files).
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Per cgroup version: the limit, the usage, and the page cache counted in the usage (memory.stat).
_CGROUP_FILES = {"v2": ("memory.max", "memory.current", "inactive_file"),
                 "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number.
_UNLIMITED = 2**60


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2): no limit


def _inactive_file(stat: Path, key: str) -> int:
    # Page cache the kernel drops before it kills anything: not really in use.
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_dirs() -> list[tuple[Path, str]]:
    """(directory, version) of this process's memory cgroups and their ancestors, innermost first.
    Hybrid hosts list a v1 memory controller and a v2 hierarchy: both count."""
    try:
        lines = PROC_SELF_CGROUP.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and controllers == "":
            base, version = CGROUP_ROOT, "v2"
        elif "memory" in controllers.split(","):
            base, version = CGROUP_ROOT / "memory", "v1"
        else:
            continue
        leaf = base / path.strip("/")
        if not leaf.is_dir():  # a container sees its own cgroup as the root of the mount
            leaf = base
        found += [(d, version) for d in (leaf, *leaf.parents) if d == base or base in d.parents]
    return found


def cgroup_room() -> tuple[int, int] | None:
    """(limit, bytes still free under it) of the tightest cgroup memory limit on this process, if any."""
    tightest: tuple[int, int] | None = None
    for folder, version in _cgroup_dirs():
        limit_file, usage_file, cache_key = _CGROUP_FILES[version]
        limit, usage = _read_number(folder / limit_file), _read_number(folder / usage_file)
        if limit is None or limit >= _UNLIMITED or usage is None:
            continue
        room = max(limit - (usage - _inactive_file(folder / "memory.stat", cache_key)), 0)
        if tightest is None or room < tightest[1]:
            tightest = (limit, room)
    return tightest


def _physical() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def process_rss() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


@cache
def _libc_malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


def trim(device: torch.device) -> None:
    """Hand memory freed by finished passes back to the system.

    glibc keeps freed blocks under its mmap threshold (up to 32 MB) for reuse, and tiles of
    varying sizes fragment them: without this a tiled 4K run holds ~0.3 GB it no longer uses.
    """
    if device.type == "cpu":
        trim_function = _libc_malloc_trim()
        if trim_function is not None:
            trim_function(0)


def in_use(device: torch.device) -> int:
    """Memory this process holds where `device` computes."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    if device.type == "mps":
        return torch.mps.current_allocated_memory()
    return process_rss()


def available(device: torch.device) -> int:
    """Memory still free for this process where `device` computes (a cautious guess if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "mps":
        return max(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory(), 0)
    known = _meminfo_available()
    if known is None:  # macOS and others: half the physical memory, or 4 GB if even that is unknown
        physical = _physical()
        known = physical // 2 if physical else 4 * 10**9
    limited = cgroup_room()
    return known if limited is None else min(known, limited[1])


def default_budget(device: torch.device) -> int:
    """What `--max-memory auto` means: what is in use plus half of what is free."""
    return in_use(device) + int(DEFAULT_SHARE * available(device))


def pass_bytes(pixels: int, element_size: int) -> int:
    """Estimated working memory of one encoder or decoder pass over `pixels` input pixels."""
    return pixels * element_size * PASS_BYTES_PER_PIXEL_PER_ELEMENT_BYTE


def image_bytes(pixels: int, element_size: int) -> int:
    """Estimated memory of the buffers that grow with the image whatever the tiling; `element_size`
    0 leaves out the features (already made when decoding)."""
    return pixels * (IMAGE_BYTES_PER_PIXEL + FEATURE_ELEMENTS_PER_PIXEL * element_size)


def tile_for(height: int, width: int, batch: int, element_size: int, room: int, halo: int) -> int | None:
    """None when a pass over the whole batch of height x width px fits in `room` bytes, else
    the tile side (px) to use.

    The tile is the largest multiple of 64 whose window (tile plus `halo` px each side)
    fits; at least MIN_TILE even when nothing fits, since tiling is then the best that can be done.
    """
    if pass_bytes(batch * height * width, element_size) <= room:
        return None
    side = int((max(room, 0) / (element_size * PASS_BYTES_PER_PIXEL_PER_ELEMENT_BYTE)) ** 0.5) - 2 * halo
    return max(side // MIN_TILE * MIN_TILE, MIN_TILE)


def is_exhausted(exc: BaseException) -> bool:
    """Whether an error means memory ran out: torch's OutOfMemoryError on a GPU, and the plain
    RuntimeError a CPU allocation failure raises."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def release(device: torch.device) -> None:
    """Return the caching allocator's free blocks to the device after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    else:
        trim(device)
