"""What the benchmarks share: the sample images, random weights in the public layout, process timing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import torch

from adain_cli.model import Decoder, build_vgg

# Sample photos and paintings (not ours to ship); benchmarks fall back to noise without them.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"


def he_initialised(seed: int = 0) -> tuple[torch.nn.Sequential, Decoder]:
    """A full VGG and a decoder in the public layout with He-initialised convs, for machines
    with no real weights: speed and memory do not depend on the values."""
    torch.manual_seed(seed)
    vgg, decoder = build_vgg(), Decoder()
    for module in [*vgg.modules(), *decoder.modules()]:
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    return vgg, decoder


def random_weights(folder: Path) -> tuple[Path, Path]:
    """`vgg_normalised.pth` and `decoder.pth` files of `he_initialised` networks in `folder`."""
    vgg, decoder = he_initialised()
    paths = folder / "vgg_normalised.pth", folder / "decoder.pth"
    torch.save(vgg.state_dict(), paths[0])
    torch.save(decoder.state_dict(), paths[1])
    return paths


def measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GB, 10^9 bytes) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
