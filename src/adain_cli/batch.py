"""`adain stylize`: every content x style pair, each image decoded and encoded once, outputs atomic.

`plan` turns inputs and an output location into jobs (checked as jobs.py describes);
`run` carries them out on the one runner (runner.py): each content file is an item whose
outputs are its pairs, the sink saves them as files. Outcomes are reported through a
callback, and the run carries on past inputs that fail, whatever the failure (an
unreadable file, or out of memory while encoding one of them).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import color, images, jobs
from .errors import ImageError, OutputError, UsageError
from .runner import Failed, Render, Runner
from .style_cache import StyleCache
from .stylizer import EncodedContent, Stylizer

if TYPE_CHECKING:
    from .style_bank import StyleBank

OUTPUT_PATTERN = "{content}_stylized_{style}.{ext}"


@dataclass(frozen=True)
class Job:
    content: Path
    style: Path
    output: Path
    alpha: float | None = None  # None: the settings' alpha

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {"content": str(self.content), "style": str(self.style),
                                        "output": str(self.output)}
        if self.alpha is not None:
            described["alpha"] = self.alpha
        return described


def plan(contents: list[Path], styles: list[Path], out: Path, ext: str = "png") -> list[Job]:
    """Jobs for every content x style pair, in content-major order.

    One pair writes to `out` itself (unless it is an existing directory); several pairs
    write `{content}_stylized_{style}.{ext}` inside the directory `out`.
    """
    ext = jobs.check_extension(ext)
    if len(contents) == 1 and len(styles) == 1 and not out.is_dir():
        jobs.check_output_file(out)
        planned = [Job(contents[0], styles[0], out)]
    else:
        count = len(contents) * len(styles)
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: {count} outputs need a directory, and this is a file")
        if not out.exists() and out.suffix.lower() in images.FORMATS:
            raise UsageError(f"{out}: {count} outputs need a directory, not a file name")
        planned = [Job(c, s, out / OUTPUT_PATTERN.format(content=c.stem, style=s.stem, ext=ext))
                   for c in contents for s in styles]
    jobs.refuse_collisions([(j.output, f"{j.content} x {j.style}") for j in planned],
                           [p for j in planned for p in (j.content, j.style)])
    return planned


@dataclass
class _Content:
    """One content file and its jobs: a runner item (runner.py)."""

    path: Path
    todo: list[Job]
    settings: jobs.Settings
    styles: StyleCache

    @property
    def color_mode(self) -> color.ColorMode:
        return self.settings.color_mode

    @property
    def work_size(self) -> int:
        return self.settings.work_size

    def begin(self) -> bool:
        return True

    def cached(self) -> None:
        return None

    def load(self) -> torch.Tensor:
        return self.settings.load_content(self.path)

    def renders(self, content: EncodedContent) -> list[Render | Failed]:
        settings = self.settings
        made: list[Render | Failed] = []
        for job in self.todo:
            try:
                stats = self.styles.stats(job.style, lambda job=job: settings.load_style(job.style), content,
                                          settings.color_mode)
            except ImageError as exc:
                made.append(Failed(job, exc))
                continue
            except Exception as exc:  # out of memory while encoding it, say: its pairs fail, the rest go on
                made.append(Failed(job, jobs.failure(job.style, exc)))
                continue
            made.append(Render(job, content, stats, settings.alpha if job.alpha is None else job.alpha))
        return made

    def failed(self, error: BaseException) -> list[Failed]:
        error = error if isinstance(error, ImageError) else jobs.failure(self.path, error)
        return [Failed(job, error) for job in self.todo]


class _Files:
    """Outputs saved as files (on the runner's workers), outcomes recorded in job order."""

    def __init__(self, settings: jobs.Settings, record: jobs.Recorder) -> None:
        self._quality, self._record = settings.quality, record

    def finish(self, job: Job, image: torch.Tensor) -> None:
        images.save_image(images.to_image(image), job.output, self._quality)

    def done(self, job: Job, result: BaseException | None) -> None:
        if result is None:
            self._record(job, "written")
        elif isinstance(result, (ImageError, OutputError)):
            self._record(job, "failed", result)
        else:
            self._record(job, "failed", jobs.failure(job.content, result))


def run(stylizer: Stylizer, planned: list[Job], settings: jobs.Settings,
        on_outcome: Callable[[jobs.Outcome], None] | None = None, *, workers: int = 2,
        bank: StyleBank | None = None) -> list[jobs.Outcome]:
    """Carry out the jobs; failures are reported per job and the rest still run.

    Images are decoded ahead and saved behind on `workers` threads while the model computes;
    contents of one size are encoded, and pairs decoded, `stylizer.execution.batch_size` at a time.
    Style statistics come from `bank` when it has them, and go into it when it has not.
    """
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    jobs.make_parent_dirs([job.output for job in planned])
    record = jobs.Recorder(on_outcome)
    styles = StyleCache(stylizer, bank=bank)
    work: list[_Content] = []
    for content_path, group in _group_by_content(planned).items():
        pending = []
        for job in group:
            if jobs.skipped(job.output, settings.overwrite):
                record(job, "skipped")
            else:
                pending.append(job)
        if pending:
            work.append(_Content(content_path, pending, settings, styles))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adain-style") as pool:
        styles.expect([job.style for item in work for job in item.todo], settings.load_style, pool,
                      settings.color_mode, ahead=max(2, workers))
        # fill: a batch's make-up, and so a float's last bit on some devices, never depends on timing.
        Runner(stylizer, workers=workers, fill=True).run(work, _Files(settings, record))
    return record.outcomes


def _group_by_content(planned: list[Job]) -> dict[Path, list[Job]]:
    groups: dict[Path, list[Job]] = {}
    for job in planned:
        groups.setdefault(job.content, []).append(job)
    return groups
