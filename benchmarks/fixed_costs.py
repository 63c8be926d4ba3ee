"""Where a one-image `adain stylize` process spends its time beyond the network.

    python benchmarks/fixed_costs.py --random-weights                      # 1920x1080, fp32 (+ bf16 if native)
    python benchmarks/fixed_costs.py --random-weights --before ../old/src  # and the code in another checkout

For each precision, one run measures side by side:
- the whole process: `python -m adain_cli stylize CONTENT STYLE -o OUT --content-size 0`, wall
  time, the median of --repeats runs;
- the same work stage by stage in a child process that makes the calls the command makes
  (imports, weights, decoding, the style's encoding, the content's encoding, the decoder,
  the 8-bit conversion, PNG encoding and writing), each timed;
- with --before, the whole process of another source tree (its `src` folder), e.g. a checkout
  of the code before a change;
- PNG encoding of that run's output at zlib levels 1, 3, 6 (Pillow's default) and 9: time
  (best of 3) and size, the trade behind images.PNG_COMPRESS_LEVEL.
The *network time* is the content's encoding plus the decoder: the work that makes this
image (about 1.9 TFLOP at 1080p). Everything else is a fixed cost around it, the style's
encoding included; the target is a whole process within 1.3x of the network time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, random_weights

CHILD = r"""
import time
started = time.perf_counter()
import json, sys
from pathlib import Path
import torch
from adain_cli import images, jobs
from adain_cli.execution import Execution
from adain_cli.stylizer import Stylizer
stages = {"imports": time.perf_counter() - started}
content, style, out, vgg, decoder, precision = sys.argv[1:]

def timed(name, work):
    begun = time.perf_counter()
    result = work()
    stages[name] = time.perf_counter() - begun
    return result

execution = Execution.resolve("cpu", precision)
stylizer = timed("load weights", lambda: Stylizer.from_files(vgg, decoder, execution=execution))
settings = jobs.Settings(content_size=0)
content_image = timed("decode content", lambda: settings.load_content(Path(content)))
style_image = timed("decode style", lambda: settings.load_style(Path(style)))
style_stats = timed("encode style", lambda: stylizer.style_stats(style_image))
encoded = timed("NETWORK: encode content", lambda: stylizer.encode_contents(torch.cat([content_image])))
result = timed("NETWORK: decode", lambda: stylizer.render_batch(encoded, [style_stats]))
picture = timed("to 8-bit image", lambda: images.to_image(result[0:1]))
timed("PNG encode + write", lambda: images.save_image(picture, Path(out)))
print(json.dumps(stages))
"""


def whole_processes(sources: dict[str, Path | None], args: list[str], repeats: int) -> dict[str, list[float]]:
    """Wall times of `adain stylize` from each source tree (None: this one), interleaved round by
    round in alternating order, so that a slow spell of a noisy machine hits them alike."""
    times: dict[str, list[float]] = {label: [] for label in sources}
    for round_number in range(repeats):
        order = list(sources) if round_number % 2 == 0 else list(reversed(sources))
        for label in order:
            env = dict(os.environ)
            if sources[label] is not None:
                env["PYTHONPATH"] = str(sources[label])
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "adain_cli", "stylize", *args], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            times[label].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-weights", action="store_true", help="He-initialised weights: no files needed")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32, and bf16 where native")
    parser.add_argument("--before", type=Path, help="the src folder of another checkout, timed as a whole process")
    args = parser.parse_args()

    from adain_cli import images
    from adain_cli.device import cpu_has_fast_bf16
    from adain_cli.weights import resolve_paths

    precisions = args.precisions or (["fp32", "bf16"] if cpu_has_fast_bf16() else ["fp32"])
    width, height = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        vgg, decoder = random_weights(scratch) if args.random_weights else resolve_paths()
        photo, painting = SHARED / "content" / "golden_gate.jpg", SHARED / "style" / "la_muse.jpg"
        source = images.load_image(photo) if photo.exists() else images.to_image(torch.rand(1, 3, 64, 64))
        content = scratch / f"content-{width}x{height}.jpg"
        source.resize((width, height)).save(content, quality=92)
        style = painting if painting.exists() else content
        print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, {width}x{height} content, "
              f"512 px style, CPU, whole processes: median of {args.repeats}")
        for precision in precisions:
            command = [str(content), str(style), "-o", str(scratch / "out.png"), "--content-size", "0",
                       "--vgg", str(vgg), "--decoder", str(decoder), "--device", "cpu", "--precision", precision,
                       "--overwrite", "--quiet"]
            sources = {"now": None, **({"before": args.before} if args.before else {})}
            times = whole_processes(sources, command, args.repeats)
            whole = statistics.median(times["now"])
            before = statistics.median(times["before"]) if args.before else None
            child = subprocess.run([sys.executable, "-c", CHILD, str(content), str(style), str(scratch / "staged.png"),
                                    str(vgg), str(decoder), precision], check=True, capture_output=True, text=True)
            stages = json.loads(child.stdout.strip().splitlines()[-1])
            network = sum(v for k, v in stages.items() if k.startswith("NETWORK"))
            print(f"\n{precision}: whole process {whole:.2f} s = {whole / network:.2f}x the network time "
                  f"({network:.2f} s)" + (f"; before: {before:.2f} s ({before / network:.2f}x)" if before else ""))
            for label, runs in times.items():
                print(f"  runs {label}: {', '.join(f'{t:.2f}' for t in runs)}")
            for name, seconds in stages.items():
                print(f"  {name:<24}{seconds:>7.2f} s {seconds / whole:>6.1%}")
            rest = whole - sum(stages.values())
            print(f"  {'interpreter, other':<24}{rest:>7.2f} s {rest / whole:>6.1%}")
        png_levels(scratch / "staged.png")


def png_levels(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        print(f"\nPNG encoding of that output ({image.width}x{image.height}), best of 3:")
        for level in (1, 3, 6, 9):
            best, size = float("inf"), 0
            for _ in range(3):
                buffer = io.BytesIO()
                started = time.perf_counter()
                image.save(buffer, "PNG", compress_level=level)
                best, size = min(best, time.perf_counter() - started), len(buffer.getvalue())
            print(f"  level {level}: {best:.3f} s, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
