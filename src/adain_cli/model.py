"""The AdaIN network: a fixed normalised VGG-19 encoder to relu4_1, AdaIN, and a mirrored decoder.

Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
Normalization", ICCV 2017.

Module indices match the public pytorch-AdaIN release files (`vgg_normalised.pth`,
`decoder.pth`), so their state dicts load unchanged: `build_vgg()` and `Decoder()`
have exactly their keys and shapes. Images enter the encoder as RGB in [0, 1]; the
leading 1x1 conv of the normalised VGG does the mean subtraction and channel swap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Encoder stride: relu4_1 sits after three 2x2 max pools.
STRIDE = 8
FEATURE_CHANNELS = 512
STD_EPS = 1e-5

# (channels, convs) per VGG-19 stage; a max pool separates the stages.
_VGG_STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))

# End index (exclusive) in the VGG sequential of each layer the loss and encoder use.
VGG_LAYER_ENDS = {"relu1_1": 4, "relu2_1": 11, "relu3_1": 18, "relu4_1": 31}

# Decoder plan, mirroring the encoder: (in, out) convs, "up" for 2x nearest upsampling.
_DECODER_PLAN = (
    (512, 256), "up",
    (256, 256), (256, 256), (256, 256), (256, 128), "up",
    (128, 128), (128, 64), "up",
    (64, 64),
)  # fmt: skip


def _conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # Reflection padding rather than zeros: the paper's fix for border artefacts.
    # In-place ReLU: every conv's output has no other reader, and it saves a pass over memory.
    return [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True)]


def _reflect_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(reflection_pad(x, 1)) without materialising the padded copy of x.

    The conv runs with zero padding (inside the conv kernel, no copy), then the one-pixel
    frame, the only place reflection and zero padding differ, is recomputed from thin
    reflected strips. Same values up to float rounding, and about 8% faster on CPU.
    """
    weight, bias = conv.weight, conv.bias
    out = F.conv2d(x, weight, bias, padding=1)
    out[..., :1, :] = F.conv2d(F.pad(x[..., :2, :], (1, 1, 1, 0), mode="reflect"), weight, bias)[..., :1, :]
    out[..., -1:, :] = F.conv2d(F.pad(x[..., -2:, :], (1, 1, 0, 1), mode="reflect"), weight, bias)[..., -1:, :]
    out[..., :, :1] = F.conv2d(F.pad(x[..., :, :2], (1, 0, 1, 1), mode="reflect"), weight, bias)[..., :, :1]
    out[..., :, -1:] = F.conv2d(F.pad(x[..., :, -2:], (0, 1, 1, 1), mode="reflect"), weight, bias)[..., :, -1:]
    return out


def _collapse(kernel: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    # Along `dim` (size 3), the taps an even and an odd output see through a 2x nearest upsampling:
    # even outputs read (i-1, i, i) of the input, so taps [k0, k1 + k2]; odd ones (i, i, i+1), so [k0 + k1, k2].
    k0, k1, k2 = kernel.unbind(dim)
    return torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)


def _upsampled_reflect_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """conv(reflection_pad(upsample_nearest_2x(x), 1)) straight from x, with 2.25x fewer multiplies.

    Each of the four output phases (even/odd row, even/odd column) is a 2x2 conv of x with
    the 3x3 kernel's taps summed where the upsampling repeats a pixel; reflecting the
    upsampled image by one pixel is replicating x. Same values up to float rounding.
    """
    n, _, height, width = x.shape
    rows = _collapse(conv.weight.float(), 2)
    channels_last = x.stride(1) == 1 and x.shape[1] > 1
    layout = torch.channels_last if channels_last else torch.contiguous_format
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    out = torch.empty(n, conv.out_channels, 2 * height, 2 * width, dtype=x.dtype, device=x.device,
                      memory_format=layout)
    for a, row_taps in enumerate(rows):
        for b, kernel in enumerate(_collapse(row_taps, 3)):
            kernel = kernel.to(x.dtype).contiguous(memory_format=layout)
            out[..., a::2, b::2] = F.conv2d(padded[..., a:a + height + 1, b:b + width + 1], kernel, conv.bias)
    return out


def _is_reflect_conv(pad: nn.Module, conv: nn.Module | None) -> bool:
    return isinstance(pad, nn.ReflectionPad2d) and pad.padding == (1, 1, 1, 1) \
        and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1) \
        and conv.padding == (0, 0) and conv.groups == 1


def _is_nearest_2x(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Upsample) and layer.mode == "nearest" and layer.scale_factor in (2, 2.0, (2, 2))


