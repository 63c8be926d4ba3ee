"""Tiled processing gives the untiled result: statistics are global, halos cover the network's reach."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import synthetic_image
from PIL import Image, ImageChops
from typer.testing import CliRunner

from adain_cli import Stylizer, UsageError, images
from adain_cli.cli import app


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.mark.parametrize("size,tile", [((203, 157), 48), ((203, 157), 64), ((96, 200), 40), ((130, 130), 128)])
def test_tiled_output_equals_untiled(stylizer, size, tile):
    content = images.to_tensor(synthetic_image(*size, seed=1))
    style = images.to_tensor(synthetic_image(64, 48, seed=2))
    untiled = stylizer.stylize(content, style)
    tiled = Stylizer(stylizer.encoder, stylizer.decoder, "cpu", tile=tile).stylize(content, style)
    assert tiled.shape == untiled.shape
    assert psnr(tiled, untiled) > 40
    assert (tiled - untiled).abs().max() < 1e-3


def test_tiled_features_and_statistics_equal_untiled(stylizer):
    content = images.to_tensor(synthetic_image(150, 110, seed=3))
    whole = stylizer.encode_content(content)
    tiled = Stylizer(stylizer.encoder, stylizer.decoder, "cpu", tile=56).encode_content(content)
    torch.testing.assert_close(tiled.features, whole.features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tiled.stats.mean, whole.stats.mean, atol=1e-5, rtol=1e-5)


def test_tiled_style_statistics_equal_untiled_for_odd_sizes(stylizer):
    style = images.to_tensor(synthetic_image(141, 99, seed=7))  # neither side a multiple of 8
    whole = stylizer.style_stats(style)
    tiled = Stylizer(stylizer.encoder, stylizer.decoder, "cpu", tile=48).style_stats(style)
    torch.testing.assert_close(tiled.mean, whole.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiled.std, whole.std, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tile", [0, 12, 50])
def test_tile_sizes_must_be_positive_multiples_of_8(stylizer, tile):
    with pytest.raises(UsageError, match="multiple of 8"):
        Stylizer(stylizer.encoder, stylizer.decoder, "cpu", tile=tile)


def test_the_tile_flag_gives_the_same_image(weights_home, tmp_path):
    synthetic_image(150, 90, seed=4).save(tmp_path / "c.png")
    synthetic_image(40, 40, seed=5).save(tmp_path / "s.png")
    base = ["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "--content-size", "0", "--style-size", "0"]
    assert CliRunner().invoke(app, [*base, "-o", str(tmp_path / "whole.png")]).exit_code == 0
    result = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "tiled.png"), "--tile", "64"])
    assert result.exit_code == 0, result.stderr
    difference = ImageChops.difference(Image.open(tmp_path / "whole.png"), Image.open(tmp_path / "tiled.png"))
    assert max(high for _, high in difference.getextrema()) <= 1  # at most one 8-bit rounding step


def test_a_tile_flag_that_is_not_a_multiple_of_8_is_a_usage_error(weights_home, tmp_path):
    synthetic_image(40, 40).save(tmp_path / "c.png")
    result = CliRunner().invoke(app, ["stylize", str(tmp_path / "c.png"), str(tmp_path / "c.png"),
                                      "-o", str(tmp_path / "o.png"), "--tile", "50"])
    assert result.exit_code == 2 and "multiple of 8" in result.stderr


def test_interpolate_takes_the_tile_flag_too(weights_home, tmp_path):
    synthetic_image(120, 80, seed=6).save(tmp_path / "c.png")
    for i in (1, 2):
        synthetic_image(40, 40, seed=6 + i).save(tmp_path / f"s{i}.png")
    base = ["interpolate", str(tmp_path / "c.png"), str(tmp_path / "s1.png"), str(tmp_path / "s2.png"),
            "--content-size", "0", "--style-size", "0"]
    assert CliRunner().invoke(app, [*base, "-o", str(tmp_path / "whole.png")]).exit_code == 0
    assert CliRunner().invoke(app, [*base, "-o", str(tmp_path / "tiled.png"), "--tile", "48"]).exit_code == 0
    difference = ImageChops.difference(Image.open(tmp_path / "whole.png"), Image.open(tmp_path / "tiled.png"))
    assert max(high for _, high in difference.getextrema()) <= 1
