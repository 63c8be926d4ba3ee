"""The style-transfer pipeline, stage by stage as the paper draws it.

    content image --encode--> relu4_1 features f(c) and their statistics      (stage 1)
    style image   --encode--> mean and std of its relu4_1 features            (stage 2)
    AdaIN(f(c), style) blended with f(c) by alpha --decode--> image           (stage 3)

Every command goes through these methods, and only they apply the colour modes: CORAL
recolours the style towards the content before stage 2, luminance-only keeps the
content's chroma after stage 3 (color.py). With a working size (`work_size`), stage 1 sees
the content shrunk to it and stage 3's result is brought back to the content's size by
guided upsampling (guided.py) before the colour step, so that luminance-only takes the
full-size chroma. How each network runs (device, precision,
tiles within a memory budget, out-of-memory retry) is execution.py's business.

Stages are separate so work is reused: a content is encoded once for any number of
styles, and a style contributes only its statistics, computed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch
from PIL import Image
from torch import Tensor

from . import color, guided, images, memory, mixing
from .errors import UsageError
from .execution import Execution, Network
from .model import Decoder, Encoder, FeatureStats, adain, blend, cat, feature_stats
from .tiling import DECODER, ENCODER, pad_to_stride
from .weights import load_decoder, load_encoder, resolve_paths

StyleInput = Image.Image | Tensor | FeatureStats


def check_alpha(alpha: float) -> float:
    """The content-style trade-off must be a number in [0, 1]."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise UsageError(f"alpha must be between 0 and 1, got {alpha}")
    return float(alpha)


