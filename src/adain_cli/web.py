"""`adain serve`'s HTTP side: a FastAPI app over the engine (serve.py), and the page.

    GET  /                          the page (web/index.html with app.css and app.js inlined: no build step)
    POST /v1/stylize                multipart: content, style (repeated), fields -> image bytes
    GET  /v1/styles                 the --styles library; /v1/styles/{name}/thumbnail
    GET  /v1/health, /v1/info       liveness; versions, device, weights, queue, limits
    GET  /openapi.json, /docs       the API described (FastAPI writes it from the route below)

Errors are JSON, {"error": "...", "status": N}: 400 bad field, 401 no or wrong token, 404,
413 too large (bytes or pixels), 415 not an image, 503 queue full (with Retry-After).
Requests never name files: library styles are looked up by name in a table made at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import platform
import secrets
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import starlette.formparsers
import torch
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.requests import Request as HttpRequest
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException

from . import __version__, color, images
from .atomic import atomic_write
from .errors import ImageError, UsageError
from .inputs import walk_images
from .serve import Engine, QueueFull, Request, RequestError, Upload, parse_weights

# The response formats the API offers, by the name a request gives: Pillow's format, as outputs.
FORMATS = {name: images.FORMATS[f".{name}"] for name in ("png", "jpeg", "jpg", "webp")}
THUMBNAIL_SIDE = 192

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Library:
    """The paintings of --styles, by name (their path relative to the folder); never a request's path."""

    files: dict[str, Path] = field(default_factory=dict)
    thumbnails: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def scan(cls, folder: Path | None) -> Library:
        if folder is None:
            return cls()
        if not folder.is_dir():
            raise UsageError(f"{folder}: --styles must be a folder")
        return cls({name: folder / name for name in walk_images(folder)})

    def upload(self, name: str) -> Upload:
        if name not in self.files:
            raise RequestError(400, f"style_name {name!r} is not in the styles folder (see GET /v1/styles)")
        return Upload(name, self.files[name].read_bytes())

    def thumbnail(self, name: str) -> bytes:
        if name not in self.files:
            raise RequestError(404, f"no style named {name!r}")
        if name not in self.thumbnails:
            try:
                image = images.load_image(self.files[name])
            except ImageError as exc:
                raise RequestError(404, str(exc)) from None
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            self.thumbnails[name] = buffer.getvalue()
        return self.thumbnails[name]


