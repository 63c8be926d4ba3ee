"""No slower: batch, video, dataset and serve timed against the code before and after a refactor, in one run.

    python benchmarks/refactor_speed.py --before /work/base/src --after /work/main/src [--rounds 3] [--json out.json]
    python benchmarks/refactor_speed.py --before A/src --after B/src --quick   # small sizes, one round

Only the CLI and the HTTP API are used: internals are what a refactor moves. Every run is a
fresh process of this Python with PYTHONPATH=<tree>, interleaved before, after, before, ...
with the rounds outermost, so both trees see the same machine as its load drifts; the median
of the rounds is kept. Inputs (the sample images in ../shared/images, noise without them) and
random weights in the public layout (in an ADAIN_HOME both trees share, offline) are made
once. Each run writes into a fresh folder with its own cache directory (the dataset's style
bank starts empty). Bytecode goes to a private PYTHONPYCACHEPREFIX, compiled before the
first round: neither tree is written to, and no timed run pays for compiling.

    batch    adain stylize: 4 contents x 2 paintings, 256 px, a folder in and a folder out
    video    adain video: a 2 s 320x240 H.264 clip at 12 fps, frames at their own size
    dataset  adain dataset: 2 classes x 8 JPEGs of 256 px, 3 paintings
    serve    adain serve: 24 POST /v1/stylize of distinct 256 px photos from 4 client threads;
             start-up and one warm-up request not timed

The first three are whole processes (start-up included: what a user waits for). Paintings are
resized to 256 px everywhere. --quick: 2 x 1 images, 6 frames, 4 images, 8 requests from 2
clients. Ratios mean something only on a machine nothing else is using.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import httpx2 as httpx
import torch
from common import measure, random_weights
from PIL import Image
from serve_speed import paintings, photos
from video_speed import make_clip

STYLE_SIZE = ["--style-size", "256"]
RATE = Fraction(12)  # a 2 s clip at 25 fps would be half of the whole run on 2 cores


@dataclass(frozen=True)
class Sizes:
    contents: int = 4  # batch: contents x paintings
    styles: int = 2
    frames: int = 24  # video, at RATE
    images: int = 16  # dataset, in two classes
    requests: int = 24  # serve
    clients: int = 4


QUICK = Sizes(contents=2, styles=1, frames=6, images=4, requests=8, clients=2)


@dataclass(frozen=True)
class Workload:
    name: str
    items: int  # images, frames or requests: the rate's numerator
    unit: str
    run: Callable[[Path, Path], float]  # (tree, a fresh folder) -> seconds


def tree_env(tree: Path, folder: Path) -> list[str]:
    """`env` arguments for one run: this tree's sources, a cache directory of its own."""
    return ["env", f"PYTHONPATH={tree}", f"XDG_CACHE_HOME={folder / 'cache'}"]


def adain(tree: Path, folder: Path, *arguments: str) -> list[str]:
    return [*tree_env(tree, folder), sys.executable, "-m", "adain_cli", *arguments]


def prepare_tree(tree: Path) -> str:
    """Compile the tree's bytecode into the private prefix, and prove `import adain_cli` finds this tree."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], env=env, check=True)
    found = subprocess.run([sys.executable, "-c", "import adain_cli; print(adain_cli.__file__)"], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"PYTHONPATH={tree} imports adain_cli from {found}: not that tree")
    return found


def copy_paintings(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i, path in enumerate(paintings()[:count]):
        shutil.copy(path, folder / f"{i}{path.suffix}")  # numbered: several uses of the same list stay aligned
    for i in range(len(list(folder.iterdir())), count):
        Image.effect_noise((600, 500), 64).convert("RGB").save(folder / f"{i}.png")
    return folder


def save_photos(folder: Path, count: int, pattern: str) -> None:
    """`count` distinct 256 px photos, as `pattern.format(i=..., label=...)` under `folder`."""
    for i, data in enumerate(photos(count, 256)):
        path = folder / pattern.format(i=i, label=i % 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.open(io.BytesIO(data)).save(path, quality=90)


def cli_workload(name: str, items: int, unit: str, arguments: list[str]) -> Workload:
    """A whole `adain` process; `{out}` in `arguments` is the run's own output folder."""
    def run(tree: Path, folder: Path) -> float:
        command = adain(tree, folder, *(a.replace("{out}", str(folder / "out")) for a in arguments))
        return measure(command)[0]

    return Workload(name, items, unit, run)


