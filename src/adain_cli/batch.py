"""Batches: every content x style pair, each image decoded and encoded once, outputs atomic.

`plan` turns inputs and an output location into jobs (refusing anything that would
clobber an input or write two results to one file); `run` carries them out and reports
each result through a callback, carrying on past inputs that fail.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
# Pairs per decoder call on CUDA by default: enough to fill a large GPU at 512 px.
CUDA_BATCH_SIZE = 8


def default_batch_size(device: torch.device) -> int:
    """Batches pay off where one image leaves the device idle (CUDA); a CPU is busy with one."""
    return CUDA_BATCH_SIZE if device.type == "cuda" else 1


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
    batch_size: int = 1

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if self.batch_size < 1:
            raise UsageError(f"batch-size must be at least 1, got {self.batch_size}")
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
        raise UsageError(f"unknown output extension {ext!r} (use one of {images.KNOWN_EXTENSIONS})")
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
    """Each style decoded once (a few ahead, on a worker thread, in the order the jobs need
    them) and, unless coral recolours it per content, encoded once."""

    # Styles decoded ahead at most: a folder of thousands must not sit in memory as pixels.
    AHEAD = 2

    def __init__(self, stylizer: Stylizer, settings: Settings, pool: ThreadPoolExecutor, order: list[Path]) -> None:
        self._stylizer = stylizer
        self._settings = settings
        self._pool = pool
        self._upcoming = deque(dict.fromkeys(order))
        self._loads: dict[Path, Future[torch.Tensor]] = {}
        self._entries: dict[Path, torch.Tensor | FeatureStats | ImageError] = {}
        self._top_up()

    def _load(self, path: Path) -> None:
        if path not in self._loads and path not in self._entries:
            s = self._settings
            self._loads[path] = self._pool.submit(images.load_tensor, path, s.style_size, s.crop, s.max_pixels)

    def _top_up(self) -> None:
        while self._upcoming and len(self._loads) < self.AHEAD:
            self._load(self._upcoming.popleft())

    def _entry(self, path: Path) -> torch.Tensor | FeatureStats:
        if path not in self._entries:
            self._load(path)
            future = self._loads.pop(path)
            self._top_up()
            try:
                image = future.result()
                recolours_per_content = self._settings.color_mode == "coral"
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


class _Writer:
    """Saves outputs on a worker thread while the next ones compute; results reach the
    recorder in job order, failures included."""

    # Outputs waiting to be saved at most: bounds the memory held by finished images.
    MAX_PENDING = 4

    def __init__(self, pool: ThreadPoolExecutor, settings: Settings, record: _Recorder) -> None:
        self._pool = pool
        self._settings = settings
        self._record = record
        self._pending: deque[tuple[Job, Future[None] | BaseException]] = deque()

    def save(self, job: Job, image: torch.Tensor) -> None:
        image = image.detach().to("cpu", non_blocking=False)
        self._pending.append((job, self._pool.submit(_save, image, job.output, self._settings.quality)))
        self._drain(block=len(self._pending) > self.MAX_PENDING)

    def fail(self, job: Job, exc: BaseException) -> None:
        self._pending.append((job, exc))
        self._drain(block=False)

    def _drain(self, block: bool) -> None:
        while self._pending:
            job, outcome = self._pending[0]
            if isinstance(outcome, Future):
                if not (block or outcome.done()):
                    return
                try:
                    outcome.result()
                except OutputError as exc:
                    outcome = exc
            self._pending.popleft()
            block = False
            if isinstance(outcome, BaseException):
                self._record(job, "failed", outcome)
            else:
                self._record(job, "written")

    def finish(self) -> None:
        while self._pending:
            self._drain(block=True)


def _save(image: torch.Tensor, path: Path, quality: int) -> None:
    images.save_image(images.to_image(image), path, quality)


def run(
    stylizer: Stylizer,
    jobs: list[Job],
    settings: Settings,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Carry out the jobs; failures are reported per job and the rest still run.

    Images are decoded ahead and saved behind on worker threads while the model computes;
    contents of one size are encoded, and pairs decoded, `settings.batch_size` at a time.
    """
    make_parent_dirs([job.output for job in jobs])
    record = _Recorder(on_result)
    work: list[tuple[Path, list[Job]]] = []
    for content_path, group in _group_by_content(jobs).items():
        pending = []
        for job in group:
            if job.output.exists() and not settings.overwrite:
                record(job, "skipped")
            else:
                pending.append(job)
        if pending:
            work.append((content_path, pending))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="adain-io") as pool:
        styles = _StyleCache(stylizer, settings, pool, [job.style for _, todo in work for job in todo])
        writer = _Writer(pool, settings, record)
        try:
            for batch in _same_size_batches(_loaded(pool, work, settings), settings.batch_size):
                _run_contents(stylizer, batch, styles, settings, writer)
        finally:
            writer.finish()
    return record.results


