"""`adain serve` left running: web pages elsewhere cannot use it (Host and Origin), no request
kills its worker or its memory, slow and idle connections are bounded, and bad input of every
kind is a 4xx in JSON, never a 500. Each test here failed on the server before these guards."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import resource
import shutil
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
import starlette.formparsers
from conftest import LOCAL, hold_rendering, link_or_copy, synthetic_image
from fastapi.testclient import TestClient
from PIL import Image
from test_cli import adain, one_error_line
from test_serve import CONTENT, SMALL, STYLE, STYLE2, picture, post, serve_process

from adain_cli import Stylizer, images, serve, web
from adain_cli.lru import Recent
from adain_cli.serve import Engine, Limits, Request, RequestError, Upload

FILES = [("content", ("photo.png", CONTENT, "image/png")), ("style", ("painting.png", STYLE, "image/png"))]


def stylize(client: TestClient, headers: dict[str, str] | None = None, **fields):
    return client.post("/v1/stylize", files=FILES, data={**SMALL, **fields}, headers=headers or {})


# --- Host: DNS rebinding ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000", "attacker.localhost"])
def test_a_foreign_host_gets_421_on_every_route(client: TestClient, host: str):
    # After DNS rebinding a page's own name points at 127.0.0.1: its requests carry that name.
    for response in (client.get("/v1/info", headers={"Host": host}), client.get("/v1/styles", headers={"Host": host}),
                     client.get("/", headers={"Host": host}), stylize(client, {"Host": host})):
        assert response.status_code == 421, response.text
        assert response.json()["status"] == 421 and "--allow-host" in response.json()["error"]


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1", "127.0.0.1:1234",
                                  "[::1]", "[::1]:8000"])
def test_local_names_with_or_without_a_port_are_answered(client: TestClient, host: str):
    assert client.get("/v1/health", headers={"Host": host}).status_code == 200


def test_allow_host_names_a_proxy_and_star_allows_any(make_client):
    proxied = make_client(allow_hosts=("styles.example.org",))
    assert proxied.get("/v1/health", headers={"Host": "styles.example.org:443"}).status_code == 200
    assert proxied.get("/v1/health", headers={"Host": "other.example.org"}).status_code == 421
    anything = make_client(allow_hosts=("*",))
    assert anything.get("/v1/health", headers={"Host": "whatever.example"}).status_code == 200


def test_a_server_on_every_address_answers_its_addresses_by_number_not_by_name(make_client):
    everywhere = make_client(bound="0.0.0.0")
    assert everywhere.get("/v1/health", headers={"Host": "192.168.1.20:8000"}).status_code == 200
    assert everywhere.get("/v1/health", headers={"Host": "[fe80::1]:8000"}).status_code == 200
    assert everywhere.get("/v1/health", headers={"Host": "evil.example:8000"}).status_code == 421
    one_address = make_client(bound="10.1.2.3")
    assert one_address.get("/v1/health", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert one_address.get("/v1/health", headers={"Host": "10.1.2.4:8000"}).status_code == 421


def test_host_names_are_read_without_their_port():
    assert [web.host_name(h) for h in ("Example.ORG:80", "[::1]:8000", "[::1]", "::1", "::", "localhost.", "a:b")] == [
        "example.org", "::1", "::1", "::1", "::", "localhost", "a:b"]


# --- Origin: cross-site requests --------------------------------------------------------------------------

@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8000"])
def test_a_post_from_another_origin_is_403_and_does_no_work(client: TestClient, origin: str):
    response = stylize(client, {"Origin": origin})
    assert response.status_code == 403 and "--allow-origin" in response.json()["error"]
    assert client.engine.served == 0  # type: ignore[attr-defined]


def test_the_servers_own_page_and_clients_without_an_origin_still_work(client: TestClient):
    assert stylize(client, {"Origin": LOCAL}).status_code == 200  # the page, same origin
    assert stylize(client, {"Origin": "http://localhost:8000", "Host": "localhost:8000"}).status_code == 200
    assert stylize(client).status_code == 200  # curl and scripts send no Origin


def test_no_cors_headers_unless_an_origin_is_allowed(client: TestClient, make_client):
    plain = client.get("/v1/info", headers={"Origin": "http://evil.example"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers  # unreadable there
    allowed = make_client(allow_origins=("https://app.example.org",))
    response = stylize(allowed, {"Origin": "https://app.example.org"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example.org"
    assert "x-seconds" in response.headers["access-control-expose-headers"].lower()
    preflight = allowed.options("/v1/stylize", headers={"Origin": "https://app.example.org",
                                                         "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert stylize(allowed, {"Origin": "https://other.example.org"}).status_code == 403


def test_allow_origin_must_be_an_origin():
    with pytest.raises(serve.UsageError, match="scheme and host"):
        web.Options(allow_origins=("app.example.org",))


# --- the worker survives any one request's fate -------------------------------------------------------

def held_engine(stylizer, **limits) -> tuple[Engine, threading.Event]:
    """An engine whose worker waits for the event before each batch."""
    held, release = hold_rendering(stylizer)
    return Engine(held, Limits(**limits)), release


def request(alpha: float = 1.0) -> Request:
    return Request(Upload("c.png", CONTENT), (Upload("s.png", STYLE),), alpha=alpha, content_size=0, style_size=0)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_requests_cancelled_in_flight_and_queued_leave_the_worker_serving(stylizer):
    engine, release = held_engine(stylizer)

    async def scenario() -> None:
        # As the route awaits a result: a cancelled task cancels the engine's future.
        waiting = [asyncio.ensure_future(asyncio.wrap_future(engine.submit(engine.prepare(request(a)))))
                   for a in (0.3, 0.6, 0.9)]
        await asyncio.to_thread(wait_until, lambda: engine._busy == 1)  # the first is in flight, two queued
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        release.set()
        served = await asyncio.wrap_future(engine.submit(engine.prepare(request(0.5))))
        assert served.size == (40, 32)

    try:
        asyncio.run(scenario())
        assert engine._worker.is_alive()
        wait_until(lambda: engine.budget.held == 0)  # cancelled work gave its memory back
    finally:
        began = time.monotonic()
        engine.close(timeout=10)
    assert time.monotonic() - began < 10 and not engine._worker.is_alive()


def test_close_returns_with_a_full_queue_and_a_stuck_worker(stylizer):
    engine, release = held_engine(stylizer, queue=2)
    futures = [engine.submit(engine.prepare(request()))]
    wait_until(lambda: engine._busy == 1)
    futures += [engine.submit(engine.prepare(request())) for _ in range(2)]  # the queue is full
    began = time.monotonic()
    engine.close(timeout=0.5)  # used to block for ever on the full queue
    assert time.monotonic() - began < 5
    with pytest.raises(RequestError, match="shutting down"):
        futures[2].result(1)
    with pytest.raises(RequestError, match="shutting down"):
        engine.submit(engine.prepare(request()))
    release.set()
    assert futures[0].result(30).size == (40, 32)  # the one in flight still finishes


class Unforeseen(BaseException):
    """Not an Exception: nothing on the way catches it but the worker's last guard."""


