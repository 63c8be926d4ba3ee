"""The one runner under the commands that stylize streams of images (stylize, dataset, video,
serve): contents decoded ahead, batched, stylized, finished behind.

    source --items--> feeder thread: each item's content decoded on a worker, a few ahead
        --> batcher: wait for one, take what is ready up to the batch size (one size, colour mode, work size)
        --> stage 1: Stylizer.encode_contents, skipped for contents whose features are cached
        --> the item's renders: its styles' statistics (from the style cache, a track, a mix)
        --> stage 3: Stylizer.render_batch, pairs of one size and colour mode, batch_size at a time
    --> the sink: each result finished on a worker (saved, encoded, converted), handed over in order

`adain stylize` and `adain dataset` (files in, files out), `adain video` (frames in, frames
out) and `adain serve` (requests in, answers out) are each a source of `Item`s and a `Sink`.
What they share is written here once: bounded queues (memory does not grow with the input),
output order, one failure rule (a batch that fails is retried item by item, so that one
item's failure is its own), and cancellation: an item may decline to start (a request whose
client left), KeyboardInterrupt stops the run with every thread joined, and no item's failure
stops the runner unless the item says so (a video has no holes) — otherwise only the
source's own error or the sink's does.

The admission `Budget` lives here too: the bytes that items decoding and waiting may hold.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from . import color, memory
from .errors import Busy, RequestError
from .model import FeatureStats
from .stylizer import EncodedContent, Stylizer

R = TypeVar("R")


@dataclass
class Render:
    """One output to make: a content in a style. `key` is the sink's handle on it."""

    key: object
    content: EncodedContent
    style: FeatureStats
    alpha: float


@dataclass
class Failed:
    """One output that cannot be made, and why: it reaches the sink in its place."""

    key: object
    error: BaseException


class Item(Protocol):
    """One content and what to make of it."""

    color_mode: color.ColorMode
    work_size: int  # px the network runs at (the shorter side); 0: the content's own size

    def begin(self) -> bool:
        """Just before its work starts: False to skip it (nobody waits for it any more)."""
        ...

    def load(self) -> Tensor:
        """On a worker: the content as the network takes it, (1, 3, H, W), or whatever the
        run's `collate` stacks. Called only when `cached` gave None."""
        ...

    def cached(self) -> EncodedContent | None:
        """Its content's features if they are known already (stage 1 is then skipped)."""
        ...

    def renders(self, content: EncodedContent) -> list[Render | Failed]:
        """On the runner's thread, once its content is encoded: its outputs, each to be made or
        failed already (a style that cannot be read); an exception fails them all (`failed`)."""
        ...

    def failed(self, error: BaseException) -> list[Failed]:
        """Its content could not be loaded, encoded or given its styles: each of its outputs
        failed with the error as the item names it (raise instead to stop the whole run)."""
        ...


class Source(Protocol):
    """Items that other threads queue (a `queue.Queue` is one): None ends the run."""

    def get(self) -> Item | None: ...

    def get_nowait(self) -> Item | None:
        """The next item if one is ready; queue.Empty if not."""
        ...


class Sink(Protocol[R]):
    """Where results go. `finish` runs on a worker (`Runner`'s `finishers` at once); `done`
    is called in the order the outputs were made: on the runner's thread in `Runner.run`, and
    in `Runner.serve` by the finisher as soon as it can (so there it must be thread-safe, and
    cannot stop the run by raising)."""

    def finish(self, key: object, image: Tensor) -> R: ...

    def done(self, key: object, result: R | BaseException) -> None:
        """The result, or why there is none (raise to stop the run)."""
        ...


def stack(images: list[Tensor]) -> Tensor:
    """Contents of one size as one batch: the default `collate`. Always a new contiguous tensor,
    even for one: a decoded picture's strides are its decoder's, and the colour step's sums
    (--preserve-color) follow the memory order, down to a float's last bit."""
    return torch.cat(images)


