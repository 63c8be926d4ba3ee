"""`--work-size`: speed of whole `adain stylize` processes, the look kept, the edges the photo's.

    python benchmarks/work_size.py                 # everything, 2 rounds of the speed table
    python benchmarks/work_size.py --only edges    # one part: speed, look, edges or samples
    python benchmarks/work_size.py --samples-to benchmarks/samples   # also write the sample crops

- speed: 1920x1080 and 3840x2160 contents, `--content-size 0` against `--work-size 512` and
  `1024`, in fp32 and bf16, one process each (random weights in the public layout), the
  runs of each round interleaved so that the ratios share the machine's state; seconds are
  the best of the rounds;
- look: the 1080p and 4K `--work-size 512` outputs shrunk back to the working size, against
  `--content-size 512` outputs of the same photo (PSNR on 8 bits);
- edges: guided against bicubic upscaling of known colour mappings made at the working size,
  against the mapping made at full size (fine_detail.py), for the RGB and the grey guide;
- samples: crops of a synthetic fine-detail picture (content, the mapping at full size,
  bicubic, guided) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, measure, random_weights
from fine_detail import MAPPINGS, PICTURES, bicubic, case, psnr
from PIL import Image

from adain_cli import guided, images

SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
WORKS = (0, 512, 1024)  # 0: --content-size 0, the network at the output size
PRECISIONS = ("fp32", "bf16")
PHOTO, PAINTING = "golden_gate.jpg", "la_muse.jpg"


def _inputs(folder: Path) -> tuple[dict[str, Path], Path]:
    """The photo at each size (a sample photo cropped to 16:9 and resized; noise without it) and a painting."""
    source = SHARED / "content" / PHOTO
    photo = images.load_image(source) if source.exists() else images.to_image(
        torch.rand(1, 3, 540, 960, generator=torch.Generator().manual_seed(0)))
    width, height = photo.size
    crop_height = min(height, width * 9 // 16)
    photo = photo.crop((0, (height - crop_height) // 2, width, (height - crop_height) // 2 + crop_height))
    contents = {}
    for name, size in SIZES.items():
        contents[name] = folder / f"photo-{name}.png"
        photo.resize(size, Image.Resampling.BICUBIC).save(contents[name])
    painting = SHARED / "style" / PAINTING
    style = folder / "painting.png"
    (images.load_image(painting) if painting.exists() else images.to_image(torch.rand(1, 3, 512, 512))).save(style)
    return contents, style


def _command(content: Path, style: Path, out: Path, weights: tuple[Path, Path], *options: str) -> list[str]:
    return [sys.executable, "-m", "adain_cli", "stylize", str(content), str(style), "-o", str(out),
            "--vgg", str(weights[0]), "--decoder", str(weights[1]), "--device", "cpu", "--quiet", *options]


def speed(folder: Path, rounds: int) -> dict[tuple[str, str, int], Path]:
    """The speed table; the outputs of the last round by (size, precision, work size)."""
    contents, style = _inputs(folder)
    weights = random_weights(folder)
    runs = list(itertools.product(SIZES, PRECISIONS, WORKS))
    seconds: dict[tuple[str, str, int], list[float]] = {run: [] for run in runs}
    outputs = {}
    for round_ in range(rounds):
        for run in runs if round_ % 2 == 0 else runs[::-1]:  # the order alternates: drift hits both ends
            name, precision, work = run
            out = folder / f"out-{name}-{precision}-{work}.png"
            options = ["--content-size", "0", "--precision", precision, "--overwrite"]  # every round makes it
            options += ["--work-size", str(work)] if work else []
            seconds[run].append(measure(_command(contents[name], style, out, weights, *options))[0])
            outputs[run] = out
    print(f"\nwhole process, seconds (best of {rounds}), and speed-up against --content-size 0")
    print(f"{'size':>6} {'precision':>9} {'content-size 0':>15} {'work-size 512':>14} {'x':>5} "
          f"{'work-size 1024':>15} {'x':>5}")
    for name, precision in itertools.product(SIZES, PRECISIONS):
        full, w512, w1024 = (min(seconds[(name, precision, work)]) for work in WORKS)
        print(f"{name:>6} {precision:>9} {full:15.1f} {w512:14.1f} {full / w512:5.1f} {w1024:15.1f} "
              f"{full / w1024:5.1f}", flush=True)
    print(f"load at the end: {_load()}")
    return outputs


def look(folder: Path, outputs: dict[tuple[str, str, int], Path]) -> None:
    """The working size's look: work-size outputs shrunk back against --content-size outputs."""
    contents, style = _inputs(folder)
    weights = random_weights(folder)
    print("\nlook: --work-size W output shrunk to W against the --content-size W output (PSNR, 8 bits)")
    for (name, precision, work) in [key for key in outputs if key[2] and key[1] == "fp32"]:
        small = folder / f"small-{name}-{work}.png"
        subprocess.run(_command(contents[name], style, small, weights, "--content-size", str(work)), check=True)
        reference = images.to_tensor(images.load_image(small))
        full = images.to_tensor(images.load_image(outputs[(name, precision, work)]))
        back = guided.shrink(full, reference.shape[-2:])
        print(f"{name:>6} work-size {work:>4}: {psnr(back, reference):.2f} dB")