@pytest.mark.parametrize("error", [MemoryError("out of memory"), Unforeseen("anything")])
def test_a_batch_that_raises_anything_fails_its_requests_not_the_worker(stylizer, error: BaseException):
    exploding = Stylizer(stylizer.encoder, stylizer.decoder, execution=stylizer.execution)
    real = exploding.render_batch
    calls = []

    def explode_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    exploding.render_batch = explode_once  # type: ignore[method-assign]
    engine = Engine(exploding)
    try:
        with pytest.raises(RequestError) as failed:
            engine.submit(engine.prepare(request())).result(30)
        assert failed.value.status == 500
        assert engine.submit(engine.prepare(request())).result(30).size == (40, 32)
        assert engine.queue_length == 0
    finally:
        engine.close()


def test_a_request_cancelled_at_shutdown_gets_a_503_and_one_log_line(caplog: pytest.LogCaptureFixture):
    # uvicorn cancels the requests still running when its graceful shutdown times out: each
    # used to print a 55-line traceback.
    sent: list[dict] = []

    async def stuck(scope, receive, send) -> None:
        await asyncio.sleep(60)

    async def scenario() -> None:
        app = web._AnsweredWhenCancelled(web._HostAndOrigin(stuck, web.Options()))
        scope = {"type": "http", "method": "POST", "path": "/v1/stylize", "headers": [(b"host", b"127.0.0.1")]}

        async def send(message) -> None:
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        await task  # returns: the cancellation was answered, not raised to the server

    with caplog.at_level(logging.WARNING, logger="adain_cli.serve"):
        asyncio.run(scenario())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    assert "shutting down" in caplog.text and "Traceback" not in caplog.text


