"""`adain serve`'s engine: the networks loaded once, recent work cached, requests queued and batched.

    request (image bytes + options, checked)  --submit-->  bounded queue  --the runner's thread-->
        content features: cached by (bytes' sha256, size, work size)  stage 1, skipped when cached
        style statistics: the style cache, by (bytes' sha256, size)   stage 2, skipped when cached
        render_batch of the requests that arrived together            stage 3, one decoder call
    --> the request's future: an 8-bit image (a live frame's: its encoded bytes, live.py)

So a change of alpha or mixing weights alone costs one decoder pass. The queue (turns.py:
requests in order, and a lane of one frame per live stream, taken in turns) is a source of
the one runner (runner.py), whose thread owns the model (a GPU runs one thing at a time
anyway): work that waits while it works is stylized together, `Execution.batch_size` at a
time, when the contents have one size. Nothing here knows HTTP (web.py does) or WebSockets
(live.py), and nothing touches the disk.

Memory is bounded in bytes, not only in requests: work is admitted against a `Budget`
before anything is decoded (its images' sizes come from their headers), and holds its share
until it is done, so that work decoding and work queued together stay within it; beyond
it the answer is "busy" at once. No request's fate stops the worker: work cancelled while
queued is skipped, a result nobody waits for any more is dropped, and `close` returns.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from . import color, images, jobs, memory, mixing
from .errors import AdainError, QueueFull, RequestError, UsageError
from .lru import Recent
from .model import FeatureStats
from .runner import Budget, Failed, Render, Reservation, Runner
from .style_cache import StyleCache
from .stylizer import EncodedContent, Stylizer
from .turns import Lane, Turns

_log = logging.getLogger("adain_cli.serve")

# The formats an answer may come in (a request's `format`, a stream's), by name: Pillow's format, as outputs.
FORMATS = {name: images.FORMATS[f".{name}"] for name in ("png", "jpeg", "jpg", "webp")}
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
    work_size: int = 0

    def __post_init__(self) -> None:
        """The checks every command makes (UsageError: 400); a size too large for the pixel
        limit is the engine's 413."""
        if not self.styles:
            raise RequestError(400, "give at least one style image")
        if len(self.styles) > MAX_STYLES:
            raise RequestError(400, f"at most {MAX_STYLES} styles, got {len(self.styles)}")
        if self.weights is not None:
            if len(self.styles) == 1:
                raise UsageError("weights mix several styles; give two or more")
            mixing.normalise_weights(self.weights, len(self.styles))
        self.settings  # noqa: B018 (its checks are the commands' own)

    @property
    def settings(self) -> jobs.Settings:
        """The request as the settings every command prepares images with."""
        return jobs.Settings(alpha=self.alpha, content_size=self.content_size, style_size=self.style_size,
                             color_mode=self.color_mode, work_size=self.work_size)

    @property
    def mix(self) -> tuple[float, ...]:
        return (1.0,) if len(self.styles) == 1 else mixing.normalise_weights(self.weights, len(self.styles))


def _content_bytes(content: EncodedContent) -> int:
    return content.image.nbytes + content.features.nbytes + (0 if content.working is None else content.working.nbytes)


@dataclass
class Work:
    """A request on its way through the engine: what was decoded for it, its share of the memory
    budget (given back, and the images dropped, as soon as the result is settled), its result."""

    request: Request
    future: Future[Any]  # a picture for a request, encoded bytes for a live frame
    content: torch.Tensor | None  # 8-bit, decoded by the caller unless its features were cached
    styles: list[torch.Tensor | None]
    reservation: Reservation | None = None

    def __post_init__(self) -> None:
        self.future.add_done_callback(lambda _: self._finished())

    def _finished(self) -> None:
        self.content, self.styles = None, [None] * len(self.styles)
        if self.reservation is not None:
            self.reservation.release()


