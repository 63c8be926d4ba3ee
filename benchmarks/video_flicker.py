"""Flicker of `adain video` against --smooth: a static-camera clip (sensor noise only), a
panning clip, and a static clip with a dark object crossing it, all made here from a sample photo.

Flicker = mean absolute change between consecutive output frames (0-255 scale) minus that
of the input frames: what stylization adds on top of the motion that is really there.

    python benchmarks/video_flicker.py [--size 256] [--frames 48] [--smooth 0,0.1,0.25,0.5,1,2]
    python benchmarks/video_flicker.py --jumps    # the statistics' jumps that steady.CUT_THRESHOLD separates
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from common import SHARED, random_weights
from PIL import Image

from adain_cli import jobs, steady, video
from adain_cli.stylizer import Stylizer

RATE = Fraction(25)


def photo(size: int, wide: int) -> np.ndarray:
    path = SHARED / "content" / "chicago.jpg"
    image = Image.open(path).convert("RGB") if path.exists() else Image.effect_noise((size * 2, size), 64)
    image = image.convert("RGB").resize((wide, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


def clips(size: int, count: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    width = size * 3 // 2
    still = photo(size, width).astype(float)
    static = [np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8) for _ in range(count)]
    panorama = photo(size, width + 2 * count)
    panning = [np.ascontiguousarray(panorama[:, 2 * i:2 * i + width]) for i in range(count)]
    entering = []  # static camera, a dark object crossing the frame: the content's statistics drift
    for i in range(count):
        frame = np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
        left = int((i / max(count - 1, 1)) * (width + size // 2)) - size // 2
        frame[size // 4:3 * size // 4, max(left, 0):max(left + size // 2, 0)] = (30, 30, 40)
        entering.append(frame)
    return {"static camera": static, "panning": panning, "object crossing": entering}


def write(path: Path, frames: list[np.ndarray]) -> Path:
    """Lossless (FFV1 in RGB): the input's own changes are exactly what the network sees."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def change(frames: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b.astype(float) - a).mean() for a, b in itertools.pairwise(frames)]))


def jumps(stylizer: Stylizer, size: int) -> None:
    """`Steady.jump` between consecutive frames of each clip, and between different photos (cuts)."""
    def stats(pixels: np.ndarray) -> object:
        image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 255
        return stylizer.encode_content(image).stats

    series = {name: [stats(f) for f in frames] for name, frames in clips(size, 12).items()}
    photos = sorted((SHARED / "content").glob("*.jpg"))
    series["cuts between photos"] = [stats(np.asarray(Image.open(p).convert("RGB").resize((size * 3 // 2, size))))
                                     for p in photos]
    for name, values in series.items():
        found = [steady.Steady.jump(b, a) for a, b in itertools.pairwise(values)]
        print(f"{name}: {min(found):.3f} to {max(found):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--smooth", default="0,0.1,0.25,0.5,1,2")
    parser.add_argument("--jumps", action="store_true", help="print the statistics' jumps instead")
    args = parser.parse_args()
    values = [float(v) for v in args.smooth.split(",")]
    style = SHARED / "style" / "la_muse.jpg"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if not style.exists():
            Image.effect_noise((256, 256), 64).convert("RGB").save(root / "style.png")
            style = root / "style.png"
        stylizer = Stylizer.from_files(*random_weights(root), device="cpu")
        if args.jumps:
            jumps(stylizer, args.size)
            return
        settings = jobs.Settings(content_size=0, style_size=256, overwrite=True)
        print(f"flicker (mean |frame - previous|, 0-255) added by stylization, {args.frames} frames of "
              f"{args.size * 3 // 2}x{args.size} at {RATE} fps; --smooth in seconds")
        print("| clip | input change | " + " | ".join(f"S={v:g}" for v in values) + " |")
        print("|---|---|" + "---|" * len(values))
        for name, frames in clips(args.size, args.frames).items():
            source = write(root / "clip.mkv", frames)
            cells = []
            for value in values:
                out = root / "frames"
                plan = video.plan(str(source), [str(style)], f"{out}/", settings, video.Options(smooth=value))
                try:
                    video.run(stylizer, plan, settings)
                finally:
                    plan.close()
                outputs = [np.asarray(Image.open(p)) for p in sorted(out.iterdir())]
                cells.append(f"{change(outputs) - change(frames):.2f}")
                print(f"  {name}, S={value:g}: done", file=sys.stderr)
            print(f"| {name} | {change(frames):.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
