"""Speed and memory of named scenarios, adain-cli against a reference-procedure baseline, side by side.

    python benchmarks/scenarios.py --random-weights                 # every CPU scenario
    python benchmarks/scenarios.py --scenarios 1080p --modes baseline fp32 bf16
    python benchmarks/scenarios.py --smoke                          # tiny sizes, seconds (CI)

Every (scenario, mode) is its own process, timed whole (start-up, weights, decoding,
saving) with its peak resident memory from os.wait4, as the reference figures were.

Modes:
- baseline: our modules driven the way pytorch-AdaIN's test.py drives its own: for every
  pair both images are decoded and encoded again, plain fp32 NCHW layers one by one,
  no caching, no tiling, no overlap.
- fp32, bf16: `adain stylize` itself at that precision.
CUDA scenarios (cuda256, cuda512, cuda1080) measure steady-state throughput in one
process instead: batches of random images through encode and decode on the GPU. Without
a GPU they are skipped, except that --smoke runs a tiny one on the CPU to check the code.

Content photos and paintings come from ../shared/images when it exists, else noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import SHARED, measure, random_weights

from adain_cli import images
from adain_cli.device import cpu_has_fast_bf16
from adain_cli.model import adain, feature_stats
from adain_cli.weights import load_decoder, load_encoder, resolve_paths

CONTENT_PHOTOS = ("golden_gate.jpg", "chicago.jpg", "sailboat.jpg", "cornell.jpg")
STYLE_PAINTINGS = ("la_muse.jpg", "brushstrokes.jpg", "mondrian.jpg", "woman_with_hat_matisse.jpg")


@dataclass(frozen=True)
class Scenario:
    name: str
    contents: int
    styles: int
    content_size: tuple[int, int] | None  # exact (width, height) at original size, or None: photos at `side`
    side: int = 512  # --content-size (0 with an exact size)
    style_side: int = 512  # --style-size
    extra: tuple[str, ...] = ()  # extra `adain stylize` options
    cuda: bool = False
    modes: tuple[str, ...] = field(default=("baseline", "fp32", "bf16"))


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("pair512", 1, 1, None),
        Scenario("batch4x4", 4, 4, None),
        Scenario("1080p", 1, 1, (1920, 1080), side=0),
        Scenario("4k", 1, 1, (3840, 2160), side=0, extra=("--max-memory", "1.5G")),
        Scenario("8k", 1, 1, (7680, 4320), side=0, modes=("fp32", "bf16")),  # no baseline: ~30 GB untiled
        Scenario("cuda256", 256, 1, (256, 256), cuda=True, modes=("fp32", "bf16", "fp16")),
        Scenario("cuda512", 128, 1, (512, 512), cuda=True, modes=("fp32", "bf16", "fp16")),
        Scenario("cuda1080", 32, 1, (1920, 1080), cuda=True, modes=("fp32", "bf16", "fp16")),
    )
}
SMOKE = {
    "pair512": Scenario("pair512", 1, 1, None, side=64, style_side=64),
    "batch4x4": Scenario("batch4x4", 2, 2, None, side=64, style_side=64),
    "1080p": Scenario("1080p", 1, 1, (96, 64), side=0, style_side=64, extra=("--max-memory", "1M")),
    "cuda256": Scenario("cuda256", 2, 1, (64, 64), cuda=True, modes=("fp32", "bf16", "fp16")),
}


def _picture(folder: Path, kind: str, names: tuple[str, ...], index: int, size: tuple[int, int] | None,
             noise_side: int) -> Path:
    shared = SHARED / kind / names[index % len(names)]
    image = images.load_image(shared) if shared.exists() else None
    if image is None:
        generator = torch.Generator().manual_seed(index)
        width, height = size or (noise_side * 4 // 3, noise_side)
        image = images.to_image(torch.rand(1, 3, height, width, generator=generator))
    elif size is not None:
        image = image.resize(size)
    path = folder / kind / f"{kind}{index}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_inputs(scenario: Scenario, folder: Path) -> tuple[list[Path], list[Path]]:
    side = max(scenario.side, 64)
    contents = [_picture(folder, "content", CONTENT_PHOTOS, i, scenario.content_size, side)
                for i in range(scenario.contents)]
    styles = [_picture(folder, "style", STYLE_PAINTINGS, i, None, side) for i in range(scenario.styles)]
    return contents, styles


# The baseline: the reference procedure, in a child process of its own.

def _plain(layers: list[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def baseline(contents: list[Path], styles: list[Path], out: Path, side: int, style_side: int, vgg: Path,
             decoder: Path) -> None:
    encoder_layers = [layer for part in load_encoder(vgg).slices for layer in part]
    decoder_layers = list(load_decoder(decoder))
    with torch.no_grad():
        for content_path in contents:
            for style_path in styles:
                content = images.load_tensor(content_path, side, False, None)
                style = images.load_tensor(style_path, style_side, False, None)
                content_f, style_f = _plain(encoder_layers, content), _plain(encoder_layers, style)
                stylized = _plain(decoder_layers, adain(content_f, feature_stats(style_f)))
                height, width = content.shape[-2:]
                images.save_image(images.to_image(stylized[..., :height, :width]),
                                  out / f"{content_path.stem}_{style_path.stem}.png")


def throughput(scenario: Scenario, precision: str, vgg: Path, decoder: Path, device: str) -> float:
    """Images per second through encode, AdaIN and decode, steady state, in batches of `contents`."""
    from adain_cli.stylizer import Stylizer

    stylizer = Stylizer(load_encoder(vgg), load_decoder(decoder), device, precision=precision)  # type: ignore[arg-type]
    width, height = scenario.content_size or (512, 512)
    batch = torch.rand(scenario.contents, 3, height, width, device=device)
    style = stylizer.style_stats(torch.rand(1, 3, min(512, height), min(512, width), device=device))
    styles = [style] * scenario.contents

    def once() -> None:
        encoded = stylizer.encode_contents(batch)
        stylizer.render_batch(encoded, styles)

    def synchronize() -> None:  # CUDA runs asynchronously: time finished work only
        if device == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up: cuDNN's algorithm search, allocator growth
    synchronize()
    rounds, started = 5, time.perf_counter()
    for _ in range(rounds):
        once()
    synchronize()
    return rounds * scenario.contents / (time.perf_counter() - started)


def run_scenario(scenario: Scenario, modes: list[str], scratch: Path, vgg: Path, decoder: Path,
                 smoke: bool = False) -> None:
    if scenario.cuda:
        # Smoke runs check the throughput code on the CPU when there is no GPU; real runs need one.
        device = "cuda" if torch.cuda.is_available() else "cpu" if smoke else None
        for mode in [m for m in modes if m in scenario.modes]:
            if device is None:
                print(f"{scenario.name:>9}{mode:>10}   not run: no CUDA device", flush=True)
                continue
            if device == "cpu" and (mode == "fp16" or (mode == "bf16" and not cpu_has_fast_bf16())):
                print(f"{scenario.name:>9}{mode:>10}   not run: no {mode} on this CPU", flush=True)
                continue
            rate = throughput(scenario, mode, vgg, decoder, device)
            print(f"{scenario.name:>9}{mode:>10}{'':>9}{'':>10}{rate:>10.1f}", flush=True)
        return
    folder = scratch / scenario.name
    contents, styles = make_inputs(scenario, folder)
    outputs = scenario.contents * scenario.styles
    base_seconds = None
    for mode in [m for m in modes if m in scenario.modes]:
        out = folder / f"out_{mode}"
        out.mkdir(exist_ok=True)
        if mode == "baseline":
            command = [sys.executable, __file__, "--baseline-child", str(out), str(scenario.side),
                       str(scenario.style_side), str(vgg), str(decoder), *map(str, contents), "--", *map(str, styles)]
        else:
            if mode == "bf16" and not cpu_has_fast_bf16():
                print(f"{scenario.name:>9}{mode:>10}   not run: no fast bf16 on this CPU", flush=True)
                continue
            command = [sys.executable, "-m", "adain_cli", "stylize", str(folder / "content"), str(folder / "style"),
                       "-o", str(out if outputs > 1 else out / "out.png"), "--content-size", str(scenario.side),
                       "--style-size", str(scenario.style_side),
                       "--vgg", str(vgg), "--decoder", str(decoder), "--device", "cpu", "--precision", mode,
                       "--overwrite", "--quiet", *scenario.extra]
        seconds, peak = measure(command)
        if mode == "baseline":
            base_seconds = seconds
        ratio = f"{base_seconds / seconds:>8.2f}x" if base_seconds else f"{'':>9}"
        print(f"{scenario.name:>9}{mode:>10}{seconds:>9.1f}{peak:>10.2f}{outputs / seconds:>10.3f}{ratio}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-child":
        out, side, style_side, vgg, decoder, *rest = sys.argv[2:]
        split = rest.index("--")
        baseline([Path(p) for p in rest[:split]], [Path(p) for p in rest[split + 1:]], Path(out), int(side),
                 int(style_side), Path(vgg), Path(decoder))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-weights", action="store_true", help="He-initialised weights: no files needed")
    parser.add_argument("--scenarios", nargs="+", default=[n for n in SCENARIOS if n != "8k"], choices=SCENARIOS)
    parser.add_argument("--modes", nargs="+", default=["baseline", "fp32", "bf16", "fp16"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and random weights: checks the script runs")
    args = parser.parse_args()
    table = SMOKE if args.smoke else SCENARIOS
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        vgg, decoder = random_weights(scratch) if args.random_weights or args.smoke else resolve_paths()
        print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
              f"{', smoke sizes' if args.smoke else ''}")
        print(f"{'scenario':>9}{'mode':>10}{'wall s':>9}{'peak GB':>10}{'images/s':>10}{'vs base':>9}")
        for name in args.scenarios:
            if name in table:
                run_scenario(table[name], args.modes, scratch, vgg, decoder, args.smoke)


if __name__ == "__main__":
    main()
