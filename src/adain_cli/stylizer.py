"""The style-transfer pipeline in named stages: encode content, style statistics, render.

Each stage is separate so callers can reuse work: a content is encoded once for any
number of styles, and a style contributes only its relu4_1 statistics, computed once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import color, images, memory, tiling
from .device import Precision, compute_dtype, pick_device
from .errors import UsageError
from .model import STRIDE, Decoder, Encoder, FeatureStats, adain, blend, feature_stats
from .weights import load_decoder, load_encoder, resolve_paths

# How content whose size is not a multiple of the encoder stride is handled:
# "pad" reflects it up to the next multiple and crops the result back; "crop" runs it
# as it is (the last pooling windows are partial) and crops the decoder's rounded-up
# output. "pad" is the default: it gave the cleaner borders (BENCHMARKS.md, borders).
EdgeMode = Literal["pad", "crop"]


def check_alpha(alpha: float) -> float:
    """The content-style trade-off must be a number in [0, 1]."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise UsageError(f"alpha must be between 0 and 1, got {alpha}")
    return float(alpha)


@dataclass(frozen=True)
class EncodedContent:
    """A content image with its relu4_1 features and their statistics, ready for any style."""

    image: Tensor  # (1, 3, H, W) in [0, 1], as prepared, on the model's device
    features: Tensor  # (1, 512, ceil(H/8), ceil(W/8)), in the compute dtype
    stats: FeatureStats
    tile: int | None = None  # the tile its passes use (chosen from the memory budget when encoded)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image, and so of every output made from it."""
        return self.image.shape[-2], self.image.shape[-1]


def _cat(tensors: list[Tensor]) -> Tensor:
    # One tensor (the usual case) is used as it is: a copy of a 4K feature map is 0.27 GB.
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _cat_stats(stats: list[FeatureStats]) -> FeatureStats:
    return FeatureStats(_cat([s.mean for s in stats]), _cat([s.std for s in stats]))


def _pad_to_stride(image: Tensor) -> Tensor:
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % STRIDE, -width % STRIDE
    if not (pad_h or pad_w):
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")