async def post_and_leave(app, leave_after: float) -> list[dict]:
    """POST /v1/stylize straight to the ASGI app; the client goes away `leave_after` s after its body."""
    import httpx2 as httpx

    built = httpx.Request("POST", f"{LOCAL}/v1/stylize", files=FILES, data=SMALL)
    body = built.read()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/stylize", "raw_path": b"/v1/stylize", "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1:8000")] + [(k.lower().encode(), v.encode())
                                                         for k, v in built.headers.items() if k.lower() != "host"]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}

    async def send(message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 30)
    return sent


def test_a_client_that_leaves_has_its_queued_work_skipped_and_its_memory_given_back(stylizer, library):
    engine, release = held_engine(stylizer)
    try:
        first = engine.submit(engine.prepare(request()))  # holds the worker
        wait_until(lambda: engine._busy == 1)
        app = web.create_app(engine, library)
        sent = asyncio.run(post_and_leave(app, leave_after=0.5))
        assert sent == []  # nobody to answer
        release.set()
        first.result(30)
        wait_until(lambda: engine.budget.held == 0)
        time.sleep(0.2)
        assert engine.served == 1  # the work of the client that left was skipped
    finally:
        release.set()
        engine.close()


def test_a_client_that_leaves_while_its_images_decode_leaves_no_memory_reserved(stylizer, library,
                                                                               monkeypatch: pytest.MonkeyPatch):
    engine = Engine(stylizer)
    real = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda *a: (time.sleep(0.5), real(*a))[1])  # still decoding when it goes
    try:
        asyncio.run(post_and_leave(web.create_app(engine, library), leave_after=0.05))
        wait_until(lambda: engine.budget.held == 0)  # the work was settled by the engine all the same
    finally:
        engine.close()


def test_what_a_request_holds_already_counts_for_a_413(stylizer):
    engine = Engine(stylizer, Limits(memory=24 * (40 * 32 + 36 * 36) + 1000))
    try:
        assert engine.prepare(request(), held=500).reservation is not None  # fits with its body
        with pytest.raises(RequestError, match="more than the server's bound") as refused:
            engine.prepare(request(), held=2000)  # never fits: a 413, not a 503 for ever
        assert refused.value.status == 413
    finally:
        engine.close()


# --- memory bounded in bytes --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def huge_flat_png() -> bytes:
    """A 4000x4000 PNG of about 15 KB: 16 megapixels (the default pixel limit) that cost nothing to send."""
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4000), (120, 90, 200)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def heavy_request(client: TestClient, data: bytes):
    """The issue's request: a content and 8 styles, each a 4000x4000 PNG, at their original size."""
    files = [("content", ("c.png", data, "image/png"))] + [("style", (f"s{i}.png", data, "image/png"))
                                                             for i in range(8)]
    return client.post("/v1/stylize", files=files, data={"content_size": "0", "style_size": "0"})


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    decoded: list[str] = []
    real = images.load_bytes

    def counting(data, name, *args, **kwargs):
        decoded.append(name)
        return real(data, name, *args, **kwargs)

    monkeypatch.setattr(images, "load_bytes", counting)
    return decoded


def test_heavy_work_beyond_the_memory_bound_is_503_before_anything_is_decoded(make_client, huge_flat_png,
                                                                               monkeypatch: pytest.MonkeyPatch):
    need = 9 * (serve.DECODED_BYTES_PER_PIXEL + serve.NETWORK_BYTES_PER_PIXEL) * 4000 * 4000  # 3.5 GB
    client = make_client(Limits(memory=need + 2**30))
    client.engine.budget.reserve(2**30, lambda: 1)  # type: ignore[attr-defined]  # other work holds 1 GB
    decoded = count_decodes(monkeypatch)
    response = heavy_request(client, huge_flat_png)
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1, response.text
    assert "memory bound" in response.json()["error"]
    assert decoded == []  # refused on the images' headers alone: no 1.7 GB of tensors held first


