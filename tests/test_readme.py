"""Every example in the README works: each block's `adain` command lines run in order, and
the Python snippet runs, in a folder holding the files they name (synthetic images, random
weights, a local HTTP server standing in for the download site).

The examples run shortened, as a test must, without changing what they exercise: image
sizes a line leaves out run at the small files' own size (`--content-size 0 --style-size 0`)
and sizes above 64 px at 64 px (videos too: their clips are 40x32, 3 s at 10 fps), a
`--work-size` at 16 px, the smallest; `adain
train` lines with two iterations on 32 px crops; the
Python snippet at 64 px. The torchrun lines are exercised by two-process runs in test_train and
test_dataset.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from clips import make_clip, moving_frames, read_frames
from conftest import link_or_copy, synthetic_image
from PIL import Image
from typer.testing import CliRunner
from weight_server import WeightServer

from adain_cli.cli import app
from adain_cli.inputs import expand
from adain_cli.weights import weights_dir

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
WORK_SIZE = "16"  # what every --work-size runs at: smaller than any shortened output


def shortened(words: list[str]) -> list[str]:
    """The command with the sizes a test can afford (later options win for train)."""
    if words[1] == "train":
        return [*words, "--iterations", "2", "--batch-size", "2", "--image-size", "40", "--crop-size", "32",
                "--workers", "0"]
    if words[1] not in ("stylize", "interpolate", "video", "dataset"):
        return words
    words = [str(min(int(word), LARGEST_SIZE)) if before in SIZE_OPTIONS else WORK_SIZE if before == "--work-size"
             else word for before, word in zip(["", *words], words, strict=False)]
    return words + [part for option in SIZE_OPTIONS if option not in words for part in (option, "0")]


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as picture:
        return picture.size


def video_size(path: Path) -> tuple[int, int]:
    """The first frame's size as it is shown (a display rotation of 90 degrees swaps the sides)."""
    [frame, *_] = read_frames(path)
    return (frame.height, frame.width) if frame.rotation % 180 else (frame.width, frame.height)


def stated_size(size: tuple[int, int], words: list[str]) -> tuple[int, int]:
    """What the options say an output of a content of `size` is: its shorter side --content-size
    (0: as it is; long side truncated), then a centred square with --crop."""
    width, height = size
    side = int(words[words.index("--content-size") + 1])
    if side:
        short, long = sorted(size)
        width, height = (side, int(side * long / short)) if width <= height else (int(side * long / short), side)
    return (min(width, height),) * 2 if "--crop" in words else (width, height)


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def check_stylize(words: list[str]) -> None:
    output, contents, styles = option(words, "-o"), expand(words[2]), expand(words[3])
    if output.endswith("/"):  # every combination, named <content>_stylized_<style>.<ext>
        ext = option(words, "--ext") if "--ext" in words else "png"
        made = {Path(output) / f"{c.stem}_stylized_{s.stem}.{ext}": c for c in contents for s in styles}
    else:
        made = {Path(output): contents[0]}
    for path, content in made.items():
        assert image_size(path) == stated_size(image_size(content), words), path


def check_interpolate(words: list[str]) -> None:
    cell = stated_size(image_size(Path(words[2])), words)
    output = Path(option(words, "-o"))
    if "--alpha-sweep" in words:
        made = sorted(output.iterdir())
        assert len(made) == int(option(words, "--alpha-sweep")) and {image_size(p) for p in made} == {cell}
        return
    width, height = image_size(output)
    across, down = ((int(option(words, "--steps")), 1) if "--steps" in words else
                    (int(option(words, "--grid")),) * 2 if "--grid" in words else (0, 0))
    if not across:
        assert (width, height) == cell
        return
    padding = 4  # a contact sheet: the cells in a grid with a white border; captions lengthen each cell
    assert width == across * (cell[0] + padding) + padding
    plain = down * (cell[1] + padding) + padding
    assert height > plain if "--labels" in words else height == plain


def check_video(words: list[str]) -> None:
    source = sorted(Path().glob(words[2])) if "*" in words[2] else [Path(words[2])]
    shown = image_size(source[0]) if source[0].suffix == ".png" else video_size(source[0])
    output = option(words, "-o")
    if output.endswith("/"):
        frames = sorted(Path(output).iterdir())
        assert frames and {image_size(p) for p in frames} == {stated_size(shown, words)}
    else:
        assert video_size(Path(output)) == stated_size(shown, words)


def check_dataset(words: list[str]) -> None:
    contents = [p for p in Path(words[2]).rglob("*") if p.is_file()]
    made = [p for p in Path(option(words, "-o")).rglob("*") if p.is_file() and p.suffix != ".csv"]
    if "--shard" not in words:
        assert len(made) == len(contents) * int(option(words, "--styles-per-image"))
    assert made and {image_size(p) for p in made} == {stated_size(image_size(c), words) for c in contents}


def check_outputs(words: list[str], stdout: str) -> None:
    """Each command made what it says, where it says: images of the stated size, and the files
    and reports of the commands that make no images."""
    command = words[1]
    if command in ("stylize", "interpolate", "video", "dataset"):
        {"stylize": check_stylize, "interpolate": check_interpolate, "video": check_video,
         "dataset": check_dataset}[command](words)
    elif command == "train":
        assert (Path(option(words, "--out")) / "decoder.pth").stat().st_size > 0
    elif command == "download-weights":
        folder = Path(option(words, "--dest")) if "--dest" in words else weights_dir()
        assert all((folder / name).stat().st_size > 0 for name in ("vgg_normalised.pth", "decoder.pth"))
        if "--json" in words:
            assert len([json.loads(line) for line in stdout.splitlines()]) == 2
        else:
            assert stdout.count("verified") == 2
    elif "--json" in words:
        assert json.loads(stdout)["weights_dir"] == str(weights_dir())
    else:
        assert command == "info" and "device:" in stdout


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
        check_outputs(words, result.stdout)


def test_readme_python_example_works(workdir: Path):
    for block in blocks("python"):
        assert "size=512" in block
        exec(compile(block.replace("size=512", f"size={LARGEST_SIZE}"), str(README), "exec"), {})
    assert (workdir / "photo.stylized.png").exists() and (workdir / "photo2.stylized.png").exists()


def test_readme_serve_examples_work(workdir: Path):
    """`adain serve` from the README in a process of its own, on a free port, and every curl
    example and the live client against it; then SIGTERM, which it must take as a clean stop."""
    lines = [line for block in blocks("bash") for line in logical_lines(block)]
    [serve] = [shlex.split(line) for line in lines if line.startswith("adain serve")]
    curls = [shlex.split(line) for line in lines if line.startswith("curl ")]
    assert len(curls) >= 5
    [live_client] = blocks("python3")
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
        # The live client, at the README's settings (a 256 px frame takes a second or two here).
        server = address.group(0).replace("http://", "ws://")
        exec(compile(live_client.replace("ws://127.0.0.1:8000", server), str(README), "exec"), {})
        assert [Image.open(workdir / f"live-photo{n}.jpg").format for n in ("", "2")] == ["JPEG", "JPEG"]
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        process.kill()
    assert process.returncode == 0
