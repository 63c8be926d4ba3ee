"""Colour preservation, on image tensors (1, 3, H, W) in [0, 1].

Two ways to keep the content's colours:
- "coral": before stylizing, move the style image's colour distribution onto the content's
  (CORAL, as the reference pytorch-AdaIN `--preserve_color`). The style is re-encoded per
  content, since the recoloured style differs for every content.
- "luminance": stylize, then keep only the result's luminance with the content's chroma
  (luminance-only transfer, Gatys et al. 2016, "Preserving Color in Neural Artistic Style
  Transfer"), in YIQ space.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .errors import UsageError

ColorMode = Literal["style", "coral", "luminance"]
COLOR_MODES: tuple[ColorMode, ...] = ("style", "coral", "luminance")

_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)


def _flat_stats(image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # float64 on the CPU: the 3x3 matrix roots need the precision, and MPS has no float64.
    flat = image.reshape(3, -1).to("cpu", torch.float64)
    return flat, flat.mean(dim=1, keepdim=True), flat.std(dim=1, keepdim=True)


def _sqrtm(matrix: Tensor) -> Tensor:
    # Symmetric positive definite: the square root through its eigendecomposition.
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def coral(source: Tensor, target: Tensor) -> Tensor:
    """Recolour `source` so its RGB mean and covariance match `target`'s (single images).

    Follows the reference implementation exactly, including its covariance estimate
    (normalised colours' outer product summed over pixels, plus the identity).
    """
    flat, mean, std = _flat_stats(source)
    target_flat, target_mean, target_std = _flat_stats(target)
    eye = torch.eye(3, dtype=torch.float64)
    norm = (flat - mean) / std
    target_norm = (target_flat - target_mean) / target_std
    source_cov = norm @ norm.T + eye
    target_cov = target_norm @ target_norm.T + eye
    transfer = _sqrtm(target_cov) @ torch.linalg.inv(_sqrtm(source_cov)) @ norm
    out = transfer * target_std + target_mean
    return out.to(source.device, source.dtype).reshape(source.shape)


def _yiq(image: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", _RGB_TO_YIQ.to(image), image)


def keep_content_colors(stylized: Tensor, content: Tensor) -> Tensor:
    """Luminance of `stylized` with the chroma (I, Q) of `content`; same-size tensors."""
    yiq = torch.cat([_yiq(stylized)[:, :1], _yiq(content)[:, 1:]], dim=1)
    rgb = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_YIQ).to(yiq), yiq)
    return rgb.clamp(0, 1)


def mode_from_flags(preserve_color: bool, luminance_only: bool,
                    names: tuple[str, str] = ("--preserve-color", "--luminance-only")) -> ColorMode:
    """The colour mode `--preserve-color` / `--luminance-only` ask for; both at once is a UsageError
    that says them by `names` (a request's fields, say)."""
    if preserve_color and luminance_only:
        raise UsageError(f"choose one of {names[0]} and {names[1]}, not both")
    return "coral" if preserve_color else "luminance" if luminance_only else "style"


def recolours_style(mode: ColorMode) -> bool:
    """Whether `mode` changes the style image per content (so its statistics hold for one content)."""
    return mode == "coral"


def recolours_output(mode: ColorMode) -> bool:
    """Whether `mode` changes the stylized image."""
    return mode == "luminance"


def prepare_style(style: Tensor, content: Tensor, mode: ColorMode) -> Tensor:
    """The style image as the encoder should see it under `mode`."""
    return coral(style, content) if recolours_style(mode) else style


def finish(stylized: Tensor, content: Tensor, mode: ColorMode) -> Tensor:
    """The stylized image after the colour step of `mode`."""
    return keep_content_colors(stylized, content) if recolours_output(mode) else stylized
