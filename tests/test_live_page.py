"""The page's Camera mode in a real headless Chromium with a fake camera (a generated .y4m clip):
stylized frames over /v1/live at the working size, the frame rates, a painting switch seen in the
output's pixels (against a paused camera's settled output), what the page sends (no frame before a
painting, an own painting uploaded once, strength, mix and size as settings), the full-size still,
the layout on wide and phone screens, the tracks stopped on leaving the mode, a lost connection and
its reconnect, and the messages for a refused camera, no camera and an insecure page."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from adain_cli import web
from adain_cli.serve import Engine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium)")
TOKEN = "t0k/+"
CLIP = (96, 64, 10)  # width, height, frames: small, so a frame costs the random network little

# Remembers every camera stream the page opens, so a test can see whether its tracks were stopped,
# and what it sends on its WebSockets (`sent`: text messages parsed, frames as their byte counts).
WATCH = """
window.sent = [];
const realSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  sent.push(typeof data === "string" ? JSON.parse(data) : data.size ?? data.byteLength);
  return realSend.call(this, data);
};
window.openedStreams = [];
const realGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await realGetUserMedia(constraints);
  window.openedStreams.push(stream);
  return stream;
};
"""
# The output canvas shrunk to 16x16 RGBA: enough to tell pictures apart, small to carry back.
OUTPUT_PIXELS = """() => {
  const output = document.querySelector('#live-output');
  const small = document.createElement('canvas');
  small.width = 16; small.height = 16;
  const context = small.getContext('2d');
  context.drawImage(output, 0, 0, 16, 16);
  return Array.from(context.getImageData(0, 0, 16, 16).data);
}"""

# True once the output differs from `was` (OUTPUT_PIXELS of an earlier picture) by more than 8 levels.
DIFFERS_FROM = f"""(was) => {{
  const now = ({OUTPUT_PIXELS})();
  let total = 0;
  for (let i = 0; i < now.length; i++) total += Math.abs(now[i] - was[i]);
  return total / now.length > 8;
}}"""


def write_y4m(path: Path, width: int, height: int, frames: int) -> None:
    """A 4:2:0 clip: a colour gradient with a bright square that moves one step per frame."""
    chroma = (width // 2) * (height // 2)
    u_plane = bytes(64 + (x * 128) // (width // 2) for _ in range(height // 2) for x in range(width // 2))
    v_plane = bytes(192 - (y * 128) // (height // 2) for y in range(height // 2) for _ in range(width // 2))
    assert len(u_plane) == len(v_plane) == chroma
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for frame in range(frames):
            left, top = 4 + frame * (width - 28) // frames, 8 + frame * 3
            luma = bytearray(30 + (x + y) * 120 // (width + height) for y in range(height) for x in range(width))
            for y in range(top, top + 20):
                luma[y * width + left: y * width + left + 20] = b"\xeb" * 20
            out.write(b"FRAME\n" + bytes(luma) + u_plane + v_plane)


@contextlib.contextmanager
def serving(engine: Engine, library: web.Library, port: int = 0) -> Iterator[int]:
    """The app under uvicorn in a thread, on 127.0.0.1:port (0: any free one); yields the port."""
    import uvicorn

    app = web.create_app(engine, library, web.Options(token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the same port again after a stop
    listener.bind(("127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():  # listening only once uvicorn has started
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def page_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/?token=t0k%2F%2B"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    clip = tmp_path_factory.mktemp("camera") / "moving.y4m"
    write_y4m(clip, *CLIP)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def engine(stylizer):
    engine = Engine(stylizer)
    yield engine
    engine.close()


@pytest.fixture
def camera_page(chromium):
    """A page in a context of its own that may use the camera, watched; closed after the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["camera"])
    context.add_init_script(WATCH)
    page = context.new_page()
    yield page
    context.close()


