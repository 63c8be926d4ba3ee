"""Quality cost of reduced precision: PSNR of bf16 (and fp16 on a GPU) outputs against fp32.

    python benchmarks/precision.py                   # weights from the weights directory
    python benchmarks/precision.py --random-weights  # no weight files needed

Every content x style pair of the shared sample images (noise when ../shared/images is
absent) is stylized at 512 px in fp32 and in each reduced precision the device supports;
the table gives the PSNR of each against fp32 (8-bit outputs, higher is closer).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, random_weights

from adain_cli import images
from adain_cli.device import auto_device, compute_dtype
from adain_cli.errors import UsageError
from adain_cli.stylizer import Stylizer
from adain_cli.weights import load_decoder, load_encoder, resolve_paths


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    a8, b8 = (t.clamp(0, 1).mul(255).round() for t in (a, b))
    mse = torch.mean((a8 - b8) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def pictures(kind: str, count: int) -> list[torch.Tensor]:
    files = sorted((SHARED / kind).glob("*.jpg"))[:count]
    if files:
        return [images.load_tensor(path, 512, False) for path in files]
    return [torch.rand(1, 3, 512, 640, generator=torch.Generator().manual_seed(i)) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--pairs", type=int, default=3, help="contents and styles each (pairs = square)")
    args = parser.parse_args()
    device = auto_device()
    with tempfile.TemporaryDirectory() as scratch:
        vgg, decoder = random_weights(Path(scratch)) if args.random_weights else resolve_paths()
        reference = Stylizer(load_encoder(vgg), load_decoder(decoder), device)
        reduced = {}
        for precision in ("bf16", "fp16"):
            try:
                compute_dtype(precision, device)
            except UsageError:
                continue
            reduced[precision] = Stylizer(load_encoder(vgg), load_decoder(decoder), device, precision=precision)
        contents, styles = pictures("content", args.pairs), pictures("style", args.pairs)
        print(f"{time.strftime('%Y-%m-%d')}, {device}, torch {torch.__version__}, 512 px, "
              f"{'random' if args.random_weights else 'installed'} weights; PSNR (dB) against fp32")
        scores: dict[str, list[float]] = {name: [] for name in reduced}
        for content in contents:
            for style in styles:
                exact = reference.stylize(content, style)
                for name, stylizer in reduced.items():
                    scores[name].append(psnr(stylizer.stylize(content, style), exact))
        for name, values in scores.items():
            print(f"{name}: mean {sum(values) / len(values):.2f} dB, min {min(values):.2f} dB "
                  f"over {len(values)} pairs")


if __name__ == "__main__":
    main()