def test_work_that_could_never_fit_the_bound_is_413(make_client, huge_flat_png, monkeypatch: pytest.MonkeyPatch):
    client = make_client(Limits(memory=2**30))
    decoded = count_decodes(monkeypatch)
    response = heavy_request(client, huge_flat_png)
    assert response.status_code == 413 and "--max-memory" in response.json()["error"]
    assert decoded == []


def test_admitted_work_holds_its_share_until_it_is_done(stylizer, monkeypatch: pytest.MonkeyPatch):
    engine = Engine(stylizer)
    held_while_decoding = []
    real = images.load_bytes
    monkeypatch.setattr(images, "load_bytes", lambda *a, **k: (held_while_decoding.append(engine.budget.held),
                                                               real(*a, **k))[1])
    try:
        engine.submit(engine.prepare(request())).result(30)
    finally:
        engine.close()
    expected = 24 * (40 * 32 + 36 * 36)  # content and style, 8 bytes a pixel decoded, 16 as the network takes them
    assert held_while_decoding == [expected, expected] and engine.budget.held == 0


def test_a_body_is_refused_when_the_budget_is_spent(make_client):
    client = make_client(Limits(memory=2**20))
    client.engine.budget.reserve(2**20 - 100, lambda: 1)  # type: ignore[attr-defined]
    response = stylize(client)
    assert response.status_code == 503 and response.headers["retry-after"]


def test_styles_are_counted_before_any_painting_is_read(client: TestClient, monkeypatch: pytest.MonkeyPatch):
    reads: list[str] = []
    monkeypatch.setattr(web.Library, "upload", lambda self, name: reads.append(name))
    nine = client.post("/v1/stylize", files=FILES[:1], data={**SMALL, "style_name": ["one.png"] * 9})
    assert nine.status_code == 400 and "at most 8 styles" in nine.json()["error"]
    many = client.post("/v1/stylize", files=FILES[:1], data={**SMALL, "style_name": ["one.png"] * 990})
    assert many.status_code == 400 and "Too many fields" in many.json()["error"]
    assert reads == []


def test_a_large_jpeg_upload_is_decoded_at_a_reduced_scale(client: TestClient, monkeypatch: pytest.MonkeyPatch):
    buffer = io.BytesIO()
    synthetic_image(1200, 900, seed=4).save(buffer, "JPEG")
    sizes = []
    real = images.load_bytes
    monkeypatch.setattr(images, "load_bytes", lambda *a, **k: (sizes.append(real(*a, **k).size), real(*a, **k))[1])
    response = client.post("/v1/stylize", files=[("content", ("big.jpg", buffer.getvalue(), "image/jpeg")),
                                                 FILES[1]], data={"content_size": "128", "style_size": "0"})
    assert picture(response).size == (170, 128)
    assert sizes[0] == (300, 225)  # draft mode: a quarter of each side, still above 128, never 16x the pixels


def test_uploads_are_kept_in_memory_without_changing_starlette_for_the_process(client: TestClient):
    assert starlette.formparsers.MultiPartParser.spool_max_size == 1024 * 1024


# --- slow and idle connections -----------------------------------------------------------------------------

def low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))


def test_idle_sockets_under_a_low_descriptor_limit_neither_lock_out_health_nor_fill_the_log(weights_home: Path):
    import httpx2 as httpx

    process, address = serve_process(weights_home, "--header-timeout", "30", preexec_fn=low_descriptor_limit)
    idle: list[socket.socket] = []
    try:
        port = int(address.rsplit(":", 1)[1])
        for _ in range(150):  # more than the server has descriptors for
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(1.0)
        began = time.monotonic()
        health = httpx.get(f"{address}/v1/health", timeout=10)
        answered_in = time.monotonic() - began
        assert health.status_code == 200 and answered_in < 5
    finally:
        for sock in idle:
            sock.close()
        process.terminate()
        process.wait(60)
    stderr = process.stderr.read()  # through the buffer that read the first line (communicate would skip it)
    assert process.returncode == 0, stderr
    assert len(stderr) < 2000 and "Too many open files" not in stderr and "Traceback" not in stderr, stderr[:2000]
    assert "at most" in stderr and "connections" in stderr, stderr  # it said it lowered the connection limit


