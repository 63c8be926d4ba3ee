"""fp32 outputs stay bit-for-bit the same through refactors: record them once, check them after.

    python benchmarks/parity.py --record before.json     # on the code you start from
    python benchmarks/parity.py --check before.json      # on the code you end with

Each case is one `adain` process on the shared sample images (../shared/images; noise
when absent) with the same He-initialised random weights, `--precision fp32` on the CPU.
The sha256 of every output's decoded pixels (with its format, mode and size) is recorded;
--check recomputes them and lists each case that differs. Pixels, not file bytes: a PNG's
compression level changes its bytes and nothing a viewer sees. Cases cover the paths a
refactor can disturb: resizing, odd sizes (stride padding), alpha, both colour modes, crop,
explicit tiles, batches, JPEG output, style mixes, contact sheets with labels and masks,
video frames (steady statistics, keyframes under --preserve-color) and a seeded dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import SHARED, random_weights

from adain_cli import images

PHOTOS = ("golden_gate.jpg", "chicago.jpg", "newyork.jpg", "sailboat.jpg")
PAINTINGS = ("la_muse.jpg", "brushstrokes.jpg", "sketch.png", "mondrian.jpg")

# name -> (adain arguments, with {c0} {s0} ... {dir} {mask} {out} placeholders)
CASES: dict[str, list[str]] = {
    "default": ["stylize", "{c0}", "{s0}", "-o", "{out}/default.png"],
    "odd-size-alpha": ["stylize", "{c1}", "{s1}", "-o", "{out}/odd.png", "--content-size", "0", "--alpha", "0.6"],
    "preserve-color": ["stylize", "{c1}", "{s0}", "-o", "{out}/coral.png", "--preserve-color"],
    "luminance-only": ["stylize", "{c1}", "{s1}", "-o", "{out}/luma.png", "--luminance-only"],
    "crop-style-size": ["stylize", "{c2}", "{s2}", "-o", "{out}/crop.png", "--crop", "--style-size", "256"],
    "tiled": ["stylize", "{c2}", "{s3}", "-o", "{out}/tiled.png", "--content-size", "0", "--tile", "128"],
    "jpeg": ["stylize", "{c3}", "{s2}", "-o", "{out}/out.jpg", "--quality", "90", "--content-size", "320"],
    "batch": ["stylize", "{dir}/content", "{dir}/style", "-o", "{out}/batch", "--batch-size", "2",
              "--content-size", "256", "--style-size", "256"],
    "batch-coral": ["stylize", "{dir}/content", "{dir}/style", "-o", "{out}/batch-coral", "--preserve-color",
                    "--content-size", "256", "--style-size", "256"],
    "mix": ["interpolate", "{c0}", "{s0}", "{s1}", "{s2}", "-w", "0.5,0.3,0.2", "-o", "{out}/mix.png"],
    "steps-labels": ["interpolate", "{c3}", "{s1}", "{s3}", "--steps", "3", "--labels", "-o", "{out}/steps.png",
                     "--content-size", "256"],
    "alpha-sweep-luma": ["interpolate", "{c1}", "{s0}", "{s2}", "--alpha-sweep", "3", "--luminance-only",
                         "-o", "{out}/sweep", "--content-size", "256"],
    "mask": ["interpolate", "{c0}", "{s0}", "{s3}", "--mask", "{mask}", "-o", "{out}/mask.png"],
    "video-steady": ["video", "{frames}/*.png", "{s0}", "-o", "{out}/frames/", "--content-size", "0"],
    "video-keyframes-coral": ["video", "{frames}/*.png", "--keyframes", "0:{s1},0.1:{s2}", "-o", "{out}/kf/",
                              "--preserve-color", "--content-size", "0", "--smooth", "0"],
    "dataset": ["dataset", "{tree}", "{dir}/style", "-o", "{out}/ds", "--seed", "3", "-n", "2", "--alpha", "0.5:1",
                "--content-size", "160", "--style-bank", "off"],
}


def inputs(folder: Path) -> dict[str, str]:
    """Sample photos and paintings copied (or noise made) into `folder`, and a half-white mask."""
    names: dict[str, str] = {}
    for kind, files, key in (("content", PHOTOS, "c"), ("style", PAINTINGS, "s")):
        (folder / kind).mkdir(parents=True)
        for index, name in enumerate(files):
            source = SHARED / kind / name
            target = folder / kind / (name if source.exists() else f"noise{index}.png")
            if source.exists():
                target.write_bytes(source.read_bytes())
            else:
                generator = torch.Generator().manual_seed(index)
                images.to_image(torch.rand(1, 3, 300 + 37 * index, 400, generator=generator)).save(target)
            names[f"{key}{index}"] = str(target)
    (folder / "batch" / "content").mkdir(parents=True)
    (folder / "batch" / "style").mkdir()
    for key, kind in (("c0", "content"), ("c1", "content"), ("s0", "style"), ("s1", "style")):
        source = Path(names[key])
        (folder / "batch" / kind / source.name).write_bytes(source.read_bytes())
    width, height = images.load_image(Path(names["c0"])).size
    mask = images.Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))
    mask.save(folder / "mask.png")
    names.update(dir=str(folder / "batch"), mask=str(folder / "mask.png"), frames=str(_frames(folder, names)),
                 tree=str(_tree(folder, names)))
    return names


def _frames(folder: Path, names: dict[str, str]) -> Path:
    """Six 192x108 frames panning across a photo, for `adain video`."""
    frames = folder / "frames"
    frames.mkdir()
    photo = images.load_image(Path(names["c0"])).resize((320, 180))
    for index in range(6):
        photo.crop((16 * index, 8, 16 * index + 192, 116)).save(frames / f"{index:03d}.png")
    return frames


def _tree(folder: Path, names: dict[str, str]) -> Path:
    """An ImageNet-like tree (two classes of two photos) for `adain dataset`."""
    tree = folder / "tree"
    for index, key in enumerate(("c0", "c1", "c2", "c3")):
        target = tree / f"n0{index % 2}" / f"{key}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        images.load_image(Path(names[key])).convert("RGB").save(target, quality=95)
    return tree


def digest(path: Path) -> str:
    with images.Image.open(path) as image:
        header = f"{image.format} {image.mode} {image.size}".encode()
        return hashlib.sha256(header + image.tobytes()).hexdigest()


def digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): digest(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix.lower() != ".csv"}  # a dataset's manifest holds no pixels


def run_cases(scratch: Path) -> dict[str, dict[str, str]]:
    names = inputs(scratch / "in")
    vgg, decoder = random_weights(scratch)
    results = {}
    for case, template in CASES.items():
        out = scratch / "out" / case
        out.mkdir(parents=True)
        args = [part.format(out=out, **names) for part in template]
        command = [sys.executable, "-m", "adain_cli", *args, "--vgg", str(vgg), "--decoder", str(decoder),
                   "--device", "cpu", "--precision", "fp32", "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{case} failed ({done.returncode}): {done.stderr.strip()}")
        results[case] = digests(out)
        print(f"{case:>18}: {len(results[case])} file(s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--record", type=Path, metavar="JSON", help="write the outputs' sha256 here")
    action.add_argument("--check", type=Path, metavar="JSON", help="compare with a recorded file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = run_cases(Path(scratch))
    if args.record:
        args.record.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, results.values()))} outputs of {len(results)} cases in {args.record}")
        return
    recorded = json.loads(args.check.read_text())
    differing = [case for case in CASES if results.get(case) != recorded.get(case)]
    for case in differing:
        print(f"DIFFERS: {case}: {recorded.get(case)} -> {results.get(case)}")
    total = sum(map(len, results.values()))
    print(f"{total} outputs of {len(CASES)} cases: "
          + ("all bit-for-bit identical" if not differing else f"{len(differing)} case(s) differ"))
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
