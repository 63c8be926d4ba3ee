"""`adain stylize`: every content x style pair, each image decoded and encoded once, outputs atomic.

`plan` turns inputs and an output location into jobs (checked as jobs.py describes);
`run` carries them out, reporting each outcome through a callback and carrying on past
inputs that fail, whatever the failure (an unreadable file, or out of memory while
encoding one of them).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import color, images, jobs
from .errors import ImageError, OutputError, UsageError
from .model import FeatureStats
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


class _StyleCache:
    """Each style decoded once (a few ahead, on a worker thread, in the order the jobs need
    them) and, unless its colour mode recolours it per content, encoded once: its statistics
    are kept, and taken from and given to the style bank when there is one."""

    # Decoded styles kept for "coral", which re-encodes them per content; the least recently used go.
    MAX_IMAGE_BYTES = 1 << 30

    def __init__(self, stylizer: Stylizer, settings: jobs.Settings, pool: ThreadPoolExecutor,
                 order: list[Path], bank: StyleBank | None = None, ahead: int = 2) -> None:
        """`ahead`: styles decoded ahead at most; a folder of thousands must not sit in memory as pixels."""
        self._stylizer = stylizer
        self._ahead = ahead
        self._settings = settings
        self._pool = pool
        self._per_content = color.recolours_style(settings.color_mode)
        self._bank = None if self._per_content else bank
        self._upcoming = deque(dict.fromkeys(order))
        self._loads: dict[Path, Future[torch.Tensor | FeatureStats]] = {}
        self._stats: dict[Path, FeatureStats | ImageError] = {}
        self._images: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._top_up()

    def _fetch(self, path: Path) -> torch.Tensor | FeatureStats:
        """On a worker: the style's statistics from the bank, else its decoded image."""
        stats = None if self._bank is None else self._bank.get(path)
        return self._settings.load_style(path) if stats is None else stats

    def _load(self, path: Path) -> None:
        if path not in self._loads and path not in self._stats and path not in self._images:
            self._loads[path] = self._pool.submit(self._fetch, path)

    def _top_up(self) -> None:
        while self._upcoming and len(self._loads) < self._ahead:
            self._load(self._upcoming.popleft())

    def _entry(self, path: Path) -> torch.Tensor | FeatureStats | ImageError:
        if path in self._stats:
            return self._stats[path]
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        self._load(path)
        future = self._loads.pop(path)
        self._top_up()
        try:
            loaded = future.result()
            if self._per_content:
                self._keep_image(path, loaded)  # type: ignore[arg-type]
                return loaded
            if not isinstance(loaded, FeatureStats):
                loaded = self._stylizer.style_stats(loaded)
                if self._bank is not None:
                    self._pool.submit(self._bank.put, path, loaded)
            self._stats[path] = loaded
        except ImageError as exc:
            self._stats[path] = exc
        except Exception as exc:  # out of memory while encoding it, say: its pairs fail, the rest go on
            self._stats[path] = jobs.failure(path, exc)
        return self._stats[path]

    def _keep_image(self, path: Path, image: torch.Tensor) -> None:
        self._images[path] = image
        while sum(i.nbytes for i in self._images.values()) > self.MAX_IMAGE_BYTES and len(self._images) > 1:
            self._images.popitem(last=False)

    def stats_for(self, path: Path, content: EncodedContent) -> FeatureStats:
        """The style's statistics for this content; ImageError if the style cannot be used."""
        entry = self._entry(path)
        if isinstance(entry, ImageError):
            raise entry
        if isinstance(entry, FeatureStats):
            return entry
        try:
            return self._stylizer.style_stats(entry, content, self._settings.color_mode)
        except Exception as exc:
            raise jobs.failure(path, exc) from exc