def serve_workload(contents: list[bytes], styles: list[bytes], clients: int, device: str) -> Workload:
    def post(session: httpx.Client, address: str, i: int) -> None:
        files = {"content": ("c.png", contents[i], "image/png"), "style": ("s.jpg", styles[i % len(styles)])}
        response = session.post(f"{address}/v1/stylize", files=files, data={"content_size": "0", "style_size": "256"})
        response.raise_for_status()

    def client(address: str, k: int) -> None:
        with httpx.Client(timeout=300) as session:
            for i in range(k, len(contents), clients):
                post(session, address, i)

    def run(tree: Path, folder: Path) -> float:
        process = subprocess.Popen(adain(tree, folder, "serve", "--port", "0", "--device", device),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stderr is not None
            line = process.stderr.readline()  # the address, once the model is loaded
            if "http://" not in line:
                raise SystemExit(f"adain serve did not start: {line}{process.stderr.read()}")
            address = line.split()[2]
            with httpx.Client(timeout=300) as session:
                post(session, address, 0)  # one-off costs of the first request belong to start-up
            with ThreadPoolExecutor(clients) as pool:
                began = time.perf_counter()
                for done in [pool.submit(client, address, k) for k in range(clients)]:
                    done.result()  # a failed request fails the run, not just its thread
                return time.perf_counter() - began
        finally:
            process.terminate()
            process.wait(60)

    return Workload("serve", len(contents), "requests", run)


def workloads(root: Path, sizes: Sizes, device: str) -> list[Workload]:
    """Make every input once (both trees share them) and describe the four workloads."""
    cpu = ["--device", device, "-q"]
    save_photos(root / "batch", sizes.contents, "c{i}.png")
    styles = copy_paintings(root / "paintings", max(sizes.styles, 3))
    chosen = root / "batch-styles"
    chosen.mkdir()
    for path in sorted(styles.iterdir())[:sizes.styles]:
        shutil.copy(path, chosen / path.name)
    make_clip(root / "clip.mp4", sizes.frames, 240, 320, RATE)
    save_photos(root / "imagenet", sizes.images, "n0{label}/{i:04d}.JPEG")
    painting = sorted(styles.iterdir())[0]
    return [
        cli_workload("batch", sizes.contents * sizes.styles, "images",
                     ["stylize", str(root / "batch"), str(chosen), "-o", "{out}", "--content-size", "256",
                      *STYLE_SIZE, *cpu]),
        cli_workload("video", sizes.frames, "frames",
                     ["video", str(root / "clip.mp4"), str(painting), "-o", "{out}.mp4", *STYLE_SIZE, *cpu]),
        cli_workload("dataset", sizes.images, "images",
                     ["dataset", str(root / "imagenet"), str(styles), "-o", "{out}", "--seed", "0", *STYLE_SIZE,
                      *cpu]),
        serve_workload(photos(sizes.requests, 256), [p.read_bytes() for p in sorted(chosen.iterdir())],
                       sizes.clients, device),
    ]


def machine() -> dict[str, object]:
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    return {"cpu": names[0] if names else "unknown", "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def report(results: dict[str, dict], info: dict[str, object], rounds: int) -> None:
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}; "
          f"median of {rounds} interleaved round{'s' if rounds > 1 else ''}")
    print(f"{'workload':9s} {'items':>12s} {'before s':>9s} {'after s':>9s} {'after/before':>12s} "
          f"{'before/s':>9s} {'after/s':>9s}")
    for name, row in results.items():
        items, before, after = f"{row['items']} {row['unit']}", row["median_before"], row["median_after"]
        print(f"{name:9s} {items:>12s} {before:9.2f} {after:9.2f} {row['ratio']:12.3f} "
              f"{row['items'] / before:9.2f} {row['items'] / after:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="source tree before the refactor (its src/)")
    parser.add_argument("--after", type=Path, required=True, help="source tree after it")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, 1 with --quick)")
    parser.add_argument("--only", nargs="+", metavar="WORKLOAD", help="these workloads only (batch, video, ...)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script in about a minute")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    info = machine()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    output = args.json.resolve() if args.json else None
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        home = root / "home"
        (home / "weights").mkdir(parents=True)
        random_weights(home / "weights")
        os.environ.update(ADAIN_HOME=str(home), ADAIN_OFFLINE="1", PYTHONPYCACHEPREFIX=str(root / "pycache"))
        os.chdir(root)  # `python -m` puts the working directory first on sys.path: no tree may lurk there
        modules = {label: prepare_tree(tree) for label, tree in trees.items()}
        for label, module in modules.items():
            print(f"{label}: {module}", flush=True)
        jobs = workloads(root / "inputs", QUICK if args.quick else Sizes(), args.device)
        jobs = [job for job in jobs if not args.only or job.name in args.only]
        times: dict[str, dict[str, list[float]]] = {job.name: {"before": [], "after": []} for job in jobs}
        for r in range(rounds):
            for job in jobs:
                # Before-after, then after-before: neither tree always runs on the other's warm caches.
                for label, tree in list(trees.items())[::-1 if r % 2 else 1]:
                    folder = root / "runs" / f"{job.name}-{label}-{r}"
                    folder.mkdir(parents=True)
                    seconds = job.run(tree, folder)
                    times[job.name][label].append(seconds)
                    shutil.rmtree(folder)
                    print(f"  round {r + 1} {job.name} {label}: {seconds:.2f} s", file=sys.stderr, flush=True)
        os.chdir(here)
    results = {}
    for job in jobs:
        before, after = (statistics.median(times[job.name][label]) for label in ("before", "after"))
        results[job.name] = {"items": job.items, "unit": job.unit, **times[job.name], "median_before": before,
                             "median_after": after, "ratio": after / before}
    report(results, info, rounds)
    if output:
        output.write_text(json.dumps({"machine": info, "rounds": rounds, "trees": {
            label: {"path": str(tree), "module": modules[label]} for label, tree in trees.items()},
            "workloads": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
