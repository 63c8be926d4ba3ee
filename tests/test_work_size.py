"""`--work-size PX`: the network at a working size, the result guided up to the output size.

What the README and the issue promise: outputs of exactly the size they would have; the
option refused where it cannot work; 0 (the default) the same pixels as before; the look
is the working size's (the output shrunk back matches the working-size stylization); the
edges are the photo's (a known colour mapping made at the working size comes back at full
size much closer to the mapping made at full size than bicubic upscaling brings it)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from clips import make_clip, moving_frames, read_frames
from conftest import synthetic_image
from PIL import Image, ImageDraw, ImageFont
from test_cli import adain, one_error_line
from test_serve import STYLE, png, post

from adain_cli import color, guided, images

# --- synthetic pictures with fine detail, and known local colour mappings ------------------------


def checkerboard(size: int) -> torch.Tensor:
    """Sharp 5 px squares whose two colours drift across the picture."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    on = ((y // 5 + x // 5) % 2).float()
    u, v = x / size, y / size
    return (on * torch.stack([0.9 - 0.5 * u, 0.4 + 0.5 * v, 0.3 + 0.5 * u])
            + (1 - on) * torch.stack([0.1 + 0.3 * v, 0.2 * u, 0.5 - 0.4 * v])).unsqueeze(0)


def text(size: int) -> torch.Tensor:
    """Lines of dark text, 10 px high, on light coloured bands (Pillow's own font)."""
    picture = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=10)
    for row, top in enumerate(range(0, size, 14)):
        draw.rectangle((0, top, size, top + 14), fill=(200 + 5 * (row % 10), 180, 120 + 12 * (row % 8)))
        draw.text((2, top + 1), "Sphinx of black quartz, judge my vow", fill=(20, 30 + 9 * row % 90, 60), font=font)
    return images.to_tensor(picture)