def edges(size: int) -> None:
    """PSNR against the mapping made at full size, per picture and mapping, two working sizes."""
    works = (size // 4, size // 2)
    print(f"\nedges: {size} px pictures, mappings made at the working size, brought back to full size; PSNR "
          f"(dB) against the mapping made at full size (radius {guided.RADIUS}, eps {guided.EPS:g})")
    print(f"{'picture':>12} {'mapping':>14} {'work':>5} {'bicubic':>8} {'guided':>7} {'grey guide':>10}")
    gains = []
    for (picture, make), (mapping, function), work in itertools.product(PICTURES.items(), MAPPINGS.items(), works):
        full = make(size)
        small, result, answer = case(full, function, work)
        upscaled = psnr(bicubic(result, full.shape[-2:]), answer)
        by_guide = psnr(guided.upsample(result, small, full).clamp(0, 1), answer)
        grey = psnr(guided.upsample(result, small, full, colour=False).clamp(0, 1), answer)
        gains.append(by_guide - upscaled)
        print(f"{picture:>12} {mapping:>14} {work:5d} {upscaled:8.2f} {by_guide:7.2f} {grey:10.2f}", flush=True)
    print(f"guided better than bicubic by {min(gains):.1f} to {max(gains):.1f} dB "
          f"(mean {statistics.mean(gains):.1f})")


def samples(folder: Path, size: int = 1024, work: int = 256, crop: int = 192) -> None:
    """Crops of the text picture under the gamma mapping: content, answer, bicubic, guided."""
    folder.mkdir(parents=True, exist_ok=True)
    full = PICTURES["text"](size)
    small, result, answer = case(full, MAPPINGS["gamma"], work)
    made = {"content": full, "answer": answer, "bicubic": bicubic(result, full.shape[-2:]),
            "guided": guided.upsample(result, small, full).clamp(0, 1)}
    top, left = size // 3, size // 5
    for name, picture in made.items():
        images.to_image(picture[..., top:top + crop, left:left + crop]).save(folder / f"work_size_{name}.png",
                                                                             optimize=True)
    print(f"\nsamples: {', '.join(made)} crops ({crop} px) in {folder}; "
          f"working size {work} of {size} px, PSNR bicubic {psnr(made['bicubic'], answer):.2f} dB, "
          f"guided {psnr(made['guided'], answer):.2f} dB")


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return handle.read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("speed", "look", "edges", "samples"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--edge-size", type=int, default=1024)
    parser.add_argument("--samples-to", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {_load()}, random weights")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.only in (None, "speed", "look"):
            outputs = speed(folder, args.rounds)
            if args.only != "speed":
                look(folder, outputs)
    if args.only in (None, "edges"):
        edges(args.edge_size)
    if args.only == "samples" or (args.only is None and args.samples_to):
        samples(args.samples_to or Path("benchmarks/samples"))


if __name__ == "__main__":
    main()
