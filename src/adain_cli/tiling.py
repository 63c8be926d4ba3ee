"""Exact tiling: a network run window by window gives the untiled result.

AdaIN needs statistics of the whole content, so tiling works around them: the encoder
runs tile by tile and keeps each tile's core cells, assembling the whole relu4_1 feature
map (1/64 of the pixels); statistics use that whole map; the decoder then runs tile by
tile over the features (AdaIN is applied to each window as it goes) and keeps each
tile's core pixels. Every tile carries a halo wider than the network's reach from its
edge, and tiles are aligned to the encoder's stride, so each kept value is computed from
exactly the inputs the untiled network would use: the result equals the untiled one up
to float rounding.

Frames, by name: a *core* is the part of the output a tile is responsible for; the
*window* is the core plus its halo, clipped to the input; both in the input's positions
(pixels for the encoder, feature cells for the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import STRIDE


@dataclass(frozen=True)
class Geometry:
    """How a network maps input positions to output positions, and how far it sees."""

    unit: int  # image pixels per input position along a side (1 for images, 8 for relu4_1 cells)
    halo: int  # input positions beyond a core that its kept outputs depend on
    scale: Fraction  # output positions per input position; partial cells round up (ceil-mode pools)

    def out(self, positions: int) -> int:
        return math.ceil(positions * self.scale)


# relu4_1 reaches 34 px either side (ten 3x3 convs and three 2x2 pools: a 68 px receptive
# field), rounded up to whole 8 px cells so that windows start on the pooling grid.
ENCODER = Geometry(unit=1, halo=40, scale=Fraction(1, STRIDE))
# A decoder output pixel reaches 8 + 16 + 4 + 2 = 30 px back into the features: 4 cells.
DECODER = Geometry(unit=STRIDE, halo=4, scale=Fraction(STRIDE))


def pad_to_stride(x: Tensor) -> Tensor:
    """x (N, C, H, W) reflected up to a multiple of the encoder's stride at the bottom and right;
    outputs are cropped back (the cleaner borders of the two ways measured: BENCHMARKS.md,
    "Edge handling"). Anything laid over the image (mask labels) is padded the same way."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % STRIDE, -width % STRIDE
    if not (pad_h or pad_w):
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


def _spans(length: int, core: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one axis."""
    for start in range(0, length, core):
        end = min(start + core, length)
        yield start, end, max(start - halo, 0), min(end + halo, length)


def run_tiled(network: Callable[[Tensor], Tensor], x: Tensor, tile: int, geometry: Geometry) -> Tensor:
    """`network(x)` computed from windows of `tile` image pixels (a multiple of 8) plus halos.

    x is (N, C, H, W) in the network's input positions; the output keeps the dtype the
    network returns. Cores start at multiples of the stride, so encoder windows share the
    whole image's pooling grid; only the last core on an axis may end off the grid.
    """
    if tile % STRIDE:
        raise ValueError(f"tile size must be a multiple of {STRIDE}, got {tile}")
    core = max(tile // geometry.unit, 1)
    height, width = x.shape[-2:]
    out = geometry.out
    result: Tensor | None = None
    for y0, y1, wy0, wy1 in _spans(height, core, geometry.halo):
        for x0, x1, wx0, wx1 in _spans(width, core, geometry.halo):
            window = network(x[..., wy0:wy1, wx0:wx1])
            if result is None:
                result = torch.empty(x.shape[0], window.shape[1], out(height), out(width),
                                     dtype=window.dtype, device=window.device)
            top, left = out(y0) - out(wy0), out(x0) - out(wx0)
            rows, cols = out(y1) - out(y0), out(x1) - out(x0)
            result[..., out(y0):out(y1), out(x0):out(x1)] = window[..., top:top + rows, left:left + cols]
    assert result is not None
    return result
