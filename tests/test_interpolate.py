"""`adain interpolate`: style mixing, transitions, grids, alpha sweeps and masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from PIL import Image, ImageChops
from typer.testing import CliRunner

from adain_cli import FeatureStats, UsageError, adain, feature_stats, images, mixing
from adain_cli.cli import app

SMALL = ["--content-size", "0", "--style-size", "0"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def same_pixels(a: Path, b: Path) -> bool:
    one, two = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    return one.size == two.size and ImageChops.difference(one, two).getbbox() is None


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A content and four styles of different sizes and aspect ratios."""
    paths = {"content": tmp_path / "content.png"}
    synthetic_image(56, 40, seed=1).save(paths["content"])
    for i, size in enumerate([(40, 40), (64, 32), (24, 50), (33, 47)], start=1):
        paths[f"s{i}"] = tmp_path / f"s{i}.png"
        synthetic_image(*size, seed=10 + i).save(paths[f"s{i}"])
    return paths


# --- the mathematics ------------------------------------------------------------------------

def test_mixed_statistics_equal_the_weighted_sum_of_adain_outputs():
    x = torch.randn(1, 16, 6, 5)
    styles = [feature_stats(torch.randn(1, 16, 4 + i, 7) * (i + 1) + i) for i in range(3)]
    weights = (0.5, 0.3, 0.2)
    mixed = adain(x, mixing.mix_stats(styles, weights))
    expected = sum(w * adain(x, s) for w, s in zip(weights, styles, strict=True))
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights,expected", [(None, (1 / 3,) * 3), ([2, 1, 1], (0.5, 0.25, 0.25)),
                                              ([0, 0, 5], (0, 0, 1))])
def test_weights_are_normalised_to_sum_one(weights, expected):
    assert mixing.normalise_weights(weights, 3) == pytest.approx(expected)


