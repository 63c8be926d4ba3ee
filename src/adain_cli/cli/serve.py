"""`adain serve`: the web page and HTTP API, with the model kept warm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import jobs, live, serve, weights
from ..errors import UsageError
from . import _options as opt
from ._boundary import error_boundary, warn
from ._model import load_stylizer


def serve_command(
    styles: Annotated[Path | None, typer.Option(
        "--styles", metavar="DIR", help="Paintings the page offers as thumbnails (searched recursively).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; other than loopback, anyone who can "
                                                     "reach it can use the server (see --token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to bind; 0 picks a free one.")] = 8000,
    token: Annotated[str | None, typer.Option(
        "--token", metavar="TOKEN", help="Require 'Authorization: Bearer TOKEN' (or ?token=TOKEN) on every request; "
                                         "also env ADAIN_TOKEN.", envvar="ADAIN_TOKEN")] = None,
    save: Annotated[Path | None, typer.Option(
        "--save", metavar="DIR", help="Also write every result here (by default nothing is written to disk).")] = None,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, metavar="MB", help="Largest request body.")] = serve.DEFAULT_MAX_UPLOAD / 2**20,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=1, metavar="N", help="Largest image, decoded or resized, in pixels.")
    ] = serve.DEFAULT_MAX_PIXELS,
    queue: Annotated[int, typer.Option(
        "--queue", min=1, metavar="N", help="Requests waiting at most; more get 503 with Retry-After.")
    ] = serve.DEFAULT_QUEUE,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", metavar="NAME", help="Also answer requests whose Host is NAME (a reverse proxy's name; "
                                             "'*' for any); repeatable. By default only the bound address, "
                                             "localhost, 127.0.0.1 and [::1].")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(
        "--allow-origin", metavar="ORIGIN", help="Let pages of ORIGIN (https://example.org) use the API, with CORS "
                                                 "headers; repeatable. By default only the server's own page.")
    ] = None,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", min=1, metavar="N", help="Connections held at most; when full, the longest idle one "
                                                      "is closed for a newcomer.")] = serve.DEFAULT_MAX_CONNECTIONS,
    # The timeouts are checked by web.Connections and web.Options, not here: one rule, one message.
    keep_alive: Annotated[float, typer.Option(
        "--keep-alive", metavar="S", help="Seconds an idle connection is kept between requests.")
    ] = serve.DEFAULT_KEEP_ALIVE,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", metavar="S", help="Seconds a request's headers may take to arrive.")
    ] = serve.DEFAULT_HEADER_TIMEOUT,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", metavar="S", help="Seconds a request's body may take to arrive.")
    ] = serve.DEFAULT_BODY_TIMEOUT,
    max_streams: Annotated[int, typer.Option(
        "--max-streams", min=1, metavar="N", help="Live camera streams (/v1/live) at once.")
    ] = live.DEFAULT_MAX_STREAMS,
    max_fps: Annotated[float, typer.Option(
        "--max-fps", metavar="F", help="Frames a second one live stream may send; more are left unprocessed.")
    ] = live.DEFAULT_MAX_FPS,
    stream_idle: Annotated[float, typer.Option(
        "--stream-idle", metavar="S", help="Seconds a live stream may send nothing before it is closed.")
    ] = live.DEFAULT_IDLE,
    vgg: opt.VggPath = None,
    decoder: opt.DecoderPath = None,
    device_name: opt.Device = "auto",
    precision: opt.PrecisionOption = "fp32",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=0, metavar="N",
        help="Requests that arrive together decoded in one network call (same size). 0: 8 on CUDA, else 1.")] = 0,
    tile: opt.Tile = 0,
    max_memory: opt.MaxMemory = "auto",
    compile_: opt.Compile = False,
    offline: opt.Offline = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Serve a web page and an HTTP API (POST /v1/stylize, live camera streams at /v1/live) with the model kept warm."""
    with error_boundary(debug, sigterm=False):
        web = _web_module()

        limits = serve.Limits(round(max_upload_mb * 2**20), max_pixels, queue)
        # A camera frame is an upload too: within the upload limit, and the live default below it.
        streams = live.StreamLimits(min(limits.max_upload, live.DEFAULT_MAX_FRAME), max_fps, stream_idle, max_streams)
        paths = weights.resolve_paths(vgg, decoder)
        options = web.Options(token, save, {"vgg": str(paths[0]), "decoder": str(paths[1])}, host,
                              tuple(allow_host or ()), tuple(allow_origin or ()), body_timeout, streams)
        connections = web.Connections(max_connections, keep_alive, header_timeout)
        library = web.Library.scan(styles, max_pixels)
        if save is not None:
            jobs.make_dirs([save])
        execution = opt.ExecutionOptions(device=device_name, precision=precision, tile=tile, max_memory=max_memory,
                                         compile=compile_, batch_size=batch_size).resolve()
        listener = web.listen(host, port)
        stylizer = load_stylizer(vgg, decoder, execution, offline=offline, quiet=quiet)
        engine = serve.Engine(stylizer, limits)
        bound_host, bound_port = listener.getsockname()[:2]
        if not quiet:
            where = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
            typer.echo(f"adain serve: {where} on {execution.device}, {len(library.files)} styles; Ctrl-C stops",
                       err=True)
        if not web.is_loopback(bound_host):
            warn(f"listening on {bound_host}, reachable from other machines"
                 + ("" if token else "; anyone who can reach it can use it: pass --token"))
        if connections.limit() < max_connections and not quiet:
            typer.echo(f"adain serve: at most {connections.limit()} connections, to stay within the open-file "
                       "limit (ulimit -n)", err=True)
        try:
            web.serve_forever(web.create_app(engine, library, options), listener, debug=debug,
                              connections=connections, max_message=streams.max_message)
        finally:
            engine.close()
        if not quiet:
            typer.echo(f"adain serve: stopped after {engine.served} requests", err=True)


def _web_module() -> Any:
    """The serve command's HTTP module; FastAPI and uvicorn are dependencies, but an install may lack them."""
    try:
        from .. import web
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"):
            raise UsageError("adain serve needs FastAPI and uvicorn: pip install fastapi uvicorn python-multipart") \
                from None
        raise
    return web
