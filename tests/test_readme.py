"""Every example in the README works: each block's `adain` command lines run in order, and
the Python snippet runs, in a folder holding the files they name (synthetic images, random
weights, a local HTTP server standing in for the download site).

The examples run shortened, as a test must, without changing what they exercise: image
sizes a line leaves out run at the small files' own size (`--content-size 0 --style-size 0`)
and sizes above 64 px at 64 px (videos too: their clips are 40x32, 3 s at 10 fps); `adain
train` lines with two iterations on 32 px crops; the
Python snippet at 64 px. The torchrun lines are exercised by two-process runs in test_train and
test_dataset.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from clips import make_clip, moving_frames
from conftest import link_or_copy, synthetic_image
from PIL import Image
from typer.testing import CliRunner
from weight_server import WeightServer

from adain_cli.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
ASSIGNMENT = re.compile(r"^[A-Z_]+=")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def command_blocks() -> list[list[str]]:
    """Per bash block, its command lines: `adain ...`, optionally after VAR=value settings.
    `adain serve` runs until stopped: test_readme_serve_examples_work runs it."""
    found = []
    for block in blocks("bash"):
        lines = [line for line in block.splitlines()
                 if (line.startswith("adain ") or (ASSIGNMENT.match(line) and " adain " in line))
                 and not line.startswith("adain serve")]
        if lines:
            found.append(lines)
    return found


def logical_lines(block: str) -> list[str]:
    """A block's lines with backslash continuations joined."""
    return block.replace("\\\n", " ").splitlines()


@pytest.fixture
def workdir(tmp_path: Path, weights_home: Path, weights, good_files, monkeypatch: pytest.MonkeyPatch):
    """The files the examples name, small and synthetic, and a download server."""
    for name, seed in (("photo.jpg", 1), ("photo2.jpg", 2), ("painting.jpg", 3)):
        synthetic_image(48, 40, seed=seed).save(tmp_path / name)
    synthetic_image(40, 36, seed=4).save(tmp_path / "huge-scan.png")
    for seed, name in enumerate(("monet.jpg", "vangogh.jpg", "picasso.jpg", "matisse.jpg"), start=20):
        synthetic_image(30 + seed, 40, seed=seed).save(tmp_path / name)
    mask = Image.new("L", (48, 40), 0)
    mask.paste(255, (0, 0, 24, 40))
    mask.save(tmp_path / "mask.png")
    regions = Image.new("P", (96, 80), 0)
    regions.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * 759)
    regions.paste(1, (32, 0, 64, 80))
    regions.paste(2, (64, 0, 96, 80))
    regions.save(tmp_path / "regions.png")
    for folder, seeds in (("photos", (5, 6)), ("paintings", (7, 8))):
        (tmp_path / folder).mkdir()
        for seed in seeds:
            synthetic_image(40, 32, seed=seed).save(tmp_path / folder / f"img{seed}.jpg")
    for k in range(4):  # an ImageNet-like tree: class folders of .JPEG files
        (tmp_path / "imagenet" / "train" / f"n0144076{k % 2}").mkdir(parents=True, exist_ok=True)
        synthetic_image(40, 32, seed=40 + k).save(tmp_path / "imagenet" / "train" / f"n0144076{k % 2}" / f"{k}.JPEG")
    for folder in ("coco", "wikiart"):
        (tmp_path / folder).mkdir()
        for seed in range(3):
            synthetic_image(88, 72, seed=30 + seed).save(tmp_path / folder / f"{folder}{seed}.jpg")
    # Videos: three seconds at 10 fps with sound, a phone clip rotated 90 degrees, a style clip.
    make_clip(tmp_path / "clip.mp4", moving_frames(30, 40, 32), rate=Fraction(10), audio_seconds=3.0)
    make_clip(tmp_path / "phone.mov", moving_frames(6, 40, 32, seed=2), rotation=90)
    make_clip(tmp_path / "style-clip.mp4", moving_frames(4, 32, 32, seed=3))
    (tmp_path / "frames-in").mkdir()
    for i, pixels in enumerate(moving_frames(3, 40, 32, seed=4)):
        Image.fromarray(pixels).save(tmp_path / "frames-in" / f"{i:03d}.png")
    for folder in ("weights", "usb-copy"):
        (tmp_path / folder).mkdir()
        for source in weights:
            link_or_copy(source, tmp_path / folder / source.name)
    server = WeightServer(good_files)
    monkeypatch.setenv("ADAIN_WEIGHTS_URL", server.url)
    monkeypatch.delenv("ADAIN_OFFLINE")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    server.close()


def test_the_readme_has_examples():
    assert sum(len(lines) for lines in command_blocks()) >= 20 and blocks("python")


SIZE_OPTIONS = ("--content-size", "--style-size")
LARGEST_SIZE = 64


def shortened(words: list[str]) -> list[str]:
    """The command with the sizes a test can afford (later options win for train)."""
    if words[1] == "train":
        return [*words, "--iterations", "2", "--batch-size", "2", "--image-size", "40", "--crop-size", "32",
                "--workers", "0"]
    if words[1] not in ("stylize", "interpolate", "video", "dataset"):
        return words
    words = [str(min(int(word), LARGEST_SIZE)) if before in SIZE_OPTIONS else word
             for before, word in zip(["", *words], words, strict=False)]
    return words + [part for option in SIZE_OPTIONS if option not in words for part in (option, "0")]


@pytest.mark.parametrize("lines", command_blocks(), ids=lambda lines: lines[0][:40])
def test_readme_commands_work(workdir: Path, lines: list[str], monkeypatch: pytest.MonkeyPatch):
    for line in lines:
        words = shlex.split(line, comments=True)
        if ">" in words:  # a shell redirection: the command's own output is what matters
            words = words[: words.index(">")]
        settings = []
        while ASSIGNMENT.match(words[0]):
            settings.append(words.pop(0).split("=", 1))
        words = shortened(words)
        with monkeypatch.context() as env:
            for name, value in settings:
                env.setenv(name, value)
            result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, f"{line}\n{result.stderr}"


def test_readme_python_example_works(workdir: Path):
    for block in blocks("python"):
        assert "size=512" in block
        exec(compile(block.replace("size=512", f"size={LARGEST_SIZE}"), str(README), "exec"), {})
    assert (workdir / "photo.stylized.png").exists() and (workdir / "photo2.stylized.png").exists()


def test_readme_serve_examples_work(workdir: Path):
    """`adain serve` from the README in a process of its own, on a free port, and every curl
    example against it; then SIGTERM, which it must take as a clean stop."""
    lines = [line for block in blocks("bash") for line in logical_lines(block)]
    [serve] = [shlex.split(line) for line in lines if line.startswith("adain serve")]
    curls = [shlex.split(line) for line in lines if line.startswith("curl ")]
    assert len(curls) >= 5
    process = subprocess.Popen([sys.executable, "-m", "adain_cli", *serve[1:], "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        announced = process.stderr.readline()
        address = re.search(r"http://[^ ]+", announced)
        assert address, announced
        for words in curls:
            words = [word.replace("http://127.0.0.1:8000", address.group(0)) for word in words]
            done = subprocess.run([words[0], "--fail-with-body", "-sS", *words[1:]], capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, f"{' '.join(words)}\n{done.stdout}{done.stderr}"
            if "-o" in words:
                assert Image.open(workdir / words[words.index("-o") + 1]).size[0] > 0
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        process.kill()
    assert process.returncode == 0