class _End:
    """The source's end, or its error (re-raised once the items before it are done)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Runner:
    """A Stylizer's stages behind a bounded feed and in front of an ordered, bounded sink."""

    def __init__(self, stylizer: Stylizer, *, workers: int = 2, ahead: int | None = None,
                 finishers: int | None = None, behind: int | None = None, fill: bool = False,
                 collate: Callable[[list[Tensor]], Tensor] = stack,
                 to_host: Callable[[Tensor], Tensor] = lambda out: out.detach().to("cpu")) -> None:
        """`workers`: threads decoding ahead and finishing behind (0: contents loaded on the
        feeder thread itself, where loading is only taking what the source decoded, and one
        finisher); `ahead`: contents decoded
        or decoding at most (default: a batch and one per worker); `finishers`: results
        finished at once (1 keeps them in order, as a video encoder needs; default `workers`);
        `behind`: results waiting to be finished at most, which bounds the memory they hold.
        `fill`: wait for the next item's decoding to fill a batch rather than take only what
        is ready, so that a run's batches, and so its pixels, never depend on timing (files;
        a stream's latency wants what is ready). `collate` stacks decoded contents for the
        encoder; `to_host` brings a batch of results off the device (a video's as 8 bits)."""
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self.stylizer = stylizer
        self.batch_size = max(1, stylizer.execution.batch_size)
        self._workers = workers
        self._ahead = ahead or self.batch_size + workers
        self._finishers = finishers or max(1, workers)
        self._behind = behind or max(4, 2 * workers)
        self._collate, self._to_host, self._fill = collate, to_host, fill

    def run(self, items: Iterable[Item], sink: Sink[R], on_batch: Callable[[int], None] | None = None) -> int:
        """Every item through the stages; the number of items whose work started. Returns when
        the source ends and every result is done; the source's or the sink's error is raised
        once the threads are joined. The source is read on a thread of its own (a video's
        frames decode while the model works), each item's `load` run on a worker (on that
        thread without workers)."""
        stop = threading.Event()
        ready: queue.Queue[_Queued | _End] = queue.Queue(maxsize=self._ahead)
        with ThreadPoolExecutor(max(1, self._workers), thread_name_prefix="adain-load") as pool:
            loaders = pool if self._workers else None
            feeder = threading.Thread(target=_feed, args=(items, loaders, ready, stop), name="adain-feed",
                                      daemon=True)
            feeder.start()
            try:
                return self._drive(ready, sink, on_batch, answer_at_once=False, fill=self._fill)
            finally:
                stop.set()
                _drain(ready)
                feeder.join()

    def serve(self, source: Source, sink: Sink[R],
              on_batch: Callable[[int], None] | None = None) -> int:
        """Items from a queue that other threads fill (a server's requests, decoded already:
        `load` is called here), until None comes; the number of items whose work started.
        Each result is handed over as soon as it is finished, by the finisher (in order), while
        the next batch runs: its encoding overlaps the network, and nobody waits for a batch."""
        return self._drive(source, sink, on_batch, answer_at_once=True, fill=False)

    def _drive(self, ready: queue.Queue | Source, sink: Sink[R], on_batch: Callable[[int], None] | None,
               answer_at_once: bool, fill: bool) -> int:
        """The batches through the stages. `answer_at_once`: results handed over as they are
        finished, from the finishers (a server's clients wait for theirs; a run's sink is handed
        its results on this thread)."""
        with ThreadPoolExecutor(self._finishers, thread_name_prefix="adain-finish") as finishers:
            behind = _Behind(sink, finishers, self._behind, eager=answer_at_once)
            try:
                count = 0
                for batch in _batches(ready, self.batch_size, fill):
                    count += len(batch)
                    self._stylize(batch, behind)
                    if on_batch is not None:
                        on_batch(len(batch))
                behind.finish()
                return count
            finally:
                behind.stop()

    def _stylize(self, batch: list[_Begun], behind: _Behind) -> None:
        mode = batch[0].item.color_mode
        renders: list[Render] = []
        for begun, content in zip(batch, self._encode(batch), strict=True):
            item = begun.item
            outputs = item.failed(content) if isinstance(content, BaseException) else _renders_of(item, content)
            for render in outputs:
                if isinstance(render, Failed):
                    self._render(renders, mode, behind)  # the outputs before it first: the sink sees them in order
                    renders = []
                    behind.fail(render.key, render.error)
                    continue
                renders.append(render)
                if len(renders) == self.batch_size:
                    self._render(renders, mode, behind)
                    renders = []
        self._render(renders, mode, behind)

    def _encode(self, batch: list[_Begun]) -> list[EncodedContent | BaseException]:
        """Stage 1 for the items that need it, together (if that fails, one by one, so that only
        the content that cannot be encoded fails); cached features for the others."""
        results: list[EncodedContent | BaseException] = [
            begun.cached if begun.cached is not None else begun.image  # type: ignore[misc]
            for begun in batch]
        todo = [i for i, begun in enumerate(batch) if isinstance(begun.image, Tensor)]
        if todo:
            work_size = batch[0].item.work_size
            encoded = self._encode_images([batch[i].image for i in todo], work_size)  # type: ignore[misc]
            for i, content in zip(todo, encoded, strict=True):
                results[i] = content
        return results

    def _encode_images(self, images: list[Tensor], work_size: int) -> list[EncodedContent | BaseException]:
        try:
            return list(self.stylizer.encode_contents(self._collate(images), work_size))
        except Exception as exc:
            if len(images) == 1:
                return [exc]
        return [self._encode_images([image], work_size)[0] for image in images]

    def _render(self, renders: list[Render], mode: color.ColorMode, behind: _Behind) -> None:
        """Stage 3 for renders of one content size and colour mode (the batcher grouped them);
        if the batch fails, one by one, so that only the output that cannot be made fails."""
        if not renders:
            return
        try:
            out = self.stylizer.render_batch([r.content for r in renders], [r.style for r in renders],
                                             [r.alpha for r in renders], mode)
        except Exception as exc:
            if len(renders) == 1:
                behind.fail(renders[0].key, exc)
                return
            for render in renders:
                self._render([render], mode, behind)
            return
        out = self._to_host(out)  # the whole batch in one copy
        for i, render in enumerate(renders):
            behind.add(render.key, out[i:i + 1])


