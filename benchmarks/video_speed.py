"""`adain video` against `adain stylize` on the same frames as PNG files, and memory against length.

overhead: one H.264 clip made from a sample photo (panning), its frames also written as PNG
files; whole processes timed, interleaved (video, stylize, video, stylize, ...), so both
see the same machine. The ratio is what decoding and encoding the video costs on top of
the network, against reading and writing PNG files.

memory: peak RSS of `adain video` on a 10-second and a 20-minute clip of the same small
frames: memory must not grow with the length.

    python benchmarks/video_speed.py overhead [--size 288] [--frames 24] [--rounds 2]
    python benchmarks/video_speed.py memory [--minutes 20]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from common import SHARED, measure, random_weights
from PIL import Image


def panorama(height: int, width: int) -> np.ndarray:
    path = SHARED / "content" / "golden_gate.jpg"
    image = Image.open(path) if path.exists() else Image.effect_noise((width, height), 64)
    return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))


def make_clip(path: Path, frames: int, height: int, width: int, rate: Fraction) -> None:
    wide = panorama(height, width + 2 * min(frames, 500))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            shift = 2 * (i % 500)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(wide[:, shift:shift + width]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def weights_options(root: Path) -> list[str]:
    vgg, decoder = random_weights(root)
    return ["--vgg", str(vgg), "--decoder", str(decoder), "--device", "cpu", "-q"]


def overhead(args: argparse.Namespace) -> None:
    height = args.size
    width = height * 16 // 9 // 2 * 2
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        clip = root / "clip.mp4"
        make_clip(clip, args.frames, height, width, Fraction(25))
        frames = root / "frames"
        frames.mkdir()
        with av.open(str(clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                frame.to_image().save(frames / f"f{i:04d}.png")  # the very pixels the video path decodes
        style = SHARED / "style" / "la_muse.jpg"
        common = weights_options(root)
        video = [sys.executable, "-m", "adain_cli", "video", str(clip), str(style), "-o", str(root / "out.mp4"),
                 "--overwrite", *common]
        stills = [sys.executable, "-m", "adain_cli", "stylize", str(frames), str(style), "-o", str(root / "stills"),
                  "--content-size", "0", "--overwrite", *common]
        times: dict[str, list[float]] = {"video": [], "stylize": []}
        for _ in range(args.rounds):
            for name, command in (("video", video), ("stylize", stills)):
                seconds, _ = measure(command)
                times[name].append(seconds)
                print(f"  {name}: {seconds:.2f} s", file=sys.stderr)
        best = {name: min(values) for name, values in times.items()}
        print(f"{args.frames} frames of {width}x{height}, style la_muse.jpg at 512 px, fp32 on the CPU, "
              f"best of {args.rounds} interleaved rounds")
        print(f"adain video (H.264 in and out): {best['video']:.2f} s ({args.frames / best['video']:.2f} frames/s)")
        print(f"adain stylize (PNG in and out): {best['stylize']:.2f} s")
        print(f"ratio video / stylize: {best['video'] / best['stylize']:.3f}")


def memory(args: argparse.Namespace) -> None:
    rate = Fraction(10)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        common = weights_options(root)
        style = root / "style.png"
        Image.fromarray(panorama(64, 64)).save(style)
        for label, seconds in (("10 s", 10), (f"{args.minutes} min", args.minutes * 60)):
            clip = root / "clip.mp4"
            make_clip(clip, int(seconds * rate), 32, 32, rate)
            elapsed, peak = measure([sys.executable, "-m", "adain_cli", "video", str(clip), str(style), "-o",
                                     str(root / "out.mp4"), "--overwrite", "--style-size", "64", *common])
            frames = int(seconds * rate)
            print(f"{label} clip ({frames} frames of 32x32 at {rate} fps): peak RSS {peak * 1000:.0f} MB, "
                  f"{elapsed:.1f} s")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("overhead")
    one.add_argument("--size", type=int, default=288, help="frame height (width 16:9)")
    one.add_argument("--frames", type=int, default=24)
    one.add_argument("--rounds", type=int, default=2)
    two = sub.add_parser("memory")
    two.add_argument("--minutes", type=float, default=20)
    args = parser.parse_args()
    overhead(args) if args.what == "overhead" else memory(args)


if __name__ == "__main__":
    main()
