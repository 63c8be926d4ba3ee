"""Batches: every content x style pair, each image decoded and encoded once, outputs atomic.

`plan` turns inputs and an output location into jobs (refusing anything that would
clobber an input or write two results to one file); `run` carries them out and reports
each result through a callback, carrying on past inputs that fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from . import color, images
from .errors import ImageError, OutputError, UsageError
from .model import FeatureStats
from .stylizer import EncodedContent, Stylizer, check_alpha

Status = Literal["written", "skipped", "failed"]
OUTPUT_PATTERN = "{content}_stylized_{style}.{ext}"


@dataclass(frozen=True)
class Settings:
    """What stylize's options turn into; checked on construction."""

    alpha: float = 1.0
    content_size: int = 512
    style_size: int = 512
    crop: bool = False
    color_mode: color.ColorMode = "style"
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS
    quality: int = images.DEFAULT_QUALITY
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        for name in ("content_size", "style_size"):
            size = getattr(self, name)
            if size != 0 and not size >= images.MIN_SIDE:
                raise UsageError(f"{name.replace('_', '-')} must be 0 (original size) or at least "
                                 f"{images.MIN_SIDE}, got {size}")
        if self.color_mode not in color.COLOR_MODES:
            raise UsageError(f"unknown colour mode {self.color_mode!r}")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"quality must be between 1 and 100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels <= 0:
            raise UsageError(f"max-pixels must be positive, got {self.max_pixels}")


@dataclass(frozen=True)
class Job:
    content: Path
    style: Path
    output: Path


