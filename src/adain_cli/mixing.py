"""Style interpolation: mixing style statistics, sweeps and grids, and spatial control by masks.

Mixing statistics is exact, not an approximation: for weights w_i summing to 1,
sum_i w_i * AdaIN(x, s_i) = sum_i w_i * (sigma_i * n(x) + mu_i)
                          = (sum_i w_i sigma_i) * n(x) + (sum_i w_i mu_i),
so the weighted sum of AdaIN outputs is AdaIN with the weighted mean and std. Only the
statistics are mixed, so the styles may have any size and aspect ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UsageError
from .model import STRIDE, FeatureStats, adain, feature_stats
from .tiling import pad_to_stride


def parse_weights(text: str | None) -> tuple[float, ...] | None:
    """--weights (or a request's weights field) "0.5,0.3,0.2" as numbers (None or blank: none
    given); UsageError if they are not numbers. Whether they can mix is `normalise_weights`'s to say."""
    if text is None or not text.strip():
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"weights: expected comma-separated numbers such as 0.5,0.3,0.2, got {text!r}") from None


def normalise_weights(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """Non-negative weights, one per style, scaled to sum to 1; None gives equal weights."""
    if count < 2:
        raise UsageError(f"interpolation needs at least two styles, got {count}")
    if weights is None:
        return (1.0 / count,) * count
    if len(weights) != count:
        raise UsageError(f"{len(weights)} weights given for {count} styles")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise UsageError(f"weights must be non-negative numbers, got {', '.join(map(str, weights))}")
    total = sum(weights)
    if total <= 0:
        raise UsageError("weights must not all be zero")
    if not math.isfinite(total):  # 1e308,1e308: each finite, the sum not; they would mix as 0, 0
        raise UsageError(f"weights must have a finite sum, got {', '.join(map(str, weights))}")
    return tuple(w / total for w in weights)


def mix_stats(stats: Sequence[FeatureStats], weights: Sequence[float]) -> FeatureStats:
    """The weighted mean of the styles' means and of their stds (weights summing to 1)."""
    mean = sum(w * s.mean for w, s in zip(weights, stats, strict=True))
    std = sum(w * s.std for w, s in zip(weights, stats, strict=True))
    return FeatureStats(mean, std)


@dataclass(frozen=True)
class Frame:
    """One output of an interpolation: style weights, alpha, and a short label for contact sheets."""

    weights: tuple[float, ...]
    alpha: float
    label: str


def _weights_label(weights: Sequence[float]) -> str:
    return "/".join(f"{w:.2f}" for w in weights)


def steps(count: int, alpha: float) -> list[Frame]:
    """The transition from style 1 to style 2 in `count` frames."""
    if count < 2:
        raise UsageError(f"--steps needs at least 2, got {count}")
    frames = []
    for k in range(count):
        t = k / (count - 1)
        frames.append(Frame((1 - t, t), alpha, _weights_label((1 - t, t))))
    return frames


def grid(size: int, alpha: float) -> list[Frame]:
    """The size x size bilinear grid over four styles, row by row; corners are the styles
    (top-left 1, top-right 2, bottom-left 3, bottom-right 4), as in the paper's figure."""
    if size < 2:
        raise UsageError(f"--grid needs at least 2, got {size}")
    frames = []
    for row in range(size):
        v = row / (size - 1)
        for col in range(size):
            u = col / (size - 1)
            weights = ((1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v)
            frames.append(Frame(weights, alpha, _weights_label(weights)))
    return frames


def alpha_sweep(count: int, weights: tuple[float, ...]) -> list[Frame]:
    """The content-style trade-off from alpha 0 to 1 in `count` frames, at fixed style weights."""
    if count < 2:
        raise UsageError(f"--alpha-sweep needs at least 2, got {count}")
    return [Frame(weights, k / (count - 1), f"alpha {k / (count - 1):.2f}") for k in range(count)]


# --- spatial control ----------------------------------------------------------------------

def region_fractions(labels: Tensor, regions: int) -> Tensor:
    """Per-region coverage of each feature cell, (regions, h/8, w/8), summing to 1 per cell.

    `labels` is (H, W) with the region index of each content pixel. It is padded as the
    content is padded to the encoder's stride (by reflection, so a padding pixel belongs
    to the region of the pixel it mirrors) and averaged over each 8x8 cell: cells on a
    boundary get fractional weights, and the decoded result blends across it instead of
    a hard seam.
    """
    one_hot = F.one_hot(labels.long(), regions).permute(2, 0, 1).float().unsqueeze(0)  # (1, R, H, W)
    return F.avg_pool2d(pad_to_stride(one_hot), STRIDE)[0]  # (R, ceil(H/8), ceil(W/8))


def masked_stats(features: Tensor, member: Tensor) -> FeatureStats:
    """Mean and std (unbiased variance + eps, as `feature_stats`) over the cells in `member`."""
    selected = features[..., member]  # (N, C, cells)
    return feature_stats(selected.unsqueeze(-1))


MIN_REGION_CELLS = 2  # an unbiased variance needs two samples


def region_cells(fractions: Tensor) -> list[int]:
    """How many feature cells each region mostly covers."""
    member = fractions.argmax(dim=0)
    return [int((member == region).sum()) for region in range(fractions.shape[0])]


def check_regions(fractions: Tensor, present: set[int]) -> None:
    """Each region `present` in the mask must cover enough of the image to carry its style.

    A region absent from the mask altogether is fine (an all-white mask means style 1 alone).
    """
    for region, cells in enumerate(region_cells(fractions)):
        if region in present and cells < MIN_REGION_CELLS:
            raise UsageError(f"mask region {region + 1} (style {region + 1}) is empty at the network's resolution: "
                             f"it needs at least {MIN_REGION_CELLS} cells of {STRIDE}x{STRIDE} px")


def regional_adain(features: Tensor, fractions: Tensor, styles: Sequence[FeatureStats]) -> Tensor:
    """AdaIN per region: each region's content statistics are aligned to its own style, and the
    results blended by region coverage. `fractions` is (R, h, w) from `region_fractions`.

    Regions too small to have statistics (fewer than two cells) are left out and the
    others' coverage renormalised, so an all-white two-region mask gives style 1 alone.
    """
    member = fractions.argmax(dim=0)  # (h, w): the region each cell mostly belongs to
    kept = [r for r, cells in enumerate(region_cells(fractions)) if cells >= MIN_REGION_CELLS]
    if not kept:
        raise UsageError("the mask leaves no region large enough to stylize")
    coverage = fractions[kept].sum(dim=0).clamp_min(1e-12)
    target = torch.zeros_like(features, dtype=torch.float32)  # accumulate in fp32 whatever the features' dtype
    for region in kept:
        aligned = adain(features, styles[region], masked_stats(features, member == region))
        target += (fractions[region] / coverage).to(target) * aligned
    return target


def masked_target(labels: Tensor, features: Tensor, styles: Sequence[FeatureStats]) -> Tensor:
    """The AdaIN target under a mask: `labels` (H, W) from `images.load_mask`, `features` the content's
    (1, 512, h, w) relu4_1 features from its stride-padded image."""
    fractions = region_fractions(labels, len(styles))
    check_regions(fractions, set(labels.unique().tolist()))
    return regional_adain(features, fractions, styles)

