"""`adain serve`'s engine: the networks loaded once, recent work cached, requests queued and batched.

    request (image bytes + options, checked)  --submit-->  bounded queue  --one worker thread-->
        content features: cached by (bytes' sha256, size)        stage 1, skipped when cached
        style statistics: cached by (bytes' sha256, size)        stage 2, skipped when cached
        render_batch of the requests that arrived together       stage 3, one decoder call
    --> the request's future: an 8-bit image

So a change of alpha or mixing weights alone costs one decoder pass. One thread owns the
model (a GPU runs one thing at a time anyway); requests that wait in the queue while it
works are decoded together, `Execution.batch_size` at a time, when their contents have
one size. Nothing here knows HTTP (web.py does) and nothing touches the disk.

Memory is bounded in bytes, not only in requests: work is admitted against a `Budget`
before anything is decoded (its images' sizes come from their headers), and holds its share
until it is done, so that work decoding and work queued together stay within it; beyond
it the answer is "busy" at once. No request's fate stops the worker: work cancelled while
queued is skipped, a result nobody waits for any more is dropped, and `close` returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar

import torch
from PIL import Image

from . import color, images, jobs, memory, mixing
from .errors import AdainError, ImageError, ImageTooLarge, NotAnImage, UsageError
from .model import FeatureStats
from .stylizer import EncodedContent, Stylizer, check_alpha

DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024  # bytes per request
DEFAULT_MAX_PIXELS = 16_000_000  # per image, decoded and after resizing
DEFAULT_QUEUE = 16
# Connections and how long they may take (web.py applies them): uvicorn's own defaults have no
# connection bound and no timeout for a request's headers, so idle sockets could use every descriptor.
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_KEEP_ALIVE = 5.0  # s an idle connection is kept between requests
DEFAULT_HEADER_TIMEOUT = 10.0  # s from a connection (or its last response) to a request's whole head
DEFAULT_BODY_TIMEOUT = 60.0  # s for a request's whole body
MAX_STYLES = 8
# Recent contents kept with their features: a 512 px content holds about 2.6 MB of them.
CONTENT_CACHE_BYTES = 512 * 1024 * 1024
STYLE_CACHE_ENTRIES = 256
# What admitted work holds, per pixel, until it is done: a decoded picture (8-bit, with the copy
# its conversion to RGB makes), and each image as the network takes it (float32 RGB, 12 bytes,
# plus the 8-bit copy made on the way). Measured: a 4000x4000 PNG held 190 MB, 12 bytes a pixel.
DECODED_BYTES_PER_PIXEL = 8
NETWORK_BYTES_PER_PIXEL = 16


class RequestError(AdainError):
    """A request that cannot be served, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Busy(RequestError):
    """503: the server cannot take this work now, but may in `retry_after` seconds."""

    def __init__(self, why: str, retry_after: int) -> None:
        super().__init__(503, f"busy: {why}, try again in {retry_after} s")
        self.retry_after = retry_after


class QueueFull(Busy):
    def __init__(self, retry_after: int) -> None:
        super().__init__("the queue is full", retry_after)