def test_connection_limits_are_options_checked_once():
    with pytest.raises(serve.UsageError, match="--header-timeout must be positive"):
        web.Connections(header_timeout=0)
    assert web.Connections(max_connections=5).limit() == 5


# --- bad input is a 4xx, never a 500 --------------------------------------------------------------------

@pytest.mark.parametrize("size", ["1" + "0" * 309, "1" + "0" * 20])
def test_absurd_sizes_are_413_not_500(client: TestClient, size: str):
    for field in ("content_size", "style_size"):
        response = stylize(client, **{field: size})
        assert response.status_code == 413 and "after resizing" in response.json()["error"], response.text


def test_a_library_painting_gone_after_start_is_404_naming_only_the_painting(tmp_path: Path, make_client):
    folder = tmp_path / "paintings"
    folder.mkdir()
    synthetic_image(36, 36, seed=2).save(folder / "kept.png")
    synthetic_image(36, 36, seed=3).save(folder / "gone.png")
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    library = web.Library.scan(folder)
    assert sorted(library.files) == ["gone.png", "kept.png"]  # a broken link is no painting to offer
    (folder / "gone.png").unlink()
    client = TestClient(web.create_app(Engine(make_client().engine.stylizer), library), base_url=LOCAL)
    for response in (client.post("/v1/stylize", files=FILES[:1], data={**SMALL, "style_name": "gone.png"}),
                     client.get("/v1/styles/gone.png/thumbnail"), client.get("/v1/styles/nowhere.png/thumbnail")):
        assert response.status_code == 404, response.text
        assert str(tmp_path) not in response.text and "Traceback" not in response.text
    assert client.get("/v1/styles/kept.png/thumbnail").status_code == 200


def test_a_painting_whose_name_is_not_utf8_is_listed_and_usable(tmp_path: Path, make_client):
    folder = tmp_path / "paintings"
    folder.mkdir()
    synthetic_image(36, 36, seed=2).save(os.fsdecode(os.fsencode(folder) + b"/caf\xe9 a b#c?.png"))
    library = web.Library.scan(folder)
    client = TestClient(web.create_app(Engine(make_client().engine.stylizer), library), base_url=LOCAL)
    [entry] = client.get("/v1/styles").json()["styles"]
    assert entry["name"] == "caf\ufffd a b#c?.png"
    assert entry["thumbnail"] == "/v1/styles/caf%EF%BF%BD%20a%20b%23c%3F.png/thumbnail"  # fetchable as given
    assert client.get(entry["thumbnail"]).status_code == 200
    response = client.post("/v1/stylize", files=FILES[:1], data={**SMALL, "style_name": entry["name"]})
    assert response.status_code == 200


def corrupt_dds() -> bytes:
    """A DDS header whose pixel format flags (26) Pillow's decoder does not implement."""
    header = struct.pack("<7I", 124, 0x1007, 32, 32, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<8I", 32, 26, 0, 32, 0, 0, 0, 0)
    return b"DDS " + header + pixel_format + b"\0" * 20 + b"\0" * 4096


def pillow_file(fmt: str) -> bytes:
    buffer = io.BytesIO()
    synthetic_image(32, 32, seed=5).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["DDS", "ICO", "TGA", "PCX", "SGI"])
def test_formats_outside_the_list_are_415(client: TestClient, fmt: str):
    data = corrupt_dds() if fmt == "DDS" else pillow_file(fmt)
    response = client.post("/v1/stylize", files=[("content", (f"x.{fmt.lower()}", data, "image/x")), FILES[1]],
                           data=SMALL)
    assert response.status_code == 415 and "not an image file in a supported format" in response.json()["error"]


def test_a_corrupt_dds_is_one_line_from_the_cli_too(weights_home: Path, tmp_path: Path):
    (tmp_path / "x.png").write_bytes(corrupt_dds())
    synthetic_image(32, 32, seed=1).save(tmp_path / "s.png")
    result = adain("stylize", tmp_path / "x.png", tmp_path / "s.png", "-o", tmp_path / "o.png", *SMALL_CLI)
    assert result.exit_code == 1
    one_error_line(result, "x.png", "not an image file in a supported format")


