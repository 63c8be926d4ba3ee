"""The AdaIN network: a fixed normalised VGG-19 encoder to relu4_1, AdaIN, and a mirrored decoder.

Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
Normalization", ICCV 2017.

Module indices match the public pytorch-AdaIN release files (`vgg_normalised.pth`,
`decoder.pth`), so their state dicts load unchanged. Images enter the encoder as RGB in
[0, 1]; the leading 1x1 conv of the normalised VGG does the mean subtraction and channel
swap. Both networks apply their layers through `fused.run_layers`: the same values as
`nn.Sequential`, computed with less work outside autograd (see fused.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .fused import run_layers

STRIDE = 8  # relu4_1 sits after three 2x2 max pools
FEATURE_CHANNELS = 512
STD_EPS = 1e-5

# (channels, convs) per VGG-19 stage; a max pool separates the stages.
_VGG_STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
# End index (exclusive) in the VGG sequential of each layer the style loss and the encoder use.
VGG_LAYER_ENDS = {"relu1_1": 4, "relu2_1": 11, "relu3_1": 18, "relu4_1": 31}
# The decoder mirrors the encoder: (in, out) convs, "up" for 2x nearest upsampling.
_DECODER_PLAN = (
    (512, 256), "up",
    (256, 256), (256, 256), (256, 256), (256, 128), "up",
    (128, 128), (128, 64), "up",
    (64, 64),
)  # fmt: skip


def _conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # Reflection padding rather than zeros: the paper's fix for border artefacts.
    # In-place ReLU: no conv output has another reader, and it saves a pass over memory.
    return [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True)]


def build_vgg() -> nn.Sequential:
    """All VGG-19 conv layers through relu5_4, laid out exactly as `vgg_normalised.pth`."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    in_channels = 3
    for stage, (channels, convs) in enumerate(_VGG_STAGES):
        if stage:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # ceil: odd sizes keep their last row
        for _ in range(convs):
            layers += _conv_relu(in_channels, channels)
            in_channels = channels
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """The fixed part of the normalised VGG-19 up to relu4_1. Never trained."""

    def __init__(self, vgg: nn.Sequential | None = None) -> None:
        super().__init__()
        vgg = build_vgg() if vgg is None else vgg
        ends = list(VGG_LAYER_ENDS.values())
        self.slices = nn.ModuleList(vgg[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True))
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: Tensor) -> Tensor:
        # (N, 3, H, W) in [0, 1] -> relu4_1 (N, 512, ceil(H/8), ceil(W/8))
        return run_layers((layer for part in self.slices for layer in part), image)

    def features(self, image: Tensor) -> dict[str, Tensor]:
        """relu1_1 (N, 64, H, W), relu2_1 (N, 128, H/2, W/2), relu3_1 (N, 256, H/4, W/4),
        relu4_1 (N, 512, H/8, W/8), by name: the style loss reads them."""
        out = {}
        for name, part in zip(VGG_LAYER_ENDS, self.slices, strict=True):
            image = part(image)
            out[name] = image
        return out

    def train(self, mode: bool = True) -> Encoder:
        return super().train(False)  # fixed: stays in eval mode even inside a training model


class Decoder(nn.Sequential):
    """Mirror of the encoder, laid out exactly as `decoder.pth`: no normalisation layers,
    nearest 2x upsampling, no activation after the last conv."""

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        for step in _DECODER_PLAN:
            layers += [nn.Upsample(scale_factor=2, mode="nearest")] if step == "up" else _conv_relu(*step)
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(64, 3, 3)]
        super().__init__(*layers)

    def forward(self, features: Tensor) -> Tensor:
        # (N, 512, h, w) -> (N, 3, 8h, 8w), unclamped
        return run_layers(self, features)


def cat(tensors: list[Tensor]) -> Tensor:
    """torch.cat along the batch; one tensor (the usual case) is used as it is: a copy of a 4K
    feature map would be 0.27 GB."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


@dataclass(frozen=True)
class FeatureStats:
    """Per-sample, per-channel mean and std of a feature map: all a style contributes."""

    mean: Tensor  # (N, C, 1, 1)
    std: Tensor  # (N, C, 1, 1)

    def to(self, device: torch.device | str) -> FeatureStats:
        return FeatureStats(self.mean.to(device), self.std.to(device))

    def __getitem__(self, index: slice) -> FeatureStats:
        return FeatureStats(self.mean[index], self.std[index])

    @staticmethod
    def cat(stats: list[FeatureStats]) -> FeatureStats:
        return FeatureStats(cat([s.mean for s in stats]), cat([s.std for s in stats]))


def feature_stats(features: Tensor, eps: float = STD_EPS) -> FeatureStats:
    """Mean over positions and std = sqrt(unbiased variance + eps), as the paper's code."""
    n, c = features.shape[:2]
    flat = features.reshape(n, c, -1).float()  # (N, C, h*w), fp32 whatever the compute dtype
    std = (flat.var(dim=2) + eps).sqrt()
    return FeatureStats(flat.mean(dim=2).view(n, c, 1, 1), std.view(n, c, 1, 1))


def adain(content: Tensor, style: FeatureStats, content_stats: FeatureStats | None = None) -> Tensor:
    """AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), in the content's dtype.

    `content_stats` defaults to the statistics of `content`; pass them to normalise a
    part of a feature map (a tile, a masked region) with statistics of the whole.
    """
    stats = feature_stats(content) if content_stats is None else content_stats
    scale = style.std / stats.std  # (N, C, 1, 1)
    shift = style.mean - stats.mean * scale
    if content.dtype == torch.float32:
        return torch.addcmul(shift, content, scale)  # one pass, one new tensor
    return torch.addcmul(shift, content.float(), scale).to(content.dtype)  # the affine map in fp32


def blend(target: Tensor, content: Tensor, alpha: float | Tensor) -> Tensor:
    """The content-style trade-off t' = alpha * t + (1 - alpha) * f(c); alpha a number, or one
    per batch item as an (N, 1, 1, 1) tensor."""
    if isinstance(alpha, Tensor):
        return (alpha * target + (1.0 - alpha) * content).to(target.dtype)
    if alpha == 1.0:
        return target
    return alpha * target + (1.0 - alpha) * content
