"""`adain serve` under load, and against one `adain stylize` process per image.

load: one `adain serve` process (CPU, random weights); 8 client threads post for 60 s,
each request a 128x128 crop of a sample photo (at that size) in a sample painting (256 px) (a new photo every
fourth request, otherwise a new alpha: the page's pattern). Recorded: requests, errors,
p50/p99 latency, throughput, and the server's resident memory after a warm-up and after
the run (it must stay within 100 MB).

versus: 100 stylizations of distinct 512x512 photos (crops of the sample photos) in the
sample paintings, through the API one after another against 100 `adain stylize`
processes, interleaved in rounds of 10 so both see the same machine; whole wall time.

    python benchmarks/serve_speed.py load [--clients 8] [--seconds 60]
    python benchmarks/serve_speed.py versus [--count 100]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx
from common import SHARED, random_weights
from PIL import Image

# The load test's requests: previews at the photos' own size, paintings at 256 px.
SIZES = {"content_size": "0", "style_size": "256"}


def photos(count: int, size: int) -> list[bytes]:
    """`count` distinct square crops of the sample photos as PNG bytes."""
    sources = [Image.open(p).convert("RGB") for p in sorted((SHARED / "content").glob("*.jpg"))] or \
        [Image.effect_noise((900, 700), 64).convert("RGB")]
    made = []
    for i in range(count):
        image = sources[i % len(sources)]
        side = min(image.size) * 3 // 4
        step = (i // len(sources)) * 17
        left, top = step % (image.width - side), (step * 3) % (image.height - side)
        buffer = io.BytesIO()
        image.crop((left, top, left + side, top + side)).resize((size, size)).save(buffer, "PNG")
        made.append(buffer.getvalue())
    return made


def paintings() -> list[Path]:
    return sorted((SHARED / "style").glob("*.*"))


def start_server(root: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    vgg, decoder = random_weights(root)
    process = subprocess.Popen([sys.executable, "-m", "adain_cli", "serve", "--port", "0", "--vgg", str(vgg),
                                "--decoder", str(decoder), "--device", "cpu", *extra],
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    return process, line.split()[2]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(args: argparse.Namespace) -> None:
    contents = photos(64, 128)
    styles = [p.read_bytes() for p in paintings()[:4]]
    with tempfile.TemporaryDirectory() as folder:
        process, address = start_server(Path(folder))
        try:
            with httpx.Client(timeout=120) as warm:
                for i in range(8):
                    files = {"content": ("c.png", contents[i], "image/png"), "style": ("s.jpg", styles[i % 4])}
                    warm.post(f"{address}/v1/stylize", files=files, data={"alpha": "1", **SIZES}).raise_for_status()
            before = resident_mb(process.pid)
            latencies: list[float] = []
            errors: list[str] = []
            stop = time.perf_counter() + args.seconds
            lock = threading.Lock()

            def client(k: int) -> None:
                with httpx.Client(timeout=300) as session:
                    i = 0
                    while time.perf_counter() < stop:
                        content = contents[(k * 7 + i // 4) % len(contents)]
                        files = {"content": ("c.png", content, "image/png"),
                                 "style": ("s.jpg", styles[(k + i // 4) % len(styles)])}
                        began = time.perf_counter()
                        response = session.post(f"{address}/v1/stylize", files=files,
                                                 data={"alpha": f"{0.5 + 0.1 * (i % 4):.1f}", **SIZES})
                        with lock:
                            latencies.append(time.perf_counter() - began)
                            if response.status_code != 200:
                                errors.append(f"{response.status_code} {response.text[:80]}")
                        i += 1

            began = time.perf_counter()
            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - began
            after = resident_mb(process.pid)
        finally:
            process.terminate()
            process.wait(120)
    cut = statistics.quantiles(latencies, n=100)
    print(f"{args.clients} clients for {args.seconds:.0f} s (ran {elapsed:.1f} s), 128x128 photos, CPU")
    print(f"requests {len(latencies)}  errors {len(errors)}  throughput {len(latencies) / elapsed:.2f}/s")
    print(f"latency p50 {statistics.median(latencies):.3f} s  p99 {cut[98]:.3f} s  max {max(latencies):.3f} s")
    print(f"server RSS after warm-up {before:.0f} MB, after the run {after:.0f} MB ({after - before:+.0f} MB)")
    for error in errors[:5]:
        print("error:", error)


def versus(args: argparse.Namespace) -> None:
    contents = photos(args.count, 512)
    styles = paintings()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        vgg, decoder = random_weights(root)
        for i, data in enumerate(contents):
            (root / f"c{i}.png").write_bytes(data)
        process, address = start_server(root)  # the same random weights, written again
        times = {"api": 0.0, "processes": 0.0}
        try:
            with httpx.Client(timeout=300) as session:
                for start in range(0, args.count, 10):
                    batch = range(start, min(start + 10, args.count))
                    began = time.perf_counter()
                    for i in batch:
                        style = styles[i % len(styles)]
                        files = {"content": ("c.png", contents[i], "image/png"),
                                 "style": (style.name, style.read_bytes())}
                        session.post(f"{address}/v1/stylize", files=files).raise_for_status()
                    times["api"] += time.perf_counter() - began
                    began = time.perf_counter()
                    for i in batch:
                        subprocess.run([sys.executable, "-m", "adain_cli", "stylize", str(root / f"c{i}.png"),
                                        str(styles[i % len(styles)]), "-o", str(root / f"o{i}.png"), "--vgg",
                                        str(vgg), "--decoder", str(decoder), "--device", "cpu", "-q"], check=True)
                    times["processes"] += time.perf_counter() - began
                    print(f"{min(start + 10, args.count)}/{args.count}: api {times['api']:.1f} s, "
                          f"processes {times['processes']:.1f} s", flush=True)
        finally:
            process.terminate()
            process.wait(120)
    print(f"{args.count} stylizations of 512x512 photos, CPU, torch threads {os.cpu_count()}")
    print(f"API (one warm server)       {times['api']:7.1f} s  {times['api'] / args.count:.2f} s each")
    print(f"adain stylize processes     {times['processes']:7.1f} s  {times['processes'] / args.count:.2f} s each")
    print(f"ratio processes / API: {times['processes'] / times['api']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    run_load = sub.add_parser("load")
    run_load.add_argument("--clients", type=int, default=8)
    run_load.add_argument("--seconds", type=float, default=60)
    run_versus = sub.add_parser("versus")
    run_versus.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    load(args) if args.mode == "load" else versus(args)


if __name__ == "__main__":
    main()