SMALL_CLI = ["--content-size", "0", "--style-size", "0"]


def test_a_gif_gives_its_first_frame(client: TestClient):
    frames = [synthetic_image(40, 32, seed=1), synthetic_image(40, 32, seed=9)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    response = client.post("/v1/stylize", files=[("content", ("a.gif", buffer.getvalue(), "image/gif")), FILES[1]],
                           data=SMALL)
    assert picture(response).size == (40, 32)


def test_weights_whose_sum_is_not_finite_are_400(client: TestClient):
    response = post(client, styles=(STYLE, STYLE2), weights="1e308,1e308")
    assert response.status_code == 400 and "finite sum" in response.json()["error"]


def test_a_save_folder_removed_while_serving_still_returns_the_image(make_client, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture):
    folder = tmp_path / "saved"
    folder.mkdir()
    client = make_client(save=folder)
    saved = stylize(client)
    assert (folder / saved.headers["x-saved-as"]).is_file()
    shutil.rmtree(folder)
    with caplog.at_level(logging.WARNING, logger="adain_cli.serve"):
        response = stylize(client)
    assert picture(response).size == (40, 32)
    assert "cannot write" in response.headers["x-save-error"] and "x-saved-as" not in response.headers
    assert "result not saved" in caplog.text


def test_thumbnails_keep_to_the_pixel_limit(tmp_path: Path, make_client):
    folder = tmp_path / "paintings"
    folder.mkdir()
    synthetic_image(60, 60, seed=2).save(folder / "big.png")
    client = TestClient(web.create_app(Engine(make_client().engine.stylizer), web.Library.scan(folder, 1000)),
                        base_url=LOCAL)
    response = client.get("/v1/styles/big.png/thumbnail")
    assert response.status_code == 413 and str(folder) not in response.text


# --- tokens ---------------------------------------------------------------------------------------------

def test_the_bearer_scheme_is_case_insensitive_and_a_utf8_token_matches(make_client):
    client = make_client(token="gr\u00fc\u00dfe")
    utf8 = "gr\u00fc\u00dfe".encode()
    for scheme in (b"Bearer", b"bearer", b"BEARER"):
        assert client.get("/v1/health", headers={"Authorization": scheme + b" " + utf8}).status_code == 200
    assert client.get("/v1/health", headers={"Authorization": b"Basic " + utf8}).status_code == 401
    assert client.get("/v1/health?token=gr%C3%BC%C3%9Fe").status_code == 200


def test_an_empty_token_is_a_usage_error(weights_home: Path):
    result = adain("serve", "--token", "", "--port", "0")
    assert result.exit_code == 2
    one_error_line(result, "--token must not be empty")


def test_the_docs_load_with_a_token(make_client):
    client = make_client(token="s3cret")
    page = client.get("/docs?token=s3cret")
    assert page.status_code == 200 and "/openapi.json?token=s3cret" in page.text
    schema = client.get("/openapi.json?token=s3cret").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 401


def test_a_token_parameter_is_redacted_however_its_name_is_spelled():
    assert web.redact("/?%74oken=s3cret&a=1") == "/?%74oken=[redacted]&a=1"
    assert web.redact("/v1/health?notoken=1&token=x") == "/v1/health?notoken=1&token=[redacted]"


def test_a_websocket_without_the_token_is_refused_at_the_handshake(make_client):
    app = web.create_app(make_client().engine, web.Library(), web.Options(token="s3cret"))  # type: ignore[attr-defined]
    sent: list[dict] = []

    async def handshake() -> None:
        async def receive():
            return {"type": "websocket.connect"}

        async def send(message) -> None:
            sent.append(message)

        await app({"type": "websocket", "path": "/v1/live", "query_string": b"", "headers": [
            (b"host", b"127.0.0.1:8000")]}, receive, send)

    asyncio.run(handshake())
    assert sent[0]["type"] == "websocket.close"


def test_tokens_are_redacted_from_the_access_log():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/?a=1&token=s3cret&b=2", "1.1", 200), None)
    web._RedactTokens().filter(record)
    assert "s3cret" not in record.getMessage() and "token=[redacted]&b=2" in record.getMessage()


@pytest.mark.skipif(sys.platform != "linux", reason="descriptor counts from /proc")
def test_descriptor_limit_lowers_the_connection_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, len(os.listdir("/proc/self/fd")) + 40), hard))
    try:
        assert web.Connections(max_connections=64).limit() < 40
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- one real server process, as `adain serve` runs ------------------------------------------------------

