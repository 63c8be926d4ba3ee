"""`/v1/live` against the network's own rate, side by side in one run (issue 21).

For each precision (fp32, and bf16 where the CPU has it) an `adain serve` process (CPU,
random weights, one sample painting in --styles) and, for each working size (256 and 384
px shorter side) and each number of streams (1 and 3):

- the network's own rate: frames a second of `Stylizer.encode_contents` + `render_batch`
  on one frame already decoded at that size, the style's statistics cached, in this process
  while the server is idle (nothing but the two networks: no decoding, no encoding, no
  transport);
- the stream: clients (websockets) that send 640x480 JPEG camera frames (a pan across the
  sample photos) as the page does: at most two away at once (one in work, one waiting), the
  next sent when an answer comes, never more than 30 a second; answers a second over
  `--seconds` after a warm-up, and the server's latency percentiles (a frame's arrival to
  its answer sent) from its stats messages. `--flood` sends at 30 a second whatever comes
  back (newest frame wins on the server: every frame is decoded, most are dropped).

The stream should reach at least 80% of the network's rate (decoding, encoding and the
transport overlapped with the network; with 3 streams, the sum of the three).

    python benchmarks/live.py [--seconds 12] [--precisions fp32 bf16] [--json live.json]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import SHARED, random_weights
from PIL import Image
from websockets.sync.client import connect

from adain_cli import Stylizer, about, device, images

CAMERA = (640, 480)
CAMERA_FPS = 30.0
SIZES = (256, 384)
STREAMS = (1, 3)


def camera_frames(count: int = 90) -> list[bytes]:
    """A camera's frames: a 640x480 window panning across the sample photos, as JPEG (quality 80)."""
    photos = [Image.open(p).convert("RGB") for p in sorted((SHARED / "content").glob("*.jpg"))] or \
        [Image.effect_noise((1200, 900), 64).convert("RGB")]
    frames = []
    for i in range(count):
        photo = photos[(i // 30) % len(photos)]
        photo = photo.resize((max(photo.width, 800), max(photo.height, 600)))
        left = (i % 30) * (photo.width - CAMERA[0]) // 30
        buffer = io.BytesIO()
        photo.crop((left, 0, left + CAMERA[0], CAMERA[1])).save(buffer, "JPEG", quality=80)
        frames.append(buffer.getvalue())
    return frames


def painting(folder: Path) -> str:
    paintings = sorted((SHARED / "style").glob("*.jpg"))
    target = folder / "painting.jpg"
    if paintings:
        target.write_bytes(paintings[0].read_bytes())
    else:
        Image.effect_noise((512, 512), 80).convert("RGB").save(target)
    return target.name


def network_rate(stylizer: Stylizer, frame: bytes, size: int, seconds: float, style: Path) -> float:
    """Frames a second of the two networks alone on one decoded frame at `size`."""
    content = images.to_tensor(images.prepare(images.load_bytes(frame, "frame", None), size, False, "frame"))
    stats = stylizer.style_stats(images.to_tensor(images.prepare(images.load_image(style), 512, False, style)))
    with torch.inference_mode():
        for _ in range(2):
            stylizer.render_batch(stylizer.encode_contents(content), [stats])
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            stylizer.render_batch(stylizer.encode_contents(content), [stats])
            done += 1
    return done / (time.perf_counter() - began)


class Client(threading.Thread):
    """One stream: frames sent at the camera's rate, answers counted, the server's stats kept."""

    def __init__(self, url: str, frames: list[bytes], size: int, name: str, offset: int, flood: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.frames, self.size, self.name, self.offset = url, frames, size, name, offset
        self.away = threading.Semaphore(1_000_000 if flood else 2)  # frames sent and not answered
        self.answers: list[float] = []
        self.stats: dict = {}
        self.errors: list[str] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with connect(self.url, max_size=2**26) as ws:
            ws.recv()
            ws.send(json.dumps({"type": "settings", "style_name": [self.name], "content_size": self.size,
                                "format": "jpeg"}))
            ws.recv()
            self.ready.set()
            sender = threading.Thread(target=self._send, args=(ws,), daemon=True)
            sender.start()
            while not self.stop.is_set():
                try:
                    message = ws.recv(timeout=1)
                except TimeoutError:
                    continue
                if isinstance(message, bytes):
                    self.answers.append(time.perf_counter())
                    self.away.release()
                else:
                    text = json.loads(message)
                    if text["type"] == "stats":
                        self.stats = text
                    elif text["type"] == "error":
                        self.errors.append(text["error"])
            sender.join()

    def _send(self, ws) -> None:
        i = self.offset
        next_at = time.perf_counter()
        while not self.stop.is_set():
            if not self.away.acquire(timeout=5):  # an answer lost (a failed frame): send on
                pass
            ws.send(self.frames[i % len(self.frames)])
            i += 1
            next_at += 1 / CAMERA_FPS
            time.sleep(max(0.0, next_at - time.perf_counter()))


def stream_rate(url: str, frames: list[bytes], size: int, name: str, streams: int, warm: float,
                seconds: float, flood: bool) -> dict:
    clients = [Client(url, frames, size, name, offset=17 * k, flood=flood) for k in range(streams)]
    for client in clients:
        client.start()
        client.ready.wait(60)
    time.sleep(warm)
    began = time.perf_counter()
    start_counts = [len(c.answers) for c in clients]
    time.sleep(seconds)
    ended = time.perf_counter()
    counts = [len(c.answers) - s for c, s in zip(clients, start_counts, strict=True)]
    for client in clients:
        client.stop.set()
    for client in clients:
        client.join(30)
    latencies = [c.stats.get("latency_ms", {}) for c in clients]
    return {"fps": sum(counts) / (ended - began), "per_stream": [n / (ended - began) for n in counts],
            "p50_ms": statistics.median(lat.get("p50") or 0 for lat in latencies),
            "p99_ms": max(lat.get("p99") or 0 for lat in latencies),
            "dropped": sum(c.stats.get("dropped", 0) for c in clients),
            "errors": [e for c in clients for e in c.errors][:3]}


def start_server(folder: Path, vgg: Path, decoder: Path, precision: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "adain_cli", "serve", "--port", str(port), "--vgg", str(vgg),
                                "--decoder", str(decoder), "--device", "cpu", "--precision", precision,
                                "--styles", str(folder / "styles"), "--max-streams", "4", "--quiet"])
    url = f"ws://127.0.0.1:{port}/v1/live"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with connect(url) as ws:
                ws.recv()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--warm", type=float, default=4.0)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--flood", action="store_true", help="clients send at 30 frames a second regardless")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"{about.cpu_model()}, {torch.get_num_threads()} threads, {datetime.date.today()}", flush=True)
    precisions = [p for p in args.precisions if p != "bf16" or device.cpu_has_fast_bf16()]
    frames = camera_frames()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "styles").mkdir()
        name = painting(folder / "styles")
        vgg, decoder = random_weights(folder)
        for precision in precisions:
            stylizer = Stylizer.from_files(vgg, decoder, device="cpu", precision=precision)
            process, url = start_server(folder, vgg, decoder, precision)
            try:
                for size in SIZES:
                    for streams in STREAMS:
                        # The network's rate just before and just after the stream's: the same machine.
                        before = network_rate(stylizer, frames[0], size, args.seconds / 3, folder / "styles" / name)
                        stream = stream_rate(url, frames, size, name, streams, args.warm, args.seconds, args.flood)
                        after = network_rate(stylizer, frames[0], size, args.seconds / 3, folder / "styles" / name)
                        network = (before + after) / 2
                        rows.append({"precision": precision, "size": size, "streams": streams, "network_fps": network,
                                     "network_before_after": [before, after], **stream,
                                     "ratio": stream["fps"] / network})
                        row = rows[-1]
                        print(f"{precision:5} {size} px  {streams} stream(s): stream {row['fps']:.2f} fps "
                              f"(per stream {', '.join(f'{f:.2f}' for f in row['per_stream'])}), network "
                              f"{network:.2f} fps ({before:.2f} before, {after:.2f} after), ratio {row['ratio']:.2f}; "
                              f"latency p50 {row['p50_ms']:.0f} ms p99 {row['p99_ms']:.0f} ms; dropped {row['dropped']}"
                              + (f"; errors {row['errors']}" if row["errors"] else ""), flush=True)
            finally:
                process.terminate()
                process.wait(60)
    facts = {"date": datetime.date.today().isoformat(), "cpu": about.cpu_model(),
             "threads": torch.get_num_threads(), "camera": f"{CAMERA[0]}x{CAMERA[1]} JPEG at {CAMERA_FPS:g} fps"}
    if args.json:
        args.json.write_text(json.dumps({**facts, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