@dataclass(frozen=True)
class Limits:
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = DEFAULT_QUEUE
    memory: int | None = None  # bytes admitted work may hold at once; None: `default_memory()`

    def __post_init__(self) -> None:
        for name in ("max_upload", "max_pixels", "queue", "memory"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--max-memory" if name == "memory" else f"--{name.replace('_', '-')}"
                raise UsageError(f"{flag} must be at least 1, got {value}")


def default_memory(max_memory: int | None) -> int:
    """The admission budget: half of --max-memory (the other half is the networks'), or of the
    CPU's default budget where it is `auto` (decoded images live in RAM whatever the device)."""
    return (max_memory or memory.default_budget(torch.device("cpu"))) // 2


class Budget:
    """Bytes that admitted work may hold at once, shared by every thread. Admission never waits:
    it is granted or refused at once, so a refused request costs nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int, retry_after: Callable[[], int], held: int = 0) -> Reservation:
        """A reservation of `nbytes` for a request that holds `held` bytes already (its body);
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

    def release(self) -> None:
        with self._lock:
            nbytes, self.nbytes = self.nbytes, 0
        if nbytes:
            self._budget._give(nbytes)


@dataclass(frozen=True)
class Upload:
    """An image file as it came: its name (for messages only) and bytes."""

    name: str
    data: bytes

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Request:
    """One stylization, every field checked (RequestError 400 otherwise)."""

    content: Upload
    styles: tuple[Upload, ...]
    alpha: float = 1.0
    weights: tuple[float, ...] | None = None
    color_mode: color.ColorMode = "style"
    content_size: int = 512
    style_size: int = 512

    def __post_init__(self) -> None:
        if not self.styles:
            raise RequestError(400, "give at least one style image")
        if len(self.styles) > MAX_STYLES:
            raise RequestError(400, f"at most {MAX_STYLES} styles, got {len(self.styles)}")
        try:
            check_alpha(self.alpha)
            if self.weights is not None:
                if len(self.styles) == 1:
                    raise UsageError("weights mix several styles; give two or more")
                mixing.normalise_weights(self.weights, len(self.styles))
        except UsageError as exc:
            raise RequestError(400, str(exc)) from None
        for name in ("content_size", "style_size"):  # a size too large for the pixel limit is the engine's 413
            size = getattr(self, name)
            if size != 0 and size < images.MIN_SIDE:
                raise RequestError(400, f"{name} must be 0 (original size) or at least {images.MIN_SIDE}, got {size}")

    @cached_property
    def settings(self) -> jobs.Settings:
        """The request as the settings every command prepares images with."""
        return jobs.Settings(alpha=self.alpha, content_size=self.content_size, style_size=self.style_size,
                             color_mode=self.color_mode)

    @property
    def mix(self) -> tuple[float, ...]:
        return (1.0,) if len(self.styles) == 1 else mixing.normalise_weights(self.weights, len(self.styles))


def parse_weights(text: str | None) -> tuple[float, ...] | None:
    """"0.7,0.3" as numbers; RequestError 400 if it is not a list of numbers."""
    if text is None or not text.strip():
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise RequestError(400, f"weights: expected comma-separated numbers such as 0.7,0.3, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise RequestError(400, f"weights must be finite numbers, got {text!r}")
    return values


K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A least-recently-used cache bounded by entries and by a size the caller measures; request
    threads look up while the worker fills it, hence the lock."""

    def __init__(self, max_entries: int, max_size: int = 0, size_of: Callable[[V], int] = lambda v: 0) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._max_entries, self._max_size, self._size_of = max_entries, max_size, size_of
        self._size = 0  # kept as items come and go: summing on every put is quadratic in a big library
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            return None

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key in self._items:
                self._size -= self._size_of(self._items[key])
            self._items[key] = value
            self._size += self._size_of(value)
            self._items.move_to_end(key)
            while len(self._items) > 1 and (len(self._items) > self._max_entries or (
                    self._max_size and self._size > self._max_size)):
                _, dropped = self._items.popitem(last=False)
                self._size -= self._size_of(dropped)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)


def _content_bytes(content: EncodedContent) -> int:
    return content.image.nbytes + content.features.nbytes


@dataclass
class Work:
    """A request on its way through the engine: what was decoded for it, its share of the memory
    budget (given back, and the images dropped, as soon as the result is settled), its result."""

    request: Request
    future: Future[Image.Image]
    content: torch.Tensor | None  # decoded by the caller unless its features were cached
    styles: list[torch.Tensor | None]
    reservation: Reservation | None = None

    def __post_init__(self) -> None:
        self.future.add_done_callback(lambda _: self._finished())

    def _finished(self) -> None:
        self.content, self.styles = None, [None] * len(self.styles)
        if self.reservation is not None:
            self.reservation.release()


def _settle(future: Future[Image.Image], result: Image.Image | None = None,
            error: BaseException | None = None) -> None:
    """Deliver a result or an error; one nobody waits for any more (cancelled) is dropped."""
    try:
        if error is None:
            future.set_result(result)  # type: ignore[arg-type]
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


class Engine:
    """The model and its caches behind a bounded queue; `submit` from any thread."""

    def __init__(self, stylizer: Stylizer, limits: Limits = Limits()) -> None:
        self.stylizer = stylizer
        self.limits = limits
        self.budget = Budget(limits.memory or default_memory(stylizer.execution.max_memory))
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=limits.queue)
        self._closing = False
        self._closing_lock = threading.Lock()
        self._contents: Recent[tuple[str, int], EncodedContent] = Recent(64, CONTENT_CACHE_BYTES, _content_bytes)
        self._styles: Recent[tuple, FeatureStats] = Recent(STYLE_CACHE_ENTRIES)
        self._busy = 0
        self._seconds = 1.0  # a running average of one request's time, for Retry-After
        self.served = 0
        self._worker = threading.Thread(target=self._serve, name="adain-engine", daemon=True)
        self._worker.start()

    # --- any thread --------------------------------------------------------------------------

    def prepare(self, request: Request, held: int = 0) -> Work:
        """Decode what the caches do not hold (on the caller's thread, so the model never
        waits for it), once the memory it will hold is admitted (Busy otherwise, before any
        decoding; `held`: what the request holds already, its body); RequestError 413/415/400
        for images that cannot be used."""
        content_cached = (request.content.digest, request.content_size) in self._contents
        cached = [self._style_cached(request, s) for s in request.styles]
        need = 0 if content_cached else self._cost(request.content, request.content_size)
        need += sum(self._cost(s, request.style_size) for s, hit in zip(request.styles, cached, strict=True) if not hit)
        reservation = self.budget.reserve(need, self.retry_after, held)
        try:
            content = None if content_cached else self._decode_content(request)
            styles = [None if hit else self._decode_style(request, s) for s, hit in zip(request.styles, cached,
                                                                                        strict=True)]
        except BaseException:
            reservation.release()
            raise
        return Work(request, Future(), content, styles, reservation)

    def _cost(self, upload: Upload, size: int) -> int:
        """The bytes decoding `upload` at `size` holds, from its header; the pixel limit checked
        before and after resizing, so that nothing is allocated for an image that will be refused."""
        try:
            width, height = images.peek_size(upload.data, upload.name, self.limits.max_pixels)
        except ImageError as exc:
            raise as_request_error(exc) from None
        resized = width * height
        if size:
            if size * size > self.limits.max_pixels:  # in integers: a size may have hundreds of digits
                raise RequestError(413, f"{upload.name}: would be over {size}x{size} px after resizing, over the "
                                        f"limit of {self.limits.max_pixels:,} pixels")
            resized = math.prod(images.resized_size(width, height, size))
            if resized > self.limits.max_pixels:
                raise RequestError(413, f"{upload.name}: would be {resized:,} pixels after resizing, over the "
                                        f"limit of {self.limits.max_pixels:,} pixels")
        return DECODED_BYTES_PER_PIXEL * width * height + NETWORK_BYTES_PER_PIXEL * resized

    def _style_cached(self, request: Request, style: Upload) -> bool:
        # Under "coral" a style is recoloured towards each content: nothing to reuse across contents.
        return not color.recolours_style(request.color_mode) and (style.digest, request.style_size) in self._styles

    def _decode_content(self, request: Request) -> torch.Tensor:
        return self._decode(request.content, request.content_size, request.settings.prepare_content)

    def _decode_style(self, request: Request, style: Upload) -> torch.Tensor:
        return self._decode(style, request.style_size, request.settings.prepare_style)

    def _decode(self, upload: Upload, size: int, prepare: Callable[[Image.Image, str], torch.Tensor]) -> torch.Tensor:
        """Decoded (a JPEG to be shrunk at a reduced scale: Pillow's draft mode) and prepared as
        the commands prepare images."""
        try:
            image = images.load_bytes(upload.data, upload.name, self.limits.max_pixels, size or None)
            return prepare(image, upload.name)
        except ImageError as exc:
            raise as_request_error(exc) from None

    def submit(self, work: Work) -> Future[Image.Image]:
        """Queue prepared work; QueueFull when the queue is at its limit (the work is then let go)."""
        try:
            with self._closing_lock:  # so that close() cannot drain between the check and the put
                if self._closing:
                    raise RequestError(503, "the server is shutting down")
                self._queue.put_nowait(work)
        except queue.Full:
            error: RequestError = QueueFull(self.retry_after())
            _settle(work.future, error=error)
            raise error from None
        except RequestError as exc:
            _settle(work.future, error=exc)
            raise
        return work.future

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved on: a running average of one request's time."""
        return max(1, math.ceil(self._seconds * (self._queue.qsize() + 1)))

    @property
    def queue_length(self) -> int:
        return self._queue.qsize() + self._busy

    def cache_stats(self) -> dict[str, int]:
        return {"contents": len(self._contents), "styles": len(self._styles), "content_hits": self._contents.hits,
                "style_hits": self._styles.hits}

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (for `timeout` seconds at most), then stop the worker; work
        still queued after that is answered 503. Returns whatever state the worker is in."""
        with self._closing_lock:
            self._closing = True
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # a queue still full then: answered below
            self._queue.put(None, timeout=timeout)
        self._worker.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None and left.future.set_running_or_notify_cancel():
                _settle(left.future, error=RequestError(503, "the server is shutting down"))
        with contextlib.suppress(queue.Full):  # a worker still busy stops when it is done
            self._queue.put_nowait(None)

    # --- the worker thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if not batch:
                continue
            self._busy = len(batch)
            began = time.perf_counter()
            try:
                self._run(batch)
            except BaseException as exc:  # the worker outlives any one batch, whatever it raised
                for work in batch:
                    _settle(work.future, error=as_request_error(exc) if isinstance(exc, Exception) else
                            RequestError(500, f"stylization failed ({type(exc).__name__})"))
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - began) / len(batch)
            self.served += len(batch)
            self._busy = 0

    def _next_batch(self) -> tuple[list[Work], bool]:
        """Wait for one piece of work, then take what else is queued, up to the batch size; work
        cancelled while it waited is skipped. Also whether the stop sentinel came."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self.stylizer.execution.batch_size:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return self._started(batch), True
            batch.append(more)
        return self._started(batch), False

    @staticmethod
    def _started(batch: list[Work]) -> list[Work]:
        # From here on a future cannot be cancelled, so settling it cannot fail.
        return [work for work in batch if work.future.set_running_or_notify_cancel()]

    def _run(self, batch: list[Work]) -> None:
        ready: list[tuple[Work, EncodedContent, FeatureStats]] = []
        for work in batch:
            try:
                content = self._content(work)
                ready.append((work, content, self._mixed_style(work, content)))
            except Exception as exc:
                _settle(work.future, error=as_request_error(exc))
        groups: dict[tuple, list[tuple[Work, EncodedContent, FeatureStats]]] = {}
        for item in ready:
            groups.setdefault((item[1].size, item[0].request.color_mode), []).append(item)
        for (_, color_mode), group in groups.items():
            works, contents, stats = zip(*group, strict=True)
            try:
                out = self.stylizer.render_batch(list(contents), list(stats), [w.request.alpha for w in works],
                                                 color_mode)
                pictures = [images.to_image(out[i:i + 1]) for i in range(len(works))]
            except Exception as exc:
                for work in works:
                    _settle(work.future, error=as_request_error(exc))
                continue
            for work, picture in zip(works, pictures, strict=True):
                _settle(work.future, picture)

    def _content(self, work: Work) -> EncodedContent:
        request = work.request
        key = (request.content.digest, request.content_size)
        cached = self._contents.get(key)
        if cached is not None:
            return cached
        image = work.content if work.content is not None else self._decode_content(request)
        [encoded] = self.stylizer.encode_contents(image)
        self._contents.put(key, encoded)
        return encoded

    def _mixed_style(self, work: Work, content: EncodedContent) -> FeatureStats:
        request = work.request
        stats = [self._style(request, upload, image, content) for upload, image in zip(request.styles, work.styles,
                                                                                           strict=True)]
        return stats[0] if len(stats) == 1 else mixing.mix_stats(stats, request.mix)

    def _style(self, request: Request, upload: Upload, image: torch.Tensor | None,
               content: EncodedContent) -> FeatureStats:
        per_content = color.recolours_style(request.color_mode)
        key = (upload.digest, request.style_size)
        cached = None if per_content else self._styles.get(key)
        if cached is not None:
            return cached
        image = image if image is not None else self._decode_style(request, upload)
        stats = self.stylizer.style_stats(image, content, request.color_mode)
        if not per_content:
            self._styles.put(key, stats)
        return stats


def as_request_error(exc: Exception) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ImageTooLarge):
        return RequestError(413, str(exc))
    if isinstance(exc, NotAnImage):
        return RequestError(415, str(exc))
    if isinstance(exc, (ImageError, UsageError)):
        return RequestError(400, str(exc))
    return RequestError(500, f"stylization failed ({jobs.failure_reason(exc)})")
