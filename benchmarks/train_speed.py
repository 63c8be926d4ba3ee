"""Training throughput: iterations/s for fp32 and bf16 side by side, and the data loader's headroom.

    python benchmarks/train_speed.py                         # weights from the weights directory
    python benchmarks/train_speed.py --random-weights --batch-size 8 --crop-size 256

Content and style folders: ../shared/images when it exists, else synthetic images. The
first iterations are warm-up and not counted. The loader headroom is how many batches
per second the data pipeline alone delivers, divided by the iterations per second
training consumes: above 1, the loader keeps up.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, he_initialised

from adain_cli import data, images, launch, training
from adain_cli.device import pick_device
from adain_cli.weights import resolve_paths


def folders(scratch: Path) -> tuple[Path, Path]:
    if (SHARED / "content").is_dir() and (SHARED / "style").is_dir():
        return SHARED / "content", SHARED / "style"
    for name in ("content", "style"):
        (scratch / name).mkdir()
        for i in range(8):
            images.to_image(torch.rand(1, 3, 600, 800)).save(scratch / name / f"{i}.jpg")
    return scratch / "content", scratch / "style"


def random_vgg(path: Path) -> Path:
    torch.save(he_initialised()[0].state_dict(), path)
    return path


def iterations_per_second(config: training.TrainConfig, warmup: int) -> float:
    marks: list[float] = []
    training.train(config, on_step=lambda step: marks.append(step.seconds))
    counted = marks[warmup:]
    return (len(counted) - 1) / (counted[-1] - counted[0])


def loader_batches_per_second(config: training.TrainConfig, batches: int) -> float:
    paths = data.find_images(Path(config.content_dir))
    stream = training._batches(paths, config, 0, launch.Launch(), pin=False)
    next(stream)  # start-up
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg", type=Path)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        vgg = random_vgg(scratch / "vgg.pth") if args.random_weights else resolve_paths(args.vgg, None)[0]
        content, style = folders(scratch)
        rows = []
        for precision in ("fp32", "bf16"):
            config = training.TrainConfig(
                content_dir=str(content), style_dir=str(style), out=str(scratch / precision), vgg=str(vgg),
                iterations=args.iterations, batch_size=args.batch_size, image_size=args.image_size,
                crop_size=args.crop_size, workers=args.workers, save_every=10**9, preview_every=10**9,
                precision=precision, device=args.device,
            )
            rows.append((precision, iterations_per_second(config, args.warmup)))
        loader = loader_batches_per_second(config, batches=10)
    device = pick_device(args.device)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} threads, device {device}, "
          f"torch {torch.__version__}; batch {args.batch_size}, {args.crop_size} px crops, "
          f"{args.iterations - args.warmup} timed iterations after {args.warmup} warm-up")
    print(f"{'precision':10}{'it/s':>10}{'images/s':>10}{'vs fp32':>9}")
    for precision, rate in rows:
        print(f"{precision:10}{rate:>10.3f}{rate * args.batch_size:>10.2f}{rate / rows[0][1]:>8.2f}x")
    print(f"data loader alone: {loader:.2f} batches/s per stream ({args.workers} workers) = "
          f"{loader / max(r for _, r in rows):.1f}x what the fastest training run consumes")


if __name__ == "__main__":
    main()
