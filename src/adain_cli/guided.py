"""Guided upsampling: a result made at a working size brought to full size, its edges the photo's.

The fast guided filter (He and Sun, "Fast Guided Filter", 2015; the guided filter itself:
He, Sun and Tang, ECCV 2010; Wu et al., "Fast End-to-End Trainable Guided Filter", CVPR
2018, use it on style transfer). At the working size the result q is modelled, in every
window of radius r, as a linear function of the content I there (the *guide*):

    q = A I + b        A (3 x 3), b (3): least squares over the window, ridge eps on A

The coefficients are averaged over the windows that cover each pixel, upsampled
bilinearly to the full size and applied to the full-size content: wherever the result is
locally a colour mapping of the photo, the full-size output is that mapping applied to
the full-size photo, sharp edges included. What the model leaves out at the working size
(the detail layer: brush strokes, texture the photo does not explain) is added to the
offsets b, so that it is upsampled with them and keeps the working size's scale; without
it the strokes would be averaged away. The guide is the RGB content, not its grey: a 3x3
covariance per pixel lets a window hold an edge between two colours that have the same
grey.

RADIUS (working-size pixels) and EPS (pixel values in [0, 1], squared), the RGB guide and
the detail layer were chosen by measurement: benchmarks/guided_sweep.py, BENCHMARKS.md,
"Working size".

Memory: the fit holds ~40 floats per working-size pixel and runs in tiles with halos
(tiling.run_tiled, exact) when the budget says so; applying it at full size goes in row
bands, so that neither ever holds more than a few rows of full-size coefficients.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

from . import images, tiling
from .errors import UsageError
from .model import STRIDE

RADIUS = 2
EPS = 1e-4

# Working memory of the fit, bytes per working-size pixel per image: 27 box means and their
# products, 12 coefficients, their averages, float32, with slack.
FIT_BYTES_PER_PIXEL = 400
# Applying, bytes per full-size pixel per image: 12 coefficients upsampled (and their row
# interpolation before it), the guide and the output rows, float32, with slack.
APPLY_BYTES_PER_PIXEL = 160
# Rows of the full-size output per band at least, whatever the budget: fewer is all overhead.
MIN_BAND = 8


def working_size(height: int, width: int, work_size: int) -> tuple[int, int]:
    """(height, width) of the working size: the shorter side `work_size`, the long side
    truncated as `--content-size` truncates it (images.resized_size)."""
    new_width, new_height = images.resized_size(width, height, work_size)
    return new_height, new_width


def check_work_size(work_size: int, height: int, width: int) -> None:
    """UsageError when a picture of height x width cannot be made at `work_size` (0: off)."""
    if work_size > min(height, width):
        raise UsageError(f"work-size {work_size} is larger than the output's shorter side "
                         f"({min(height, width)} px): give a smaller one, or 0")


def shrink(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C, H, W) down to `size` (h, w): antialiased bilinear, as Pillow's BILINEAR resize
    that `--content-size` uses, so that the working size sees what `--content-size` would."""
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def _box(x: Tensor, radius: int) -> Tensor:
    """The mean over the (2r+1)^2 window around each pixel, over the pixels inside the image."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def _inverse3(m: Tensor) -> Tensor:
    """Inverses of symmetric positive definite 3x3 matrices given as (N, 6, h, w): entries
    00 01 02 11 12 22; returned the same way. By cofactors: no batched solver, any device."""
    a, b, c, d, e, f = m.unbind(1)
    cof = torch.stack([d * f - e * e, c * e - b * f, b * e - c * d, a * f - c * c, b * c - a * e, a * d - b * b], 1)
    det = a * cof[:, 0] + b * cof[:, 1] + c * cof[:, 2]
    return cof / det.unsqueeze(1)


_SYM = ((0, 1, 2), (1, 3, 4), (2, 4, 5))  # entry (i, j) of a symmetric 3x3 in the 6-entry layout


def fit(guide: Tensor, target: Tensor, radius: int = RADIUS, eps: float = EPS) -> Tensor:
    """The local linear model of `target` (N, 3, h, w) in terms of `guide` (N, G, h, w), G 3
    (colour) or 1 (grey), averaged over the windows covering each pixel: (N, 3 * (G + 1), h, w),
    for each output channel its G slopes then its offset."""
    guides = guide.shape[1]
    if guides not in (1, 3):
        raise ValueError(f"the guide has 1 or 3 channels, got {guides}")
    pairs = [(i, j) for i in range(guides) for j in range(i, guides)]
    moments = torch.cat([guide, target, *(guide[:, i:i + 1] * guide[:, j:j + 1] for i, j in pairs),
                         *(guide[:, i:i + 1] * target for i in range(guides))], 1)
    means = _box(moments, radius)
    mean_i, mean_p = means[:, :guides], means[:, guides:guides + 3]
    second = means[:, guides + 3:guides + 3 + len(pairs)]
    cross = means[:, guides + 3 + len(pairs):].unflatten(1, (guides, 3))  # (N, G, 3, h, w): E[I_g p_c]
    cov_ip = cross - mean_i.unsqueeze(2) * mean_p.unsqueeze(1)
    var = second - torch.stack([mean_i[:, i] * mean_i[:, j] for i, j in pairs], 1)
    if guides == 1:
        slopes = cov_ip / (var + eps).unsqueeze(1)  # (N, 1, 3, h, w)
    else:
        inverse = _inverse3(var + eps * torch.tensor([1, 0, 0, 1, 0, 1.0], device=var.device).view(1, 6, 1, 1))
        slopes = torch.stack([sum(inverse[:, _SYM[g][k]].unsqueeze(1) * cov_ip[:, k] for k in range(3))
                              for g in range(3)], 1)  # (N, 3 guide, 3 out, h, w)
    offsets = mean_p - (slopes * mean_i.unsqueeze(2)).sum(1)  # (N, 3, h, w)
    coefficients = torch.cat([slopes.transpose(1, 2), offsets.unsqueeze(2)], 2).flatten(1, 2)
    return _box(coefficients, radius)  # (N, 3 * (G + 1), h, w)


def _lerp_indices(out: int, size: int, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For output positions start..stop-1 of `out`, the two input positions of `size` that
    bilinear interpolation (align_corners False, as F.interpolate) blends, and the weight of the second."""
    # float64 on the CPU (MPS has none): exact positions however long the side.
    position = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * (size / out) - 0.5).clamp_min(0)
    low = position.floor().long().clamp_max(size - 1)
    high, weight = (low + 1).clamp_max(size - 1), (position - low).float()
    return low.to(device), high.to(device), weight.to(device)