@dataclass(frozen=True)
class Options:
    token: str | None = None  # required on every request when set
    save: Path | None = None  # where results are also written; None: nothing touches the disk
    weights: dict[str, str] = field(default_factory=dict)  # for /v1/info: role -> file


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware in front of everything: the bearer token (header, or ?token= for the page
    a browser opens), and the request body's size, counted as it arrives (Content-Length is only
    a claim) and held in memory so that it is never spooled to disk."""

    def __init__(self, app: Any, token: str | None, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await self._too_large(scope, receive, send)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: only a disconnect can come
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _authorised(self, scope: Scope) -> bool:
        assert self.token is not None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        if given.startswith("Bearer ") and self._matches(given[7:].strip()):
            return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(self._matches(value) for value in query.get("token", []))

    def _matches(self, given: str) -> bool:
        # As bytes: compare_digest refuses non-ASCII strings, and a header may hold anything.
        assert self.token is not None
        return secrets.compare_digest(given.encode("utf-8", "surrogateescape"),
                                      self.token.encode("utf-8", "surrogateescape"))

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error(413, f"request body over the limit of {self.max_body:,} bytes (--max-upload-mb)")(
            scope, receive, send)


def create_app(engine: Engine, library: Library | None = None, options: Options = Options()) -> Any:
    """The ASGI app: FastAPI's routes behind the token and body-size guard."""
    library = library or Library()
    # Uploads stay in memory: the guard has bounded the whole body already, and the server
    # writes nothing to disk unless --save (Starlette spools bigger parts to a temporary file).
    parser = starlette.formparsers.MultiPartParser
    parser.spool_max_size = max(parser.spool_max_size, engine.limits.max_upload + 1)
    api = FastAPI(title="adain serve", version=__version__,
                  description="Arbitrary style transfer with AdaIN: the networks kept warm.")
    page = resources.files("adain_cli") / "web"

    @api.exception_handler(RequestError)
    async def request_error(request: HttpRequest, exc: RequestError) -> JSONResponse:
        retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
        return error(exc.status, str(exc), retry)

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

    @api.get("/v1/health", summary="Liveness: answers while requests are being served")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queue": engine.queue_length}

    @api.get("/v1/info", summary="Versions, device, weights, queue and limits")
    async def info() -> dict[str, Any]:
        execution = engine.stylizer.execution
        return {"adain_cli": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "device": str(execution.device), "dtype": str(execution.dtype).removeprefix("torch."),
                "batch_size": execution.batch_size, "weights": options.weights,
                "queue": engine.queue_length, "served": engine.served,
                "limits": {"max_upload_bytes": engine.limits.max_upload, "max_pixels": engine.limits.max_pixels,
                           "queue": engine.limits.queue},
                "cache": engine.cache_stats(), "styles": len(library.files)}

    @api.get("/v1/styles", summary="The paintings of the --styles folder")
    async def styles() -> dict[str, Any]:
        return {"styles": [{"name": name, "thumbnail": f"/v1/styles/{name}/thumbnail"} for name in library.files]}

    @api.get("/v1/styles/{name:path}/thumbnail", summary="A painting of the library, small, as JPEG",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(name: str) -> Response:
        data = await asyncio.to_thread(library.thumbnail, name)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @api.post("/v1/stylize", summary="Stylize a content image in one style or a mix of several",
              response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                               "description": "The stylized image; X-Seconds says how long the network took."}})
    async def stylize(
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
        format: Annotated[str, Form(description="png, jpeg or webp.")] = "png",
    ) -> Response:
        if format.lower() not in FORMATS:
            raise RequestError(400, f"format must be png, jpeg or webp, got {format!r}")
        if preserve_color and luminance_only:
            raise RequestError(400, "choose preserve_color or luminance_only, not both")
        uploads = [Upload(s.filename or "style", await s.read()) for s in style or []]
        uploads += [await asyncio.to_thread(library.upload, name) for name in style_name or []]
        request = Request(Upload(content.filename or "content", await content.read()), tuple(uploads), alpha,
                          parse_weights(weights), color.mode_from_flags(preserve_color, luminance_only),
                          content_size, style_size)
        began = time.perf_counter()
        work = await asyncio.to_thread(engine.prepare, request)
        picture = await asyncio.wrap_future(engine.submit(work))
        seconds = time.perf_counter() - began
        pillow_format = FORMATS[format.lower()]
        data = await asyncio.to_thread(_encode, picture, pillow_format)
        if options.save is not None:
            await asyncio.to_thread(_save, options.save, data, format.lower())
        return Response(data, media_type=f"image/{pillow_format.lower()}", headers={"X-Seconds": f"{seconds:.3f}"})

    return _Guard(api, options.token, engine.limits.max_upload)


def _encode(picture: Image.Image, pillow_format: str) -> bytes:
    buffer = io.BytesIO()
    images.write_image(picture, buffer, pillow_format)
    return buffer.getvalue()


def _save(folder: Path, data: bytes, ext: str) -> None:
    """--save: each result under a name of the server's making, never the request's."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.{ext}"
    with atomic_write(folder / name) as handle:
        handle.write(data)


def serve_forever(app: Any, listener: socket.socket, *, debug: bool = False) -> None:
    """Run the app under uvicorn on a bound socket until Ctrl-C or SIGTERM, which stop new
    connections, let the requests in flight finish (60 s at most), and return."""
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
                            timeout_graceful_shutdown=60)
    Server(config).run(sockets=[listener])
