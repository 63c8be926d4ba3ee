"""The guided filter's radius and regularisation, chosen by measurement (guided.RADIUS, guided.EPS).

    python benchmarks/guided_sweep.py              # 1024 px pictures, working sizes 256 and 512
    python benchmarks/guided_sweep.py --size 384   # quicker

For every radius, eps and guide (RGB or grey), two figures, each a mean in dB:
- edges: on synthetic fine-detail pictures (fine_detail.py: checkerboard, text, foliage) under
  known local colour mappings (gamma, channel mix, local contrast), the guided result at full
  size against the mapping applied at full size (bicubic upscaling's figure beside it);
- look: with random weights (He-initialised, public layout) on the sample photos (noise when
  absent), the full-size output shrunk back to the working size against the working-size
  stylization: how much of the working size's look survives.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from common import SHARED, random_weights
from fine_detail import MAPPINGS, PICTURES, bicubic, case, psnr

from adain_cli import Stylizer, guided, images

RADII = (1, 2, 4, 8)
NOISE = 3 / 255  # a camera's noise at base ISO, about
EPSILONS = (1e-5, 1e-4, 1e-3, 1e-2)
PHOTOS = ("golden_gate.jpg", "flowers.jpg", "chicago.jpg")
STYLES = ("la_muse.jpg", "brushstrokes.jpg", "mondrian.jpg")


Look = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # full photo, working photo, working stylization
Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # full guide, working guide, result, answer


def edge_cases(size: int, works: tuple[int, ...], noise: float = 0.0) -> list[Case]:
    """(full picture, working picture, working result, full-size answer) for every picture, mapping
    and working size; `noise`: the std of sensor-like noise on the photo, which the answer is without."""
    cases = []
    generator = torch.Generator().manual_seed(5)
    for (make, mapping), work in itertools.product(itertools.product(PICTURES.values(), MAPPINGS.values()), works):
        clean = make(size)
        noisy = (clean + noise * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
        small, result, _ = case(noisy, mapping, work)
        cases.append((noisy, small, result, case(clean, mapping, work)[2]))
    return cases


def _photo(index: int, size: int) -> torch.Tensor:
    path = SHARED / "content" / PHOTOS[index % len(PHOTOS)]
    if path.exists():
        return images.to_tensor(images.prepare(images.load_image(path), size, False))
    return torch.rand(1, 3, size, size * 4 // 3, generator=torch.Generator().manual_seed(index))


def _style(index: int) -> torch.Tensor:
    path = SHARED / "style" / STYLES[index % len(STYLES)]
    if path.exists():
        return images.to_tensor(images.prepare(images.load_image(path), 256, False))
    return torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(100 + index))


def look_cases(size: int, works: tuple[int, ...]) -> list[Look]:
    """(full photo, working photo, working-size stylization) with random weights."""
    with tempfile.TemporaryDirectory() as scratch:
        stylizer = Stylizer.from_files(*random_weights(Path(scratch)), device="cpu")
    cases = []
    for index, work in itertools.product(range(len(PHOTOS)), works):
        photo = _photo(index, size)
        small = guided.shrink(photo, guided.working_size(*photo.shape[-2:], work))
        encoded = stylizer.encode_content(small)
        cases.append((photo, small, stylizer.render(encoded, stylizer.style_stats(_style(index)))))
    return cases


def _rows() -> list[tuple[bool, bool, int, float]]:
    """(detail kept, colour guide, radius, eps): the whole grid for the RGB guide with its detail
    layer, the grey guide beside it, and the detail layer left out at one eps per radius."""
    grid = list(itertools.product(RADII, EPSILONS))
    return ([(True, True, r, e) for r, e in grid] + [(True, False, r, e) for r, e in grid]
            + [(False, True, r, 1e-4) for r in RADII])


Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (result, working guide, guide)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="shorter side of the full-size pictures")
    args = parser.parse_args()
    works = (args.size // 4, args.size // 2)
    torch.set_grad_enabled(False)
    edges, noisy = edge_cases(args.size, works), edge_cases(args.size, works, NOISE)
    looks = look_cases(args.size, works)
    print(f"{args.size} px pictures, working sizes {works}; {len(edges)} edge cases (and again with noise of "
          f"std {NOISE * 255:.0f}/255 on the photo), {len(looks)} look cases")
    print(f"{'detail':>6} {'guide':>5} {'radius':>6} {'eps':>6} {'edges dB':>8} {'min':>6} {'noisy dB':>8} "
          f"{'look dB':>7} {'min':>6}")
    _row(f"{'bicubic':>27}", edges, noisy, looks, lambda r, s, p: bicubic(r, p.shape[-2:]))
    for detail, colour, radius, eps in _rows():
        _row(f"{'kept' if detail else 'off':>6} {'rgb' if colour else 'grey':>5} {radius:6d} {eps:6.0e}",
             edges, noisy, looks, _guided(detail, colour, radius, eps))


def _guided(detail: bool, colour: bool, radius: int, eps: float) -> Method:
    def method(r: torch.Tensor, s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return guided.upsample(r, s, p, radius=radius, eps=eps, colour=colour, detail=detail)
    return method


def _row(name: str, edges: list[Case], noisy: list[Case], looks: list[Look], method: Method) -> None:
    edge = [psnr(method(r, s, p).clamp(0, 1), answer) for p, s, r, answer in edges]
    noise = [psnr(method(r, s, p).clamp(0, 1), answer) for p, s, r, answer in noisy]
    look = [psnr(guided.shrink(method(r, s, p), r.shape[-2:]).clamp(0, 1), r.clamp(0, 1)) for p, s, r in looks]
    print(f"{name} {statistics.mean(edge):8.2f} {min(edge):6.2f} {statistics.mean(noise):8.2f} "
          f"{statistics.mean(look):7.2f} {min(look):6.2f}", flush=True)


if __name__ == "__main__":
    main()
