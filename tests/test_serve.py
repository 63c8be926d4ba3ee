"""`adain serve`: the API through FastAPI's test client (every field, every error status,
caching, concurrency, tokens, no disk writes), the command itself, and the page in a real
headless Chromium."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import hold_rendering, synthetic_image
from fastapi.testclient import TestClient
from PIL import Image
from test_cli import adain, bad_input_cases, one_error_line

from adain_cli import images, serve, web
from adain_cli.serve import Engine, Limits


def png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    synthetic_image(width, height, seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


CONTENT, STYLE, STYLE2 = png(40, 32, 1), png(36, 36, 2), png(30, 40, 3)
SMALL = {"content_size": "0", "style_size": "0"}


def post(client: TestClient, content: bytes = CONTENT, styles: tuple[bytes, ...] = (STYLE,), **fields):
    files = [("content", ("photo.png", content, "image/png"))]
    files += [("style", (f"painting{i}.png", data, "image/png")) for i, data in enumerate(styles)]
    data = {**SMALL, **{k: v for k, v in fields.items() if k != "style_name"}}
    if "style_name" in fields:
        data["style_name"] = fields["style_name"]
    return client.post("/v1/stylize", files=files, data=data)


def picture(response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def expected(stylizer, *styles: bytes, **options) -> Image.Image:
    """What the library API gives for the same images: the server must agree."""
    return stylizer.stylize(Image.open(io.BytesIO(CONTENT)).convert("RGB"),
                            [Image.open(io.BytesIO(s)).convert("RGB") for s in styles], **options)


def close(one: Image.Image, two: Image.Image) -> bool:
    a, b = (torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8).short() for im in (one, two))
    return one.size == two.size and int((a - b).abs().max()) <= 1


# --- the API -----------------------------------------------------------------------------------------

def test_health_and_info(client: TestClient):
    assert client.get("/v1/health").json() == {"status": "ok", "queue": 0}
    info = client.get("/v1/info").json()
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["styles"] == 2
    assert info["limits"] == {"max_upload_bytes": serve.DEFAULT_MAX_UPLOAD, "max_pixels": serve.DEFAULT_MAX_PIXELS,
                              "queue": serve.DEFAULT_QUEUE, "memory_bytes": client.engine.budget.limit}
    assert info["memory_held"] == 0
    assert {"adain_cli", "torch", "queue", "weights", "served"} <= set(info)


def test_stylize_returns_the_image_the_library_api_makes(client: TestClient, stylizer):
    response = post(client, alpha="0.8")
    assert response.headers["content-type"] == "image/png" and float(response.headers["x-seconds"]) > 0
    assert close(picture(response), expected(stylizer, STYLE, alpha=0.8))


def test_several_styles_mix_by_weights(client: TestClient, stylizer):
    mixed = picture(post(client, styles=(STYLE, STYLE2), weights="0.25,0.75"))
    assert close(mixed, expected(stylizer, STYLE, STYLE2, weights=[0.25, 0.75]))


@pytest.mark.parametrize(("field", "value", "option"), [
    ("preserve_color", "true", {"color_mode": "coral"}),
    ("luminance_only", "true", {"color_mode": "luminance"}),
])
def test_colour_fields(client: TestClient, stylizer, field: str, value: str, option: dict):
    assert close(picture(post(client, **{field: value})), expected(stylizer, STYLE, **option))


@pytest.mark.parametrize(("fields", "flags"), [
    ({}, []),
    ({"alpha": "0.6"}, ["--alpha", "0.6"]),
    ({"preserve_color": "true"}, ["--preserve-color"]),
    ({"luminance_only": "true"}, ["--luminance-only"]),
])
def test_the_apis_pixels_equal_the_clis(client: TestClient, weights_home: Path, tmp_path: Path, fields: dict,
                                        flags: list[str]):
    # One runner under both: not close, equal.
    (tmp_path / "photo.png").write_bytes(CONTENT)
    (tmp_path / "painting.png").write_bytes(STYLE)
    done = adain("stylize", tmp_path / "photo.png", tmp_path / "painting.png", "-o", tmp_path / "cli.png",
                 "--content-size", "0", "--style-size", "0", "--device", "cpu", *flags)
    assert done.exit_code == 0, done.output
    served = picture(post(client, **fields)).convert("RGB")
    with Image.open(tmp_path / "cli.png") as written:
        assert served.tobytes() == written.convert("RGB").tobytes()


def test_sizes_and_formats(client: TestClient):
    assert picture(post(client, content_size="64")).size == (80, 64)
    assert picture(post(client)).size == (40, 32)
    plain, small_style = picture(post(client)), picture(post(client, style_size="16"))
    assert not close(plain, small_style)
    for name, kind in (("jpeg", "JPEG"), ("webp", "WEBP"), ("PNG", "PNG")):
        response = post(client, format=name)
        assert picture(response).format == kind
        assert response.headers["content-type"] == f"image/{kind.lower()}"


def test_library_styles_by_name_and_thumbnails(client: TestClient, stylizer):
    assert client.get("/v1/styles").json()["styles"] == [
        {"name": "old/two.png", "thumbnail": "/v1/styles/old/two.png/thumbnail"},
        {"name": "one.png", "thumbnail": "/v1/styles/one.png/thumbnail"}]
    by_name = picture(post(client, styles=(), style_name="one.png"))
    assert close(by_name, expected(stylizer, STYLE))
    thumb = client.get("/v1/styles/old/two.png/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).size == (30, 40)


def test_changing_only_alpha_or_weights_encodes_nothing_again(client: TestClient, stylizer):
    calls = {"encoder": 0, "decoder": 0}
    hooks = [stylizer.encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1)),
             stylizer.decoder.register_forward_hook(lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1))]
    try:
        picture(post(client, styles=(STYLE, STYLE2), alpha="1"))
        assert calls == {"encoder": 3, "decoder": 1}
        for fields in ({"alpha": "0.5"}, {"alpha": "0.5", "weights": "3,1"}):
            picture(post(client, styles=(STYLE, STYLE2), **fields))
        assert calls == {"encoder": 3, "decoder": 3}
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize(("fields", "message"), [
    ({"alpha": "1.5"}, "alpha must be between 0 and 1"),
    ({"alpha": "much"}, "alpha: Input should be a valid number"),
    ({"weights": "1,2"}, "weights mix several styles"),
    ({"weights": "a,b"}, "comma-separated numbers"),
    ({"format": "gif"}, "format must be png, jpeg or webp"),
    ({"preserve_color": "true", "luminance_only": "true"}, "choose one of preserve_color and luminance_only"),
    ({"content_size": "8"}, "content-size must be 0"),
    ({"style_name": "../etc/passwd"}, "not in the styles folder"),
])
def test_bad_fields_are_400_with_a_message(client: TestClient, fields: dict, message: str):
    response = post(client, **fields)
    assert response.status_code == 400
    assert message in response.json()["error"] and response.json()["status"] == 400


def test_unknown_paths_and_styles_are_404_in_json(client: TestClient):
    for path in ("/nowhere", "/v1/styles/missing.png/thumbnail"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["status"] == 404
    assert client.delete("/v1/stylize").status_code == 405


def test_missing_parts_are_400(client: TestClient):
    assert client.post("/v1/stylize", data=SMALL).status_code == 400
    no_style = client.post("/v1/stylize", files=[("content", ("a.png", CONTENT, "image/png"))], data=SMALL)
    assert no_style.status_code == 400 and "at least one style" in no_style.json()["error"]
    mismatch = post(client, styles=(STYLE, STYLE2), weights="1,2,3")
    assert mismatch.status_code == 400 and "3 weights given for 2 styles" in mismatch.json()["error"]


@pytest.mark.parametrize(("case", "status"), [("zero", 415), ("text", 415), ("truncated", 400), ("tiny", 400),
                                             ("bomb", 413)])
def test_images_that_cannot_be_used(client: TestClient, tmp_path: Path, case: str, status: int):
    path, reason = bad_input_cases(tmp_path)[case]
    response = post(client, content=path.read_bytes())
    assert response.status_code == status and reason in response.json()["error"], response.text
    assert "Traceback" not in response.text


def test_too_large_is_413_in_bytes_and_in_pixels(make_client):
    small_body = make_client(Limits(max_upload=2000))
    response = post(small_body)
    assert response.status_code == 413 and "over the limit of 2,000 bytes" in response.json()["error"]
    few_pixels = make_client(Limits(max_pixels=1000))
    response = post(few_pixels)
    assert response.status_code == 413 and "1,000" in response.json()["error"]
    upscaled = make_client(Limits(max_pixels=5000))
    response = post(upscaled, content_size="1000")
    assert response.status_code == 413 and "after resizing" in response.json()["error"]


def test_a_full_queue_is_503_with_retry_after_and_health_still_answers(make_client, stylizer):
    held, release = hold_rendering(stylizer)
    client = make_client(Limits(queue=1), engine_stylizer=held)
    engine: Engine = client.engine  # type: ignore[attr-defined]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, client)
        deadline = time.monotonic() + 10
        while engine.queue_length < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = pool.submit(post, client)  # waits in the queue: it is now full
        while engine._queue.qsize() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = post(client)
        health = client.get("/v1/health")
        release.set()
        assert first.result().status_code == second.result().status_code == 200
    assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
    assert "queue is full" in busy.json()["error"]
    assert health.status_code == 200 and health.json()["queue"] == 2


def test_concurrent_requests_all_succeed_and_agree(client: TestClient):
    alone = {alpha: picture(post(client, alpha=str(alpha))).tobytes() for alpha in (0.4, 0.7, 1.0)}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: (i, post(client, alpha=str((0.4, 0.7, 1.0)[i % 3]))), range(16)))
    for i, response in responses:
        assert picture(response).tobytes() == alone[(0.4, 0.7, 1.0)[i % 3]]


def test_requests_arriving_together_share_a_network_call(stylizer, library: web.Library):
    batched, hold = hold_rendering(type(stylizer)(stylizer.encoder, stylizer.decoder, "cpu", batch_size=4))
    engine = Engine(batched)
    calls = []
    hook = batched.decoder.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        request = serve.Request(serve.Upload("c.png", CONTENT), (serve.Upload("s.png", STYLE),), content_size=0,
                                style_size=0)
        requests = [serve.Request(**{**request.__dict__, "alpha": a}) for a in (0.2, 0.5, 0.8, 1.0, 0.6)]
        futures = [engine.submit(engine.prepare(requests[0]))]
        deadline = time.monotonic() + 10
        while engine._queue.qsize() and time.monotonic() < deadline:  # the worker has taken the first
            time.sleep(0.01)
        futures += [engine.submit(engine.prepare(r)) for r in requests[1:]]
        hold.set()
        results = [f.result(60) for f in futures]
    finally:
        hook.remove()
        engine.close()
    assert calls == [1, 4]  # the first went alone; the four that queued behind it went together
    assert len({r.tobytes() for r in results}) == 5


# --- safety -----------------------------------------------------------------------------------------

def test_a_token_is_required_on_every_request_when_set(make_client):
    client = make_client(token="s3cret/+&=")
    for path in ("/", "/v1/health", "/v1/info", "/v1/styles", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/health", headers={"Authorization": "Bearer wr\u00f6ng".encode("latin-1")}).status_code == 401
    assert client.get("/v1/health", headers={"Authorization": "Bearer s3cret/+&="}).status_code == 200
    assert client.get("/?token=s3cret%2F%2B%26%3D").status_code == 200  # as the page's encodeURIComponent sends it
    files = [("content", ("a.png", CONTENT, "image/png")), ("style", ("s.png", STYLE, "image/png"))]
    assert client.post("/v1/stylize", files=files, data=SMALL).status_code == 401
    assert client.post("/v1/stylize", files=files, data=SMALL,
                       headers={"Authorization": "Bearer s3cret/+&="}).status_code == 200


def test_uploads_never_touch_the_disk_and_nothing_is_saved_by_default(client: TestClient, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    def refuse(self):
        raise AssertionError("an upload was spooled to a temporary file")

    written: list[Path] = []
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", refuse)
    monkeypatch.setattr(web, "atomic_write", written.append)  # the one way a result reaches the disk
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    big = io.BytesIO()
    Image.effect_noise((900, 900), 64).convert("RGB").save(big, "PNG")  # about 2.4 MB: over Starlette's 1 MB spool
    assert len(big.getvalue()) > 2**20
    response = post(client, content=big.getvalue(), content_size="64")
    assert response.status_code == 200
    assert written == [] and list((tmp_path / "cwd").iterdir()) == []
    assert "X-Saved-As" not in response.headers and "X-Save-Error" not in response.headers


def test_save_writes_each_result_under_a_name_of_its_own(make_client, tmp_path: Path):
    client = make_client(save=tmp_path)
    picture(post(client, format="jpeg"))
    [saved] = tmp_path.iterdir()
    assert saved.suffix == ".jpeg" and Image.open(saved).size == (40, 32)


def test_the_api_is_described_in_openapi(client: TestClient):
    schema = client.get("/openapi.json").json()
    assert {"/v1/stylize", "/v1/health", "/v1/info", "/v1/styles"} <= set(schema["paths"])
    body = schema["paths"]["/v1/stylize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {"content", "style", "style_name", "alpha", "weights", "preserve_color", "luminance_only",
            "content_size", "style_size", "format"} <= set(fields)


# --- the command --------------------------------------------------------------------------------------

def test_a_busy_port_is_a_usage_error_before_the_model_loads(weights_home: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = adain("serve", "--port", taken.getsockname()[1])
    assert result.exit_code == 2
    one_error_line(result, "cannot listen")


def test_without_fastapi_serve_says_what_to_install(weights_home: Path, monkeypatch: pytest.MonkeyPatch):
    import adain_cli

    monkeypatch.setitem(sys.modules, "fastapi", None)  # what `import fastapi` meets when it is not installed
    monkeypatch.delitem(sys.modules, "adain_cli.web")
    monkeypatch.delattr(adain_cli, "web")
    result = adain("serve", "--port", "0")
    assert result.exit_code == 2
    one_error_line(result, "needs FastAPI and uvicorn: pip install")


def test_styles_must_be_a_folder(weights_home: Path, tmp_path: Path):
    result = adain("serve", "--styles", tmp_path / "nowhere", "--port", "0")
    assert result.exit_code == 2
    one_error_line(result, "--styles must be a folder")


def serve_process(weights_home: Path, *args: str, **popen) -> tuple[subprocess.Popen, str]:
    """`adain serve` in its own process on a free port; returns it and its address."""
    popen.setdefault("env", {**os.environ, "ADAIN_HOME": str(weights_home)})
    process = subprocess.Popen([sys.executable, "-m", "adain_cli", "serve", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "http://" in line, line + process.stderr.read()
    return process, line.split()[2]


def test_sigterm_drains_and_exits_cleanly_and_other_hosts_get_a_warning(weights_home: Path):
    import httpx2 as httpx

    process, address = serve_process(weights_home, "--host", "0.0.0.0")
    try:
        assert process.stderr is not None
        warning = process.stderr.readline()
        assert "reachable from other machines" in warning and "--token" in warning
        port = address.rsplit(":", 1)[1]
        files = [("content", ("a.png", CONTENT, "image/png")), ("style", ("s.png", STYLE, "image/png"))]
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, f"http://127.0.0.1:{port}/v1/stylize", files=files,
                                    data={**SMALL, "content_size": "256"}, timeout=60)
            deadline = time.monotonic() + 30  # until the request is in the engine: then SIGTERM must wait for it
            while httpx.get(f"http://127.0.0.1:{port}/v1/health").json()["queue"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            assert in_flight.result().status_code == 200  # finished, not cut off
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stopped after 1 requests" in stderr and "Traceback" not in stderr


# --- the page in a real browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium; .ci/run does)")
def test_the_page_in_headless_chromium(stylizer, library: web.Library, tmp_path: Path):
    import uvicorn
    from playwright.sync_api import sync_playwright

    photo, painting = tmp_path / "photo.png", tmp_path / "painting.png"
    photo.write_bytes(png(64, 48, 5))
    painting.write_bytes(png(40, 40, 6))
    engine = Engine(stylizer)
    app = web.create_app(engine, library, web.Options(token="t0k/+"))  # the page must carry the token along
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/?token=t0k%2F%2B"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized screen
            page.goto(url)
            page.wait_for_function("document.querySelector('#library button img')?.naturalWidth > 0")  # thumbnails
            page.set_input_files("#content", str(photo))
            page.set_input_files("#styles", str(painting))
            page.select_option("#size", "0")
            page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')")
            first = page.get_attribute("#result", "src")
            first_pixels = result_bytes(page)
            page.focus("#alpha")
            for _ in range(8):
                page.keyboard.press("ArrowLeft")  # the slider moved with the keyboard: alpha 1 -> 0.6
            page.wait_for_function(f"document.querySelector('#result').src !== {first!r} && "
                                   "document.querySelector('#status').textContent.startsWith('Done')")
            assert page.input_value("#alpha") == "0.6"
            assert result_bytes(page) != first_pixels
            assert page.get_attribute("#download", "href") == page.get_attribute("#result", "src")
            page.click("#library button")  # a library painting too: two styles, so weight sliders appear
            page.wait_for_selector("#weights input[type=range] >> nth=1")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
        engine.close()
    assert engine.served >= 2


def result_bytes(page) -> list[int]:
    return page.evaluate("""async () => {
        const image = document.querySelector('#result');
        const canvas = document.createElement('canvas');
        canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(image, 0, 0);
        return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data.slice(0, 4000));
    }""")


def test_images_module_decodes_uploads_like_files(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(CONTENT)
    assert images.load_bytes(CONTENT, "a.png").tobytes() == images.load_image(tmp_path / "a.png").tobytes()
