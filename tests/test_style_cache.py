"""The one style cache: statistics kept in memory with the bank behind, the colour-mode rule once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import synthetic_image

from adain_cli import Stylizer, images, jobs
from adain_cli.errors import ImageError
from adain_cli.style_bank import StyleBank
from adain_cli.style_cache import StyleCache


def painting(seed: int) -> torch.Tensor:
    return images.to_tensor(synthetic_image(32, 32, seed=seed))


class Loads:
    """A style loader that counts its calls."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image, self.calls = image, 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.image


def test_a_style_is_decoded_and_encoded_once_and_its_statistics_reused(stylizer: Stylizer):
    cache, load = StyleCache(stylizer), Loads(painting(1))
    first = cache.stats("a", load)
    again = cache.stats("a", load)
    assert load.calls == 1 and again is first and cache.holds("a", "style")
    expected = stylizer.style_stats(painting(1))
    assert torch.equal(first.mean, expected.mean) and torch.equal(first.std, expected.std)


def test_under_preserve_color_the_statistics_are_per_content_and_the_picture_is_kept(stylizer: Stylizer):
    cache, load = StyleCache(stylizer), Loads(painting(1))
    red, blue = (stylizer.encode_content(painting(5) * torch.tensor(tint).view(1, 3, 1, 1))
                 for tint in ((1.0, 0.3, 0.3), (0.3, 0.3, 1.0)))
    for_red, for_blue = cache.stats("a", load, red, "coral"), cache.stats("a", load, blue, "coral")
    assert load.calls == 1  # decoded once, recoloured per content
    assert not torch.equal(for_red.mean, for_blue.mean)
    assert torch.equal(for_red.mean, stylizer.style_stats(painting(1), red, "coral").mean)
    assert not cache.holds("b", "coral") and cache.holds("a", "coral") and not cache.holds("a", "style")


def test_the_bank_is_behind_the_memory_and_not_used_under_preserve_color(stylizer: Stylizer, tmp_path: Path):
    style = tmp_path / "s.png"
    synthetic_image(32, 32, seed=4).save(style)
    settings = jobs.Settings()
    bank = StyleBank(tmp_path / "bank", stylizer, settings)
    StyleCache(stylizer, bank=bank).stats(style, lambda: settings.load_style(style))
    assert bank.stored == 1 and bank.hits == 0
    later = StyleCache(stylizer, bank=bank)  # another run: the bank answers, nothing is decoded
    stats = later.stats(style, lambda: pytest.fail("decoded although the bank has it"))
    later.stats(style, lambda: pytest.fail("decoded although the cache has it"))
    assert bank.hits == 1 and torch.equal(stats.mean, stylizer.style_stats(settings.load_style(style)).mean)
    content = stylizer.encode_content(painting(7)[..., :24, :24])
    StyleCache(stylizer, bank=bank).stats(style, lambda: settings.load_style(style), content, "coral")
    assert bank.hits == 1 and bank.stored == 1


def test_a_style_that_cannot_be_read_fails_every_time_without_being_read_again(stylizer: Stylizer):
    cache, calls = StyleCache(stylizer), []

    def unreadable():
        calls.append(1)
        raise ImageError("bad.png", "not an image file")

    for _ in range(3):
        with pytest.raises(ImageError, match="bad.png: not an image file"):
            cache.stats("bad", unreadable)
    assert calls == [1]


def test_the_memory_holds_at_most_its_entries(stylizer: Stylizer):
    cache = StyleCache(stylizer, entries=2)
    loads = {key: Loads(painting(seed)) for seed, key in enumerate("abc")}
    for key in "abca":
        cache.stats(key, loads[key])
    assert cache.entries == 2 and loads["a"].calls == 2 and loads["b"].calls == 1
