"""Which edge handling keeps the borders of outputs clean: "pad" or "crop"?

Content whose size is not a multiple of 8 either runs as it is ("crop": the last pooling
windows are partial, the decoder's output is rounded up and cropped back) or is
reflection-padded to a multiple of 8 first ("pad"). Neither can know the scene beyond
the image edge, so we ask which comes closer to the result the network gives when it
*does* see real context there: each content is cut to an odd-sized region R, and both
strategies' outputs for R are compared with the output for R plus a 32 px margin of
real image, cropped back to R. All three use the same content and style statistics, so
only the edge handling differs. The error is reported as PSNR in the 8 px band along
the bottom and right edges (where the strategies differ) and in the rest of the image.

    python benchmarks/borders.py                       # weights from the weights directory
    python benchmarks/borders.py --vgg V.pth --decoder D.pth
    python benchmarks/borders.py --random-weights      # no weight files needed

Images come from ../shared/images (content/ and style/) when it exists, else synthetic.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
from pathlib import Path

import torch
from common import SHARED, he_initialised

from adain_cli import EncodedContent, Stylizer, images
from adain_cli.model import Decoder, Encoder, FeatureStats
from adain_cli.weights import load_decoder, load_encoder, resolve_paths

MARGIN = 32
BAND = 8


def random_models(seed: int = 0) -> tuple[Encoder, Decoder]:
    vgg, decoder = he_initialised(seed)
    return Encoder(vgg), decoder


def inputs(size: int) -> tuple[list[tuple[str, torch.Tensor]], list[torch.Tensor]]:
    content_dir, style_dir = SHARED / "content", SHARED / "style"
    if content_dir.is_dir() and style_dir.is_dir():
        def load(p: Path) -> torch.Tensor:
            return images.to_tensor(images.prepare(images.load_image(p), size, False, p))

        contents = [(p.stem, load(p)) for p in sorted(content_dir.iterdir())]
        styles = [load(p) for p in sorted(style_dir.iterdir())[:3]]
        return contents, styles
    gen = torch.Generator().manual_seed(0)
    return [(f"synthetic{i}", torch.rand(1, 3, size, size + 77, generator=gen)) for i in range(3)], [
        torch.rand(1, 3, size, size, generator=gen)
    ]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def band_masks(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    band = torch.zeros(height, width, dtype=torch.bool)
    band[-BAND:, :] = True
    band[:, -BAND:] = True
    return band, ~band


def encoded(stylizer: Stylizer, region: torch.Tensor, stats: FeatureStats, mode: str) -> EncodedContent:
    """The region encoded with `mode`'s edge handling, with the given content statistics.

    "pad" is what Stylizer does. "crop" runs the region as it is (the encoder's last pooling
    windows are partial, ceil mode); `render` then crops the decoder's rounded-up output.
    """
    if mode == "pad":
        return dataclasses.replace(stylizer.encode_content(region), stats=stats)
    with torch.inference_mode():
        features = stylizer.encoder(region.to(stylizer.device))
    return EncodedContent(region, features, stats)


def compare(models: tuple[Encoder, Decoder], contents, styles) -> dict[str, list[float]]:
    stylizer = Stylizer(*models, device="cpu")
    scores: dict[str, list[float]] = {"pad band": [], "crop band": [], "pad rest": [], "crop rest": []}
    for name, image in contents:
        full_h, full_w = image.shape[-2:]
        # An odd-sized region with real image beyond its bottom and right edges.
        h = (full_h - MARGIN) // 8 * 8 - 3
        w = (full_w - MARGIN) // 8 * 8 - 5
        region, context = image[..., :h, :w], image[..., : h + MARGIN, : w + MARGIN]
        band, rest = band_masks(h, w)
        truth_encoded = stylizer.encode_content(context)
        # The same content statistics for all three, so only the edge handling differs.
        regions = {mode: encoded(stylizer, region, truth_encoded.stats, mode) for mode in ("pad", "crop")}
        for style in styles:
            style_stats = stylizer.style_stats(style)
            truth = stylizer.render(truth_encoded, style_stats)[..., :h, :w]
            for label, content in regions.items():
                out = stylizer.render(content, style_stats)
                scores[f"{label} band"].append(psnr(out[..., band], truth[..., band]))
                scores[f"{label} rest"].append(psnr(out[..., rest], truth[..., rest]))
        print(f"  {name}: band PSNR pad {scores['pad band'][-1]:.2f} dB, crop {scores['crop band'][-1]:.2f} dB",
              file=sys.stderr)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg", type=Path)
    parser.add_argument("--decoder", type=Path)
    parser.add_argument("--random-weights", action="store_true", help="He-initialised weights, no files needed")
    parser.add_argument("--size", type=int, default=512, help="content and style shorter side")
    args = parser.parse_args()

    if args.random_weights:
        models, weights_label = random_models(), "random (He init, seed 0)"
    else:
        vgg_path, decoder_path = resolve_paths(args.vgg, args.decoder)
        models, weights_label = (load_encoder(vgg_path), load_decoder(decoder_path)), f"{vgg_path}, {decoder_path}"
    contents, styles = inputs(args.size)
    started = time.perf_counter()
    scores = compare(models, contents, styles)
    print(f"\nedge handling vs. the output with {MARGIN} px of real context "
          f"({len(contents)} contents x {len(styles)} styles, {args.size} px)")
    print(f"weights: {weights_label}; machine: {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; {time.perf_counter() - started:.0f} s")
    print(f"{'':6}{'edge band PSNR (dB)':>22}{'rest PSNR (dB)':>18}")
    for mode in ("pad", "crop"):
        band, rest = scores[f"{mode} band"], scores[f"{mode} rest"]
        print(f"{mode:6}{sum(band) / len(band):>22.2f}{sum(rest) / len(rest):>18.2f}")
    wins = sum(p > c for p, c in zip(scores["pad band"], scores["crop band"], strict=True))
    print(f"pad closer at the edges in {wins} of {len(scores['pad band'])} pairs")


if __name__ == "__main__":
    main()