TOKEN = "s3cret-value"


@pytest.fixture(scope="module")
def guarded_server(weights, tmp_path_factory: pytest.TempPathFactory):
    """`adain serve --token --debug` with short header and body timeouts: its address, and its
    log lines as they come (unbuffered, read on a thread)."""
    home = tmp_path_factory.mktemp("adain-home")
    (home / "weights").mkdir()
    for source in weights:
        link_or_copy(source, home / "weights" / source.name)
    process, address = serve_process(home, "--token", TOKEN, "--debug", "--header-timeout", "0.5",
                                     "--body-timeout", "0.5", env={**os.environ, "ADAIN_HOME": str(home),
                                                                    "PYTHONUNBUFFERED": "1"})
    log: list[str] = []
    readers = [threading.Thread(target=lambda stream=stream: log.extend(stream), daemon=True)
               for stream in (process.stdout, process.stderr)]  # uvicorn writes its access log on stdout
    for reader in readers:
        reader.start()
    yield address, log
    process.terminate()
    process.wait(60)
    for reader in readers:
        reader.join(10)
    assert process.returncode == 0, "".join(log)
    assert "Traceback" not in "".join(log) and TOKEN not in "".join(log)


def test_a_server_process_refuses_a_foreign_host_and_origin(guarded_server):
    import httpx2 as httpx

    address, _ = guarded_server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{address}/v1/info", headers={**auth, "Host": "rebound.example"}).status_code == 421
    foreign = httpx.post(f"{address}/v1/stylize", files=FILES, data=SMALL,
                         headers={**auth, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert httpx.post(f"{address}/v1/stylize", files=FILES, data=SMALL, headers=auth).status_code == 200


def test_a_request_head_that_never_completes_is_closed_and_a_slow_body_is_408(guarded_server):
    address, _ = guarded_server
    port = int(address.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        began = time.monotonic()
        assert slow.recv(100) == b""  # closed by the server
        assert time.monotonic() - began < 5
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"POST /v1/stylize HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n--x\r\n")
        answer = b"".join(iter(lambda: slow.recv(1000), b""))  # until the server closes
        assert answer.startswith(b"HTTP/1.1 408") and b"--body-timeout" in answer


def test_a_debug_server_logs_requests_without_their_token(guarded_server):
    import httpx2 as httpx

    address, log = guarded_server
    assert httpx.get(f"{address}/v1/health?token={TOKEN}").status_code == 200
    assert httpx.get(f"{address}/v1/health?token=wrong-guess").status_code == 401
    wait_until(lambda: "wrong-guess" in "".join(log) or '/v1/health?token=[redacted] HTTP/1.1" 401' in "".join(log))
    assert '/v1/health?token=[redacted] HTTP/1.1" 200' in "".join(log)
    assert TOKEN not in "".join(log) and "wrong-guess" not in "".join(log)


def test_a_debug_server_logs_live_streams_without_their_token(guarded_server):
    from websockets.sync.client import connect

    address, log = guarded_server
    with connect(address.replace("http", "ws") + f"/v1/live?token={TOKEN}") as ws:  # logged by uvicorn.error
        assert json.loads(ws.recv())["type"] == "ready"
    wait_until(lambda: "/v1/live?token=[redacted]" in "".join(log))
    assert TOKEN not in "".join(log)


def test_the_recent_cache_keeps_within_its_size_as_items_come_and_are_replaced():
    cache = Recent(100, 10, len)
    for i in range(20):
        cache.put(i, b"abcd")
    cache.put(19, b"ab")  # replaced: its old size no longer counts
    cache.put(20, b"abcdef")
    assert len(cache) == 2 and cache.get(19) == b"ab" and cache.get(20) == b"abcdef"