def run_layers(layers: Iterable[nn.Module], x: Tensor) -> Tensor:
    """Apply `layers` in order. Outside autograd, a reflection pad + 3x3 conv runs without the
    padded copy, and a nearest 2x upsampling before one runs as four 2x2 convs."""
    layers = [*layers, None, None]
    fuse = not torch.is_grad_enabled()
    i = 0
    while layers[i] is not None:
        layer = layers[i]
        if fuse and _is_nearest_2x(layer) and _is_reflect_conv(layers[i + 1], layers[i + 2]):
            x = _upsampled_reflect_conv(x, layers[i + 2])
            i += 3
        elif fuse and _is_reflect_conv(layer, layers[i + 1]) and min(x.shape[-2:]) >= 2:
            x = _reflect_conv(x, layers[i + 1])
            i += 2
        else:
            x = layer(x)
            i += 1
    return x


def build_vgg() -> nn.Sequential:
    """All VGG-19 conv layers through relu5_4, laid out exactly as `vgg_normalised.pth`."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    in_channels = 3
    for stage, (channels, convs) in enumerate(_VGG_STAGES):
        if stage:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        for _ in range(convs):
            layers += _conv_relu(in_channels, channels)
            in_channels = channels
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """The fixed part of the normalised VGG-19 up to relu4_1. Never trained, never in grad mode."""

    def __init__(self, vgg: nn.Sequential | None = None) -> None:
        super().__init__()
        vgg = build_vgg() if vgg is None else vgg
        ends = list(VGG_LAYER_ENDS.values())
        starts = [0, *ends[:-1]]
        self.slices = nn.ModuleList(vgg[a:b] for a, b in zip(starts, ends, strict=True))
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: Tensor) -> Tensor:
        # (N, 3, H, W) in [0, 1] -> (N, 512, ceil(H/8), ceil(W/8))
        return run_layers((layer for part in self.slices for layer in part), image)

    def features(self, image: Tensor) -> dict[str, Tensor]:
        """relu1_1 ... relu4_1 by name, for the style loss in training."""
        out = {}
        for name, layer in zip(VGG_LAYER_ENDS, self.slices, strict=True):
            image = layer(image)
            out[name] = image
        return out

    def train(self, mode: bool = True) -> Encoder:
        # The encoder is fixed: keep it in eval mode even inside a training model.
        return super().train(False)


class Decoder(nn.Sequential):
    """Mirror of the encoder, laid out exactly as `decoder.pth`: no normalisation layers,
    nearest 2x upsampling, no activation after the last conv."""

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        for step in _DECODER_PLAN:
            if step == "up":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            else:
                layers += _conv_relu(*step)
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(64, 3, 3)]
        super().__init__(*layers)

    def forward(self, features: Tensor) -> Tensor:
        # (N, 512, h, w) -> (N, 3, 8h, 8w)
        return run_layers(self, features)


@dataclass(frozen=True)
class FeatureStats:
    """Per-sample, per-channel mean and std of a feature map: all a style contributes."""

    mean: Tensor  # (N, C, 1, 1)
    std: Tensor  # (N, C, 1, 1)

    def to(self, device: torch.device | str) -> FeatureStats:
        return FeatureStats(self.mean.to(device), self.std.to(device))


def feature_stats(features: Tensor, eps: float = STD_EPS) -> FeatureStats:
    """Mean over spatial positions and std = sqrt(unbiased variance + eps), as the paper's code."""
    n, c = features.shape[:2]
    flat = features.reshape(n, c, -1).float()  # statistics in fp32 whatever the compute dtype
    std = (flat.var(dim=2) + eps).sqrt()
    return FeatureStats(flat.mean(dim=2).view(n, c, 1, 1), std.view(n, c, 1, 1))


def adain(content: Tensor, style: FeatureStats, content_stats: FeatureStats | None = None) -> Tensor:
    """AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y).

    `content_stats` defaults to the statistics of `content`; pass them to normalise a
    part of a feature map (a tile, a masked region) with statistics of the whole.
    """
    stats = feature_stats(content) if content_stats is None else content_stats
    scale = style.std / stats.std
    shift = style.mean - stats.mean * scale
    if content.dtype == torch.float32:
        return torch.addcmul(shift, content, scale)  # one pass, one new tensor
    # Half-precision features: the affine map in fp32, the result back in their dtype.
    return torch.addcmul(shift, content.float(), scale).to(content.dtype)


def blend(target: Tensor, content: Tensor, alpha: float) -> Tensor:
    """The content-style trade-off t' = alpha * t + (1 - alpha) * f(c)."""
    if alpha == 1.0:
        return target
    return alpha * target + (1.0 - alpha) * content
