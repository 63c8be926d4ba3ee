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
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar

import torch
from PIL import Image

from . import color, images, jobs, mixing
from .errors import AdainError, ImageError, ImageTooLarge, NotAnImage, UsageError
from .model import FeatureStats
from .stylizer import EncodedContent, Stylizer, check_alpha

DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024  # bytes per request
DEFAULT_MAX_PIXELS = 16_000_000  # per image, decoded and after resizing
DEFAULT_QUEUE = 16
MAX_STYLES = 8
# Recent contents kept with their features: a 512 px content holds about 2.6 MB of them.
CONTENT_CACHE_BYTES = 512 * 1024 * 1024
STYLE_CACHE_ENTRIES = 256


class RequestError(AdainError):
    """A request that cannot be served, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class QueueFull(RequestError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(503, f"busy: the queue is full, try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        for name in ("max_upload", "max_pixels", "queue"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


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


class _Recent(Generic[K, V]):
    """A least-recently-used cache bounded by entries and by a size the caller measures; request
    threads look up while the worker fills it, hence the lock."""

    def __init__(self, max_entries: int, max_size: int = 0, size_of: Callable[[V], int] = lambda v: 0) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._max_entries, self._max_size, self._size_of = max_entries, max_size, size_of
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
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > 1 and (len(self._items) > self._max_entries or (
                    self._max_size and sum(self._size_of(v) for v in self._items.values()) > self._max_size)):
                self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)


def _content_bytes(content: EncodedContent) -> int:
    return content.image.nbytes + content.features.nbytes


@dataclass
class Work:
    """A request on its way through the engine: what was decoded for it, and its result."""

    request: Request
    future: Future[Image.Image]
    content: torch.Tensor | None  # decoded by the caller unless its features were cached
    styles: list[torch.Tensor | None]


class Engine:
    """The model and its caches behind a bounded queue; `submit` from any thread."""

    def __init__(self, stylizer: Stylizer, limits: Limits = Limits()) -> None:
        self.stylizer = stylizer
        self.limits = limits
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=limits.queue)
        self._contents: _Recent[tuple[str, int], EncodedContent] = _Recent(64, CONTENT_CACHE_BYTES, _content_bytes)
        self._styles: _Recent[tuple, FeatureStats] = _Recent(STYLE_CACHE_ENTRIES)
        self._busy = 0
        self._seconds = 1.0  # a running average of one request's time, for Retry-After
        self.served = 0
        self._worker = threading.Thread(target=self._serve, name="adain-engine", daemon=True)
        self._worker.start()

    # --- any thread --------------------------------------------------------------------------

    def prepare(self, request: Request) -> Work:
        """Decode what the caches do not hold (on the caller's thread, so the model never
        waits for it); RequestError 413/415/400 for images that cannot be used."""
        content = None
        if (request.content.digest, request.content_size) not in self._contents:
            content = self._decode_content(request)
        styles = [None if self._style_cached(request, s) else self._decode_style(request, s) for s in request.styles]
        return Work(request, Future(), content, styles)

    def _style_cached(self, request: Request, style: Upload) -> bool:
        # Under "coral" a style is recoloured towards each content: nothing to reuse across contents.
        return not color.recolours_style(request.color_mode) and (style.digest, request.style_size) in self._styles

    def _decode_content(self, request: Request) -> torch.Tensor:
        return self._decode(request.content, request.content_size, request.settings.prepare_content)

    def _decode_style(self, request: Request, style: Upload) -> torch.Tensor:
        return self._decode(style, request.style_size, request.settings.prepare_style)

    def _decode(self, upload: Upload, size: int, prepare: Callable[[Image.Image, str], torch.Tensor]) -> torch.Tensor:
        """Decoded, checked against the pixel limit before resizing (so that a huge size allocates
        nothing), and prepared as the commands prepare images."""
        try:
            image = images.load_bytes(upload.data, upload.name, self.limits.max_pixels)
            if size:
                scale = size / min(image.size)
                width, height = round(image.width * scale), round(image.height * scale)
                if width * height > self.limits.max_pixels:
                    raise RequestError(413, f"{upload.name}: would be {width}x{height} after resizing, over the "
                                            f"limit of {self.limits.max_pixels:,} pixels")
            return prepare(image, upload.name)
        except ImageError as exc:
            raise _as_request_error(exc) from None

    def submit(self, work: Work) -> Future[Image.Image]:
        """Queue prepared work; QueueFull when the queue is at its limit."""
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            raise QueueFull(max(1, math.ceil(self._seconds * (self._queue.qsize() + 1)))) from None
        return work.future

    @property
    def queue_length(self) -> int:
        return self._queue.qsize() + self._busy

    def cache_stats(self) -> dict[str, int]:
        return {"contents": len(self._contents), "styles": len(self._styles), "content_hits": self._contents.hits,
                "style_hits": self._styles.hits}

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        self._queue.put(None)
        self._worker.join(timeout)

    # --- the worker thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.stylizer.execution.batch_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._busy = len(batch)
            began = time.perf_counter()
            self._run(batch)
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - began) / len(batch)
            self.served += len(batch)
            self._busy = 0

    def _run(self, batch: list[Work]) -> None:
        ready: list[tuple[Work, EncodedContent, FeatureStats]] = []
        for work in batch:
            try:
                content = self._content(work)
                ready.append((work, content, self._mixed_style(work, content)))
            except Exception as exc:
                work.future.set_exception(_as_request_error(exc))
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
                    work.future.set_exception(_as_request_error(exc))
                continue
            for work, picture in zip(works, pictures, strict=True):
                work.future.set_result(picture)

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


def _as_request_error(exc: Exception) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ImageTooLarge):
        return RequestError(413, str(exc))
    if isinstance(exc, NotAnImage):
        return RequestError(415, str(exc))
    if isinstance(exc, (ImageError, UsageError)):
        return RequestError(400, str(exc))
    return RequestError(500, f"stylization failed ({jobs.failure_reason(exc)})")
