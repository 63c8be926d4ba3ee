"""Interpolation jobs: one content, several styles, one or many outputs.

`plan` decides the frames (a blend, a transition, a grid, an alpha sweep) and where they
go (one file, one contact sheet, or numbered frames in a directory); `run` renders them
with the content encoded once and each style encoded once, and writes them atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import color, images, mixing
from .batch import Settings, Status, check_extension, make_parent_dirs
from .errors import ImageError, OutputError, UsageError
from .model import STRIDE, adain
from .stylizer import Stylizer

FRAME_PATTERN = "frame_{index:04d}.{ext}"


@dataclass(frozen=True)
class Plan:
    content: Path
    styles: tuple[Path, ...]
    frames: tuple[mixing.Frame, ...]
    outputs: tuple[Path, ...]  # one per frame, or a single contact sheet
    sheet_columns: int = 0  # 0: each frame is its own file
    labels: bool = False
    mask: Path | None = None


@dataclass(frozen=True)
class Outcome:
    output: Path
    frames: tuple[mixing.Frame, ...]
    status: Status
    seconds: float
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def as_dict(self, plan: Plan) -> dict[str, object]:
        return {
            "content": str(plan.content),
            "styles": [str(s) for s in plan.styles],
            "output": str(self.output),
            "weights": [list(f.weights) for f in self.frames] if len(self.frames) > 1 else list(self.frames[0].weights),
            "alpha": [f.alpha for f in self.frames] if len(self.frames) > 1 else self.frames[0].alpha,
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


def plan(
    content: Path,
    styles: list[Path],
    output: Path,
    *,
    weights: list[float] | None = None,
    steps: int = 0,
    grid: int = 0,
    alpha_sweep: int = 0,
    alpha: float = 1.0,
    mask: Path | None = None,
    labels: bool = False,
    ext: str = "png",
) -> Plan:
    """Check the request and lay out its frames and outputs; UsageError for anything that cannot work."""
    mixed = mixing.normalise_weights(weights, len(styles))
    modes = [name for name, value in (("--steps", steps), ("--grid", grid), ("--alpha-sweep", alpha_sweep)) if value]
    if len(modes) > 1:
        raise UsageError(f"choose one of {' and '.join(modes)}")
    if mask is not None and (steps or grid or weights is not None):
        raise UsageError("--mask gives each style its own region: it does not combine with --weights, --steps, --grid")
    if steps:
        if len(styles) != 2:
            raise UsageError(f"--steps interpolates between exactly two styles, got {len(styles)}")
        frames, columns = mixing.steps(steps, alpha), steps
    elif grid:
        if len(styles) != 4:
            raise UsageError(f"--grid needs exactly four styles (the corners), got {len(styles)}")
        frames, columns = mixing.grid(grid, alpha), grid
    elif alpha_sweep:
        frames, columns = mixing.alpha_sweep(alpha_sweep, mixed), alpha_sweep
    else:
        frames, columns = [mixing.Frame(mixed, alpha, "")], 0

    if len(frames) == 1 or output.suffix.lower() in images.FORMATS:
        try:
            images.format_for(output)
        except OutputError as exc:
            raise UsageError(str(exc)) from None
        outputs: tuple[Path, ...] = (output,)
        columns = columns if len(frames) > 1 else 0
    else:
        if labels:
            raise UsageError("--labels captions a contact sheet: give an output file such as sheet.png")
        if output.exists() and not output.is_dir():
            raise UsageError(f"{output}: {len(frames)} frames need a directory, and this is a file")
        ext = check_extension(ext)
        outputs = tuple(output / FRAME_PATTERN.format(index=i + 1, ext=ext) for i in range(len(frames)))
        columns = 0  # frames, not a sheet
    if labels and not columns:
        raise UsageError("--labels needs a contact sheet (--steps, --grid or --alpha-sweep)")
    inputs = {p.resolve(): p for p in (content, *styles, *([mask] if mask else []))}
    for out in outputs:
        if out.resolve() in inputs:
            raise UsageError(f"{out}: output is the input file {inputs[out.resolve()]}; refusing to overwrite an input")
    return Plan(content, tuple(styles), tuple(frames), outputs, columns, labels, mask)


def run(stylizer: Stylizer, job: Plan, settings: Settings,
        on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Render and write the plan's outputs; existing ones are skipped unless settings.overwrite."""
    outcomes: list[Outcome] = []

    def emit(output: Path, status: Status, started: float, exc: BaseException | None = None) -> None:
        seconds = time.perf_counter() - started
        outcome = Outcome(output, _frames_of(job, output), status, seconds, None if exc is None else str(exc), exc)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    pending = [out for out in job.outputs if settings.overwrite or not out.exists()]
    for out in job.outputs:
        if out not in pending:
            emit(out, "skipped", time.perf_counter())
    if not pending:
        return outcomes
    make_parent_dirs(pending)
    started = time.perf_counter()
    wanted = [i for i, out in enumerate(job.outputs) if out in pending] if not job.sheet_columns \
        else list(range(len(job.frames)))
    try:
        rendered = dict(zip(wanted, _render(stylizer, job, settings, [job.frames[i] for i in wanted]), strict=True))
    except ImageError as exc:
        for out in pending:
            emit(out, "failed", started, exc)
        return outcomes
    for out in pending:
        try:
            _write(job, settings, out, rendered)
        except OutputError as exc:
            emit(out, "failed", started, exc)
        else:
            emit(out, "written", started)
        started = time.perf_counter()  # the shared rendering counts towards the first output
    return outcomes


def _frames_of(job: Plan, output: Path) -> tuple[mixing.Frame, ...]:
    return job.frames if job.sheet_columns else (job.frames[job.outputs.index(output)],)


def _write(job: Plan, settings: Settings, output: Path, rendered: dict[int, Tensor]) -> None:
    if job.sheet_columns:
        captions = [f.label for f in job.frames] if job.labels else None
        image = images.contact_sheet([rendered[i] for i in range(len(job.frames))], job.sheet_columns, captions)
    else:
        image = images.to_image(rendered[job.outputs.index(output)])
    images.save_image(image, output, settings.quality)


@torch.inference_mode()
def _render(stylizer: Stylizer, job: Plan, settings: Settings, frames: list[mixing.Frame]) -> list[Tensor]:
    """Each frame as an image tensor; the content and every style are encoded once."""
    s = settings
    original = images.load_image(job.content, s.max_pixels)
    content = stylizer.encode_content(images.to_tensor(images.prepare(original, s.content_size, s.crop, job.content)))
    stats = []
    for path in job.styles:
        style = images.load_tensor(path, s.style_size, s.crop, s.max_pixels)
        stats.append(stylizer.style_stats(color.prepare_style(style.to(stylizer.device), content.image, s.color_mode)))
    if job.mask is not None:
        labels = images.load_mask(job.mask, original.size, s.content_size, s.crop, len(job.styles), s.max_pixels)
        padded = tuple(n * STRIDE for n in content.features.shape[-2:])
        fractions = mixing.region_fractions(labels.to(stylizer.device), len(job.styles), padded)
        mixing.check_regions(fractions, set(labels.unique().tolist()))
        regional = mixing.regional_adain(content.features, fractions, stats)
    outputs = []
    for frame in frames:
        if job.mask is not None:
            target = regional
        else:
            target = adain(content.features, mixing.mix_stats(stats, frame.weights), content.stats)
        out = stylizer.decode(content, target, frame.alpha)
        outputs.append(color.finish(out, content.image, s.color_mode))
    return outputs