class _Writer:
    """Saves outputs on a worker thread while the next ones compute; outcomes reach the
    recorder in job order, failures included."""

    def __init__(self, pool: ThreadPoolExecutor, settings: jobs.Settings, record: jobs.Recorder,
                 max_pending: int) -> None:
        """`max_pending`: outputs waiting to be saved at most, which bounds the memory they hold."""
        self._pool = pool
        self._settings = settings
        self._record = record
        self._max_pending = max_pending
        self._pending: deque[tuple[Job, Future[None] | BaseException]] = deque()

    def save(self, job: Job, image: torch.Tensor) -> None:
        image = image.detach().to("cpu", non_blocking=False)
        self._pending.append((job, self._pool.submit(_save, image, job.output, self._settings.quality)))
        self._drain(block=len(self._pending) > self._max_pending)

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
    work: list[tuple[Path, list[Job]]] = []
    for content_path, group in _group_by_content(planned).items():
        pending = []
        for job in group:
            if job.output.exists() and not settings.overwrite:
                record(job, "skipped")
            else:
                pending.append(job)
        if pending:
            work.append((content_path, pending))
    batch_size = stylizer.execution.batch_size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adain-io") as pool:
        styles = _StyleCache(stylizer, settings, pool, [job.style for _, todo in work for job in todo], bank,
                             ahead=max(2, workers))
        writer = _Writer(pool, settings, record, max_pending=max(4, 2 * workers))
        try:
            for batch in _same_size_batches(_loaded(pool, work, settings, batch_size + workers), batch_size):
                _run_contents(stylizer, batch, styles, settings, writer, batch_size)
        finally:
            writer.finish()
    return record.outcomes


_Loaded = tuple[list[Job], "torch.Tensor | ImageError"]


def _loaded(pool: ThreadPoolExecutor, work: list[tuple[Path, list[Job]]], settings: jobs.Settings,
            ahead_count: int) -> Iterator[_Loaded]:
    """Each content's jobs with its decoded image (or why not), decoding `ahead_count` ahead."""
    upcoming = iter(work)
    ahead = deque((todo, pool.submit(settings.load_content, path))
                  for path, todo in itertools.islice(upcoming, ahead_count))
    while ahead:
        todo, future = ahead.popleft()
        for path, next_todo in itertools.islice(upcoming, 1):
            ahead.append((next_todo, pool.submit(settings.load_content, path)))
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


def _encode(stylizer: Stylizer, batch: list[_Loaded]) -> list[EncodedContent | ImageError]:
    """The batch's contents encoded together; if that fails, one by one, so that only the
    content that cannot be encoded fails."""
    first = batch[0][1]
    if isinstance(first, ImageError):
        return [first]
    try:
        return list(stylizer.encode_contents(torch.cat([image for _, image in batch])))
    except Exception as exc:
        if len(batch) == 1:
            return [jobs.failure(batch[0][0][0].content, exc)]
    return [_encode(stylizer, [item])[0] for item in batch]


def _run_contents(stylizer: Stylizer, batch: list[_Loaded], styles: _StyleCache, settings: jobs.Settings,
                  writer: _Writer, batch_size: int) -> None:
    """Contents of one size, encoded together, each in each of its styles, decoded `batch_size` pairs at a time."""
    ready: list[tuple[EncodedContent, FeatureStats, Job]] = []
    for content, (todo, _) in zip(_encode(stylizer, batch), batch, strict=True):
        for job in todo:
            try:
                if isinstance(content, ImageError):
                    raise content
                ready.append((content, styles.stats_for(job.style, content), job))
            except ImageError as exc:
                _render(stylizer, ready, settings, writer)  # the jobs before it first: outcomes stay in order
                ready = []
                writer.fail(job, exc)
                continue
            if len(ready) == batch_size:
                _render(stylizer, ready, settings, writer)
                ready = []
    _render(stylizer, ready, settings, writer)


def _render(stylizer: Stylizer, ready: list[tuple[EncodedContent, FeatureStats, Job]], settings: jobs.Settings,
            writer: _Writer) -> None:
    if not ready:
        return
    contents, stats, todo = zip(*ready, strict=True)
    alphas = [settings.alpha if job.alpha is None else job.alpha for job in todo]
    try:
        outs = stylizer.render_batch(list(contents), list(stats), alphas, settings.color_mode)
    except Exception as exc:
        for job in todo:
            writer.fail(job, jobs.failure(job.content, exc))
        return
    for i, job in enumerate(todo):
        writer.save(job, outs[i:i + 1])


def _group_by_content(planned: list[Job]) -> dict[Path, list[Job]]:
    groups: dict[Path, list[Job]] = {}
    for job in planned:
        groups.setdefault(job.content, []).append(job)
    return groups