def camera_mode_by_keyboard(page) -> None:
    page.focus('input[name="mode"][value="photo"]')
    page.keyboard.press("ArrowRight")  # radios: the arrow key moves the choice to Camera
    assert page.is_checked('input[name="mode"][value="camera"]')


def wait_for_answers(page, more_than: int) -> int:
    """Waits until the page has shown more than `more_than` answers; returns how many it has."""
    page.wait_for_function(f"live.received > {more_than}", timeout=30_000)
    return page.evaluate("live.received")


def sent_settings(page, before: int | None = None) -> list[dict]:
    return [m for m in page.evaluate("sent")[:before] if isinstance(m, dict) and m["type"] == "settings"]


def wait_for_sent(page, matches, seconds: float = 10) -> dict:
    """The first text message the page sent that `matches`, waiting for it as long as `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [m for m in page.evaluate("sent") if isinstance(m, dict) and matches(m)]
        if found:
            return found[0]
        page.wait_for_timeout(50)
    raise AssertionError("the page never sent the message")


def difference(one: list[int], two: list[int]) -> float:
    return sum(abs(a - b) for a, b in zip(one, two, strict=True)) / len(one)


def spread(pixels: list[int]) -> float:
    values = [v for i, v in enumerate(pixels) if i % 4 != 3]  # the colours, not the alpha
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def settled_pixels(page) -> list[int]:
    """The output once two answers in a row look alike (the camera paused): any later difference
    is the settings', not the clip's or the smoothing's."""
    previous = page.evaluate(OUTPUT_PIXELS)
    for _ in range(20):
        wait_for_answers(page, page.evaluate("live.received"))
        current = page.evaluate(OUTPUT_PIXELS)
        if difference(previous, current) < 1.0:
            return current
        previous = current
    raise AssertionError("the output never settled on a paused camera")