def foliage(size: int) -> torch.Tensor:
    """Noise-like leaves: small ellipses in greens and yellows."""
    generator = torch.Generator().manual_seed(3)
    picture = Image.new("RGB", (size, size), (40, 70, 30))
    draw = ImageDraw.Draw(picture)
    for x, y, w, h, shade in torch.rand(size * size // 30, 5, generator=generator).tolist():
        left, top = x * size, y * size
        draw.ellipse((left, top, left + 2 + 5 * w, top + 2 + 5 * h),
                     fill=(int(30 + 150 * shade ** 2), int(70 + 150 * shade), int(20 + 40 * shade)))
    return images.to_tensor(picture)


def gamma(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x.clamp(0, 1).pow(torch.tensor([0.45, 0.8, 1.8]).view(1, 3, 1, 1))


def channel_mix(x: torch.Tensor, scale: float) -> torch.Tensor:
    sepia = torch.tensor([[0.39, 0.77, 0.19], [0.35, 0.69, 0.17], [0.27, 0.53, 0.13]])
    return (torch.einsum("ij,njhw->nihw", sepia, x) * 0.9 + 0.05).clamp(0, 1)


def local_contrast(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Local contrast doubled around a blur 4 working px wide (`scale` full px per working px)."""
    radius = round(4 * scale)
    blurred = F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return (2 * x - blurred).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


SIZE, WORK = 192, 48  # full size and working size: 4x, as 4K at --work-size 512


@pytest.mark.parametrize("picture", [checkerboard, text, foliage])
@pytest.mark.parametrize("mapping", [gamma, channel_mix, local_contrast])
def test_edges_are_the_photos_a_known_mapping_comes_back_sharper_than_bicubic(picture, mapping):
    full = picture(SIZE)
    small = guided.shrink(full, (WORK, WORK)).clamp(0, 1)
    made_small, answer = mapping(small, 1.0), mapping(full, SIZE / WORK)
    bicubic = F.interpolate(made_small, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    by_guide = guided.upsample(made_small, small, full)
    assert psnr(by_guide, answer) > psnr(bicubic, answer) + 8  # dB: measured 12 to 40 dB better


@pytest.mark.parametrize(("radius", "eps"), [(1, 1e-5), (guided.RADIUS, guided.EPS), (4, 1e-3)])
def test_edges_beat_bicubic_across_the_radius_and_regularisation(radius: int, eps: float):
    full = text(SIZE)
    small = guided.shrink(full, (WORK, WORK)).clamp(0, 1)
    bicubic = F.interpolate(gamma(small, 1), size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    by_guide = guided.upsample(gamma(small, 1), small, full, radius=radius, eps=eps)
    assert psnr(by_guide, gamma(full, 1)) > psnr(bicubic, gamma(full, 1)) + 6


def test_the_look_is_the_working_sizes(stylizer):
    """Random weights: the output shrunk back to the working size is the working-size stylization."""
    content = images.to_tensor(synthetic_image(160, 128, seed=4))
    style = stylizer.style_stats(images.to_tensor(synthetic_image(48, 48, seed=5)))
    working = guided.working_size(128, 160, 64)
    made_small = stylizer.render(stylizer.encode_content(guided.shrink(content, working)), style)
    full = stylizer.render(stylizer.encode_content(content, work_size=64), style)
    assert full.shape == content.shape
    assert psnr(guided.shrink(full, working), made_small) > 35


def test_within_a_small_memory_budget_the_fit_tiles_and_the_application_goes_in_bands():
    full = foliage(320)
    small = guided.shrink(full, (160, 160))
    whole = guided.upsample(gamma(small, 1), small, full)
    output = 3 * 320 * 320 * 4  # what upsample sets aside for its result first
    room = output + 2_000_000
    tile = guided._fit_tile(160, 160, 1, room - output, guided.RADIUS)
    assert tile is not None and tile < 160  # several tiles across the working size
    assert guided._band(320, 320, 1, room - output) is not None
    torch.testing.assert_close(guided.upsample(gamma(small, 1), small, full, room=room), whole)


def test_the_coefficients_are_upsampled_as_bilinear_interpolation_does():
    coefficients = torch.rand(2, 12, 7, 9, generator=torch.Generator().manual_seed(0))
    guide = torch.rand(2, 3, 30, 41, generator=torch.Generator().manual_seed(1))
    up = F.interpolate(coefficients, size=(30, 41), mode="bilinear", align_corners=False).unflatten(1, (3, 4))
    expected = (up[:, :, :3] * guide.unsqueeze(1)).sum(2) + up[:, :, 3]
    torch.testing.assert_close(guided.apply(coefficients, guide, band=8), expected)


# --- through the Stylizer and the commands --------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "work"), [(45, 61, 20), (64, 37, 16), (33, 33, 32)])
def test_output_sizes_are_exact(stylizer, height: int, width: int, work: int):
    content = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
    encoded = stylizer.encode_content(content, work_size=work)
    assert encoded.seen.shape[-2:] == guided.working_size(height, width, work)
    style = stylizer.style_stats(images.to_tensor(synthetic_image(32, 32)))
    assert stylizer.render(encoded, style).shape == (1, 3, height, width)


def test_a_work_size_of_the_output_size_or_0_is_todays_run_bit_for_bit(stylizer):
    content = images.to_tensor(synthetic_image(45, 37, seed=1))
    style = images.to_tensor(synthetic_image(40, 40, seed=2))
    today = stylizer.stylize(content, style)
    assert torch.equal(stylizer.stylize(content, style, work_size=0), today)
    assert torch.equal(stylizer.stylize(content, style, work_size=37), today)  # nothing to upsample
    assert stylizer.encode_content(content, 37).working is None


def test_luminance_only_keeps_the_full_size_chroma(stylizer):
    content = images.to_tensor(synthetic_image(80, 64, seed=6)) * 0.6 + 0.2  # away from clamping
    style = images.to_tensor(synthetic_image(40, 40, seed=2))
    out = stylizer.stylize(content, style, color_mode="luminance", work_size=32)
    yiq = [torch.einsum("ij,njhw->nihw", color._RGB_TO_YIQ, x)[:, 1:] for x in (out, content)]
    unclamped = ((out > 0) & (out < 1)).all(1, keepdim=True).expand_as(yiq[0])
    torch.testing.assert_close(yiq[0][unclamped], yiq[1][unclamped], atol=1e-5, rtol=0)


def test_the_cli_makes_outputs_of_the_size_they_would_have(weights_home, tmp_path: Path):
    synthetic_image(70, 52, seed=1).save(tmp_path / "photo.png")
    synthetic_image(40, 40, seed=2).save(tmp_path / "painting.png")
    for size, expected in (("0", (70, 52)), ("40", (53, 40))):
        out = tmp_path / f"out{size}.png"
        result = adain("stylize", tmp_path / "photo.png", tmp_path / "painting.png", "-o", out,
                       "--content-size", size, "--style-size", "0", "--work-size", "24", "--luminance-only")
        assert result.exit_code == 0, result.stderr
        assert Image.open(out).size == expected


@pytest.mark.parametrize(("args", "fragments"), [
    (["--content-size", "32", "--work-size", "40"], ["work-size 40", "content-size 32"]),
    (["--content-size", "0", "--work-size", "40"], ["small.png", "work-size 40", "33 px"]),
    (["--work-size", "8"], ["work-size must be 0 (off) or at least 16"]),
])
def test_a_work_size_that_cannot_work_is_one_line_and_exit_2(weights_home, tmp_path: Path, args, fragments):
    synthetic_image(64, 64, seed=1).save(tmp_path / "big.png")
    synthetic_image(40, 33, seed=1).save(tmp_path / "small.png")
    synthetic_image(40, 40, seed=2).save(tmp_path / "painting.png")
    (tmp_path / "contents").mkdir()
    result = adain("stylize", tmp_path / "*.png", tmp_path / "painting.png", "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    one_error_line(result, *fragments)
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_interpolate_scales_the_mask_with_the_content(weights_home, tmp_path: Path):
    synthetic_image(64, 48, seed=1).save(tmp_path / "photo.png")
    for seed in (2, 3):
        synthetic_image(32, 32, seed=seed).save(tmp_path / f"s{seed}.png")
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 32, 48))
    mask.save(tmp_path / "mask.png")
    result = adain("interpolate", tmp_path / "photo.png", tmp_path / "s2.png", tmp_path / "s3.png", "--mask",
                   tmp_path / "mask.png", "-o", tmp_path / "out.png", "--content-size", "0", "--style-size", "0",
                   "--work-size", "24")
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (64, 48)
    too_large = adain("interpolate", tmp_path / "photo.png", tmp_path / "s2.png", tmp_path / "s3.png", "-o",
                      tmp_path / "big.png", "--content-size", "0", "--work-size", "64", "--vgg", tmp_path / "none")
    assert too_large.exit_code == 2
    one_error_line(too_large, "photo.png", "work-size 64")


def test_video_frames_are_each_guided_up(weights_home, tmp_path: Path):
    make_clip(tmp_path / "clip.mp4", moving_frames(3, 48, 32))
    synthetic_image(32, 32, seed=2).save(tmp_path / "painting.png")
    result = adain("video", tmp_path / "clip.mp4", tmp_path / "painting.png", "-o", tmp_path / "out.mp4",
                   "--style-size", "0", "--work-size", "16", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 3
    assert [(f.width, f.height) for f in read_frames(tmp_path / "out.mp4")] == [(48, 32)] * 3
    too_large = adain("video", tmp_path / "clip.mp4", tmp_path / "painting.png", "-o", tmp_path / "big.mp4",
                      "--work-size", "40")
    assert too_large.exit_code == 2
    one_error_line(too_large, "clip.mp4", "work-size 40", "32 px")


def test_serve_takes_a_work_size_field(client, stylizer):
    content = png(64, 48, 1)
    response = post(client, content=content, work_size="24")
    assert response.status_code == 200, response.text
    served = Image.open(io.BytesIO(response.content))
    expected = stylizer.stylize(Image.open(io.BytesIO(content)).convert("RGB"),
                                Image.open(io.BytesIO(STYLE)).convert("RGB"), work_size=24)
    assert served.size == (64, 48)
    assert served.tobytes() == expected.tobytes()
    plain = Image.open(io.BytesIO(post(client, content=content).content))  # cached features not shared
    assert plain.tobytes() == stylizer.stylize(Image.open(io.BytesIO(content)).convert("RGB"),
                                               Image.open(io.BytesIO(STYLE)).convert("RGB")).tobytes()
    refused = post(client, content=content, work_size="64")
    assert refused.status_code == 400
    assert "work-size 64" in refused.json()["error"]
