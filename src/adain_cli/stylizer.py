"""The style-transfer pipeline in named stages: encode content, style statistics, render.

Each stage is separate so callers can reuse work: a content is encoded once for any
number of styles, and a style contributes only its relu4_1 statistics, computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import color, images, tiling
from .device import pick_device
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
    features: Tensor  # (1, 512, ceil(H/8), ceil(W/8))
    stats: FeatureStats

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image, and so of every output made from it."""
        return self.image.shape[-2], self.image.shape[-1]


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
    ) -> None:
        """`tile` (px, a multiple of 8) runs the encoder and decoder in tiles with the same
        result (see tiling.py), bounding memory for huge images."""
        if tile is not None and (tile < STRIDE or tile % STRIDE or edge_mode != "pad"):
            raise UsageError(f"tile size must be a positive multiple of {STRIDE} (and edges padded), got {tile}")
        self.device = pick_device("auto" if device is None else str(device))
        self.encoder = encoder.to(self.device).eval()
        self.decoder = decoder.to(self.device).eval()
        self.edge_mode = edge_mode
        self.tile = tile

    @classmethod
    def from_files(
        cls,
        vgg: Path | str | None = None,
        decoder: Path | str | None = None,
        device: torch.device | str = "auto",
        tile: int | None = None,
    ) -> Stylizer:
        """Load weights in the public AdaIN layout; missing paths come from the weights directory."""
        vgg_path, decoder_path = resolve_paths(
            None if vgg is None else Path(vgg), None if decoder is None else Path(decoder)
        )
        target = pick_device(str(device))  # a bad device fails before the weights are read
        return cls(load_encoder(vgg_path), load_decoder(decoder_path), target, tile=tile)

    @torch.inference_mode()
    def encode_content(self, image: Tensor) -> EncodedContent:
        """Stage 1: relu4_1 features of a content image (1, 3, H, W) in [0, 1]."""
        image = image.to(self.device, torch.float32)
        padded = _pad_to_stride(image) if self.edge_mode == "pad" else image
        features = self._encode(padded)  # (1, 512, ceil(H/8), ceil(W/8))
        return EncodedContent(image, features, feature_stats(features))

    @torch.inference_mode()
    def style_stats(self, image: Tensor) -> FeatureStats:
        """Stage 2: what a style contributes, the mean and std of its relu4_1 features."""
        return feature_stats(self._encode(image.to(self.device, torch.float32)))

    def _encode(self, image: Tensor) -> Tensor:
        return tiling.encode_tiled(self.encoder, image, self.tile) if self.tile else self.encoder(image)

    @torch.inference_mode()
    def render(self, content: EncodedContent, style: FeatureStats, alpha: float = 1.0) -> Tensor:
        """Stage 3: AdaIN, the alpha trade-off, decode; exactly the content's size, unclamped."""
        return self.decode(content, adain(content.features, style.to(self.device), content.stats), alpha)

    @torch.inference_mode()
    def decode(self, content: EncodedContent, target: Tensor, alpha: float = 1.0) -> Tensor:
        """The alpha trade-off between `target` features and the content's, decoded at the content's size.

        For targets other than plain AdaIN (regional statistics under a mask, for one).
        """
        target = blend(target, content.features, check_alpha(alpha))
        height, width = content.size
        decoded = tiling.decode_tiled(self.decoder, target, self.tile) if self.tile else self.decoder(target)
        return decoded[..., :height, :width]  # (1, 3, H, W)

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
