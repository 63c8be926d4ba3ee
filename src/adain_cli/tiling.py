"""Exact tiling for images too large to run in one piece.

AdaIN needs statistics of the whole content, so tiling works at the feature level:
the encoder runs tile by tile and only each tile's core cells are kept, assembling the
whole relu4_1 feature map (1/64 of the pixels); statistics and AdaIN use that whole map;
the decoder then runs tile by tile again and keeps each tile's core pixels. Every tile
carries a halo wider than the network's reach from its edge, and tiles are aligned to
the encoder's stride, so each kept value is computed from exactly the inputs the untiled
network would use: the result equals the untiled one up to float rounding.

Frames, by name: a *core* is the part of the output a tile is responsible for; the
*window* is the core plus its halo, clipped to the image; both in pixels for the
encoder and in feature cells for the decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .model import FEATURE_CHANNELS, STRIDE

# How far a value at relu4_1 reaches back into the image: the receptive field of ten 3x3
# convs and three 2x2 pools is 68 px, so 34 px either side; rounded up to whole cells.
ENCODER_HALO = 40  # px
# How far a decoder output pixel reaches back into the features: 8 + 16 + 4 + 2 = 30 px.
DECODER_HALO = 4  # cells of 8 px


def _spans(length: int, core: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one axis."""
    for start in range(0, length, core):
        end = min(start + core, length)
        yield start, end, max(start - halo, 0), min(end + halo, length)


def _cells(pixels: int) -> int:
    return -(-pixels // STRIDE)  # the encoder's pools round up (ceil_mode)


def encode_tiled(encode: Callable[[Tensor], Tensor], image: Tensor, tile: int) -> Tensor:
    """relu4_1 features (1, 512, ceil(H/8), ceil(W/8)) of `image` (1, 3, H, W), from tiles of `tile` px.

    `encode` is the encoder, with whatever cast it needs; the features keep its output dtype.
    Tiles start at multiples of 8, so their pooling grids are the whole image's; only the
    last tile on each axis may end at an image edge that is not a multiple of 8.
    """
    if tile % STRIDE:
        raise ValueError(f"tile size must be a multiple of {STRIDE}, got {tile}")
    height, width = image.shape[-2:]
    features: Tensor | None = None
    for y0, y1, wy0, wy1 in _spans(height, tile, ENCODER_HALO):
        for x0, x1, wx0, wx1 in _spans(width, tile, ENCODER_HALO):
            window = encode(image[..., wy0:wy1, wx0:wx1])  # (1, 512, window/8)
            if features is None:
                features = torch.empty(1, FEATURE_CHANNELS, _cells(height), _cells(width),
                                       dtype=window.dtype, device=window.device)
            cy, cx = (y0 - wy0) // STRIDE, (x0 - wx0) // STRIDE
            rows, cols = _cells(y1 - y0), _cells(x1 - x0)
            features[..., y0 // STRIDE:y0 // STRIDE + rows, x0 // STRIDE:x0 // STRIDE + cols] = \
                window[..., cy:cy + rows, cx:cx + cols]
    assert features is not None
    return features


def decode_tiled(decode: Callable[[Tensor], Tensor], features: Tensor, tile: int) -> Tensor:
    """The image (1, 3, 8h, 8w), float32, that `decode` makes of `features` (1, C, h, w), from tiles.

    `decode` may do more than the decoder (AdaIN on each window, say): it sees each
    window of features with its halo, so anything position-wise is tiled for free.
    """
    cells = max(tile // STRIDE, 1)
    height, width = features.shape[-2:]
    out = torch.empty(1, 3, height * STRIDE, width * STRIDE, device=features.device)
    for y0, y1, wy0, wy1 in _spans(height, cells, DECODER_HALO):
        for x0, x1, wx0, wx1 in _spans(width, cells, DECODER_HALO):
            window = decode(features[..., wy0:wy1, wx0:wx1])
            cy, cx = (y0 - wy0) * STRIDE, (x0 - wx0) * STRIDE
            rows, cols = (y1 - y0) * STRIDE, (x1 - x0) * STRIDE
            out[..., y0 * STRIDE:y1 * STRIDE, x0 * STRIDE:x1 * STRIDE] = window[..., cy:cy + rows, cx:cx + cols]
    return out