def _settle(future: Future[Any], result: Any = None,
            error: BaseException | None = None) -> None:
    """Deliver a result or an error; one nobody waits for any more (cancelled) is dropped."""
    try:
        if error is None:
            future.set_result(result)
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
        self._queue: Turns[Job] = Turns(limits.queue)
        self._closing = False
        self._closing_lock = threading.Lock()
        self._contents: Recent[tuple[str, int, int], EncodedContent] = Recent(64, CONTENT_CACHE_BYTES, _content_bytes)
        # Statistics only: pictures kept for --preserve-color would be memory outside the Budget,
        # and a failure (out of memory) must not outlive its request.
        self._styles = StyleCache(stylizer, entries=STYLE_CACHE_ENTRIES, keep_images=False, keep_failures=False)
        # Torch's parallel work stays on the runner's thread, beside the network, not competing
        # with it from other threads (measured alone: torch conversions on a second thread cost a
        # bf16 network a third, Pillow's work 2%): uploads are decoded to 8 bits and converted
        # there, and results come off as 8 bits, as video's do.
        self._runner = Runner(stylizer, workers=1, to_host=lambda out: images.to_8bit(out).cpu())
        self._begun: set[Job] = set()  # work begun and not yet answered
        self._seconds = 1.0  # a running average of one request's time, for Retry-After
        self._batch_began: float | None = None
        self.served = 0
        self._worker = threading.Thread(target=self._serve, name="adain-engine", daemon=True)
        self._worker.start()

    # --- any thread --------------------------------------------------------------------------

    def prepare(self, request: Request, held: int = 0) -> Work:
        """Decode what the caches do not hold (on the caller's thread, so the model never
        waits for it), once the memory it will hold is admitted (Busy otherwise, before any
        decoding; `held`: what the request holds already, its body); RequestError 413/415/400
        for images that cannot be used."""
        content_cached = _content_key(request) in self._contents
        cached = [self._styles.holds(_style_key(request, s), request.color_mode) for s in request.styles]
        need = 0 if content_cached else self._cost(request.content, request.content_size, request.settings)
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

    def check_painting(self, upload: Upload) -> tuple[int, int]:
        """A painting decoded once, within the memory budget, so that one that cannot be used is
        refused when it is given rather than at every frame; its width and height."""
        reservation = self.budget.reserve(self._cost(upload, 0), self.retry_after)
        try:
            return images.load_bytes(upload.data, upload.name, self.limits.max_pixels).size
        finally:
            reservation.release()

    def _cost(self, upload: Upload, size: int, settings: jobs.Settings | None = None) -> int:
        """The bytes decoding `upload` at `size` holds, from its header; the pixel limit checked
        before and after resizing, so that nothing is allocated for an image that will be refused;
        a content (`settings` given) smaller than the working size refused (400)."""
        width, height = images.peek_size(upload.data, upload.name, self.limits.max_pixels)
        if settings is not None:
            settings.check_work_size(width, height, upload.name)
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

    def _decode_content(self, request: Request) -> torch.Tensor:
        """The content's 8-bit pixels as the network will take them (converted by `Job.load`)."""
        return self._decode(request.content, request.content_size, request.settings.content_pixels)

    def _decode_style(self, request: Request, style: Upload) -> torch.Tensor:
        return self._decode(style, request.style_size, request.settings.prepare_style)

    def _decode(self, upload: Upload, size: int, prepare: Callable[[Image.Image, str], torch.Tensor]) -> torch.Tensor:
        """Decoded (a JPEG to be shrunk at a reduced scale: Pillow's draft mode) and prepared as
        the commands prepare images."""
        image = images.load_bytes(upload.data, upload.name, self.limits.max_pixels, size or None)
        return prepare(image, upload.name)

    def submit(self, work: Work) -> Future[Any]:
        """Queue prepared work; QueueFull when the queue is at its limit (the work is then let go)."""
        try:
            with self._closing_lock:  # so that close() cannot drain between the check and the put
                if self._closing:
                    raise RequestError(503, "the server is shutting down")
                self._queue.put_nowait(Job(work, self))
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

    @property
    def _busy(self) -> int:
        return len(self._begun)

    def cache_stats(self) -> dict[str, int]:
        return {"contents": len(self._contents), "styles": self._styles.entries, "content_hits": self._contents.hits,
                "style_hits": self._styles.hits}

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (for `timeout` seconds at most), then stop the worker; work
        still queued after that is answered 503, and live streams' waiting frames at once.
        Returns whatever state the worker is in."""
        with self._closing_lock:
            self._closing = True
        for job in self._queue.end():
            _settle(job.work.future, error=RequestError(503, "the server is shutting down"))
        self._worker.join(timeout)
        for left in self._queue.drain():  # the worker did not get to them in time
            if left.work.future.set_running_or_notify_cancel():
                _settle(left.work.future, error=RequestError(503, "the server is shutting down"))

    # --- live streams (live.py): a lane each, newest frame wins ----------------------------------

    def open_lane(self) -> Lane[Job]:
        return self._queue.open_lane()

    def offer(self, lane: Lane[Job], job: Job) -> bool:
        """A stream's frame waits in its lane, replacing (and cancelling) the one that waited:
        True if it did. One that cannot wait (shutting down) is answered 503."""
        replaced = self._queue.offer(lane, job)
        if replaced is job:
            _settle(job.work.future, error=RequestError(503, "the server is shutting down"))
        elif replaced is not None:
            replaced.work.future.cancel()
        return replaced is not None and replaced is not job

    def close_lane(self, lane: Lane[Job]) -> None:
        left = self._queue.close_lane(lane)
        if left is not None:
            left.work.future.cancel()

    # --- the runner's thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                self._runner.serve(self._queue, self, self._batch_done)  # returns when close() says so
                return
            except BaseException as exc:  # the runner fails items alone; this is anything else
                _log.error("adain serve: the worker restarts after %s", jobs.failure_reason(exc))
                for job in list(self._begun):
                    self.done(job, RequestError(500, f"stylization failed ({type(exc).__name__})"))
                if self._closing:  # close() was asked meanwhile: the queue gives nothing more
                    return
                time.sleep(0.1)  # a failure that repeats must not spin

    def _batch_done(self, count: int) -> None:
        if self._batch_began is not None:
            seconds = (time.perf_counter() - self._batch_began) / count
            self._seconds = 0.8 * self._seconds + 0.2 * seconds
        self._batch_began = None

    def finish(self, job: Job, image: torch.Tensor) -> Any:  # the runner's sink, on its worker
        return job.finish(image)

    def done(self, job: Job, result: Any) -> None:
        if isinstance(result, BaseException):
            _settle(job.work.future, error=as_request_error(result))
        else:
            _settle(job.work.future, result)
        self.served += 1
        self._begun.discard(job)


class Job:
    """Prepared work as the runner takes it (an `Item`): its content decoded or cached, its
    styles' statistics from the style cache, mixed."""

    def __init__(self, work: Work, engine: Engine) -> None:
        self.work, self._engine = work, engine
        request = work.request
        self.color_mode = request.color_mode
        self.work_size = request.work_size
        self._key = _content_key(request)
        self._cached: EncodedContent | None = None

    def begin(self) -> bool:
        # From here on the future cannot be cancelled, so settling it cannot fail.
        if not self.work.future.set_running_or_notify_cancel():
            return False
        if self._engine._batch_began is None:
            self._engine._batch_began = time.perf_counter()
        self._engine._begun.add(self)
        return True

    def cached(self) -> EncodedContent | None:
        if self.work.content is None and self._cached is None:  # kept: an eviction meanwhile changes nothing
            self._cached = self._engine._contents.get(self._key)
        return self._cached

    def load(self) -> torch.Tensor:
        content = self.work.content
        return images.from_8bit(content if content is not None else self._engine._decode_content(self.work.request))

    def renders(self, content: EncodedContent) -> list[Render | Failed]:
        if self._cached is None:
            self._engine._contents.put(self._key, content)
        return [Render(self, content, self.style_for(content), self.work.request.alpha)]

    def style_for(self, content: EncodedContent) -> FeatureStats:
        """The styles' statistics from the style cache (for `content`, where the colour mode
        recolours them), mixed by the request's weights."""
        request = self.work.request
        stats = [self._engine._styles.stats(_style_key(request, upload), self._style_loader(upload, image), content,
                                            request.color_mode)
                 for upload, image in zip(request.styles, self.work.styles, strict=True)]
        return stats[0] if len(stats) == 1 else mixing.mix_stats(stats, request.mix)

    def finish(self, image: torch.Tensor) -> Any:
        """On a finisher: the result as the one who waits takes it (a picture, for the route to encode)."""
        return images.pixels_to_image(image)

    def _style_loader(self, upload: Upload, image: torch.Tensor | None) -> Callable[[], torch.Tensor]:
        # Decoded when prepared unless the cache held it then; decoded here if it has gone since.
        return (lambda: image) if image is not None else lambda: self._engine._decode_style(self.work.request, upload)

    def failed(self, error: BaseException) -> list[Failed]:
        return [Failed(self, error)]


def _content_key(request: Request) -> tuple[str, int, int]:
    return request.content.digest, request.content_size, request.work_size


def _style_key(request: Request, style: Upload) -> tuple[str, int]:
    return style.digest, request.style_size


def as_request_error(exc: BaseException) -> RequestError:
    """Any failure as the answer a client gets: the AdainError family by its HTTP status, anything
    else a 500 that names what went wrong in one line."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, AdainError):
        return RequestError(exc.http_status, str(exc))
    return RequestError(500, f"stylization failed ({jobs.failure_reason(exc)})")
