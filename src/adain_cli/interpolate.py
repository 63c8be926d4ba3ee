"""`adain interpolate`: one content, several styles, one or many outputs.

`plan` decides the frames (a blend, a transition, a grid, an alpha sweep) and where they
go (one file, one contact sheet, or numbered frames in a directory); `run` renders them
with the content encoded once and each style encoded once, and writes them atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import images, jobs, mixing
from .errors import ImageError, OutputError, UsageError
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

    def output_jobs(self) -> list[Output]:
        if self.sheet_columns:
            return [Output(self, self.outputs[0], self.frames)]
        return [Output(self, out, (frame,)) for out, frame in zip(self.outputs, self.frames, strict=True)]


@dataclass(frozen=True)
class Output:
    """One file of a plan: a frame, or the contact sheet of all of them."""

    plan: Plan
    output: Path
    frames: tuple[mixing.Frame, ...]

    def describe(self) -> dict[str, object]:
        one = len(self.frames) == 1
        return {
            "content": str(self.plan.content),
            "styles": [str(s) for s in self.plan.styles],
            "output": str(self.output),
            "weights": list(self.frames[0].weights) if one else [list(f.weights) for f in self.frames],
            "alpha": self.frames[0].alpha if one else [f.alpha for f in self.frames],
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
        jobs.check_output_file(output)
        outputs: tuple[Path, ...] = (output,)
        columns = columns if len(frames) > 1 else 0
    else:
        if labels:
            raise UsageError("--labels captions a contact sheet: give an output file such as sheet.png")
        if output.exists() and not output.is_dir():
            raise UsageError(f"{output}: {len(frames)} frames need a directory, and this is a file")
        ext = jobs.check_extension(ext)
        outputs = tuple(output / FRAME_PATTERN.format(index=i + 1, ext=ext) for i in range(len(frames)))
        columns = 0  # frames, not a sheet
    if labels and not columns:
        raise UsageError("--labels needs a contact sheet (--steps, --grid or --alpha-sweep)")
    jobs.refuse_collisions([(out, f"frame {i + 1}") for i, out in enumerate(outputs)],
                           [content, *styles, *([mask] if mask else [])])
    return Plan(content, tuple(styles), tuple(frames), outputs, columns, labels, mask)


def run(stylizer: Stylizer, job: Plan, settings: jobs.Settings,
        on_outcome: Callable[[jobs.Outcome], None] | None = None) -> list[jobs.Outcome]:
    """Render and write the plan's outputs; existing ones are skipped unless settings.overwrite."""
    record = jobs.Recorder(on_outcome)
    pending = []
    for output in job.output_jobs():
        if jobs.skipped(output.output, settings.overwrite):
            record(output, "skipped")
        else:
            pending.append(output)
    if not pending:
        return record.outcomes
    jobs.make_parent_dirs(o.output for o in pending)
    frames = list(job.frames) if job.sheet_columns else [o.frames[0] for o in pending]
    try:
        rendered = _render(stylizer, job, settings, frames)
    except ImageError as exc:
        for output in pending:
            record(output, "failed", exc)
        return record.outcomes
    for output in pending:
        try:
            _write(job, settings, output, rendered)
        except OutputError as exc:
            record(output, "failed", exc)
        else:
            record(output, "written")  # the shared rendering counts towards the first output
    return record.outcomes


def _write(job: Plan, settings: jobs.Settings, output: Output, rendered: dict[mixing.Frame, Tensor]) -> None:
    if job.sheet_columns:
        captions = [f.label for f in job.frames] if job.labels else None
        image = images.contact_sheet([rendered[f] for f in job.frames], job.sheet_columns, captions)
    else:
        image = images.to_image(rendered[output.frames[0]])
    images.save_image(image, output.output, settings.quality)


@torch.inference_mode()
def _render(stylizer: Stylizer, job: Plan, settings: jobs.Settings,
            frames: list[mixing.Frame]) -> dict[mixing.Frame, Tensor]:
    """Each frame as an image tensor; the content and every style are encoded once."""
    s = settings
    try:
        original = images.load_image(job.content, s.max_pixels)  # the mask needs its original size
        s.check_work_size(*original.size, job.content)
        content = stylizer.encode_content(s.prepare_content(original, job.content), s.work_size)
        stats = [stylizer.style_stats(s.load_style(path), content, s.color_mode) for path in job.styles]
        if job.mask is not None:
            labels = images.load_mask(job.mask, original.size, s.content_size, s.crop, len(stats), s.max_pixels)
            labels = images.resize_labels(labels, content.seen.shape[-2:])  # scaled as the content the network saw
            regional = mixing.masked_target(labels.to(stylizer.device), content.features, stats)
            return {f: stylizer.decode(content, regional, f.alpha, s.color_mode) for f in frames}
        return {f: stylizer.render(content, mixing.mix_stats(stats, f.weights), f.alpha, s.color_mode)
                for f in frames}
    except (ImageError, UsageError):
        raise
    except Exception as exc:  # out of memory, say: one line, like any other failed input
        raise jobs.failure(job.content, exc) from exc
