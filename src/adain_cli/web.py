"""`adain serve`'s HTTP side: a FastAPI app over the engine (serve.py), and the page.

    GET  /                          the page (web/index.html with app.css and app.js inlined: no build step)
    POST /v1/stylize                multipart: content, style (repeated), fields -> image bytes
    GET  /v1/styles                 the --styles library; /v1/styles/{name}/thumbnail
    WS   /v1/live                   camera frames in, stylized frames out (live.py: the protocol)
    GET  /v1/health, /v1/info       liveness; versions, device, weights, queue, limits
    GET  /openapi.json, /docs       the API described (FastAPI writes it from the route below)

Errors are JSON, {"error": "...", "status": N}: 400 bad field, 401 no or wrong token, 403
a foreign Origin, 404, 408 a body too slow, 413 too large (bytes, pixels or memory), 415 not
an image, 421 a foreign Host, 503 busy (queue or memory full, with Retry-After).
Requests never name files: library styles are looked up by name in a table made at start.

In front of the routes, outermost first: `_AnsweredWhenCancelled` (a request cancelled at
shutdown gets a 503, not a traceback), `_HostAndOrigin` (which web pages may use the
server: DNS rebinding and cross-site requests refused), CORS for origins the user allowed,
`_Guard` (the token; the body, bounded in bytes and time and counted against the engine's
memory budget). Under uvicorn, `_Connection` bounds connections and the time headers take.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, unquote_plus

from fastapi import Depends, FastAPI, File, Form, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.requests import Request as HttpRequest
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import parse_options_header

from . import __version__, about, color, images, mixing
from .atomic import atomic_write
from .errors import AdainError, Busy, ImageError, OutputError, RequestError, UsageError
from .inputs import walk_images
from .live import Live, StreamLimits
from .lru import Recent
from .runner import Budget, Reservation
from .serve import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_CONNECTIONS,
    FORMATS,
    MAX_STYLES,
    Engine,
    Request,
    Upload,
)

THUMBNAIL_SIDE = 192
THUMBNAIL_CACHE_BYTES = 64 * 1024 * 1024
# Parts of one POST /v1/stylize: a content and the styles; the fields, style_name among them.
MAX_FILES = 1 + MAX_STYLES
MAX_FIELDS = 32
# The Host names a server on loopback answers to, whatever it was told.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Copies of a request body held at once: as received, as handed to the app, and parsed into parts.
BODY_COPIES = 3
# Where the guard tells the route what the request's body holds of the memory budget.
BODY_HELD = "adain.body_bytes"
# Descriptors kept for the server's own use (the model's files, logs, a --save write, pipes), and
# for connections accepted before the connection limit can turn them away (asyncio accepts many
# in one go). The last few are never used for a connection at all: see `_GuardedListener`.
_SPARE_DESCRIPTORS = 32
_LAST_DESCRIPTORS = 8
_log = logging.getLogger("adain_cli.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Library:
    """The paintings of --styles, by name (their path relative to the folder); never a request's path."""

    files: dict[str, Path] = field(default_factory=dict)
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    thumbnails: Recent[str, bytes] = field(
        default_factory=lambda: Recent(100_000, THUMBNAIL_CACHE_BYTES, len), repr=False)

    @classmethod
    def scan(cls, folder: Path | None, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> Library:
        """The images under `folder` by a name that is valid UTF-8 (a file name that is not
        shows with U+FFFD in place of its bad bytes); broken links are left out."""
        if folder is None:
            return cls(max_pixels=max_pixels)
        if not folder.is_dir():
            raise UsageError(f"{folder}: --styles must be a folder")
        files: dict[str, Path] = {}
        for relative in walk_images(folder):
            path = folder / relative
            if path.is_file():
                files.setdefault(relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), path)
        return cls(files, max_pixels)

    def upload(self, name: str) -> Upload:
        if name not in self.files:  # a bad field of the request, not a missing resource
            raise RequestError(400, f"style_name {name[:200]!r} is not in the styles folder (see GET /v1/styles)")
        return Upload(name, self._read(name, lambda path: path.read_bytes()))

    def thumbnail(self, name: str) -> bytes:
        """A small JPEG of the painting, made once and kept (within THUMBNAIL_CACHE_BYTES)."""
        cached = self.thumbnails.get(name)
        if cached is None:
            image = self._read(name, lambda path: images.load_image(path, self.max_pixels, THUMBNAIL_SIDE))
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            cached = buffer.getvalue()
            self.thumbnails.put(name, cached)
        return cached

    def _read(self, name: str, read: Callable[[Path], Any]) -> Any:
        """`read` of the painting called `name`; errors name the painting, never its path."""
        if name not in self.files:
            raise RequestError(404, f"no painting named {name!r} in the styles folder (see GET /v1/styles)")
        path = self.files[name]
        try:
            return read(path)
        except (ImageError, OSError) as exc:
            if not path.is_file():  # removed, or its link broken, after the server started
                raise RequestError(404, f"{name}: the painting is no longer in the styles folder") from None
            if isinstance(exc, ImageError):
                raise type(exc)(name, exc.reason) from None
            raise RequestError(404, f"{name}: the painting cannot be read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Options:
    token: str | None = None  # required on every request when set
    save: Path | None = None  # where results are also written; None: nothing touches the disk
    weights: dict[str, str] = field(default_factory=dict)  # for /v1/info: role -> file
    bound: str = "127.0.0.1"  # the address listened on: a Host that names it is this server
    allow_hosts: tuple[str, ...] = ()  # more Host names to answer (a reverse proxy's); "*": any
    allow_origins: tuple[str, ...] = ()  # web origins that may use the API from their pages (CORS)
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    live: StreamLimits = field(default_factory=StreamLimits)  # what /v1/live streams may send

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise UsageError("--token must not be empty (leave it out for no token)")
        for origin in self.allow_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s]+", origin):
                raise UsageError(f"--allow-origin {origin!r}: give a scheme and host, such as https://example.org")
        if self.body_timeout <= 0:
            raise UsageError(f"--body-timeout must be positive, got {self.body_timeout}")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower case: "[::1]:8000" -> "::1"."""
    header = header.strip().lower()
    if _is_ip(header):  # an address as given to --host, "::1" among them
        return header
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    return name.rstrip(".") if name and port.isdigit() else header.rstrip(".")


class _HostAndOrigin:
    """ASGI middleware: which web pages may use the server (Jupyter Server's defaults).

    - A Host that names neither this server's address nor a local name is refused (421), so a
      page whose name was rebound to 127.0.0.1 (DNS rebinding) gets nothing, not even /v1/info.
    - A request that changes state (any method but GET, HEAD and OPTIONS) whose Origin is
      present and not the server's own, nor allowed, is refused (403): a page elsewhere can
      POST a form here without CORS asking first."""

    def __init__(self, app: Any, options: Options) -> None:
        self.app = app
        self.any_host = "*" in options.allow_hosts
        self.hosts = LOCAL_HOSTS | {host_name(h) for h in options.allow_hosts} | {host_name(options.bound)}
        self.wildcard = _is_wildcard(options.bound)
        self.origins = {o.lower().rstrip("/") for o in options.allow_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self._host_allowed(host_name(host)):
            await _refuse(scope, receive, send, 421, f"Host {host!r} is not this server's; a name that reaches it "
                                                     "through a proxy must be given with --allow-host NAME")
            return
        origin = headers.get(b"origin")
        changes_state = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD", "OPTIONS")
        if origin is not None and changes_state and not self._origin_allowed(origin.decode("latin-1"), scope, host):
            await _refuse(scope, receive, send, 403, f"Origin {origin.decode('latin-1')!r} may not use this server; "
                                                     "allow a site with --allow-origin ORIGIN")
            return
        await self.app(scope, receive, send)

    def _host_allowed(self, name: str) -> bool:
        if self.any_host or name in self.hosts:
            return True
        # Listening on every address: any of them by number. Rebinding needs a name, never a number.
        return self.wildcard and _is_ip(name)

    def _origin_allowed(self, origin: str, scope: Scope, host: str) -> bool:
        origin = origin.lower().rstrip("/")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        default_port = ":80" if scheme == "http" else ":443"  # browsers leave it out of Origin
        own = {f"{scheme}://{host.lower()}", f"{scheme}://{host.lower().removesuffix(default_port)}"}
        return origin in own or origin in self.origins or "*" in self.origins


class _AnsweredWhenCancelled:
    """ASGI middleware, outermost: a request cancelled under it (uvicorn cancels those still
    running when its graceful shutdown times out) gets a 503 if nothing was sent yet, and one
    line in the log, not a traceback per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except asyncio.CancelledError:
            _log.warning("adain serve: %s %s stopped unfinished: the server is shutting down",
                         scope.get("method", "WEBSOCKET"), scope.get("path", ""))
            if not started and scope["type"] == "http":
                await error(503, "the server is shutting down; try again")(scope, receive, send)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_wildcard(address: str) -> bool:
    return host_name(address) in ("0.0.0.0", "::", "")


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                  headers: dict[str, str] | None = None) -> None:
    """The JSON error; for a WebSocket, as the handshake's HTTP answer where the server can send
    one (uvicorn can), else a close before accepting (the close code carries no JSON)."""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    await error(status, message, headers)(scope, receive, send)


