"""Every example in the README works: each `adain` command line and the Python snippet run
here, in a folder holding the files they name (synthetic images, random weights)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import synthetic_image
from typer.testing import CliRunner

from adain_cli.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def command_lines() -> list[str]:
    return [line for block in blocks("bash") for line in block.splitlines() if line.startswith("adain ")]


@pytest.fixture
def workdir(tmp_path: Path, weights_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the examples name, small and synthetic."""
    for name, seed in (("photo.jpg", 1), ("photo2.jpg", 2), ("painting.jpg", 3)):
        synthetic_image(48, 40, seed=seed).save(tmp_path / name)
    synthetic_image(40, 36, seed=4).save(tmp_path / "huge-scan.png")
    for folder, seeds in (("photos", (5, 6)), ("paintings", (7, 8))):
        (tmp_path / folder).mkdir()
        for seed in seeds:
            synthetic_image(40, 32, seed=seed).save(tmp_path / folder / f"img{seed}.jpg")
    (tmp_path / "weights").mkdir()
    for source in (weights_home / "weights").iterdir():
        (tmp_path / "weights" / source.name).write_bytes(source.read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_examples():
    assert len(command_lines()) >= 15 and blocks("python")


@pytest.mark.parametrize("line", command_lines())
def test_readme_command_works(workdir: Path, line: str):
    words = shlex.split(line, comments=True)
    if ">" in words:  # a shell redirection: check the output instead
        words = words[: words.index(">")]
    result = CliRunner().invoke(app, words[1:])
    assert result.exit_code == 0, f"{line}\n{result.stderr}"


def test_readme_python_example_works(workdir: Path):
    for block in blocks("python"):
        exec(compile(block, str(README), "exec"), {})
    assert (workdir / "photo.stylized.png").exists() and (workdir / "photo2.stylized.png").exists()
