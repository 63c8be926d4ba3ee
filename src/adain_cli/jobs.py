"""What every command that writes images shares: its settings, its outputs' checks, and outcomes.

A command plans *jobs* (one per output) before any work, refusing anything that would
overwrite an input, write two results to one file or use an unknown format; it then
reports one *outcome* per job (written, skipped because it exists, or failed and why)
through a callback, and exits 1 if any failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image
from torch import Tensor

from . import color, guided, images, memory
from .errors import ImageError, OutputError, UsageError
from .stylizer import check_alpha

Status = Literal["written", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("written", "skipped", "failed")


@dataclass(frozen=True)
class Settings:
    """How images are read, painted and written; every value checked on construction."""

    alpha: float = 1.0
    content_size: int = 512
    style_size: int = 512
    crop: bool = False
    color_mode: color.ColorMode = "style"
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS
    quality: int = images.DEFAULT_QUALITY
    overwrite: bool = False
    work_size: int = 0  # px the network runs at (shorter side), the output guided up to its size; 0: off

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        for name in ("content_size", "style_size"):
            size = getattr(self, name)
            if size != 0 and not size >= images.MIN_SIDE:
                raise UsageError(f"{name.replace('_', '-')} must be 0 (original size) or at least "
                                 f"{images.MIN_SIDE}, got {size}")
        if self.work_size != 0 and not self.work_size >= images.MIN_SIDE:
            raise UsageError(f"work-size must be 0 (off) or at least {images.MIN_SIDE}, got {self.work_size}")
        if self.content_size and self.work_size > self.content_size:
            raise UsageError(f"work-size {self.work_size} is larger than the output's shorter side "
                             f"(content-size {self.content_size}): give a smaller one, or 0")
        if self.color_mode not in color.COLOR_MODES:
            raise UsageError(f"unknown colour mode {self.color_mode!r}")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"quality must be between 1 and 100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels <= 0:
            raise UsageError(f"max-pixels must be positive, got {self.max_pixels}")

    def load_content(self, path: Path) -> Tensor:
        """A content file decoded and resized as the network takes it: (1, 3, H, W) in [0, 1]."""
        return self.prepare_content(images.load_image(path, self.max_pixels), path)

    def prepare_content(self, image: Image.Image, path: Path | str) -> Tensor:
        """A decoded content (its original kept by a caller that needs its size) as the network takes it."""
        return images.from_8bit(self.content_pixels(image, path))

    def content_pixels(self, image: Image.Image, path: Path | str) -> Tensor:
        """`prepare_content` but for the last step: its 8-bit pixels, (1, 3, H, W)."""
        return images.to_pixels(images.prepare(image, self.content_size, self.crop, path))

    def check_work_size(self, width: int, height: int, path: Path | str) -> None:
        """UsageError naming `path` when its output (from a width x height original) is smaller than
        the working size; only the original's size can say so when content-size is 0."""
        if self.work_size and not self.content_size:
            try:
                guided.check_work_size(self.work_size, height, width)
            except UsageError as exc:
                raise UsageError(f"{path}: {exc}") from None

    def check_work_sizes(self, contents: Iterable[Path]) -> None:
        """Before anything runs: UsageError naming the first content whose output is smaller than
        the working size, from the files' headers (needed only when content-size keeps the
        original). A file that cannot be read is left to fail in its turn, as without --work-size."""
        if not self.work_size or self.content_size:
            return  # off, or checked against content-size on construction
        for path in dict.fromkeys(contents):
            try:
                width, height = images.peek_file_size(path, self.max_pixels)
            except ImageError:
                continue
            self.check_work_size(width, height, path)

    def load_style(self, path: Path) -> Tensor:
        """A style file decoded and resized as the network takes it: (1, 3, H, W) in [0, 1]."""
        return self.prepare_style(images.load_image(path, self.max_pixels), path)

    def prepare_style(self, image: Image.Image, path: Path | str) -> Tensor:
        """A decoded style (a frame of a style video, say) as the network takes it."""
        return images.to_tensor(images.prepare(image, self.style_size, self.crop, path))


class Job(Protocol):
    """One output to make."""

    @property
    def output(self) -> Path: ...

    def describe(self) -> dict[str, object]:
        """What the job is, for --json: its inputs, then "output", then anything else."""
        ...


@dataclass(frozen=True)
class Outcome:
    """What became of one job."""

    job: Job
    status: Status
    seconds: float
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def output(self) -> Path:
        return self.job.output

    def as_dict(self) -> dict[str, object]:
        return {**self.job.describe(), "status": self.status, "seconds": round(self.seconds, 4), "error": self.error}


