"""CONTENT and STYLE arguments: a file, a directory or a glob, always sorted image paths; and whole
image trees walked with one rule for suffixes and hidden names."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import synthetic_image

from adain_cli import UsageError
from adain_cli.inputs import expand, walk_images


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


# --- walking whole trees (adain dataset, adain train) -------------------------------------------

VISIBLE_IMAGES = ["a.tif", "k/b.TIFF", "k/c.jpg"]


def hidden_and_tif_tree(root: Path) -> Path:
    """TIFF images among others, with hidden files and a hidden folder of images: VISIBLE_IMAGES are found."""
    for name in ("a.tif", "k/b.TIFF", "k/c.jpg", "k/.d.jpg", ".cache/e.jpg", ".cache/k/f.png", "k/notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(40, 40).save(root / name, format="TIFF" if name.lower().endswith((".tif", ".tiff")) else "PNG")
    return root


def test_a_tree_walk_finds_every_image_suffix_and_skips_hidden_files_and_folders(tmp_path: Path):
    assert walk_images(hidden_and_tif_tree(tmp_path)) == VISIBLE_IMAGES