def test_grid_corners_are_the_four_styles_and_cells_bilinear():
    frames = mixing.grid(3, 1.0)
    assert [frames[i].weights for i in (0, 2, 6, 8)] == [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    assert frames[4].weights == pytest.approx((0.25,) * 4)
    assert frames[1].weights == pytest.approx((0.5, 0.5, 0, 0))


def test_steps_and_alpha_sweep_cover_the_range():
    assert [f.weights for f in mixing.steps(3, 1.0)] == [(1, 0), (0.5, 0.5), (0, 1)]
    assert [f.alpha for f in mixing.alpha_sweep(5, (0.5, 0.5))] == [0, 0.25, 0.5, 0.75, 1]


def test_an_all_white_mask_equals_style_one_alone():
    features = torch.rand(1, 8, 6, 6)
    styles = [feature_stats(torch.randn(1, 8, 5, 5) + 3), feature_stats(torch.randn(1, 8, 5, 5) - 3)]
    fractions = mixing.region_fractions(torch.zeros(48, 48, dtype=torch.long), 2)
    torch.testing.assert_close(mixing.regional_adain(features, fractions, styles), adain(features, styles[0]))


def test_a_half_and_half_mask_puts_each_styles_statistics_in_its_half():
    features = torch.rand(1, 8, 8, 8)
    styles = [feature_stats(torch.randn(1, 8, 5, 5) * 2 + 5), feature_stats(torch.randn(1, 8, 5, 5) * 0.5 - 5)]
    labels = torch.zeros(64, 64, dtype=torch.long)
    labels[:, 32:] = 1  # left white (style 1), right black (style 2)
    target = mixing.regional_adain(features, mixing.region_fractions(labels, 2), styles)
    for half, style in ((target[..., :4], styles[0]), (target[..., 4:], styles[1])):
        torch.testing.assert_close(feature_stats(half).mean, style.mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(feature_stats(half).std, style.std, atol=1e-3, rtol=1e-3)


def test_mask_labels_are_padded_by_reflection_like_the_content():
    labels = torch.zeros(20, 16, dtype=torch.long)
    labels[19] = 1  # only the last row is region 1; the content is reflected from 20 to 24 rows
    fractions = mixing.region_fractions(labels, 2)
    # Rows 16..23 form the last cell row: row 19 is region 1, and padded rows 20..23 mirror rows 18..15 (region 0).
    assert fractions[1, -1].tolist() == [1 / 8, 1 / 8]


def test_region_boundaries_inside_a_cell_blend_instead_of_a_seam():
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[:, 4:] = 1  # the boundary falls inside the first 8 px cell
    fractions = mixing.region_fractions(labels, 2)
    assert fractions[:, 0, 0].tolist() == [0.5, 0.5]
    torch.testing.assert_close(fractions.sum(dim=0), torch.ones(2, 2))


# --- the command -----------------------------------------------------------------------------

def test_weights_one_zero_zero_equal_plain_stylize_with_the_first_style(weights_home, files, tmp_path):
    mixed = run("interpolate", files["content"], files["s1"], files["s2"], files["s3"], "-w", "1,0,0",
                "-o", tmp_path / "mixed.png", *SMALL)
    assert mixed.exit_code == 0, mixed.stderr
    assert run("stylize", files["content"], files["s1"], "-o", tmp_path / "plain.png", *SMALL).exit_code == 0
    assert same_pixels(tmp_path / "mixed.png", tmp_path / "plain.png")


def test_grid_corners_equal_the_single_style_results(weights_home, files, tmp_path):
    result = run("interpolate", files["content"], *(files[f"s{i}"] for i in range(1, 5)), "--grid", "2",
                 "-o", tmp_path / "frames", *SMALL)
    assert result.exit_code == 0, result.stderr
    for i in range(1, 5):
        single = run("stylize", files["content"], files[f"s{i}"], "-o", tmp_path / f"single{i}.png", *SMALL)
        assert single.exit_code == 0
        assert same_pixels(tmp_path / "frames" / f"frame_{i:04d}.png", tmp_path / f"single{i}.png")


def test_styles_of_different_sizes_mix(stylizer):
    content = images.to_tensor(synthetic_image(56, 40, seed=1))
    wide, tall = (images.to_tensor(synthetic_image(*size, seed=seed)) for size, seed in (((64, 32), 2), ((24, 50), 3)))
    mixed = stylizer.stylize(content, [wide, tall], weights=[0.5, 0.5])
    a, b = stylizer.style_stats(wide), stylizer.style_stats(tall)
    halfway = FeatureStats((a.mean + b.mean) / 2, (a.std + b.std) / 2)
    torch.testing.assert_close(mixed, stylizer.render(stylizer.encode_content(content), halfway))
    assert mixed.shape[-2:] == (40, 56)
    for alone in (stylizer.stylize(content, wide), stylizer.stylize(content, tall)):
        assert (mixed - alone).abs().mean() > 1e-3  # a mix of the two, neither one alone


def test_steps_write_a_contact_sheet_with_labels(weights_home, files, tmp_path):
    plain = run("interpolate", files["content"], files["s1"], files["s2"], "--steps", "3",
                "-o", tmp_path / "sheet.png", *SMALL)
    labelled = run("interpolate", files["content"], files["s1"], files["s2"], "--steps", "3", "--labels",
                   "-o", tmp_path / "labelled.png", *SMALL)
    assert plain.exit_code == 0 and labelled.exit_code == 0, labelled.stderr
    width, height = Image.open(tmp_path / "sheet.png").size
    assert width == 3 * 56 + 4 * 4 and height == 40 + 2 * 4
    assert Image.open(tmp_path / "labelled.png").size[1] > height


def test_alpha_sweep_writes_numbered_frames(weights_home, files, tmp_path):
    result = run("interpolate", files["content"], files["s1"], files["s2"], "--alpha-sweep", "3",
                 "-o", tmp_path / "frames", "--ext", "jpg", "--json", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_000{i}.jpg" for i in (1, 2, 3)]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["alpha"] for r in records] == [0.0, 0.5, 1.0]
    # alpha 0 reproduces decode(encode(content)) whatever the styles
    assert run("stylize", files["content"], files["s3"], "-o", tmp_path / "a0.jpg", "--alpha", "0",
               *SMALL).exit_code == 0
    assert same_pixels(tmp_path / "frames" / "frame_0001.jpg", tmp_path / "a0.jpg")


def assert_regions_styled(stylizer, files, mask_path: Path, styles: list[str], columns: list[slice]) -> None:
    """The masked AdaIN target, as the command computes it, has in each region (feature columns) the
    mean and std of that region's style; std only where the content varies (AdaIN keeps a flat channel flat)."""
    encoded = stylizer.encode_content(images.load_tensor(files["content"], 0, False))
    stats = [stylizer.style_stats(images.load_tensor(files[s], 0, False)) for s in styles]
    labels = images.load_mask(mask_path, (56, 40), 0, False, len(styles))
    target = mixing.masked_target(labels, encoded.features, stats)
    for cols, style in zip(columns, stats, strict=True):
        region = feature_stats(target[..., cols], eps=0)  # the style's std already holds eps
        varies = feature_stats(encoded.features[..., cols]).std.flatten() > 0.1  # where eps (1e-5) is negligible
        torch.testing.assert_close(region.mean, style.mean, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(region.std.flatten()[varies], style.std.flatten()[varies], atol=1e-3, rtol=1e-3)


def test_a_binary_mask_gives_each_half_its_style(weights_home, stylizer, files, tmp_path):
    mask = Image.new("L", (56, 40), 0)
    mask.paste(255, (0, 0, 32, 40))  # white (style 1) on the left 4 of 7 feature columns
    mask.save(tmp_path / "mask.png")
    result = run("interpolate", files["content"], files["s1"], files["s2"], "--mask", tmp_path / "mask.png",
                 "-o", tmp_path / "masked.png", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "masked.png").size == (56, 40)
    assert_regions_styled(stylizer, files, tmp_path / "mask.png", ["s1", "s2"], [slice(0, 4), slice(4, 7)])


def test_a_palette_mask_has_one_region_per_style(weights_home, stylizer, files, tmp_path):
    mask = Image.new("P", (112, 80), 0)  # twice the content's size: resized as the content is
    mask.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    mask.paste(1, (32, 0, 80, 80))
    mask.paste(2, (80, 0, 112, 80))
    mask.save(tmp_path / "labels.png")
    result = run("interpolate", files["content"], files["s1"], files["s2"], files["s3"],
                 "--mask", tmp_path / "labels.png", "-o", tmp_path / "o.png", *SMALL)
    assert result.exit_code == 0, result.stderr
    labels = images.load_mask(tmp_path / "labels.png", (56, 40), 0, False, 3)
    assert [labels[:, cols].unique().tolist() for cols in (slice(0, 16), slice(16, 40), slice(40, 56))] == \
        [[0], [1], [2]]
    assert_regions_styled(stylizer, files, tmp_path / "labels.png", ["s1", "s2", "s3"],
                          [slice(0, 2), slice(2, 5), slice(5, 7)])


def test_a_masked_result_differs_from_either_style_alone(weights_home, files, tmp_path):
    mask = Image.new("L", (56, 40), 0)
    mask.paste(255, (0, 0, 28, 40))
    mask.save(tmp_path / "mask.png")
    run("interpolate", files["content"], files["s1"], files["s2"], "--mask", tmp_path / "mask.png",
        "-o", tmp_path / "masked.png", *SMALL)
    for i in (1, 2):
        run("stylize", files["content"], files[f"s{i}"], "-o", tmp_path / f"only{i}.png", *SMALL)
        assert not same_pixels(tmp_path / "masked.png", tmp_path / f"only{i}.png")


def test_existing_outputs_are_skipped(weights_home, files, tmp_path):
    (tmp_path / "o.png").write_bytes(b"mine")
    result = run("interpolate", files["content"], files["s1"], files["s2"], "-o", tmp_path / "o.png", *SMALL)
    assert result.exit_code == 0 and "skipped" in result.stdout
    assert (tmp_path / "o.png").read_bytes() == b"mine"


def test_a_dangling_link_is_no_output_and_is_replaced_by_the_file(weights_home, files, tmp_path):
    (tmp_path / "o.png").symlink_to(tmp_path / "gone.png")
    result = run("interpolate", files["content"], files["s1"], files["s2"], "-o", tmp_path / "o.png", *SMALL)
    assert result.exit_code == 0 and result.stdout.startswith("wrote ")
    assert not (tmp_path / "o.png").is_symlink() and not (tmp_path / "gone.png").exists()
    assert Image.open(tmp_path / "o.png").size == Image.open(files["content"]).size


# --- bad input: one line, exit 2, nothing written --------------------------------------------

@pytest.mark.parametrize("extra,message", [
    (["-w", "0.5,0.5,0.5"], "3 weights given for 2 styles"),
    (["-w", "-1,2"], "non-negative"),
    (["-w", "nan,1"], "non-negative"),
    (["-w", "0,0"], "must not all be zero"),
    (["-w", "1e308,1e308"], "finite sum"),  # each finite, the sum not: they would mix as 0, 0
    (["-w", "a,b"], "comma-separated numbers"),
    (["--grid", "3"], "exactly four styles"),
    (["--steps", "3", "--grid", "3"], "choose one of"),
    (["--labels"], "--labels needs a contact sheet"),
])
def test_bad_interpolation_requests(weights_home, files, tmp_path, extra, message):
    result = run("interpolate", files["content"], files["s1"], files["s2"], "-o", tmp_path / "o.png", *extra)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "o.png").exists()


def test_fewer_than_two_styles(weights_home, files, tmp_path):
    result = run("interpolate", files["content"], files["s1"], "-o", tmp_path / "o.png")
    assert result.exit_code == 2 and "at least two styles" in result.stderr


def test_steps_need_exactly_two_styles(weights_home, files, tmp_path):
    result = run("interpolate", files["content"], files["s1"], files["s2"], files["s3"], "--steps", "3",
                 "-o", tmp_path / "o.png")
    assert result.exit_code == 2 and "exactly two styles" in result.stderr


def mask_result(files, tmp_path, mask_path):
    return run("interpolate", files["content"], files["s1"], files["s2"], "--mask", mask_path,
               "-o", tmp_path / "o.png", *SMALL)


def test_mask_with_another_aspect_ratio_is_refused(weights_home, files, tmp_path):
    Image.new("L", (40, 40), 255).save(tmp_path / "square.png")
    result = mask_result(files, tmp_path, tmp_path / "square.png")
    assert result.exit_code == 2 and "aspect ratios differ" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_unreadable_mask_is_refused(weights_home, files, tmp_path):
    (tmp_path / "mask.png").write_text("not a png")
    result = mask_result(files, tmp_path, tmp_path / "mask.png")
    assert result.exit_code == 2 and "unreadable mask" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_mask_region_too_small_for_the_network_is_refused(weights_home, files, tmp_path):
    mask = Image.new("L", (56, 40), 0)
    mask.putpixel((10, 10), 255)  # one white pixel: style 1 has nowhere to go
    mask.save(tmp_path / "speck.png")
    result = mask_result(files, tmp_path, tmp_path / "speck.png")
    assert result.exit_code == 2 and "region 1 (style 1) is empty" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_palette_mask_region_count_must_match_the_styles(weights_home, files, tmp_path):
    mask = Image.new("P", (56, 40), 0)
    mask.putpalette([0, 0, 0, 255, 255, 255, 9, 9, 9] + [0] * 759)
    mask.paste(1, (20, 0, 40, 40))
    mask.paste(2, (40, 0, 56, 40))
    mask.save(tmp_path / "three.png")
    result = mask_result(files, tmp_path, tmp_path / "three.png")
    assert result.exit_code == 2 and "mask has 3 palette indices but 2 styles" in result.stderr


def test_mask_combined_with_weights_is_a_usage_error(files, tmp_path):
    from adain_cli.interpolate import plan

    with pytest.raises(UsageError, match="does not combine"):
        plan(files["content"], [files["s1"], files["s2"]], tmp_path / "o.png", weights=[1, 1], mask=files["s3"])


def test_a_bad_content_fails_with_one_line_or_a_traceback_under_debug(weights_home, files, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    args = ["interpolate", tmp_path / "bad.png", files["s1"], files["s2"], "-o", tmp_path / "o.png"]
    result = run(*args)
    assert result.exit_code == 1 and "bad.png: not an image file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" in run(*args, "--debug").stderr
    assert not (tmp_path / "o.png").exists()