class Stylizer:
    """An encoder and decoder on one device. Load once, stylize many images."""

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        device: torch.device | str | None = None,
        edge_mode: EdgeMode = "pad",
        tile: int | None = None,
        *,
        precision: Precision = "fp32",
        max_memory: int | None = None,
        compile: bool = False,
    ) -> None:
        """`tile` (px, a multiple of 8) runs the encoder and decoder in tiles with the same
        result (see tiling.py). Without it, an image whose pass would not fit `max_memory`
        bytes (default: in use plus half of what is free, see memory.py) is tiled
        automatically, and on a GPU out-of-memory error the pass is retried in smaller tiles.

        `precision` "bf16" or "fp16" runs the networks in that dtype (statistics and AdaIN
        stay in fp32); `compile` runs them through torch.compile (slow first call).
        """
        if tile is not None and (tile < STRIDE or tile % STRIDE or edge_mode != "pad"):
            raise UsageError(f"tile size must be a positive multiple of {STRIDE} (and edges padded), got {tile}")
        if max_memory is not None and max_memory <= 0:
            raise UsageError(f"max-memory must be positive, got {max_memory}")
        self.device = pick_device("auto" if device is None else str(device))
        self.dtype = compute_dtype(precision, self.device)
        # channels_last is what oneDNN and cuDNN convolutions run fastest on; MPS prefers NCHW.
        self._layout = torch.contiguous_format if self.device.type == "mps" else torch.channels_last
        self.encoder = encoder.to(self.device, self.dtype, memory_format=self._layout).eval()
        self.decoder = decoder.to(self.device, self.dtype, memory_format=self._layout).eval()
        self.edge_mode = edge_mode
        self.tile = tile
        self.max_memory = max_memory
        self._encoder_fn = torch.compile(self.encoder) if compile else self.encoder
        self._decoder_fn = torch.compile(self.decoder) if compile else self.decoder
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # batches repeat shapes: pick the fastest kernels once

    @classmethod
    def from_files(
        cls,
        vgg: Path | str | None = None,
        decoder: Path | str | None = None,
        device: torch.device | str = "auto",
        tile: int | None = None,
        **options: Any,
    ) -> Stylizer:
        """Load weights in the public AdaIN layout; missing paths come from the weights directory.

        `options` are the constructor's keyword options (precision, max_memory, compile).
        """
        vgg_path, decoder_path = resolve_paths(
            None if vgg is None else Path(vgg), None if decoder is None else Path(decoder)
        )
        target = pick_device(str(device))  # a bad device fails before the weights are read
        compute_dtype(options.get("precision", "fp32"), target)  # and so does a bad precision
        return cls(load_encoder(vgg_path), load_decoder(decoder_path), target, tile=tile, **options)

    @torch.inference_mode()
    def encode_content(self, image: Tensor) -> EncodedContent:
        """Stage 1: relu4_1 features of a content image (1, 3, H, W) in [0, 1]."""
        return self.encode_contents(image)[0]

    @torch.inference_mode()
    def encode_contents(self, images: Tensor) -> list[EncodedContent]:
        """Stage 1 for a batch (N, 3, H, W) of same-size contents, in one encoder call where it fits."""
        images = images.to(self.device, torch.float32)
        padded = _pad_to_stride(images) if self.edge_mode == "pad" else images
        count, pixels = len(padded), padded.shape[-2:]
        # Chosen now, before the features and outputs exist: they are what the budget reserves room for.
        tile = self._tile_for(pixels, 1, features=True)
        together = count > 1 and tile is None and self._tile_for(pixels, count, features=True) is None
        features = self._each(self._encode, padded, tile, together)  # (N, 512, ceil(H/8), ceil(W/8))
        stats = feature_stats(features)
        return [
            EncodedContent(images[i:i + 1], features[i:i + 1],
                           FeatureStats(stats.mean[i:i + 1], stats.std[i:i + 1]), tile)
            for i in range(count)
        ]

    @torch.inference_mode()
    def style_stats(self, image: Tensor) -> FeatureStats:
        """Stage 2: what a style contributes, the mean and std of its relu4_1 features."""
        image = image.to(self.device, torch.float32)
        return feature_stats(self._each(self._encode, image, self._tile_for(image.shape[-2:], 1), False))

    def _cast(self, image: Tensor) -> Tensor:
        return image.to(self.dtype, memory_format=self._layout)

    def _encode(self, images: Tensor, tile: int | None, batch: slice) -> Tensor:
        if tile is None:
            return self._encoder_fn(self._cast(images))
        return tiling.encode_tiled(lambda window: self._trimmed(self._encoder_fn(self._cast(window))), images, tile)

    def _trimmed(self, result: Tensor) -> Tensor:
        # Between tiles: the previous window's buffers are free now; give them back (memory.trim).
        memory.trim(self.device)
        return result

    @torch.inference_mode()
    def render(self, content: EncodedContent, style: FeatureStats, alpha: float = 1.0) -> Tensor:
        """Stage 3: AdaIN, the alpha trade-off, decode; exactly the content's size, unclamped."""
        return self.render_batch([content], [style], alpha)

    @torch.inference_mode()
    def render_batch(self, contents: list[EncodedContent], styles: list[FeatureStats], alpha: float = 1.0) -> Tensor:
        """Stage 3 for pairs of same-size contents and styles, decoded together: (N, 3, H, W).

        AdaIN happens window by window inside the decode, so a tiled render never holds a
        second full-size feature map.
        """
        check_alpha(alpha)
        features = _cat([c.features for c in contents])
        content_stats = _cat_stats([c.stats for c in contents])
        style_stats = _cat_stats(styles).to(self.device)

        def restyle(window: Tensor, batch: slice) -> Tensor:
            stats = FeatureStats(content_stats.mean[batch], content_stats.std[batch])
            target = adain(window, FeatureStats(style_stats.mean[batch], style_stats.std[batch]), stats)
            return blend(target, window, alpha)

        return self._decode_all(features, restyle, contents)

    @torch.inference_mode()
    def decode(self, content: EncodedContent, target: Tensor, alpha: float = 1.0) -> Tensor:
        """The alpha trade-off between `target` features and the content's, decoded at the content's size.

        For targets other than plain AdaIN (regional statistics under a mask, for one).
        """
        target = blend(target.to(content.features.dtype), content.features, check_alpha(alpha))
        return self._decode_all(target, lambda window, batch: window, [content])

    def _decode_all(
        self, features: Tensor, prepare: Callable[[Tensor, slice], Tensor], contents: list[EncodedContent]
    ) -> Tensor:
        def decode(items: Tensor, tile: int | None, batch: slice) -> Tensor:
            def window_image(window: Tensor) -> Tensor:
                return self._decoder_fn(prepare(window, batch).to(memory_format=self._layout)).float()

            if tile is None:
                return window_image(items)
            return tiling.decode_tiled(lambda window: self._trimmed(window_image(window)), items, tile)

        tiles = [c.tile for c in contents if c.tile is not None]
        tile = min(tiles) if tiles else None
        pixels = (features.shape[-2] * STRIDE, features.shape[-1] * STRIDE)
        together = len(contents) > 1 and tile is None and self._tile_for(pixels, len(contents)) is None
        height, width = contents[0].size
        return self._each(decode, features, tile, together)[..., :height, :width]

    def _each(self, run: Callable[[Tensor, int | None, slice], Tensor], items: Tensor, tile: int | None,
              together: bool) -> Tensor:
        """`run(items, tile, batch)` over a batch: all at once untiled when `together`, else item by
        item in tiles of `tile` px; after a GPU out-of-memory error, item by item in smaller tiles."""
        if together:
            try:
                return run(items, None, slice(None))
            except torch.OutOfMemoryError:
                self._release()
        parts = [self._fitted(lambda t, i=i: run(items[i:i + 1], t, slice(i, i + 1)), tile, items.shape[-2:])
                 for i in range(len(items))]
        return _cat(parts)

    def _tile_for(self, pixels: tuple[int, int], batch: int, features: bool = False) -> int | None:
        """The tile a pass over `batch` images of `pixels` (h, w) needs to stay in the memory budget,
        leaving room for the buffers still to come (the features too, when encoding)."""
        if self.tile is not None:
            return self.tile
        height, width = pixels
        budget = memory.default_budget(self.device) if self.max_memory is None else self.max_memory
        element_size = self.dtype.itemsize
        reserve = memory.image_bytes(batch * height * width, element_size if features else 0)
        return memory.tile_for(height, width, batch, element_size, budget - memory.in_use(self.device) - reserve)

    def _fitted(self, run: Callable[[int | None], Tensor], tile: int | None, pixels: tuple[int, int]) -> Tensor:
        """`run(tile)`; after an out-of-memory error (GPUs raise them; CPUs rarely get the chance),
        again in tiles half the size, down to MIN_TILE."""
        while True:
            try:
                return run(tile)
            except torch.OutOfMemoryError:
                if tile is not None and tile <= memory.MIN_TILE:
                    raise
                self._release()
                tile = max((max(pixels) if tile is None else tile) // 2 // STRIDE * STRIDE, memory.MIN_TILE)

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()

    @overload
    def stylize(self, content: Image.Image, style: Image.Image | Tensor | FeatureStats,
                *, alpha: float = ..., color_mode: color.ColorMode = ...) -> Image.Image: ...
    @overload
    def stylize(self, content: Tensor, style: Image.Image | Tensor | FeatureStats,
                *, alpha: float = ..., color_mode: color.ColorMode = ...) -> Tensor: ...

    def stylize(self, content, style, *, alpha=1.0, color_mode="style"):
        """One content in one style. Images in give an image out; tensors in give (1, 3, H, W).

        `style` may be precomputed statistics from `style_stats` (not with "coral", which
        recolours the style image itself for each content).
        """
        check_alpha(alpha)
        as_image = isinstance(content, Image.Image)
        content_t = images.to_tensor(content) if as_image else content
        encoded = self.encode_content(content_t)
        if isinstance(style, FeatureStats):
            if color_mode == "coral":
                raise UsageError("coral colour preservation needs the style image, not its statistics")
            stats = style
        else:
            style_t = images.to_tensor(style) if isinstance(style, Image.Image) else style
            stats = self.style_stats(color.prepare_style(style_t.to(self.device), encoded.image, color_mode))
        with torch.inference_mode():
            out = color.finish(self.render(encoded, stats, alpha), encoded.image, color_mode)
        return images.to_image(out) if as_image else out
