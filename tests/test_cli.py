"""`adain` end to end on synthetic images with random weights: outputs, flags, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import (
    ADOBE_RGB,
    PUBLIC_DECODER_CONVS,
    PUBLIC_VGG_CONVS,
    icc_profile,
    random_state_dict,
    synthetic_image,
)
from PIL import Image, ImageChops, ImageCms
from typer.testing import CliRunner

from adain_cli import __version__, live
from adain_cli.cli import app

SMALL = ["--content-size", "0", "--style-size", "0"]


def adain(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    synthetic_image(45, 37, seed=1).save(tmp_path / "photo.png")
    synthetic_image(40, 40, seed=2).save(tmp_path / "painting.jpg")
    return tmp_path / "photo.png", tmp_path / "painting.jpg"


def one_error_line(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("adain: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def differs(a: Path, b: Path) -> bool:
    one, two = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    return one.size != two.size or ImageChops.difference(one, two).getbbox() is not None


# --- the app ---------------------------------------------------------------------------

def test_version_is_eager_and_plain():
    result = adain("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"adain-cli {__version__}"


COMMANDS = ["stylize", "interpolate", "video", "dataset", "serve", "train", "download-weights", "info"]


def test_help_lists_the_commands_that_exist():
    result = adain("--help")
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == COMMANDS
    for command in COMMANDS:
        assert adain(command, "--help").exit_code == 0


def test_show_completion_prints_the_script_for_the_shell_named(monkeypatch):
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell, not detect it
    result = adain("--show-completion", "bash")
    assert result.exit_code == 0, result.stderr
    assert "complete -o default -F _adain_completion adain" in result.stdout
    assert "_ADAIN_COMPLETE=complete_bash" in result.stdout


@pytest.mark.parametrize("typed,completed", [
    ("adain down", ["download-weights"]),
    ("adain stylize --pre", ["--precision", "--preserve-color"]),
])
def test_the_adain_command_completes_what_is_typed(typed, completed):
    """As the bash script asks it: the words so far in COMP_WORDS, the word to complete in COMP_CWORD."""
    words = typed.split()
    env = {**os.environ, "_ADAIN_COMPLETE": "complete_bash", "COMP_WORDS": typed, "COMP_CWORD": str(len(words) - 1)}
    result = subprocess.run([sys.executable, "-m", "adain_cli"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == completed


def test_python_dash_m_runs_the_same_app():
    result = subprocess.run([sys.executable, "-m", "adain_cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"adain-cli {__version__}"


# --- the main job ----------------------------------------------------------------------

def test_one_pair_writes_one_image_of_the_content_size(weights_home, pair, tmp_path):
    result = adain("stylize", *pair, "-o", tmp_path / "out.png", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (45, 37)
    assert "wrote" in result.stdout


def test_default_content_size_is_512_on_the_shorter_side(weights_home, pair, tmp_path):
    assert adain("stylize", *pair, "-o", tmp_path / "out.png", "--style-size", "0").exit_code == 0
    assert Image.open(tmp_path / "out.png").size == (int(512 * 45 / 37), 512)


def test_directories_give_every_combination(weights_home, images_dir, tmp_path):
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "out", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "out").iterdir())) == 6
    assert "6 written, 0 skipped, 0 failed" in result.stdout


def test_a_quoted_glob_selects_images(weights_home, images_dir, tmp_path):
    result = adain("stylize", str(images_dir / "content" / "c[01].png"), images_dir / "style" / "s0.jpg",
                   "-o", tmp_path / "out", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0_stylized_s0.png", "c1_stylized_s0.png"]


def test_json_prints_one_object_per_output(weights_home, images_dir, tmp_path):
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "out",
                   "--json", *SMALL)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 6 and {r["status"] for r in records} == {"written"}
    assert all(Path(r["output"]).exists() and r["seconds"] > 0 for r in records)


def test_json_reports_errors_too(weights_home, pair, tmp_path):
    (tmp_path / "bad.jpg").write_text("text")
    result = adain("stylize", tmp_path / "bad.jpg", pair[1], "-o", tmp_path / "out.png", "--json", *SMALL)
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1 and record["status"] == "failed" and "bad.jpg" in record["error"]


def test_quiet_prints_nothing_on_success(weights_home, images_dir, tmp_path):
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "o", "-q", *SMALL)
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_existing_output_is_skipped_and_reported(weights_home, pair, tmp_path):
    (tmp_path / "out.png").write_bytes(b"mine")
    result = adain("stylize", *pair, "-o", tmp_path / "out.png", *SMALL)
    assert result.exit_code == 0 and "skipped" in result.stdout and "--overwrite" in result.stdout
    assert (tmp_path / "out.png").read_bytes() == b"mine"
    assert adain("stylize", *pair, "-o", tmp_path / "out.png", "--overwrite", *SMALL).exit_code == 0
    assert Image.open(tmp_path / "out.png").size == (45, 37)


# --- every flag changes what it says -----------------------------------------------------

@pytest.mark.parametrize("flags", [
    ["--alpha", "0.3"], ["--style-size", "24"], ["--crop"], ["--preserve-color"], ["--luminance-only"],
])
def test_flags_change_the_output(weights_home, pair, tmp_path, flags):
    assert adain("stylize", *pair, "-o", tmp_path / "plain.png", *SMALL).exit_code == 0
    result = adain("stylize", *pair, "-o", tmp_path / "flagged.png", *SMALL, *flags)
    assert result.exit_code == 0, result.stderr
    assert differs(tmp_path / "plain.png", tmp_path / "flagged.png")


def test_content_size_resizes_the_output(weights_home, pair, tmp_path):
    assert adain("stylize", *pair, "-o", tmp_path / "o.png", "--content-size", "74").exit_code == 0
    assert Image.open(tmp_path / "o.png").size == (90, 74)


def test_crop_makes_square_outputs(weights_home, pair, tmp_path):
    assert adain("stylize", *pair, "-o", tmp_path / "o.png", "--crop", *SMALL).exit_code == 0
    assert Image.open(tmp_path / "o.png").size == (37, 37)


def test_ext_and_quality_pick_the_format(weights_home, images_dir, tmp_path):
    for quality in ("20", "95"):
        result = adain("stylize", images_dir / "content", images_dir / "style" / "s0.jpg",
                       "-o", tmp_path / quality, "--ext", "jpg", "--quality", quality, *SMALL)
        assert result.exit_code == 0, result.stderr
    small, large = (tmp_path / q / "c2_stylized_s0.jpg" for q in ("20", "95"))
    assert Image.open(small).format == "JPEG"
    assert small.stat().st_size < large.stat().st_size


@pytest.fixture(scope="module")
def other_home(tmp_path_factory) -> Path:
    """A weights directory holding random weights other than the shared ones."""
    home = tmp_path_factory.mktemp("other-home")
    (home / "weights").mkdir()
    torch.save(random_state_dict(PUBLIC_VGG_CONVS, seed=5), home / "weights" / "vgg_normalised.pth")
    torch.save(random_state_dict(PUBLIC_DECODER_CONVS, seed=6), home / "weights" / "decoder.pth")
    return home


def test_explicit_weight_paths_are_used(weights_home, other_home, pair, tmp_path, monkeypatch):
    assert adain("stylize", *pair, "-o", tmp_path / "usual.png", *SMALL).exit_code == 0
    monkeypatch.setenv("ADAIN_HOME", str(other_home))
    assert adain("stylize", *pair, "-o", tmp_path / "other.png", *SMALL).exit_code == 0
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path / "empty-home"))
    given = other_home / "weights"
    result = adain("stylize", *pair, "-o", tmp_path / "given.png", "--vgg", given / "vgg_normalised.pth",
                   "--decoder", given / "decoder.pth", *SMALL)
    assert result.exit_code == 0, result.stderr
    assert not differs(tmp_path / "given.png", tmp_path / "other.png")  # the files given made it
    assert differs(tmp_path / "given.png", tmp_path / "usual.png")  # and other weights would show


def test_device_cpu_is_used_even_where_cuda_would_be_chosen(weights_home, pair, tmp_path, monkeypatch):
    from adain_cli.stylizer import Stylizer

    loaded, load = [], Stylizer.from_files

    def recording(*args, **options):
        loaded.append(load(*args, **options))
        return loaded[-1]

    monkeypatch.setattr(Stylizer, "from_files", recording)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # `auto` would pick CUDA (and fail here)
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--device", "cpu", *SMALL)
    assert result.exit_code == 0, result.stderr
    [stylizer] = loaded
    assert stylizer.device == torch.device("cpu")
    assert Image.open(tmp_path / "o.png").size == (45, 37)


def test_debug_shows_the_traceback(weights_home, pair, tmp_path):
    (tmp_path / "bad.jpg").write_text("text")
    result = adain("stylize", tmp_path / "bad.jpg", pair[1], "-o", tmp_path / "o.png", "--debug", *SMALL)
    assert result.exit_code == 1 and "Traceback" in result.stderr and "bad.jpg" in result.stderr


@pytest.mark.parametrize("flags", [["--luminance-only"], ["--preserve-color"], ["--alpha", "0.5"]])
def test_photos_with_a_colour_profile_are_stylized_as_the_colours_they_show(weights_home, tmp_path, flags):
    profile = icc_profile("Adobe RGB (1998)", *ADOBE_RGB)
    srgb = ImageCms.createProfile("sRGB")
    for name, seed in (("photo", 1), ("painting", 2)):
        picture = synthetic_image(40, 32, seed=seed)
        picture.save(tmp_path / f"{name}-tagged.png", icc_profile=profile)
        shown = ImageCms.profileToProfile(picture, ImageCms.ImageCmsProfile(io.BytesIO(profile)), srgb)
        shown.save(tmp_path / f"{name}-srgb.png")
    for kind in ("tagged", "srgb"):
        result = adain("stylize", tmp_path / f"photo-{kind}.png", tmp_path / f"painting-{kind}.png",
                       "-o", tmp_path / f"out-{kind}.png", *SMALL, *flags)
        assert result.exit_code == 0, result.stderr
    assert not differs(tmp_path / "out-tagged.png", tmp_path / "out-srgb.png")


# --- usage errors: exit 2, nothing written ----------------------------------------------

@pytest.mark.parametrize("alpha", ["1.5", "-0.1", "nan"])
def test_alpha_outside_zero_to_one(weights_home, pair, tmp_path, alpha):
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--alpha", alpha)
    assert result.exit_code == 2 and "alpha" in result.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--alpha", "1.5"], "Invalid value for '--alpha'"),
    (["--quality", "0"], "Invalid value for '--quality'"),
    (["--content-size", "big"], "Invalid value for '--content-size'"),
    (["--no-such-flag"], "No such option: --no-such-flag"),
])
def test_usage_errors_typer_finds_are_one_line_too(weights_home, pair, tmp_path, args, message):
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", *args)
    assert result.exit_code == 2
    one_error_line(result, message, "see 'adain stylize --help'")
    assert "Usage:" not in result.output


def test_the_readme_quotes_a_usage_error_as_it_is_printed(weights_home, pair, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quoted = readme.split("--alpha 1.5` prints\n`")[1].split("`")[0]
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--alpha", "1.5")
    assert result.stderr.strip() == quoted


def test_a_missing_option_is_one_line(weights_home, pair):
    result = adain("stylize", *pair)
    assert result.exit_code == 2
    one_error_line(result, "Missing option '--output'")


def test_adain_alone_shows_the_help():
    result = adain()
    assert result.exit_code == 2 and "stylize" in result.output and "Usage:" in result.output


def test_the_help_and_the_readme_quote_the_same_bf16_speed_up():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    help_text = " ".join(adain("stylize", "--help").stdout.split())
    figure = help_text.split("about ")[1].split("x faster")[0]
    assert f"about {figure}\N{MULTIPLICATION SIGN} faster" in readme  # as the README writes it


def test_missing_content_file(weights_home, pair, tmp_path):
    result = adain("stylize", tmp_path / "nope.jpg", pair[1], "-o", tmp_path / "o.png")
    assert result.exit_code == 2
    one_error_line(result, "nope.jpg", "no such file or directory")


def test_directory_with_no_images(weights_home, pair, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    result = adain("stylize", tmp_path / "empty", pair[1], "-o", tmp_path / "out")
    assert result.exit_code == 2
    one_error_line(result, "empty", "directory has no images")


def test_glob_matching_nothing(weights_home, pair, tmp_path):
    result = adain("stylize", str(tmp_path / "*.tif"), pair[1], "-o", tmp_path / "out")
    assert result.exit_code == 2
    one_error_line(result, "pattern matches no image files")


def test_output_equal_to_an_input_is_refused(weights_home, pair):
    before = pair[0].read_bytes()
    result = adain("stylize", *pair, "-o", pair[0], "--overwrite")
    assert result.exit_code == 2
    one_error_line(result, "photo.png", "refusing to overwrite an input")
    assert pair[0].read_bytes() == before


def test_unwritable_output_location(weights_home, images_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "file" / "out")
    assert result.exit_code == 2
    one_error_line(result, "cannot create output directory")


@pytest.mark.parametrize("flag", ["--keep-alive", "--header-timeout", "--body-timeout", "--max-fps", "--stream-idle"])
def test_serve_timeouts_and_rates_are_checked_by_the_servers_own_rule(weights_home, monkeypatch, flag):
    def never(*args, **options):
        raise AssertionError("the server started with a timeout of 0")

    monkeypatch.setattr("adain_cli.web.serve_forever", never)
    result = adain("serve", "--port", "0", flag, "0")
    assert result.exit_code == 2
    one_error_line(result, f"{flag} must be positive, got 0.0")


def test_serve_takes_its_live_limits_into_the_app(weights_home, monkeypatch):
    from adain_cli import web

    seen = {}
    create_app = web.create_app
    monkeypatch.setattr("adain_cli.web.create_app",
                        lambda engine, library, options: seen.update(options=options) or create_app(engine, library,
                                                                                                   options))
    monkeypatch.setattr("adain_cli.web.serve_forever", lambda app, listener, **options: seen.update(options))
    result = adain("serve", "--port", "0", "--max-streams", "2", "--max-fps", "12.5", "--stream-idle", "9",
                   "--max-upload-mb", "1", "--quiet")
    assert result.exit_code == 0, result.stderr
    # A frame is an upload: within --max-upload-mb; the transport's bound follows.
    assert seen["options"].live == live.StreamLimits(max_frame=2**20, max_fps=12.5, idle=9, max_streams=2)
    assert seen["max_message"] == seen["options"].live.max_message


def test_both_colour_modes_at_once_is_a_usage_error(weights_home, pair, tmp_path):
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--preserve-color", "--luminance-only")
    assert result.exit_code == 2 and "--preserve-color" in result.stderr


def test_bad_device_fails_before_any_work(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path / "no-weights-here"))
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--device", "tpu9")
    assert result.exit_code == 2
    one_error_line(result, "unknown device 'tpu9'")


def test_unavailable_cuda_is_a_usage_error(weights_home, pair, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--device", "cuda")
    assert result.exit_code == 2
    one_error_line(result, "CUDA is not available")


# --- weights: exit 3 -------------------------------------------------------------------

def test_missing_weights_offline_name_the_command_that_gets_them(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path / "home"))
    result = adain("stylize", *pair, "-o", tmp_path / "o.png")  # ADAIN_OFFLINE=1 in every test
    assert result.exit_code == 3
    one_error_line(result, "not found", "offline mode is on", "run `adain download-weights`")


def test_offline_flag_forbids_downloading(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ADAIN_OFFLINE")
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--offline")
    assert result.exit_code == 3
    one_error_line(result, "offline mode is on", "adain download-weights")


def test_wrong_weights_file_is_named(weights, pair, tmp_path):
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--vgg", weights[1], "--decoder", weights[1])
    assert result.exit_code == 3
    one_error_line(result, "decoder.pth", "not the expected layout")


# --- bad inputs: exit 1, one line each, the other pairs still written ---------------------

def bad_input_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    synthetic_image(64, 64).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    synthetic_image(12, 40).save(tmp_path / "tiny.png")
    from test_images import png_claiming_size
    png_claiming_size(tmp_path / "bomb.png", 40_000, 40_000)
    return {
        "zero": (tmp_path / "zero.jpg", "empty file"),
        "text": (tmp_path / "text.jpg", "not an image file"),
        "truncated": (tmp_path / "cut.jpg", "corrupt or truncated"),
        "tiny": (tmp_path / "tiny.png", "at least 16 px"),
        "bomb": (tmp_path / "bomb.png", "possible decompression bomb"),
    }


@pytest.mark.parametrize("case", ["zero", "text", "truncated", "tiny", "bomb"])
def test_bad_content_file_is_one_line_and_exit_1(weights_home, pair, tmp_path, case):
    path, reason = bad_input_cases(tmp_path)[case]
    result = adain("stylize", path, pair[1], "-o", tmp_path / "o.png", *SMALL)
    assert result.exit_code == 1
    one_error_line(result, str(path), reason)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("case", ["text", "tiny"])
def test_bad_style_file_is_one_line_and_exit_1(weights_home, pair, tmp_path, case):
    path, reason = bad_input_cases(tmp_path)[case]
    result = adain("stylize", pair[0], path, "-o", tmp_path / "o.png", *SMALL)
    assert result.exit_code == 1
    one_error_line(result, str(path), reason)


def test_max_pixels_allows_larger_images(weights_home, pair, tmp_path):
    result = adain("stylize", *pair, "-o", tmp_path / "o.png", "--max-pixels", "1000", *SMALL)
    assert result.exit_code == 1 and "over the limit of 1,000" in result.stderr
    bomb = bad_input_cases(tmp_path)["bomb"][0]
    result = adain("stylize", bomb, pair[1], "-o", tmp_path / "o.png", "--max-pixels", "0", *SMALL)
    assert result.exit_code == 1 and "corrupt or truncated" in result.stderr  # the size check passed


def test_a_batch_with_failures_writes_the_rest_and_exits_1(weights_home, images_dir, tmp_path):
    (images_dir / "content" / "c0.png").write_bytes(b"")
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "out", *SMALL)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 2  # one line per failed pair
    assert len(list((tmp_path / "out").iterdir())) == 4


def test_running_out_of_memory_on_one_content_fails_it_alone_with_one_line(weights_home, images_dir, tmp_path,
                                                                            monkeypatch):
    from test_batch import CPU_OUT_OF_MEMORY, encoder_failing

    encoder_failing(monkeypatch, lambda image: tuple(image.shape[-2:]) == (48, 40), CPU_OUT_OF_MEMORY)  # c1
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "out", *SMALL)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("adain: error: ") and "c1.png: out of memory" in line
                                   for line in lines)
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"c{c}_stylized_s{s}.png" for c in (0, 2) for s in (0, 1)]


def test_ctrl_c_exits_130_keeping_finished_outputs(weights_home, images_dir, tmp_path, monkeypatch):
    from adain_cli import images

    real_save, saved = images.save_image, []
    one_at_a_time = threading.Lock()  # outputs are saved on two threads: exactly one save may succeed

    def save_then_interrupt(image, path, quality=95):
        with one_at_a_time:
            if saved:
                raise KeyboardInterrupt
            real_save(image, path, quality)
            saved.append(path)

    monkeypatch.setattr(images, "save_image", save_then_interrupt)
    result = adain("stylize", images_dir / "content", images_dir / "style", "-o", tmp_path / "out", *SMALL)
    assert result.exit_code == 130
    one_error_line(result, "interrupted")
    assert sorted((tmp_path / "out").iterdir()) == saved


def test_sigterm_stops_stylize_as_ctrl_c_does_with_nothing_partial(weights_home: Path, tmp_path: Path):
    import signal
    import time

    (tmp_path / "content").mkdir()
    for i in range(40):
        synthetic_image(96, 96, seed=i).save(tmp_path / "content" / f"c{i:02d}.png")
    synthetic_image(64, 64, seed=99).save(tmp_path / "s.png")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "adain_cli", "stylize", str(tmp_path / "content"),
                                str(tmp_path / "s.png"), "-o", str(out), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "ADAIN_HOME": str(weights_home)})
    deadline = time.monotonic() + 60
    while not list(out.glob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    written = sorted(p.name for p in out.iterdir())
    assert 0 < len(written) < 40 and all(name.endswith(".png") and not name.startswith(".") for name in written)