def _renders_of(item: Item, content: EncodedContent) -> list[Render | Failed]:
    try:
        return item.renders(content)
    except Exception as exc:
        return item.failed(exc)


def _feed(items: Iterable[Item], loaders: ThreadPoolExecutor | None, ready: queue.Queue,
          stop: threading.Event) -> None:
    """The feeder thread: each item from the source, its content's decoding started on a worker
    (or, without workers, done here)."""
    end = _End()
    try:
        for item in items:
            future = None if item.cached() is not None else _load(item, loaders)
            if not _put(ready, (item, future), stop):
                return
    except BaseException as exc:  # the source's own failure (a video that stops decoding): raised by run()
        end = _End(exc)
    _put(ready, end, stop)


def _load(item: Item, loaders: ThreadPoolExecutor | None) -> Future[Tensor]:
    if loaders is not None:
        return loaders.submit(item.load)
    future: Future[Tensor] = Future()
    try:
        future.set_result(item.load())
    except Exception as exc:
        future.set_exception(exc)
    return future


def _put(q: queue.Queue, entry: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue) -> None:
    """Empty a queue whose consumer has stopped, so that its producer is not left blocked."""
    while True:
        try:
            entry = q.get_nowait()
        except queue.Empty:
            return
        if isinstance(entry, tuple) and entry[1] is not None:
            entry[1].cancel()


_Queued = tuple[Item, "Future[Tensor] | None"]  # None: loaded when its work begins


@dataclass
class _Begun:
    """An item whose work has begun, with its content: decoded, cached (features known) or why not."""

    item: Item
    image: Tensor | BaseException | None
    cached: EncodedContent | None

    @property
    def shape(self) -> torch.Size | None:
        if isinstance(self.image, Tensor):
            return self.image.shape
        return None if self.cached is None else self.cached.image.shape

    def fits(self, first: _Begun) -> bool:
        """Whether it can join `first`'s batch: one content size, colour mode and work size."""
        return (self.item.color_mode == first.item.color_mode and self.item.work_size == first.item.work_size
                and self.shape is not None and self.shape == first.shape)


def _entry(entry: object) -> _Queued | _Begun | _End:
    """A queue's entry as the batcher takes it: a bare item (a server's queue) is loaded when it
    begins, None is the end."""
    if entry is None:
        return _End()
    if isinstance(entry, (tuple, _Begun, _End)):
        return entry  # type: ignore[return-value]
    return (entry, None)  # type: ignore[return-value]


def _batches(ready: queue.Queue | Source, size: int, fill: bool = False) -> Iterator[list[_Begun]]:
    """Wait for one item, then take those that are ready (`fill`: the next ones, once decoded),
    up to `size`, while they have one content size, colour mode and work size; an item that does not fit
    (or, without `fill`, is still decoding) starts the next batch."""
    held: _Queued | _Begun | _End | None = None
    while True:
        entry = held if held is not None else _entry(ready.get())
        held = None
        if isinstance(entry, _End):
            if entry.error is not None:
                raise entry.error
            return
        first = entry if isinstance(entry, _Begun) else _begin(*entry)
        if first is None:
            continue
        batch = [first]
        while len(batch) < size:
            try:
                entry = _entry(ready.get() if fill else ready.get_nowait())
            except queue.Empty:
                break
            if isinstance(entry, _End) or (
                    not fill and isinstance(entry, tuple) and entry[1] is not None and not entry[1].done()):
                held = entry
                break
            begun = entry if isinstance(entry, _Begun) else _begin(*entry)
            if begun is None:
                continue
            if not begun.fits(first):
                held = begun
                break
            batch.append(begun)
        yield batch


def _begin(item: Item, future: Future[Tensor] | None) -> _Begun | None:
    """The item begun, with its content decoded (waiting for its worker), or None when it
    declines to begin (nobody waits for it any more)."""
    if not item.begin():
        if future is not None:
            future.cancel()
        return None
    cached = item.cached() if future is None else None
    try:
        image = None if cached is not None else future.result() if future is not None else item.load()
    except Exception as exc:
        image = exc
    return _Begun(item, image, cached)


