"""Synthetic pictures with fine detail and known local colour mappings: what guided upsampling
is measured on (guided_sweep.py, work_size.py). Random weights cannot show that edges are the
photo's (their output barely follows it), so the "stylization" here is a mapping whose
full-size answer is known: the mapping applied to the full-size picture.

    picture (full) --shrink--> picture (working) --mapping--> result (working)
    result (working) --guided by the picture / bicubic--> full size,  against mapping(picture (full))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from adain_cli import guided, images


def checkerboard(size: int, square: int = 6) -> Tensor:
    """Sharp squares of `square` px whose two colours drift across the picture: (1, 3, size, size)."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    on = ((y // square + x // square) % 2).float()
    u, v = x / size, y / size
    light = torch.stack([0.9 - 0.5 * u, 0.4 + 0.5 * v, 0.3 + 0.6 * u * v])
    dark = torch.stack([0.1 + 0.3 * v, 0.15 + 0.2 * u, 0.5 - 0.4 * v])
    return (on * light + (1 - on) * dark).unsqueeze(0)


def text(size: int, seed: int = 0) -> Tensor:
    """Lines of coloured text, 9 to 24 px high, on coloured bands: (1, 3, size, size)."""
    generator = torch.Generator().manual_seed(seed)
    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    top = 0
    while top < size:
        height = int(torch.randint(9, 25, (1,), generator=generator))
        ink, paper = (tuple(int(v) for v in torch.randint(0, 256, (3,), generator=generator)) for _ in range(2))
        draw.rectangle((0, top, size, top + height + 4), fill=paper)
        font = ImageFont.load_default(size=height)
        draw.text((4, top), "The quick brown fox jumps over the lazy dog 0123456789 " * 4, fill=ink, font=font)
        top += height + 4
    return images.to_tensor(picture)


def foliage(size: int, seed: int = 0) -> Tensor:
    """Noise-like leaves: thousands of small ellipses in greens and yellows over fine noise."""
    generator = torch.Generator().manual_seed(seed)
    picture = Image.new("RGB", (size, size), (40, 70, 30))
    draw = ImageDraw.Draw(picture)
    for _ in range(size * size // 40):
        x, y = (int(v) for v in torch.randint(0, size, (2,), generator=generator))
        w, h = (int(v) for v in torch.randint(2, 9, (2,), generator=generator))
        shade = torch.rand(1, generator=generator).item()
        leaf = (int(30 + 150 * shade ** 2), int(70 + 150 * shade), int(20 + 40 * shade))
        draw.ellipse((x, y, x + w, y + h), fill=leaf)
    noise = 0.04 * torch.randn(1, 1, size, size, generator=generator)
    return (images.to_tensor(picture) + noise).clamp(0, 1)


PICTURES: dict[str, Callable[[int], Tensor]] = {"checkerboard": checkerboard, "text": text, "foliage": foliage}


def gamma(x: Tensor, scale: float = 1.0) -> Tensor:
    """A gamma curve per channel (a strong, curved tone change)."""
    return x.clamp(0, 1).pow(torch.tensor([0.45, 0.8, 1.8]).view(1, 3, 1, 1))


MIX = torch.tensor([[0.39, 0.77, 0.19], [0.35, 0.69, 0.17], [0.27, 0.53, 0.13]])  # sepia


def channel_mix(x: Tensor, scale: float = 1.0) -> Tensor:
    """A channel mix (sepia) with an offset."""
    return (torch.einsum("ij,njhw->nihw", MIX, x) * 0.9 + 0.05).clamp(0, 1)


def _blur(x: Tensor, radius: int) -> Tensor:
    for _ in range(3):  # three box passes: close to a Gaussian
        x = F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return x


def local_contrast(x: Tensor, scale: float = 1.0) -> Tensor:
    """Local contrast doubled around a blur 6 working-size px wide (`scale`: full-size px per working px)."""
    return (x + 1.0 * (x - _blur(x, max(1, round(6 * scale))))).clamp(0, 1)


MAPPINGS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "gamma": gamma, "channel mix": channel_mix, "local contrast": local_contrast}


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two pictures in [0, 1], on their 8-bit values."""
    mse = (images.to_8bit(a).float() - images.to_8bit(b).float()).div(255).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def bicubic(result: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(result, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def case(picture: Tensor, mapping: Callable[[Tensor, float], Tensor],
         work: int) -> tuple[Tensor, Tensor, Tensor]:
    """(the working-size picture, the mapping made there, the mapping at full size)."""
    height, width = picture.shape[-2:]
    small = guided.shrink(picture, guided.working_size(height, width, work)).clamp(0, 1)
    return small, mapping(small, 1.0), mapping(picture, min(height, width) / work)