def _upsampled_rows(coefficients: Tensor, height: int, width: int, top: int, bottom: int) -> Tensor:
    """Rows top..bottom-1 of `coefficients` (N, K, h, w) upsampled bilinearly to height x width,
    as F.interpolate would upsample the whole: the rows they need widened first (F.interpolate
    along the width alone, exact), then blended in pairs."""
    h = coefficients.shape[-2]
    up, down, weight = _lerp_indices(height, h, top, bottom, coefficients.device)
    first, last = int(up[0]), int(down[-1]) + 1  # the indices grow with the row
    wide = F.interpolate(coefficients[:, :, first:last], size=(last - first, width), mode="bilinear",
                         align_corners=False)  # (N, K, rows needed, W)
    return torch.lerp(wide[:, :, up - first], wide[:, :, down - first], weight.view(-1, 1))  # (N, K, rows, W)


def apply(coefficients: Tensor, guide: Tensor, band: int | None = None) -> Tensor:
    """The model `fit` gave at the working size, upsampled and applied to the full-size `guide`
    (N, G, H, W): (N, 3, H, W). `band`: full-size rows at a time (None: all at once)."""
    height, width = guide.shape[-2:]
    guides = guide.shape[1]
    out = torch.empty(guide.shape[0], 3, height, width, dtype=torch.float32, device=guide.device)
    band = band or height
    for top in range(0, height, band):
        bottom = min(top + band, height)
        model = _upsampled_rows(coefficients, height, width, top, bottom).unflatten(1, (3, guides + 1))
        rows = guide[:, :, top:bottom].float()
        result = out[:, :, top:bottom]
        result.copy_(model[:, :, guides])
        for g in range(guides):  # one product at a time: no (N, 3, G, rows, W) temporary
            result.addcmul_(model[:, :, g], rows[:, g:g + 1])
    return out


def with_detail(coefficients: Tensor, small_guide: Tensor, result: Tensor) -> Tensor:
    """The coefficients with what the model leaves out of `result` at the working size (its
    detail layer: texture the guide does not explain, brush strokes) added to the offsets,
    so that the model gives `result` back exactly there and the strokes keep its scale."""
    guides = small_guide.shape[1]
    model = coefficients.unflatten(1, (3, guides + 1))
    explained = (model[:, :, :guides] * small_guide.unsqueeze(1)).sum(2) + model[:, :, guides]
    model = model.clone()
    model[:, :, guides] += result - explained
    return model.flatten(1, 2)


def grey(image: Tensor) -> Tensor:
    """(N, 3, H, W) to (N, 1, H, W) luma (BT.601, the Y of color.py's YIQ)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True)


def upsample(result: Tensor, small_guide: Tensor, guide: Tensor, room: int | None = None, *,
             radius: int = RADIUS, eps: float = EPS, colour: bool = True, detail: bool = True) -> Tensor:
    """`result` (N, 3, h, w), made from `small_guide` (N, 3, h, w), brought to the size of
    `guide` (N, 3, H, W) by the fast guided filter. `room`: bytes it may use (None: any); the
    fit runs in tiles and the application in row bands to stay inside it. `colour` False: the
    grey guide (for comparison)."""
    if not colour:
        small_guide, guide = grey(small_guide), grey(guide)
    count, guides = len(result), small_guide.shape[1]
    h, w = result.shape[-2:]
    height, width = guide.shape[-2:]
    if room is not None:
        room -= count * 3 * height * width * 4  # the float32 output, whole whatever the bands
    tile = _fit_tile(h, w, count, room, radius)

    def fitted(window: Tensor) -> Tensor:
        return fit(window[:, :guides], window[:, guides:], radius, eps)

    stacked = torch.cat([small_guide.float(), result.float()], 1)
    geometry = tiling.Geometry(unit=1, halo=2 * radius, scale=Fraction(1))  # two box means deep
    coefficients = fitted(stacked) if tile is None else tiling.run_tiled(fitted, stacked, tile, geometry)
    if detail:
        coefficients = with_detail(coefficients, small_guide, result.float())
    return apply(coefficients, guide, _band(height, width, count, room))


def _fit_tile(h: int, w: int, count: int, room: int | None, radius: int) -> int | None:
    """The tile (a multiple of 8) the fit needs to stay within `room` bytes; None: no tiling."""
    if room is None or count * h * w * FIT_BYTES_PER_PIXEL <= room:
        return None
    side = math.isqrt(max(room, 0) // (count * FIT_BYTES_PER_PIXEL)) - 4 * radius
    return max(side // STRIDE * STRIDE, 8 * STRIDE)


def _band(height: int, width: int, count: int, room: int | None) -> int | None:
    """Full-size rows per band within `room` bytes; None: all at once."""
    if room is None or count * height * width * APPLY_BYTES_PER_PIXEL <= room:
        return None
    return max(max(room, 0) // (count * width * APPLY_BYTES_PER_PIXEL), MIN_BAND)