def test_the_camera_stylized_live(camera_page, engine: Engine, library: web.Library, tmp_path: Path):
    page = camera_page
    own = tmp_path / "own painting.png"
    Image.new("RGB", (48, 40), (128, 128, 128)).save(own)  # flat: far from the library's, even to random weights
    with serving(engine, library) as port:
        page.goto(page_url(port))
        page.wait_for_function("document.querySelector('#library button img')?.naturalWidth > 0")
        camera_mode_by_keyboard(page)
        page.wait_for_function("document.querySelector('#camera-video').videoWidth > 0")
        assert page.locator("#camera option").count() >= 1  # the cameras, by enumerateDevices
        # The fake camera, like most laptops' own, reports no facing mode: it faces the user, mirrored.
        assert page.evaluate("getComputedStyle(document.querySelector('#camera-video')).transform") != "none"
        page.wait_for_function("document.querySelector('#live-status').textContent.includes('Pick a painting')")

        page.click("#library button >> nth=0")
        wait_for_answers(page, 1)
        page.wait_for_function("Number(document.querySelector('#fps-page').textContent) > 0")
        page.wait_for_function("document.querySelector('#latency').textContent.endsWith('ms')")  # the server's stats
        first_frame = next(i for i, message in enumerate(page.evaluate("sent")) if isinstance(message, int))
        chosen = page.get_attribute("#library button >> nth=0", "title")
        assert sent_settings(page, before=first_frame)[-1]["style_name"] == [chosen]  # no frame before it
        moving = page.evaluate(OUTPUT_PIXELS)
        assert spread(moving) > 5, "the output is blank"
        assert page.evaluate("[live.canvas.width, live.canvas.height]") == [96, 64]  # never enlarged
        assert page.evaluate("document.querySelector('#live-output').height") == 256  # content_size 256

        # Side by side on a wide screen, one above the other on a phone.
        video, output = page.locator("#camera-video").bounding_box(), page.locator("#live-output").bounding_box()
        assert abs(video["y"] - output["y"]) < 2 and output["x"] > video["x"] + video["width"]
        page.set_viewport_size({"width": 390, "height": 844})
        video, output = page.locator("#camera-video").bounding_box(), page.locator("#live-output").bounding_box()
        assert output["y"] >= video["y"] + video["height"]

        page.evaluate("document.querySelector('#camera-video').pause()")  # the same frame from now on
        library_painted = settled_pixels(page)
        page.click("#library button >> nth=0")  # off again, and an own painting instead: uploaded once
        page.set_input_files("#styles", str(own))
        page.wait_for_function(DIFFERS_FROM, arg=library_painted, timeout=30_000)
        page.focus("#alpha")
        page.keyboard.press("ArrowLeft")  # a change of strength: a settings message, the painting not again
        page.select_option("#working-size", "384")
        wanted = {"style_name": ["own-0-own painting.png"], "alpha": 0.95, "content_size": 384}
        settings = wait_for_sent(page, lambda m: m["type"] == "settings" and wanted.items() <= m.items())
        assert settings == sent_settings(page)[-1]
        page.click("#library button >> nth=1")  # two paintings: a mix, with a weight slider each
        page.focus("#weights input[type=range] >> nth=0")
        page.keyboard.press("ArrowLeft")
        mixed = {"style_name": [page.get_attribute("#library button >> nth=1", "title"), *wanted["style_name"]],
                 "weights": [0.95, 1]}
        wait_for_sent(page, lambda m: m["type"] == "settings" and mixed.items() <= m.items())
        uploads = [m["name"] for m in page.evaluate("sent") if isinstance(m, dict) and m["type"] == "style"]
        assert uploads == wanted["style_name"]  # sent once, however often the settings change

        page.click("#still")
        page.wait_for_selector("#still-link:not([hidden])", timeout=30_000)
        still = Image.open(io.BytesIO(bytes(page.evaluate("""async () => {
            const response = await fetch(document.querySelector('#still-link').href);
            return Array.from(new Uint8Array(await response.arrayBuffer()));
        }"""))))
        assert (still.format, still.size) == ("PNG", CLIP[:2])  # the camera's own size: content_size 0

        page.check('input[name="mode"][value="photo"]')
        page.wait_for_function("openedStreams.every((s) => s.getTracks().every((t) => t.readyState === 'ended'))")
        page.wait_for_function("live.socket === null")
        assert page.is_hidden("#live-status") and page.is_visible("#content")


def test_a_lost_connection_says_so_and_reconnects(camera_page, engine: Engine, library: web.Library):
    page = camera_page
    with serving(engine, library) as port:
        page.goto(page_url(port))
        page.wait_for_function("document.querySelector('#library button img')?.naturalWidth > 0")
        page.check('input[name="mode"][value="camera"]')
        page.click("#library button >> nth=0")
        wait_for_answers(page, 1)
    page.wait_for_selector("#reconnect:not([hidden])")
    assert page.text_content("#live-status").startswith("Not connected")
    with serving(engine, library, port):
        before = page.evaluate("live.received")
        page.focus("#reconnect")
        page.keyboard.press("Enter")
        wait_for_answers(page, before)
        assert page.is_hidden("#reconnect")


@pytest.mark.parametrize(("trouble", "message"), [
    ("navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));",
     "The camera permission was refused"),
    ("navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('none', 'NotFoundError'));",
     "No camera found"),
    ("Object.defineProperty(window, 'isSecureContext', { value: false });", "only on a secure page"),
])
def test_camera_troubles_are_said_on_the_page(chromium, engine: Engine, library: web.Library, trouble: str,
                                              message: str):
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    context.add_init_script(trouble)
    page = context.new_page()
    try:
        with serving(engine, library) as port:
            page.goto(page_url(port))
            page.check('input[name="mode"][value="camera"]')
            page.wait_for_function(f"document.querySelector('#live-status').textContent.includes({message!r})")
            assert page.is_hidden("#pictures")  # a message, not a blank box
            assert page.evaluate("live.socket") is None
            if "secure" not in message:
                assert page.is_visible("#retry")
    finally:
        context.close()
