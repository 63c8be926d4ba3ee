"""Live streams: camera frames in over a WebSocket, stylized frames out, as fast as the model goes.

    binary message (a JPEG or WebP frame)  --Stream.frame: size, rate and settings checked-->
        Engine.prepare: admitted against the memory Budget and decoded, off the event loop
        --> the stream's lane (turns.py): one frame waits; a newer one replaces it (dropped)
        --> the one runner, in turns with the other streams and the requests: batched by size,
            the stream's steady content statistics (steady.py), styles from the style cache
        --> encoded in the stream's format on a finisher --> one binary message, in order

The protocol (the README's "Live" section): text messages are JSON objects with a "type"
(the client's "settings", "style" and "stats"; the server's "ready", "settings", "style",
"stats" and "error"), binary messages are frames both ways. A bad message or frame is
answered with an error and the stream goes on; only ERRORS_IN_A_ROW of them close it.
Everything a stream holds is bounded: one frame waiting, one in work, UNSENT_FRAMES answers
and OUTBOX messages unsent, and its own paintings (counted against the engine's memory Budget).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from starlette.responses import JSONResponse

from . import color, images, jobs, mixing
from .errors import AdainError, RequestError, UsageError
from .runner import Failed, Render, Reservation
from .serve import FORMATS, MAX_STYLES, Engine, Job, Request, Upload, Work, as_request_error
from .steady import DEFAULT_SMOOTH, Steady
from .stylizer import EncodedContent

DEFAULT_CONTENT_SIZE = 384
DEFAULT_MAX_FRAME = 8 * 1024 * 1024  # bytes; a 4K camera frame as JPEG is 1-3 MB
DEFAULT_MAX_FPS = 30.0
DEFAULT_IDLE = 60.0  # s without a message from the client
DEFAULT_MAX_STREAMS = 4
ERRORS_IN_A_ROW = 20  # refused messages in a row that close a stream: the client is not speaking the protocol
STATS_EVERY = 0.5  # s between stats messages while frames flow
RECENT = 100  # answers the latency percentiles and the rate are taken over
FPS_WINDOW = 10.0  # s: the frame rate is counted over the answers of at most this long ago ...
FPS_ANSWERS = 10  # ... and at most this many (a slow CPU's 1 frame in 2 s still shows)
OUTBOX = 8  # messages waiting to be sent; beyond, the client is not reading and text is dropped
SMALL_TEXT = 64 * 1024  # bytes: a text message larger than this must be a flat object (a painting's upload)
TEXT_RATE, STYLE_RATE = 20.0, 1.0  # text messages, and paintings (each decoded once), a second per stream
FRAME_PIXELS = 1280 * 720  # pixels a second a stream may decode, per frame of --max-fps (a 720p camera's)
UNSENT_FRAMES = 2  # answers waiting to be sent (one being sent, the next): a newer one beyond is dropped


@dataclass(frozen=True)
class StreamLimits:
    """What one stream may send, and how many there may be."""

    max_frame: int = DEFAULT_MAX_FRAME  # bytes of one frame or painting
    max_fps: float = DEFAULT_MAX_FPS  # frames a second a stream may send; more are counted and left
    idle: float = DEFAULT_IDLE
    max_streams: int = DEFAULT_MAX_STREAMS

    def __post_init__(self) -> None:
        if self.max_frame < 1:
            raise UsageError(f"the largest live frame must be at least 1 byte, got {self.max_frame}")
        for flag, value in (("--max-fps", self.max_fps), ("--stream-idle", self.idle)):
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{flag} must be positive, got {value}")
        if self.max_streams < 1:
            raise UsageError(f"--max-streams must be at least 1, got {self.max_streams}")

    @property
    def max_message(self) -> int:
        """The transport's own bound on one message: a painting in base64 (4/3 of its bytes)
        and its JSON fit; a message between `max_frame` and this gets an error, not a closed socket."""
        return 2 * self.max_frame + 4096


@dataclass(frozen=True)
class LiveSettings:
    """How a stream's frames are stylized: the fields of POST /v1/stylize that apply, and `smooth`."""

    style_name: tuple[str, ...] = ()
    alpha: float = 1.0
    weights: tuple[float, ...] | None = None
    preserve_color: bool = False
    luminance_only: bool = False
    content_size: int = DEFAULT_CONTENT_SIZE
    style_size: int = 512
    work_size: int = 0  # the network at this shorter side, guided up to content_size (guided.py); 0: off
    format: str = "jpeg"
    smooth: float = DEFAULT_SMOOTH  # s, the time constant of steady statistics; 0: off

    def changed(self, message: dict[str, Any]) -> LiveSettings:
        """These settings with a settings message's fields (the others kept); RequestError 400
        naming a bad field, these settings unchanged. A new style_name without weights mixes
        equally."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(message) - names - {"type", "id"})
        if unknown:
            raise RequestError(400, f"unknown settings field {_shown(repr(unknown[0]))} "
                                    f"(known: {', '.join(sorted(names))})")
        values: dict[str, Any] = {}
        if "style_name" in message:
            values["style_name"] = _names(message["style_name"])
            values["weights"] = None
        if "weights" in message:
            values["weights"] = _weights(message["weights"])
        for name in ("alpha", "smooth"):
            if name in message:
                values[name] = _number(message[name], name)
        for name in ("preserve_color", "luminance_only"):
            if name in message:
                values[name] = _typed(message[name], bool, name, "true or false")
        for name in ("content_size", "style_size", "work_size"):
            if name in message:
                values[name] = _typed(message[name], int, name, "a whole number of pixels")
        if "format" in message:
            values["format"] = _typed(message["format"], str, "format", "jpeg, webp or png").lower()
        settings = replace(self, **values)
        settings._check()
        return settings

    def _check(self) -> None:
        if self.format not in FORMATS:
            raise RequestError(400, f"format must be jpeg, webp or png, got {self.format!r}")
        if not (math.isfinite(self.smooth) and self.smooth >= 0):
            raise RequestError(400, f"smooth must be 0 (off) or a time in seconds, got {self.smooth}")
        if len(self.style_name) > MAX_STYLES:
            raise RequestError(400, f"at most {MAX_STYLES} styles, got {len(self.style_name)}")
        if self.weights is not None:
            if len(self.style_name) < 2:
                raise RequestError(400, "weights mix several styles; give two or more in style_name")
            mixing.normalise_weights(self.weights, len(self.style_name))
        jobs.Settings(alpha=self.alpha, content_size=self.content_size, style_size=self.style_size,
                      color_mode=self.color_mode, work_size=self.work_size)

    @property
    def color_mode(self) -> color.ColorMode:
        return color.mode_from_flags(self.preserve_color, self.luminance_only, ("preserve_color", "luminance_only"))

    def as_message(self) -> dict[str, Any]:
        message = asdict(self)
        message["style_name"] = list(self.style_name)
        message["weights"] = None if self.weights is None else list(self.weights)
        return message


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(name, str) and 0 < len(name) <= 200 for name in value):
        raise RequestError(400, "style_name must be a painting's name (1 to 200 characters) or a list of them")
    return tuple(value)


def _weights(value: Any) -> tuple[float, ...] | None:
    if value is None or isinstance(value, str):
        return mixing.parse_weights(value)
    if not isinstance(value, list):
        raise RequestError(400, "weights must be a list of numbers, such as [0.7, 0.3]")
    return tuple(_number(weight, "weights") for weight in value)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"{name} must be a number, got {json.dumps(value)[:40]}")
    return float(value)


def _typed(value: Any, kind: type, name: str, expected: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(400, f"{name} must be {expected}, got {json.dumps(value)[:40]}")
    return value


class _Bucket:
    """A token bucket: `rate` a second, in bursts of `capacity` (default: a quarter second's
    worth, two at least)."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate, self.capacity = rate, capacity if capacity is not None else max(2.0, rate / 4)
        self._tokens, self._time = self.capacity, time.perf_counter()

    def take(self, amount: float = 1.0) -> bool:
        now = time.perf_counter()
        self._tokens = min(self.capacity, self._tokens + (now - self._time) * self.rate)
        self._time = now
        if self._tokens < min(amount, self.capacity):  # one larger than a burst passes a full bucket
            return False
        self._tokens -= amount
        return True


