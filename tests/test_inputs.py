"""CONTENT and STYLE arguments: a file, a directory or a glob, always sorted image paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import synthetic_image

from adain_cli import UsageError
from adain_cli.inputs import expand


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", "._a.jpg", ".hidden.png"):
        synthetic_image(16, 16).save(tmp_path / name, format="PNG")
    (tmp_path / "sub").mkdir()
    synthetic_image(16, 16).save(tmp_path / "sub" / "d.png")
    return tmp_path


def test_a_file_is_taken_as_given(folder: Path):
    assert expand(folder / "notes.txt") == [folder / "notes.txt"]


def test_a_directory_gives_its_images_sorted_skipping_hidden_and_subfolders(folder: Path):
    assert [p.name for p in expand(folder)] == ["a.JPG", "b.png", "c.webp"]


def test_a_glob_gives_matching_images(folder: Path):
    assert [p.name for p in expand(str(folder / "*"))] == ["a.JPG", "b.png", "c.webp"]
    assert [p.name for p in expand(str(folder / "**" / "*.png"))] == ["b.png", "d.png"]


def test_nothing_found_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="no such file or directory"):
        expand(tmp_path / "missing.jpg")
    with pytest.raises(UsageError, match="pattern matches no image files"):
        expand(str(tmp_path / "*.png"))
    with pytest.raises(UsageError, match="directory has no images"):
        expand(tmp_path)