class _Guard:
    """ASGI middleware in front of the routes: the bearer token (header, or ?token= for the page
    a browser opens), and the request body: counted as it arrives (Content-Length is only a
    claim), bounded in bytes and in time, held in memory so that it is never spooled to disk,
    and counted against the engine's memory budget (BODY_COPIES times: the body, its copy for the
    app, its parts). A request whose client goes away is cancelled."""

    def __init__(self, app: Any, token: str | None, max_body: int, budget: Budget,
                 retry_after: Callable[[], int], body_timeout: float) -> None:
        self.app, self.max_body, self.budget = app, max_body, budget
        self.token = None if token is None else token.encode("utf-8")
        self.retry_after, self.body_timeout = retry_after, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.token is not None and not self._authorised(scope):
            await _refuse(scope, receive, send, 401, "a token is required: ?token=TOKEN")
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is not None and not self._authorised(scope):
            response = error(401, "a bearer token is required: Authorization: Bearer TOKEN",
                             {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        claimed = headers.get(b"content-length")
        if claimed is not None and claimed.isdigit() and int(claimed) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        reservation = self.budget.reserve(0, self.retry_after)
        try:
            body = await self._body(scope, receive, send, reservation,
                                    int(claimed) if claimed is not None and claimed.isdigit() else 0)
            if body is not None:
                scope[BODY_HELD] = reservation.nbytes  # the route's own reservation counts it for a 413
                await self._until_disconnected(scope, bytes(body), receive, send)
        finally:
            reservation.release()

    async def _until_disconnected(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """The app, given the body; cancelled if the client goes away first (uvicorn only marks
        the request), so that work nobody waits for is skipped and gives its memory back."""
        gone = asyncio.Event()
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # after the body only a disconnect can come, and the watcher reads it
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        app = asyncio.ensure_future(self.app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done():  # the client left before its answer
                app.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app
        finally:
            watcher.cancel()
            app.cancel()  # a no-op when done; when this coroutine is cancelled itself, the app goes too

    async def _body(self, scope: Scope, receive: Receive, send: Send, reservation: Reservation,
                    claimed: int) -> bytearray | None:
        """The whole body, or None when it was refused (and answered) or the client left."""
        body, more, counted = bytearray(), True, claimed
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        try:
            reservation.grow(BODY_COPIES * claimed, self.retry_after)
            while more:
                remaining = deadline - asyncio.get_running_loop().time()
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await self._too_large(scope, receive, send)
                    return None
                if len(body) > counted:  # more than it claimed, or no claim: counted as it comes
                    reservation.grow(BODY_COPIES * (len(body) - counted), self.retry_after)
                    counted = len(body)
        except Busy as exc:
            await error(503, str(exc), {"Retry-After": str(exc.retry_after)})(scope, receive, send)
            return None
        except RequestError as exc:
            await error(exc.http_status, str(exc))(scope, receive, send)
            return None
        except asyncio.TimeoutError:
            await error(408, f"the request body did not arrive within {self.body_timeout:g} s (--body-timeout)",
                        {"Connection": "close"})(scope, receive, send)
            return None
        return body

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        # Compared as bytes: a header is whatever bytes were sent, a UTF-8 token among them.
        scheme, _, given = headers.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() == b"bearer" and self._matches(given.strip()):  # schemes are case-insensitive
            return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), encoding="utf-8",
                         errors="surrogateescape")
        return any(self._matches(value.encode("utf-8", "surrogateescape")) for value in query.get("token", []))

    def _matches(self, given: bytes) -> bool:
        assert self.token is not None
        return secrets.compare_digest(given, self.token)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error(413, f"request body over the limit of {self.max_body:,} bytes (--max-upload-mb)")(
            scope, receive, send)


class _InMemoryForm(HttpRequest):
    """A request whose multipart parts are parsed in memory (the guard has bounded the whole body
    already), with at most MAX_FILES files and MAX_FIELDS fields: Starlette's own parser would
    spool parts over 1 MB to temporary files, and its limit is a setting for the whole process."""

    async def _get_form(self, **limits: Any) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type") or "")
        if self._form is None and content_type == b"multipart/form-data":
            parser = _PartsInMemory(self.headers, self.stream(), max_files=MAX_FILES, max_fields=MAX_FIELDS)
            try:
                self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(400, exc.message) from None
        return await super()._get_form(**limits)


class _PartsInMemory(MultiPartParser):
    spool_max_size = 2**62  # never rolled over to disk


class _FormRoute(APIRoute):
    def get_route_handler(self) -> Callable[[HttpRequest], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def in_memory(request: HttpRequest) -> Response:
            return await handler(_InMemoryForm(request.scope, request.receive))

        return in_memory


def create_app(engine: Engine, library: Library | None = None, options: Options = Options()) -> Any:
    """The ASGI app: FastAPI's routes behind the Host and Origin checks, CORS where origins are
    allowed, and the token and body guard."""
    library = library or Library()
    # The token as a security scheme: /docs then offers "Authorize" for the requests it sends.
    security = [Depends(HTTPBearer(auto_error=False))] if options.token else []
    api = FastAPI(title="adain serve", version=__version__, docs_url=None, dependencies=security,
                  description="Arbitrary style transfer with AdaIN: the networks kept warm.")
    api.router.route_class = _FormRoute
    page = resources.files("adain_cli") / "web"

    @api.exception_handler(AdainError)
    async def adain_error(request: HttpRequest, exc: AdainError) -> JSONResponse:
        # The one mapping of the family to answers: each error class carries its HTTP status.
        retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return error(exc.http_status, str(exc), retry)

    @api.exception_handler(RequestValidationError)
    async def bad_field(request: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return error(400, "; ".join(problems) or "bad request")

    @api.exception_handler(HTTPException)
    async def http_error(request: HttpRequest, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @api.exception_handler(Exception)
    async def internal(request: HttpRequest, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__})")

    # One response holds the whole page: a browser given ?token= needs no token for assets.
    html = (page / "index.html").read_text(encoding="utf-8")
    html = html.replace("/*APP_CSS*/", (page / "app.css").read_text(encoding="utf-8"))
    html = html.replace("/*APP_JS*/", (page / "app.js").read_text(encoding="utf-8"))

    @api.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(html)

    @api.get("/docs", include_in_schema=False)
    async def docs(request: HttpRequest) -> HTMLResponse:
        # Opened as /docs?token=T, the page fetches the description with the same token (the
        # guard has checked it: it is the server's own, and quoted it cannot break out of the page).
        token = request.query_params.get("token")
        described = "/openapi.json" + (f"?token={quote(token, safe='')}" if token else "")
        return get_swagger_ui_html(openapi_url=described, title="adain serve: the API")

    live = Live(engine, library.upload, options.live)

    @api.websocket("/v1/live")
    async def live_stream(websocket: WebSocket) -> None:
        # The guards in front have run: Host, Origin (a WebSocket is not covered by CORS) and token.
        await live.session(websocket)

    @api.get("/v1/health", summary="Liveness: answers while requests are being served")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queue": engine.queue_length}

    @api.get("/v1/info", summary="Versions, device, weights, queue and limits")
    async def info() -> dict[str, Any]:
        execution = engine.stylizer.execution
        return {**about.versions(), "device": str(execution.device),
                "dtype": str(execution.dtype).removeprefix("torch."), "batch_size": execution.batch_size,
                "weights": options.weights, "queue": engine.queue_length, "served": engine.served,
                "limits": {"max_upload_bytes": engine.limits.max_upload, "max_pixels": engine.limits.max_pixels,
                           "queue": engine.limits.queue, "memory_bytes": engine.budget.limit},
                "memory_held": engine.budget.held, "cache": engine.cache_stats(), "styles": len(library.files),
                "live": {"streams": live.streams, "max_streams": options.live.max_streams,
                         "max_fps": options.live.max_fps, "max_frame_bytes": options.live.max_frame,
                         "idle_seconds": options.live.idle}}

    @api.get("/v1/styles", summary="The paintings of the --styles folder")
    async def styles() -> dict[str, Any]:
        return {"styles": [{"name": name, "thumbnail": f"/v1/styles/{quote(name)}/thumbnail"}
                           for name in library.files]}

    @api.get("/v1/styles/{name:path}/thumbnail", summary="A painting of the library, small, as JPEG",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(name: str) -> Response:
        data = await asyncio.to_thread(library.thumbnail, name)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @api.post("/v1/stylize", summary="Stylize a content image in one style or a mix of several",
              response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                               "description": "The stylized image; X-Seconds says how long the network took; "
                                              "with --save, X-Saved-As names the file or X-Save-Error says why "
                                              "it could not be written."}})
    async def stylize(
        http: HttpRequest,
        content: Annotated[UploadFile, File(description="The photo.")],
        style: Annotated[list[UploadFile] | None, File(description="A painting; repeat for a mix.")] = None,
        style_name: Annotated[list[str] | None, Form(description="A painting of the --styles folder by name "
                                                                  "(GET /v1/styles); repeatable.")] = None,
        alpha: Annotated[float, Form(description="Content-style trade-off, 0 to 1.")] = 1.0,
        weights: Annotated[str | None, Form(description="Mixing weights, one per style, e.g. 0.7,0.3.")] = None,
        preserve_color: Annotated[bool, Form(description="Keep the content's colours (CORAL).")] = False,
        luminance_only: Annotated[bool, Form(description="Transfer luminance only.")] = False,
        content_size: Annotated[int, Form(description="Shorter side of the content in px; 0 keeps it.")] = 512,
        style_size: Annotated[int, Form(description="Shorter side of the styles in px; 0 keeps it.")] = 512,
        work_size: Annotated[int, Form(description="Shorter side the network runs at, the result guided up to "
                                                   "the content's size (see --work-size); 0: off.")] = 0,
        format: Annotated[str, Form(description="png, jpeg or webp.")] = "png",
    ) -> Response:
        if format.lower() not in FORMATS:
            raise RequestError(400, f"format must be png, jpeg or webp, got {format!r}")
        count = len(style or []) + len(style_name or [])
        if count > MAX_STYLES:  # before any painting is read
            raise RequestError(400, f"at most {MAX_STYLES} styles, got {count}")
        uploads = [Upload(s.filename or "style", await s.read()) for s in style or []]
        uploads += [await asyncio.to_thread(library.upload, name) for name in style_name or []]
        mode = color.mode_from_flags(preserve_color, luminance_only, ("preserve_color", "luminance_only"))
        request = Request(Upload(content.filename or "content", await content.read()), tuple(uploads), alpha,
                          mixing.parse_weights(weights), mode, content_size, style_size, work_size)
        began = time.perf_counter()
        # Prepared and queued in one go: a request cancelled meanwhile still leaves its work in
        # the engine, which settles it and gives its memory back (none is left reserved for ever).
        held = http.scope.get(BODY_HELD, 0)
        queued = await asyncio.to_thread(lambda: engine.submit(engine.prepare(request, held)))
        picture = await asyncio.wrap_future(queued)
        seconds = time.perf_counter() - began
        pillow_format = FORMATS[format.lower()]
        data = await asyncio.to_thread(images.encoded, picture, pillow_format)
        headers = {"X-Seconds": f"{seconds:.3f}"}
        if options.save is not None:
            headers.update(await asyncio.to_thread(_save, options.save, data, format.lower()))
        return Response(data, media_type=f"image/{pillow_format.lower()}", headers=headers)

    app: Any = _Guard(api, options.token, engine.limits.max_upload, engine.budget, engine.retry_after,
                      options.body_timeout)
    if options.allow_origins:
        app = CORSMiddleware(app, allow_origins=list(options.allow_origins), allow_methods=["GET", "POST"],
                             allow_headers=["Authorization"],
                             expose_headers=["X-Seconds", "X-Saved-As", "X-Save-Error", "Retry-After"])
    return _AnsweredWhenCancelled(_HostAndOrigin(app, options))


def _save(folder: Path, data: bytes, ext: str) -> dict[str, str]:
    """--save: each result under a name of the server's making, never the request's. A failed
    write loses nothing: the response still carries the image, and a header says why."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.{ext}"
    try:
        try:
            with atomic_write(folder / name) as handle:
                handle.write(data)
        except OSError as exc:
            raise OutputError.cannot_write(folder / name, exc) from exc
    except OutputError as exc:
        _log.warning("adain serve: warning: result not saved: %s", exc)
        return {"X-Save-Error": exc.reason}
    return {"X-Saved-As": name}


@dataclass(frozen=True)
class Connections:
    """How many connections the server holds, and how long each may take."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    keep_alive: float = DEFAULT_KEEP_ALIVE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise UsageError(f"--max-connections must be at least 1, got {self.max_connections}")
        for name in ("keep_alive", "header_timeout"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    def limit(self) -> int:
        """max_connections, lowered where the process's open-file limit would not hold them all
        (beyond it, accept() fails and asyncio logs every retry)."""
        room = _descriptor_room()
        return self.max_connections if room is None else max(1, min(self.max_connections,
                                                                    room - _SPARE_DESCRIPTORS))


class _GuardedListener(socket.socket):
    """The listening socket, accepting no connection with the last of the process's descriptors:
    a newcomer then is closed at once. Without this, accept() fails with "Too many open files",
    which asyncio logs with a traceback at every retry, and nothing is served until a descriptor
    frees itself. Normally the connection limit keeps well below; this is the backstop."""

    def accept(self) -> tuple[socket.socket, Any]:
        connection, address = super().accept()
        room = _descriptor_room()
        if room is not None and room < _LAST_DESCRIPTORS:
            connection.close()
            raise ConnectionAbortedError  # what asyncio's accept loop takes as "nothing more now"
        return connection, address

    @classmethod
    def taking_over(cls, listener: socket.socket) -> _GuardedListener:
        return cls(listener.family, listener.type, listener.proto, fileno=listener.detach())


def _descriptor_room() -> int | None:
    """Descriptors this process may still open; None where there is no limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover (Windows)
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft - _open_descriptors()


def _open_descriptors() -> int:
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return 0


_BUSY = b'{"error": "busy: every connection is in use, try again", "status": 503}'
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                  b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY), _BUSY))


def _connection_protocol(limit: int, header_timeout: float) -> type:
    """uvicorn's HTTP/1.1 protocol with what it lacks: at most `limit` connections, and a deadline
    for each request's head. When full, the connection idle longest (no request in progress)
    gives way to the newcomer, so that idle sockets cannot lock people out; with none idle the
    newcomer gets a 503. A connection whose request head has not come `header_timeout` s after
    it opened, or after its last response, is closed (slow-header clients)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _Connection(H11Protocol):
        _idle_since: float | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limit and not self._make_room():
                transport.write(_BUSY_RESPONSE)
                transport.close()
                return
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._idle_since = None  # a request is being served: it is not idle

        def on_response_complete(self) -> None:
            super().on_response_complete()  # which may start a pipelined request at once
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._wait_for_head()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._stop_waiting()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _wait_for_head(self) -> None:
            self._stop_waiting()
            self._idle_since = time.monotonic()
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _stop_waiting(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if self._idle_since is not None and not self.transport.is_closing():
                self.transport.close()

        def _make_room(self) -> bool:
            idle = [c for c in self.connections if isinstance(c, _Connection) and c is not self
                    and c._idle_since is not None and not c.transport.is_closing()]
            if not idle:
                return False
            min(idle, key=lambda c: c._idle_since).transport.close()
            return True

    return _Connection


# Seconds a WebSocket's peer may leave the server's writes unread before its connection is cut.
STUCK_WRITES_TIMEOUT = 10.0


def _stream_protocol(stuck_after: float = STUCK_WRITES_TIMEOUT) -> type:
    """uvicorn's WebSocket protocol (websockets' sans-I/O) with what a stream needs from it:
    a peer that stops reading stops being read too (its pings would each queue a pong, unbounded),
    and one that has not read for `stuck_after` s is cut off (abort, not close: close waits for
    the unread bytes to drain, so a stuck peer would hold its stream, and a stop, for ever)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class _Stream(WebSocketsSansIOProtocol):
        _stuck: asyncio.TimerHandle | None = None

        def pause_writing(self) -> None:
            super().pause_writing()
            self.transport.pause_reading()
            if self._stuck is None:
                self._stuck = self.loop.call_later(stuck_after, self.transport.abort)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stuck is not None:
                self._stuck.cancel()
                self._stuck = None
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

        async def receive(self) -> Any:
            message = await super().receive()  # which resumes reading when its queue is empty
            if self._stuck is not None and not self.transport.is_closing():
                self.transport.pause_reading()
            return message

        def shutdown(self) -> None:
            super().shutdown()
            if self.transport.get_write_buffer_size():  # a peer that reads nothing would hold the stop
                self.loop.call_later(2.0, self.transport.abort)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._stuck is not None:
                self._stuck.cancel()
            super().connection_lost(exc)

    return _Stream


class _RedactTokens(logging.Filter):
    """The access log without ?token= values (a --debug log is pasted into bug reports)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact(text: str) -> str:
    """`text` with the value of every query parameter named token replaced, however its name
    is spelled (%74oken is token too, to the token check)."""
    def value_hidden(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{name}=[redacted]" if unquote_plus(name) == "token" else match.group(0)

    return re.sub(r"([?&])([^=&\s\"]*)=[^&\s\"]*", value_hidden, text)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a busy port fails at once (UsageError, exit 2)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        raise UsageError(f"{host}:{port}: cannot listen ({exc.strerror or exc})") from None
    return listener


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_forever(app: Any, listener: socket.socket, *, debug: bool = False,
                  connections: Connections = Connections(), max_message: int = StreamLimits().max_message) -> None:
    """Run the app under uvicorn on a bound socket until Ctrl-C or SIGTERM, which stop new
    connections, let the requests in flight finish (60 s at most), and return. `max_message`:
    the largest WebSocket message taken at all (a larger one closes its stream, 1009)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own version raises the signal again after draining, which kills the process
            # on the spot; a server asked to stop has done what was asked, and returns.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, log_level="info" if debug else "warning", access_log=debug,
                            timeout_graceful_shutdown=60, timeout_keep_alive=connections.keep_alive,
                            # WebSocket messages bounded in size, none compressed (frames are JPEG
                            # already, and inflating is where a small message becomes a huge one);
                            # reading pauses after each message until the stream has taken it.
                            ws=_stream_protocol(), ws_max_size=max_message, ws_per_message_deflate=False,
                            http=_connection_protocol(connections.limit(), connections.header_timeout))
    for name in ("uvicorn.access", "uvicorn.error"):  # WebSocket handshakes are logged on the second
        log = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in log.filters):
            log.addFilter(_RedactTokens())
    Server(config).run(sockets=[_GuardedListener.taking_over(listener)])
