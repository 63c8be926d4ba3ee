"""`adain dataset` end to end against the network alone, on the same images, in one process.

A tree of JPEG contents (square crops of the sample photos, class folders) and the sample
paintings. Two things are timed, interleaved (dataset, network, dataset, network, ...) so
both see the same machine, the best of the rounds kept:

    dataset  dataset.plan + dataset.run: walking, drawing, decoding on worker threads, the
             network, encoding and atomic saves, the manifest (no style bank, so that
             both sides encode every style)
    network  the same pairs from images already decoded in memory: encode_contents,
             style_stats once per style, render_batch; no files at all

The overhead is dataset / network - 1: what decoding, saving and bookkeeping add on top of
the network (the target on a CPU is under 10%). Images/s is the dataset side's rate.

    python benchmarks/dataset_speed.py [--images 12] [--size 512] [--rounds 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, random_weights
from PIL import Image

from adain_cli import Stylizer, dataset, jobs


def make_tree(root: Path, count: int, size: int) -> tuple[Path, Path]:
    photos = sorted((SHARED / "content").glob("*.jpg"))
    paintings = sorted((SHARED / "style").glob("*.*"))
    content, styles = root / "content", root / "styles"
    for i in range(count):
        image = Image.open(photos[i % len(photos)]).convert("RGB") if photos else Image.effect_noise((900, 700), 64)
        side = min(image.size)
        shift = (i // max(len(photos), 1)) * 37 % max(max(image.size) - side, 1)
        crop = image.crop((shift, 0, shift + side, side) if image.width > image.height else (0, 0, side, side))
        (content / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        crop.resize((size, size), Image.Resampling.LANCZOS).save(content / f"class{i % 3}" / f"{i:04d}.JPEG",
                                                                   quality=90)
    styles.mkdir()
    for path in paintings or []:
        shutil.copy(path, styles / path.name)
    if not paintings:
        Image.effect_noise((600, 500), 64).convert("RGB").save(styles / "noise.png")
    return content, styles


def run_dataset(stylizer: Stylizer, content: Path, styles: Path, out: Path, settings: jobs.Settings,
                workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    plan = dataset.plan(content, styles, out, dataset.Options(seed=0))
    result = dataset.run(stylizer, plan, settings, workers=workers)
    seconds = time.perf_counter() - began
    assert result.count("written") == len(plan.jobs), result.as_dict()
    return seconds


def run_network(stylizer: Stylizer, plan: dataset.Plan, settings: jobs.Settings) -> float:
    contents = {job.content: settings.load_content(job.content) for job in plan.jobs}
    paintings = {job.style: settings.load_style(job.style) for job in plan.jobs}
    began = time.perf_counter()
    stats = {path: stylizer.style_stats(image) for path, image in paintings.items()}
    for job in plan.jobs:
        [encoded] = stylizer.encode_contents(contents[job.content])
        stylizer.render_batch([encoded], [stats[job.style]], [job.alpha or 1.0]).cpu()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        content, styles = make_tree(root, args.images, args.size)
        stylizer = Stylizer.from_files(*random_weights(root), device=args.device)
        settings = jobs.Settings(content_size=0, style_size=512)
        plan = dataset.plan(content, styles, root / "out", dataset.Options(seed=0))
        run_dataset(stylizer, content, styles, root / "out", settings, args.workers)  # warm-up
        times: dict[str, list[float]] = {"dataset": [], "network": []}
        for _ in range(args.rounds):
            times["dataset"].append(run_dataset(stylizer, content, styles, root / "out", settings, args.workers))
            times["network"].append(run_network(stylizer, plan, settings))
        best = {name: min(values) for name, values in times.items()}
        count = len(plan.jobs)
        print(f"{count} images {args.size}x{args.size}, device {args.device}, torch threads "
              f"{torch.get_num_threads()}, workers {args.workers}, rounds {args.rounds}")
        for name, values in times.items():
            print(f"{name:8s} best {best[name]:7.2f} s  ({count / best[name]:.3f} images/s)  all "
                  + " ".join(f"{v:.2f}" for v in values))
        print(f"overhead (dataset / network - 1): {best['dataset'] / best['network'] - 1:+.1%}")


if __name__ == "__main__":
    main()