_Loaded = tuple[list[Job], "torch.Tensor | ImageError"]


def _loaded(pool: ThreadPoolExecutor, work: list[tuple[Path, list[Job]]], settings: Settings) -> Iterator[_Loaded]:
    """Each content's jobs with its decoded image (or why not), decoding the next ones ahead."""
    s = settings

    def load(path: Path) -> Future[torch.Tensor]:
        return pool.submit(images.load_tensor, path, s.content_size, s.crop, s.max_pixels)

    upcoming = iter(work)
    ahead = deque((todo, load(path)) for path, todo in itertools.islice(upcoming, max(s.batch_size, 2)))
    while ahead:
        todo, future = ahead.popleft()
        for path, next_todo in itertools.islice(upcoming, 1):
            ahead.append((next_todo, load(path)))
        try:
            yield todo, future.result()
        except ImageError as exc:
            yield todo, exc


def _same_size_batches(loaded: Iterator[_Loaded], size: int) -> Iterator[list[_Loaded]]:
    """Consecutive contents of one size, up to `size` at a time; a failed load travels alone."""
    batch: list[_Loaded] = []
    for item in loaded:
        image = item[1]
        fits = isinstance(image, torch.Tensor) and batch and isinstance(batch[0][1], torch.Tensor) \
            and batch[0][1].shape == image.shape and len(batch) < size
        if batch and not fits:
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _run_contents(
    stylizer: Stylizer, batch: list[_Loaded], styles: _StyleCache, settings: Settings, writer: _Writer
) -> None:
    """Contents of one size, encoded together, each in each of its styles, decoded in batches."""
    first = batch[0][1]
    if isinstance(first, ImageError):
        for job in batch[0][0]:
            writer.fail(job, first)
        return
    encoded = stylizer.encode_contents(torch.cat([image for _, image in batch]))
    pairs = [(content, job) for content, (todo, _) in zip(encoded, batch, strict=True) for job in todo]
    for start in range(0, len(pairs), settings.batch_size):
        ready = []
        for content, job in pairs[start:start + settings.batch_size]:
            try:
                ready.append((content, styles.stats_for(job.style, content), job))
            except ImageError as exc:
                writer.fail(job, exc)
        if ready:
            _render(stylizer, ready, settings, writer)


def _render(stylizer: Stylizer, ready: list[tuple[EncodedContent, FeatureStats, Job]], settings: Settings,
            writer: _Writer) -> None:
    contents, stats, jobs = zip(*ready, strict=True)
    try:
        with torch.inference_mode():
            outs = stylizer.render_batch(list(contents), list(stats), settings.alpha)
    except torch.OutOfMemoryError:
        for job in jobs:
            writer.fail(job, ImageError(job.content, "out of memory (try a smaller --content-size or --max-memory)"))
        return
    for i, (content, job) in enumerate(zip(contents, jobs, strict=True)):
        with torch.inference_mode():
            out = color.finish(outs[i:i + 1], content.image, settings.color_mode)
        writer.save(job, out)


def _group_by_content(jobs: list[Job]) -> dict[Path, list[Job]]:
    groups: dict[Path, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.content, []).append(job)
    return groups


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