@dataclass
class Counts:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0  # replaced by a newer frame while waiting, or not read by the client
    limited: int = 0  # over the stream's rate, in frames or pixels a second
    failed: int = 0  # refused or failed, each answered with an error


class Stream:
    """One live connection: its settings and paintings, its lane in the engine, its steady
    statistics, its counts. Its methods run on the event loop; frames' work runs elsewhere."""

    def __init__(self, engine: Engine, find_style: Callable[[str], Upload], limits: StreamLimits) -> None:
        self._engine, self._find_style, self.limits = engine, find_style, limits
        self._loop = asyncio.get_running_loop()
        self.settings = LiveSettings()
        self._own: dict[str, Upload] = {}  # paintings the client sent, by the name it gave
        self._styles: tuple[Upload, ...] = ()  # what settings.style_name names
        self._steady = Steady(self.settings.smooth)
        self._lane = engine.open_lane()
        self._held = engine.budget.reserve(0, engine.retry_after)  # the paintings' bytes
        self.counts = Counts()
        self.errors_in_a_row = 0
        self._latencies: deque[float] = deque(maxlen=RECENT)
        self._answered_at: deque[float] = deque(maxlen=RECENT)
        self._frames = _Bucket(limits.max_fps)
        # Decoding is the cost a client controls: bounded in pixels too (a small PNG can decode huge).
        self._pixels = _Bucket(limits.max_fps * FRAME_PIXELS, capacity=max(2, limits.max_fps / 4) * FRAME_PIXELS)
        self._texts = _Bucket(TEXT_RATE, capacity=2 * TEXT_RATE)
        self._paintings = _Bucket(STYLE_RATE, capacity=MAX_STYLES)
        self._last_stats = 0.0
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue(OUTBOX)
        self._unsent = 0  # frames in the outbox
        self._closed = False  # the client has gone: work finishing after that holds nothing

    # --- messages in ----------------------------------------------------------------------------

    async def frame(self, data: bytes) -> None:
        """A camera frame: checked, decoded and put in the stream's lane (newest wins)."""
        arrived = time.perf_counter()
        self.counts.frames_in += 1
        index = self.counts.frames_in
        if len(data) > self.limits.max_frame:
            self._refused(RequestError(413, f"frame {index}: {len(data):,} bytes, over the limit of "
                                            f"{self.limits.max_frame:,}"), index)
            return
        if not self._frames.take():
            self._limited()
            return
        if not self._styles:  # a client's slip, not a broken protocol: not counted towards closing it
            self._refused(RequestError(400, "choose a painting first: send settings with style_name"), index,
                          counts=False)
            return
        settings = self.settings
        try:
            request = Request(Upload(f"frame {index}", data), self._styles, settings.alpha, settings.weights,
                              settings.color_mode, settings.content_size, settings.style_size, settings.work_size)
            work = await _off_loop(self._admit, request)
        except AdainError as exc:
            self._refused(exc, index)
            return
        if work is None:
            self._limited()
            return
        job = _LiveFrame(work, self._engine, self._steady, FORMATS[settings.format], arrived)
        work.future.add_done_callback(lambda _: self._on_loop(self._answered, job, index))
        if self._engine.offer(self._lane, job):
            self.counts.dropped += 1  # the frame that waited: a newer one wins
            self._maybe_stats()
        self.errors_in_a_row = 0

    def _admit(self, request: Request) -> Work | None:
        """Off the event loop: the frame's pixels from its header against the stream's pixel rate
        (None: over it), then admitted and decoded by the engine."""
        width, height = images.peek_size(request.content.data, request.content.name, self._engine.limits.max_pixels)
        if not self._pixels.take(width * height):
            return None
        return self._engine.prepare(request)

    def _limited(self) -> None:
        self.counts.limited += 1
        self._maybe_stats()

    async def text(self, raw: str) -> None:
        """A JSON message: settings, a painting of the client's own, or a request for stats. Its
        answer (or error) carries the message's "id", if it has one, so a client can match them."""
        if not self._texts.take():  # before parsing: parsing is the cost
            self._refused(RequestError(429, "too many messages a second; slow down"))
            return
        try:
            message = _parsed(raw)
        except RequestError as exc:
            self._refused(exc)
            return
        kind = message.get("type") if isinstance(message, dict) else None
        handlers = {"settings": self._settings, "style": self._style, "stats": self._stats_now}
        asked = {"id": message["id"]} if isinstance(message, dict) and _usable_id(message.get("id")) else {}
        if kind not in handlers:
            self._refused(RequestError(400, f"unknown message type {_shown(json.dumps(kind))}: send settings, "
                                            "style or stats"), **asked)
            return
        if kind == "style" and not self._paintings.take():
            self._refused(RequestError(429, "too many paintings a second; slow down"), **asked)
            return
        try:
            self._say({**await handlers[kind](message), **asked})
        except AdainError as exc:
            self._refused(exc, **asked)
            return
        self.errors_in_a_row = 0

    async def _settings(self, message: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings.changed(message)
        styles = await asyncio.to_thread(self._resolve, settings.style_name)
        self._hold(styles, self._own)
        if _restarts_steady(self.settings, settings):
            self._steady = Steady(settings.smooth)
        self.settings, self._styles = settings, styles
        return {"type": "settings", **settings.as_message()}

    def _resolve(self, names: tuple[str, ...]) -> tuple[Upload, ...]:
        """Paintings by name: the client's own first, then the server's library (read from disk)."""
        return tuple(self._own[name] if name in self._own else self._find_style(name) for name in names)

    async def _style(self, message: dict[str, Any]) -> dict[str, Any]:
        name, data = message.get("name"), message.get("data")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise RequestError(400, "a style message needs a name (1 to 200 characters)")
        if not isinstance(data, str):
            raise RequestError(400, f"{name}: a style message needs data, the image file in base64")
        if len(data) > 4 * math.ceil(self.limits.max_frame / 3):
            raise RequestError(413, f"{name}: over the limit of {self.limits.max_frame:,} bytes")
        if name not in self._own and len(self._own) >= MAX_STYLES:
            raise RequestError(400, f"{name}: at most {MAX_STYLES} paintings of your own in one stream")
        upload = await _off_loop(_painting, name, data)
        width, height = await _off_loop(self._engine.check_painting, upload)
        own = {**self._own, name: upload}
        # A painting in use that is sent again under its name is used anew from the next frame.
        styles = tuple(own.get(chosen, style) for chosen, style in zip(self.settings.style_name, self._styles,
                                                                        strict=True))
        self._hold(styles, own)
        self._own, self._styles = own, styles
        return {"type": "style", "name": name, "width": width, "height": height}

    def _hold(self, styles: tuple[Upload, ...], own: dict[str, Upload]) -> None:
        """The bytes of the paintings this stream keeps, counted against the memory Budget (Busy if
        they do not fit)."""
        kept = {id(u): len(u.data) for u in (*own.values(), *styles)}
        change = sum(kept.values()) - self._held.nbytes
        if change > 0:
            self._held.grow(change, self._engine.retry_after)
        else:
            self._held.shrink(-change)

    async def _stats_now(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.stats()

    # --- messages out ---------------------------------------------------------------------------

    def _refused(self, exc: AdainError, frame: int | None = None, counts: bool = True, **asked: Any) -> None:
        error = as_request_error(exc)
        if counts and error.status < 500:  # the client's mistake; a busy server is not
            self.errors_in_a_row += 1
        if frame is not None:
            self.counts.failed += 1
        self._say({"type": "error", "status": error.status, "error": str(error),
                   **({"frame": frame} if frame is not None else {}), **asked})

    def _on_loop(self, call: Callable[..., None], *args: Any) -> None:
        """`call` on the event loop, from the thread that settled a frame; nothing once the loop
        has gone (the server has stopped, and the client with it)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(call, *args)

    def _answered(self, job: _LiveFrame, index: int) -> None:
        """On the event loop, once a frame's work is settled: its answer, or its error, queued."""
        future = job.work.future
        if future.cancelled() or self._closed:  # replaced by a newer frame (counted then), or the client gone
            return
        if future.exception() is not None:
            self.counts.failed += 1
            error = as_request_error(future.exception())  # type: ignore[arg-type]
            self._say({"type": "error", "status": error.status, "error": f"frame {index}: {error}", "frame": index})
            return
        answer = future.result()
        if self._unsent >= UNSENT_FRAMES or self._outbox.full():  # the client is not reading what it asked for
            self.counts.dropped += 1
            return
        try:  # an answer waiting to be sent holds memory too
            held = self._engine.budget.reserve(len(answer), self._engine.retry_after)
        except RequestError:
            self.counts.dropped += 1
            return
        self._outbox.put_nowait(_Outgoing(answer, job.arrived, held))
        self._unsent += 1

    def _say(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        # A client that reads nothing loses text too; what is queued already is enough to say why.
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(_Outgoing(message))

    def _maybe_stats(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self._last_stats >= STATS_EVERY:
            self._last_stats = now
            self._say(self.stats(now))

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The stream's counts, its recent answers per second and latency (from a frame's arrival
        to its answer sent, in ms)."""
        now = time.perf_counter() if now is None else now
        recent = [t for t in self._answered_at if now - t <= FPS_WINDOW][-FPS_ANSWERS:]
        span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
        ordered = sorted(self._latencies)

        def percentile(p: float) -> float | None:
            return None if not ordered else round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

        return {"type": "stats", **asdict(self.counts), "fps": round((len(recent) - 1) / span, 2) if span else 0.0,
                "latency_ms": {"last": round(1000 * self._latencies[-1], 1) if self._latencies else None,
                               "p50": percentile(0.5), "p99": percentile(0.99)}}

    async def send_to(self, websocket: Any) -> None:
        """Send what the stream has to say, in order, until cancelled."""
        while True:
            outgoing = await self._outbox.get()
            try:
                if isinstance(outgoing.message, bytes):
                    await websocket.send_bytes(outgoing.message)
                    now = time.perf_counter()
                    self._latencies.append(now - outgoing.arrived)
                    self._answered_at.append(now)
                    self.counts.frames_out += 1
                    self._maybe_stats()
                else:
                    await websocket.send_text(json.dumps(outgoing.message))
            finally:
                self._sent(outgoing)
                self._outbox.task_done()

    def _sent(self, outgoing: _Outgoing) -> None:
        if outgoing.held is not None:
            outgoing.held.release()
            self._unsent -= 1

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (a little) until what is queued has been sent: the last error before a close, say."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._outbox.join(), timeout)

    def close(self) -> None:
        """The client has gone: its waiting frame is let go, its paintings' and unsent answers'
        bytes given back."""
        self._closed = True
        self._engine.close_lane(self._lane)
        self._held.release()
        while not self._outbox.empty():
            self._sent(self._outbox.get_nowait())


@dataclass
class _Outgoing:
    """A message to send: text as JSON, or an answer, with when its frame arrived and the memory it holds."""

    message: dict[str, Any] | bytes
    arrived: float = 0.0
    held: Reservation | None = None


def _restarts_steady(old: LiveSettings, new: LiveSettings) -> bool:
    """Whether the content statistics' average starts afresh: a new time constant, or frames
    the network now sees differently (their size, the working size, the colour mode)."""
    return any(getattr(old, name) != getattr(new, name)
               for name in ("smooth", "content_size", "work_size", "preserve_color", "luminance_only"))


def _painting(name: str, data: str) -> Upload:
    try:
        return Upload(name, base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{_shown(name)}: data is not base64") from None


async def _off_loop(call: Callable[..., Any], *args: Any) -> Any:
    """`call` on a thread; if the stream is cancelled meanwhile (a stop), admitted work that
    comes back anyway is let go, so that its memory is given back."""
    task = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_let_go)
        raise


def _let_go(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is None and isinstance(task.result(), Work):
        task.result().future.cancel()


def _parsed(raw: str) -> Any:
    """A text message as JSON. One over SMALL_TEXT bytes must be a painting's upload: its base64
    "data" is taken out as it is and only the rest, within SMALL_TEXT, parsed, so that no message
    becomes a large tree of objects or a long parse."""
    data = None
    if len(raw) > SMALL_TEXT:
        found = _DATA.search(raw)
        if found is None or len(raw) - len(found.group(1)) > SMALL_TEXT:
            raise RequestError(413, f"a text message over {SMALL_TEXT:,} bytes must be a style message whose "
                                    "data is the painting in base64")
        data, raw = found.group(1), raw[:found.start(1)] + raw[found.end(1):]
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(400, "a text message must be JSON (a frame is a binary message)") from None
    if data is not None and isinstance(message, dict):
        message["data"] = data
    return message


# A style message's data: base64 has no quote or backslash, so the string ends at the next quote.
_DATA = re.compile(r'"data"\s*:\s*"([A-Za-z0-9+/=]*)"')


def _usable_id(value: Any) -> bool:
    """An "id" short enough to echo: a string of at most 64 characters, or a number."""
    return (isinstance(value, str) and len(value) <= 64) or (isinstance(value, (int, float))
                                                             and not isinstance(value, bool))


def _shown(value: Any) -> str:
    """A client's value in a message, as JSON writes it (a name as it is), cut short."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _LiveFrame(Job):
    """A stream's frame as the runner takes it: never a cached content (frames do not repeat,
    and they would push requests' contents out), its statistics steadied, encoded when done."""

    def __init__(self, work: Work, engine: Engine, steady: Steady, pillow_format: str, arrived: float) -> None:
        super().__init__(work, engine)
        self._steady, self._format, self.arrived = steady, pillow_format, arrived

    def cached(self) -> EncodedContent | None:
        return None

    def renders(self, content: EncodedContent) -> list[Render | Failed]:
        # On the runner's thread, a stream's frames in order: the average runs through them.
        content = replace(content, stats=self._steady(content.stats, self.arrived))
        return [Render(self, content, self.style_for(content), self.work.request.alpha)]

    def finish(self, image: torch.Tensor) -> bytes:
        return images.encoded(images.pixels_to_image(image), self._format)


class Live:
    """The live streams of one server: at most `limits.max_streams` at once."""

    def __init__(self, engine: Engine, find_style: Callable[[str], Upload], limits: StreamLimits) -> None:
        self.engine, self.find_style, self.limits = engine, find_style, limits
        self.streams = 0

    async def session(self, websocket: Any) -> None:
        """One stream over an accepted-to-be Starlette WebSocket, until the client leaves, is
        idle for `limits.idle` s, or breaks the protocol ERRORS_IN_A_ROW times in a row."""
        if self.streams >= self.limits.max_streams:
            await self._refuse_busy(websocket)
            return
        self.streams += 1  # counted before any await, so that no other stream gets past the check
        try:
            await websocket.accept()
        except BaseException:
            self.streams -= 1
            raise
        stream = Stream(self.engine, self.find_style, self.limits)
        sender = asyncio.create_task(stream.send_to(websocket))
        try:
            stream._say({"type": "ready", "limits": {"max_frame_bytes": self.limits.max_frame,
                                                     "max_fps": self.limits.max_fps, "idle_seconds": self.limits.idle,
                                                     "max_styles": MAX_STYLES},
                         "settings": stream.settings.as_message()})
            await self._receive(websocket, stream, sender)
        finally:
            self.streams -= 1
            sender.cancel()
            with contextlib.suppress(BaseException):  # it ends as the client went: nothing more to say
                await sender
            stream.close()

    async def _refuse_busy(self, websocket: Any) -> None:
        """Too many streams: a 503 as the handshake's answer where the server can send one (the
        connection then closes at once), else accepted, told, and closed with 1013."""
        message = f"busy: {self.streams} live streams already, the most this server takes (--max-streams)"
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(JSONResponse({"error": message, "status": 503}, status_code=503,
                                                              headers={"Retry-After": "5"}))
            return
        await websocket.accept()
        await websocket.send_text(json.dumps({"type": "error", "status": 503, "error": message}))
        await websocket.close(1013, "busy: too many live streams")

    async def _receive(self, websocket: Any, stream: Stream, sender: asyncio.Task[None]) -> None:
        while not sender.done():  # a sender that failed: the client has gone
            try:
                message = await asyncio.wait_for(websocket.receive(), self.limits.idle)
            except asyncio.TimeoutError:
                await stream.flush()
                await websocket.close(1000, f"idle for {self.limits.idle:g} s")
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await stream.frame(message["bytes"])
            elif message.get("text") is not None:
                await stream.text(message["text"])
            if stream.errors_in_a_row >= ERRORS_IN_A_ROW:
                await stream.flush()
                await websocket.close(1008, f"{ERRORS_IN_A_ROW} bad messages in a row")
                return
