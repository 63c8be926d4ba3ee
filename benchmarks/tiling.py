"""Peak memory and time of `adain stylize` at original size, untiled vs --tile, side by side.

    python benchmarks/tiling.py                      # weights from the weights directory
    python benchmarks/tiling.py --random-weights     # no weight files needed
    python benchmarks/tiling.py --sizes 1920x1080 3840x2160 --tile 512

Each run is a separate `adain stylize` process; peak RSS is that process's maximum
resident set size (os.wait4). The content is a shared sample photo (../shared/images)
resized to each size, or noise when that folder is absent.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, measure, random_weights

from adain_cli import images
from adain_cli.weights import resolve_paths


def content_at(size: tuple[int, int], folder: Path) -> Path:
    photo = SHARED / "content" / "golden_gate.jpg"
    if photo.exists():
        image = images.load_image(photo).resize(size)
    else:
        image = images.to_image(torch.rand(1, 3, size[1], size[0]))
    path = folder / f"content_{size[0]}x{size[1]}.png"
    image.save(path)
    return path


def style_image(folder: Path) -> Path:
    painting = SHARED / "style" / "la_muse.jpg"
    if painting.exists():
        return painting
    path = folder / "style.png"
    images.to_image(torch.rand(1, 3, 512, 512)).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--sizes", nargs="+", default=["1920x1080", "3840x2160"])
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        vgg, decoder = random_weights(scratch) if args.random_weights else resolve_paths()
        style = style_image(scratch)
        print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"fp32 CPU, whole `adain stylize` process, content at original size, style 512 px")
        print(f"{'content':>11}{'mode':>12}{'seconds':>10}{'peak RSS GB':>13}")
        for size_text in args.sizes:
            size = tuple(int(n) for n in size_text.split("x"))
            content = content_at(size, scratch)
            rows = []
            for label, extra in (("untiled", []), (f"tile {args.tile}", ["--tile", str(args.tile)])):
                command = [sys.executable, "-m", "adain_cli", "stylize", str(content), str(style),
                           "-o", str(scratch / f"out_{label}.png"), "--content-size", "0", "--overwrite",
                           "--vgg", str(vgg), "--decoder", str(decoder), "--device", "cpu", "--quiet", *extra]
                seconds, peak = measure(command)
                rows.append((label, seconds, peak))
                print(f"{size_text:>11}{label:>12}{seconds:>10.1f}{peak:>13.2f}", flush=True)
            print(f"{'':>11}{'tiled/untiled':>12}{rows[1][1] / rows[0][1]:>9.2f}x{rows[1][2] / rows[0][2]:>12.2f}x")


if __name__ == "__main__":
    main()