@dataclass(frozen=True)
class EncodedContent:
    """A content image with its relu4_1 features and their statistics, ready for any style."""

    image: Tensor  # (1, 3, H, W) in [0, 1], as prepared, on the model's device
    features: Tensor  # (1, 512, ceil(h/8), ceil(w/8)) of `seen`, in the compute dtype
    stats: FeatureStats  # (1, 512, 1, 1) each
    working: Tensor | None = None  # (1, 3, h, w): the image at the working size; None: the network saw `image`

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image, and so of every output made from it."""
        return self.image.shape[-2], self.image.shape[-1]

    @property
    def seen(self) -> Tensor:
        """The image as the network saw it: at the working size, or `image` itself."""
        return self.image if self.working is None else self.working


def _batch_alpha(alpha: float | Sequence[float], count: int, device: torch.device) -> float | Tensor:
    """One alpha as a number; several as an (N, 1, 1, 1) tensor, unless they are all equal."""
    if not isinstance(alpha, Sequence):
        return check_alpha(alpha)
    if len(alpha) != count:
        raise UsageError(f"{len(alpha)} alphas for {count} pairs")
    alphas = [check_alpha(a) for a in alpha]
    if len(set(alphas)) == 1:
        return alphas[0]  # the plain path: the same numbers as a single alpha, bit for bit
    return torch.tensor(alphas, device=device).view(-1, 1, 1, 1)


def _execution_of(device: str | torch.device, execution: Execution | None, options: dict[str, Any]) -> Execution:
    if execution is None:
        return Execution.resolve(device, **options)
    if options or device != "auto":
        raise TypeError("pass either execution or device and options, not both")
    return execution


class Stylizer:
    """An encoder and decoder on one device. Load once, stylize many images."""

    def __init__(self, encoder: Encoder, decoder: Decoder, device: str | torch.device = "auto", *,
                 execution: Execution | None = None, **options: Any) -> None:
        """Give either `execution` (options resolved once, as the commands do) or `device` and
        the keyword options of `Execution.resolve`: precision, tile, max_memory, batch_size, compile.
        The modules are moved to the device, dtype and layout."""
        self.execution = _execution_of(device, execution, options)
        self._encoder = Network(encoder, self.execution, ENCODER, keeps_features=True)
        self._decoder = Network(decoder, self.execution, DECODER, float_output=True)
        self.encoder, self.decoder = encoder, decoder

    @classmethod
    def from_files(cls, vgg: Path | str | None = None, decoder: Path | str | None = None,
                   device: str | torch.device = "auto", *, execution: Execution | None = None,
                   **options: Any) -> Stylizer:
        """Load weights in the public AdaIN layout; missing paths come from the weights directory."""
        execution = _execution_of(device, execution, options)  # bad options fail before any reading
        vgg_path, decoder_path = resolve_paths(None if vgg is None else Path(vgg),
                                               None if decoder is None else Path(decoder))
        return cls(load_encoder(vgg_path), load_decoder(decoder_path), execution=execution)

    @property
    def device(self) -> torch.device:
        return self.execution.device

    # --- stage 1 -------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_content(self, image: Tensor, work_size: int = 0) -> EncodedContent:
        """relu4_1 features of a content image (1, 3, H, W) in [0, 1]."""
        return self.encode_contents(image, work_size)[0]

    @torch.inference_mode()
    def encode_contents(self, images: Tensor, work_size: int = 0) -> list[EncodedContent]:
        """Stage 1 for a batch (N, 3, H, W) of same-size contents, in one encoder call where it fits.

        `work_size` (px, the shorter side; 0: off): the encoder sees the contents shrunk to it, and
        their outputs are brought back to H x W (guided.py); UsageError if it is larger than H or W.
        """
        images = images.to(self.device, torch.float32)
        height, width = images.shape[-2:]
        guided.check_work_size(work_size, height, width)
        small = guided.working_size(height, width, work_size) if work_size else (height, width)
        working = guided.shrink(images, small) if small != (height, width) else None
        seen = images if working is None else working
        features = self._encoder.run(pad_to_stride(seen))  # (N, 512, ceil(h/8), ceil(w/8))
        stats = feature_stats(features)
        return [EncodedContent(images[i:i + 1], features[i:i + 1], stats[i:i + 1],
                               None if working is None else working[i:i + 1]) for i in range(len(images))]

    # --- stage 2 -------------------------------------------------------------------------

    @torch.inference_mode()
    def style_stats(self, image: Tensor, content: EncodedContent | None = None,
                    color_mode: color.ColorMode = "style") -> FeatureStats:
        """What a style image (1, 3, H, W) contributes: the mean and std of its relu4_1 features.

        Under "coral" the style is first recoloured towards `content`, so its statistics
        hold for that content only (see color.recolours_style).
        """
        image = image.to(self.device, torch.float32)
        if color.recolours_style(color_mode):
            if content is None:
                raise UsageError("coral colour preservation recolours the style towards a content: give the content")
            image = color.prepare_style(image, content.seen, color_mode)
        return feature_stats(self._encoder.run(image))  # features (1, 512, ceil(H/8), ceil(W/8))

    # --- stage 3 -------------------------------------------------------------------------

    @torch.inference_mode()
    def render(self, content: EncodedContent, style: FeatureStats, alpha: float = 1.0,
               color_mode: color.ColorMode = "style") -> Tensor:
        """AdaIN, the alpha trade-off, decoding and the colour step: (1, 3, H, W) at the content's size."""
        return self.render_batch([content], [style], alpha, color_mode)

    @torch.inference_mode()
    def render_batch(self, contents: list[EncodedContent], styles: list[FeatureStats],
                     alpha: float | Sequence[float] = 1.0, color_mode: color.ColorMode = "style") -> Tensor:
        """Stage 3 for pairs of same-size contents and styles, decoded together: (N, 3, H, W), unclamped.

        `alpha` is one number for every pair or one per pair. AdaIN happens window by window
        inside the decode, so a tiled render never holds a second full-size feature map.
        """
        alpha = _batch_alpha(alpha, len(contents), self.device)
        features = cat([c.features for c in contents])
        content_stats = FeatureStats.cat([c.stats for c in contents])
        style_stats = FeatureStats.cat(styles).to(self.device)

        def restyle(window: Tensor, items: slice) -> Tensor:
            trade_off = alpha[items] if isinstance(alpha, Tensor) else alpha
            return blend(adain(window, style_stats[items], content_stats[items]), window, trade_off)

        return self._finish(self._decoder.run(features, restyle), contents, color_mode)

    @torch.inference_mode()
    def decode(self, content: EncodedContent, target: Tensor, alpha: float = 1.0,
               color_mode: color.ColorMode = "style") -> Tensor:
        """Stage 3 for targets other than plain AdaIN (regional statistics under a mask, for one):
        `target` blended with the content's features by alpha, decoded, coloured."""
        target = blend(target.to(content.features.dtype), content.features, check_alpha(alpha))
        return self._finish(self._decoder.run(target), [content], color_mode)

    def _finish(self, decoded: Tensor, contents: list[EncodedContent], color_mode: color.ColorMode) -> Tensor:
        height, width = contents[0].seen.shape[-2:]
        decoded = decoded[..., :height, :width]  # the stride padding cropped off: (N, 3, h, w)
        if contents[0].working is not None:  # (N, 3, H, W), the edges the full-size content's
            room = self.execution.budget() - memory.in_use(self.device)
            decoded = guided.upsample(decoded, cat([c.seen for c in contents]), cat([c.image for c in contents]),
                                      room)
        if not color.recolours_output(color_mode):
            return decoded
        return cat([color.finish(decoded[i:i + 1], c.image, color_mode) for i, c in enumerate(contents)])

    # --- all stages at once ----------------------------------------------------------------

    @overload
    def stylize(self, content: Image.Image, style: StyleInput | Sequence[StyleInput], *, alpha: float = ...,
                color_mode: color.ColorMode = ..., weights: Sequence[float] | None = ...,
                work_size: int = ...) -> Image.Image: ...
    @overload
    def stylize(self, content: Tensor, style: StyleInput | Sequence[StyleInput], *, alpha: float = ...,
                color_mode: color.ColorMode = ..., weights: Sequence[float] | None = ...,
                work_size: int = ...) -> Tensor: ...

    def stylize(self, content: Image.Image | Tensor, style: StyleInput | Sequence[StyleInput], *,
                alpha: float = 1.0, color_mode: color.ColorMode = "style",
                weights: Sequence[float] | None = None, work_size: int = 0) -> Image.Image | Tensor:
        """One content in one style, or in a mix of several (`weights`, default equal), the network
        run at `work_size` (px, the shorter side; 0: the content's own; see encode_contents).

        An image in gives an image out; a tensor (1, 3, H, W) in [0, 1] gives one out.
        Styles are images, tensors, or statistics from `style_stats` (not under "coral",
        which recolours the style image itself for each content).
        """
        check_alpha(alpha)
        as_image = isinstance(content, Image.Image)
        encoded = self.encode_content(images.to_tensor(content) if as_image else content, work_size)
        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        stats = [self._stats_of(s, encoded, color_mode) for s in styles]
        mixed = stats[0] if len(stats) == 1 else mixing.mix_stats(stats, mixing.normalise_weights(weights, len(stats)))
        out = self.render(encoded, mixed, alpha, color_mode)
        return images.to_image(out) if as_image else out

    def _stats_of(self, style: StyleInput, content: EncodedContent, color_mode: color.ColorMode) -> FeatureStats:
        if not isinstance(style, FeatureStats):
            return self.style_stats(images.to_tensor(style) if isinstance(style, Image.Image) else style,
                                    content, color_mode)
        if color.recolours_style(color_mode):
            raise UsageError("coral colour preservation needs the style image, not its statistics")
        return style