class Recorder:
    """Collects outcomes and passes each on; an outcome's time includes the shared work done for it."""

    def __init__(self, on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.outcomes: list[Outcome] = []
        self._on_outcome = on_outcome
        self._mark = time.perf_counter()

    def __call__(self, job: Job, status: Status, exc: BaseException | None = None) -> None:
        now = time.perf_counter()
        outcome = Outcome(job, status, now - self._mark, None if exc is None else str(exc), exc)
        self._mark = now
        self.outcomes.append(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)


def exit_code(outcomes: Iterable[Outcome]) -> int:
    """0 when nothing failed, 1 when some output could not be made."""
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def summary(outcomes: Sequence[Outcome]) -> str:
    """One line: how many outputs were written, skipped and failed, and how long it took."""
    counts = {status: sum(o.status == status for o in outcomes) for status in STATUSES}
    total = sum(o.seconds for o in outcomes)
    line = f"{counts['written']} written, {counts['skipped']} skipped, {counts['failed']} failed in {total:.1f} s"
    if counts["written"]:
        line += f" ({total / counts['written']:.2f} s per output)"
    return line


# --- the one rule for "skip an existing output" ---------------------------------------------

def exists(output: Path, frames: str | None = None) -> bool:
    """Whether an output is there from an earlier run. A file output is there when its name
    leads to something (a file, or a link to one); a dangling link is not, and is replaced by
    the new file, its target not created. A folder of frames (`frames`: the pattern its files
    match) is there when it holds one or more: an empty folder, or one of other files, is
    filled. Temporaries of a run in progress or killed are never outputs (see `atomic`)."""
    if frames is not None:
        return output.is_dir() and any(output.glob(frames))
    return output.exists()


def skipped(output: Path, overwrite: bool, frames: str | None = None) -> bool:
    """Whether a command leaves `output` as it is: it `exists` and --overwrite was not given."""
    return not overwrite and exists(output, frames)


# --- checks made while planning, before any work ---------------------------------------------

def check_extension(ext: str) -> str:
    """An output format named by extension ("jpg", ".PNG"), normalised; UsageError if unknown."""
    ext = ext.lower().lstrip(".")
    if "." + ext not in images.FORMATS:
        raise UsageError(f"unknown output extension {ext!r} (use one of {images.KNOWN_EXTENSIONS})")
    return ext


def check_output_file(path: Path) -> None:
    """An output file name must have an extension that picks a format."""
    try:
        images.format_for(path)
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def refuse_collisions(outputs: Sequence[tuple[Path, str]], inputs: Iterable[Path]) -> None:
    """No output may be an input, and no two jobs may write one file. `outputs` pairs each
    output with what makes it ("a.jpg x b.jpg"), for the message."""
    folders: dict[Path, Path] = {}

    def located(path: Path) -> Path:
        # Each folder resolved once: a dataset's million outputs share a few thousand folders. An
        # output's own name is not followed: writing it replaces a link there, never its target.
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        return folder / path.name

    sources: dict[Path, Path] = {}
    for path in inputs:
        sources[path.resolve()] = sources[located(path)] = path
    makers: dict[Path, str] = {}
    for output, maker in outputs:
        target = located(output)
        if target in sources:
            raise UsageError(f"{output}: output is the input file {sources[target]}; refusing to overwrite an input")
        if target in makers:
            raise UsageError(f"{output}: written by both {makers[target]} and {maker}; rename an input")
        makers[target] = maker


def make_parent_dirs(outputs: Iterable[Path]) -> None:
    """Create the outputs' directories up front: UsageError (nothing done yet) if that fails."""
    make_dirs({output.parent for output in outputs})


def make_dirs(folders: Iterable[Path]) -> None:
    """Create output directories: UsageError naming the first that cannot be created."""
    for folder in sorted(folders):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{folder}: cannot create output directory ({exc.strerror or exc})") from None


def failure(path: Path, exc: BaseException) -> ImageError:
    """A one-line error for an unexpected failure while working on one input (out of memory, say),
    so that a batch goes on. The original exception stays attached for --debug."""
    error = ImageError(path, failure_reason(exc))
    error.__cause__ = exc
    return error


def failure_reason(exc: BaseException) -> str:
    """An unexpected exception in one line: what it was and its first line, or out of memory."""
    if memory.is_exhausted(exc):
        return "out of memory (try a smaller --content-size or --max-memory)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'failed'}"