class _Behind:
    """Results finished on workers while the next ones compute; handed to the sink in order,
    failures included, with at most `limit` waiting. `eager`: each handed over as soon as it and
    those before it are finished, by the worker that finished it (a server's clients wait for
    theirs, and the next batch need not wait for this one's encoding); otherwise when the
    runner's thread comes by (a run's sink is not thread-safe: a video encoder, a manifest)."""

    def __init__(self, sink: Sink, pool: ThreadPoolExecutor, limit: int, eager: bool = False) -> None:
        self._sink, self._pool, self._limit, self._eager = sink, pool, limit, eager
        self._pending: deque[tuple[object, Future | BaseException]] = deque()
        self._lock = threading.Lock()  # held while the head is taken and handed over: order kept

    def add(self, key: object, image: Tensor) -> None:
        future = self._pool.submit(self._sink.finish, key, image)
        with self._lock:
            self._pending.append((key, future))
        if self._eager:
            future.add_done_callback(lambda _: self._hand_over(block=False))
        self._hand_over(block=len(self._pending) > self._limit)

    def fail(self, key: object, error: BaseException) -> None:
        with self._lock:
            self._pending.append((key, error))
        self._hand_over(block=False)

    def _hand_over(self, block: bool) -> None:
        """Finished results from the head on; `block`: wait for the head first (outside the lock,
        so that a worker handing over what it finished is never kept from finishing the next)."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                key, result = self._pending[0]
                waiting = isinstance(result, Future) and not result.done()
                if not waiting:
                    self._pending.popleft()
                    if isinstance(result, Future):
                        try:
                            result = result.result()
                        except Exception as exc:
                            result = exc
                    self._sink.done(key, result)
                    block = False
                    continue
            if not block:
                return
            futures.wait([result])  # type: ignore[list-item]

    def finish(self) -> None:
        while self._pending:
            self._hand_over(block=True)

    def stop(self) -> None:
        """After the run stopped (Ctrl-C, a source's or the sink's error): results not finished
        yet are let go, those finished or finishing are handed over, so that what was written
        is recorded (a dataset's manifest); a sink that fails again ends it."""
        with self._lock:
            pending, self._pending = self._pending, deque()
        for _, result in pending:
            if isinstance(result, Future):
                result.cancel()
        try:
            for key, result in pending:
                if isinstance(result, Future):
                    if result.cancelled():
                        continue
                    try:
                        result = result.result()
                    except Exception as exc:
                        result = exc
                self._sink.done(key, result)
        except Exception:  # the sink is what failed: the run's own error is the one to raise
            pass


# --- admission ---------------------------------------------------------------------------------

class Budget:
    """Bytes that admitted work may hold at once, shared by every thread. Admission never waits:
    it is granted or refused at once, so a refused request costs nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int, retry_after: Callable[[], int], held: int = 0) -> Reservation:
        """A reservation of `nbytes` for work that holds `held` bytes already (a request's body);
        RequestError 413 if the two could never fit together, Busy if not now."""
        reservation = Reservation(self)
        reservation.grow(nbytes, retry_after, held)
        return reservation

    def _take(self, nbytes: int, retry_after: Callable[[], int], held: int = 0) -> None:
        if nbytes + held > self.limit:
            raise RequestError(413, f"this request needs about {memory.format_size(nbytes + held)} of memory, more "
                                    f"than the server's bound of {memory.format_size(self.limit)} (--max-memory)")
        with self._lock:
            if self.held + nbytes <= self.limit:
                self.held += nbytes
                return
        raise Busy(f"requests in progress hold {memory.format_size(self.held)} of the "
                   f"{memory.format_size(self.limit)} memory bound", retry_after())

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self.held -= nbytes


class Reservation:
    """A share of a Budget, grown as needs become known and released once (later calls do nothing)."""

    def __init__(self, budget: Budget) -> None:
        self._budget, self.nbytes = budget, 0
        self._lock = threading.Lock()

    def grow(self, nbytes: int, retry_after: Callable[[], int], held: int = 0) -> None:
        self._budget._take(nbytes, retry_after, held + self.nbytes)
        with self._lock:
            self.nbytes += nbytes

    def shrink(self, nbytes: int) -> None:
        """Give back part of the share (what a stream no longer keeps)."""
        with self._lock:
            nbytes = min(nbytes, self.nbytes)
            self.nbytes -= nbytes
        if nbytes:
            self._budget._give(nbytes)

    def release(self) -> None:
        with self._lock:
            nbytes, self.nbytes = self.nbytes, 0
        if nbytes:
            self._budget._give(nbytes)
