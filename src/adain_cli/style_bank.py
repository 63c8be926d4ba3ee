"""Style statistics kept on disk, so that a pool of paintings is encoded once for every run.

A style contributes only the mean and std of its relu4_1 features (stylizer.py, stage 2):
4 KB however large the painting. The bank stores them one file per style, named by a key
that changes whenever the statistics could: the style file (its absolute path, size and
modification time), the encoder's weights, the style size and crop, the compute dtype and
device type, and the bank's format. A changed painting simply gets a new entry.

Many processes may share a bank (torchrun ranks, Slurm tasks, later runs): entries are
written atomically under unique temporary names, so two processes that encode one style
at once both write the same complete file and a reader never sees a part. A damaged entry
reads as missing and is written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import platformdirs
import torch

from . import jobs
from .atomic import atomic_write
from .errors import UsageError
from .model import FEATURE_CHANNELS, FeatureStats
from .stylizer import Stylizer
from .weights import encoder_identity

# Part of every key: bump it when style preprocessing or the entry format changes.
FORMAT = 1


def default_location() -> Path:
    """The user cache directory's style bank (~/.cache/adain-cli/style-bank on Linux)."""
    return Path(platformdirs.user_cache_dir("adain-cli")) / "style-bank"


class StyleBank:
    """Statistics by style file, for one encoder and one way of preparing styles."""

    def __init__(self, root: Path, stylizer: Stylizer, settings: jobs.Settings) -> None:
        """UsageError if the bank's folder cannot be created."""
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{root}: cannot create the style bank ({exc.strerror or exc})") from None
        self.root = root
        self._identity = json.dumps({
            "format": FORMAT, "encoder": encoder_identity(stylizer.encoder), "style_size": settings.style_size,
            "crop": settings.crop, "dtype": str(stylizer.execution.dtype),
            "device": stylizer.device.type,
        }, sort_keys=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.stored = 0
        self.problem: str | None = None  # the first write that failed: the run goes on without storing

    def _entry(self, style: Path) -> Path | None:
        try:
            info = style.stat()
        except OSError:
            return None  # the style's own load will say what is wrong with it
        key = hashlib.sha256(
            f"{self._identity}\0{os.path.abspath(style)}\0{info.st_size}\0{info.st_mtime_ns}".encode(
                "utf-8", "surrogateescape")).hexdigest()
        return self.root / key[:2] / f"{key}.pt"

    def get(self, style: Path) -> FeatureStats | None:
        """The style's statistics if the bank has a sound entry for this exact file, else None."""
        entry = self._entry(style)
        if entry is None:
            return None
        try:
            saved = torch.load(entry, map_location="cpu", weights_only=True)
            mean, std = saved["mean"], saved["std"]
        except Exception:  # missing, or damaged on disk: encode the style again
            return None
        if not all(isinstance(t, torch.Tensor) and t.shape == (1, FEATURE_CHANNELS, 1, 1) for t in (mean, std)):
            return None
        with self._lock:
            self.hits += 1
        return FeatureStats(mean, std)

    def put(self, style: Path, stats: FeatureStats) -> None:
        """Keep the statistics for later runs; a failure to write is remembered, not raised."""
        entry = self._entry(style)
        if entry is None:
            return
        try:
            entry.parent.mkdir(exist_ok=True)
            with atomic_write(entry) as handle:
                torch.save({"mean": stats.mean.detach().float().cpu(), "std": stats.std.detach().float().cpu()},
                           handle)
        except OSError as exc:
            with self._lock:
                self.problem = self.problem or f"{self.root}: cannot store style statistics ({exc.strerror or exc})"
            return
        with self._lock:
            self.stored += 1