@dataclass(frozen=True)
class Result:
    job: Job
    status: Status
    seconds: float
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def output(self) -> Path:
        return self.job.output

    def as_dict(self) -> dict[str, object]:
        return {
            "content": str(self.job.content),
            "style": str(self.job.style),
            "output": str(self.job.output),
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


def check_extension(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if "." + ext not in images.FORMATS:
        known = ", ".join(sorted({s.lstrip(".") for s in images.FORMATS}))
        raise UsageError(f"unknown output extension {ext!r} (use one of {known})")
    return ext


def plan(contents: list[Path], styles: list[Path], out: Path, ext: str = "png") -> list[Job]:
    """Jobs for every content x style pair, in content-major order.

    One pair writes to `out` itself (unless it is an existing directory); several pairs
    write `{content}_stylized_{style}.{ext}` inside the directory `out`.
    """
    ext = check_extension(ext)
    if len(contents) == 1 and len(styles) == 1 and not out.is_dir():
        try:
            images.format_for(out)
        except OutputError as exc:
            raise UsageError(str(exc)) from None
        jobs = [Job(contents[0], styles[0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: {len(contents) * len(styles)} outputs need a directory, "
                             "and this is a file")
        if not out.exists() and out.suffix.lower() in images.FORMATS:
            raise UsageError(f"{out}: {len(contents) * len(styles)} outputs need a directory, "
                             "not a file name")
        jobs = [
            Job(c, s, out / OUTPUT_PATTERN.format(content=c.stem, style=s.stem, ext=ext))
            for c in contents
            for s in styles
        ]
    _refuse_collisions(jobs)
    return jobs


def _refuse_collisions(jobs: list[Job]) -> None:
    inputs = {p.resolve(): p for job in jobs for p in (job.content, job.style)}
    targets: dict[Path, Job] = {}
    for job in jobs:
        target = job.output.resolve()
        if target in inputs:
            raise UsageError(f"{job.output}: output is the input file {inputs[target]}; refusing "
                             "to overwrite an input")
        if target in targets:
            other = targets[target]
            raise UsageError(f"{job.output}: written by both {other.content} x {other.style} and "
                             f"{job.content} x {job.style}; rename an input")
        targets[target] = job


def make_parent_dirs(outputs: list[Path]) -> None:
    """Create the outputs' directories up front: UsageError (nothing done yet) if that fails."""
    for parent in sorted({output.parent for output in outputs}):
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{parent}: cannot create output directory ({exc.strerror or exc})") from None


class _StyleCache:
    """Each style decoded once and, unless coral recolours it per content, encoded once."""

    def __init__(self, stylizer: Stylizer, settings: Settings) -> None:
        self._stylizer = stylizer
        self._settings = settings
        self._entries: dict[Path, torch.Tensor | FeatureStats | ImageError] = {}

    def _entry(self, path: Path) -> torch.Tensor | FeatureStats:
        if path not in self._entries:
            s = self._settings
            try:
                image = images.load_tensor(path, s.style_size, s.crop, s.max_pixels)
                recolours_per_content = s.color_mode == "coral"
                self._entries[path] = image if recolours_per_content else self._stylizer.style_stats(image)
            except ImageError as exc:
                self._entries[path] = exc
        entry = self._entries[path]
        if isinstance(entry, ImageError):
            raise entry
        return entry

    def stats_for(self, path: Path, content: EncodedContent) -> FeatureStats:
        entry = self._entry(path)
        if isinstance(entry, FeatureStats):
            return entry
        recoloured = color.prepare_style(entry.to(content.image.device), content.image, "coral")
        return self._stylizer.style_stats(recoloured)


class _Recorder:
    """Collects results and passes each on; its time includes the shared work done for it."""

    def __init__(self, on_result: Callable[[Result], None] | None) -> None:
        self.results: list[Result] = []
        self._on_result = on_result
        self._mark = time.perf_counter()

    def __call__(self, job: Job, status: Status, exc: BaseException | None = None) -> None:
        now = time.perf_counter()
        result = Result(job, status, now - self._mark, None if exc is None else str(exc), exc)
        self._mark = now
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)


def run(
    stylizer: Stylizer,
    jobs: list[Job],
    settings: Settings,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Carry out the jobs; failures are reported per job and the rest still run."""
    make_parent_dirs([job.output for job in jobs])
    styles = _StyleCache(stylizer, settings)
    record = _Recorder(on_result)
    for content_path, group in _group_by_content(jobs).items():
        pending = []
        for job in group:
            if job.output.exists() and not settings.overwrite:
                record(job, "skipped")
            else:
                pending.append(job)
        if pending:
            _run_content(stylizer, content_path, pending, styles, settings, record)
    return record.results


def _run_content(
    stylizer: Stylizer,
    path: Path,
    jobs: list[Job],
    styles: _StyleCache,
    settings: Settings,
    record: _Recorder,
) -> None:
    """One content, encoded once, in each of its styles."""
    try:
        image = images.load_tensor(path, settings.content_size, settings.crop, settings.max_pixels)
        encoded = stylizer.encode_content(image)
    except ImageError as exc:
        for job in jobs:
            record(job, "failed", exc)
        return
    for job in jobs:
        try:
            _render_one(stylizer, encoded, styles.stats_for(job.style, encoded), job, settings)
        except (ImageError, OutputError) as exc:
            record(job, "failed", exc)
        except torch.OutOfMemoryError:
            record(job, "failed", ImageError(job.content, "out of memory (try a smaller --content-size)"))
        else:
            record(job, "written")


def _group_by_content(jobs: list[Job]) -> dict[Path, list[Job]]:
    groups: dict[Path, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.content, []).append(job)
    return groups


def _render_one(
    stylizer: Stylizer, content: EncodedContent, style: FeatureStats, job: Job, settings: Settings
) -> None:
    with torch.inference_mode():
        out = stylizer.render(content, style, settings.alpha)
        out = color.finish(out, content.image, settings.color_mode)
    images.save_image(images.to_image(out), job.output, settings.quality)


def exit_code(results: list[Result]) -> int:
    """0 when nothing failed, 1 when some output could not be made."""
    return 1 if any(r.status == "failed" for r in results) else 0


def summary(results: list[Result]) -> str:
    """One line: how many outputs were written, skipped and failed, and how long it took."""
    counts = {status: sum(r.status == status for r in results) for status in ("written", "skipped", "failed")}
    total = sum(r.seconds for r in results)
    line = f"{counts['written']} written, {counts['skipped']} skipped, {counts['failed']} failed in {total:.1f} s"
    if counts["written"]:
        line += f" ({total / counts['written']:.2f} s per output)"
    return line
