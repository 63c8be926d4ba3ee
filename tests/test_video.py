"""`adain video` on tiny synthetic clips: timing, sound, orientation, size, styles over time,
steady frames, and every kind of bad input."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import NTSC, audio_seconds, make_clip, moving_frames, read_frames, rgb, streams
from conftest import synthetic_image
from PIL import Image
from test_cli import adain, one_error_line

from adain_cli import media, steady, video
from adain_cli.errors import UsageError
from adain_cli.model import FeatureStats

SMALL_STYLE = ["--style-size", "0"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips shared by the module's tests (read-only): 8 frames at 29.97 fps with sound, a phone
    clip rotated 90 degrees, an odd-sized clip, a variable-rate clip, and two paintings."""
    root = tmp_path_factory.mktemp("clips")
    make_clip(root / "clip.mp4", moving_frames(8, 48, 32), audio_seconds=8 / NTSC)
    make_clip(root / "phone.mp4", moving_frames(4, 48, 32, seed=2), rotation=90)
    make_clip(root / "odd.mkv", moving_frames(4, 37, 29, seed=3), pix_fmt="yuv444p")
    make_clip(root / "vfr.mkv", moving_frames(5, 32, 32, seed=4), rate=Fraction(25),
              time_base=Fraction(1, 1000), pts=[0, 40, 120, 130, 300])
    synthetic_image(40, 36, seed=7).save(root / "a.png")
    synthetic_image(36, 44, seed=8).save(root / "b.png")
    return root


@pytest.fixture
def run_video(weights_home: Path, tmp_path: Path):
    def run(*args: str | Path):
        return adain("video", *args, *SMALL_STYLE)
    return run


def frame_times(path: Path) -> list[float]:
    return [round(float(f.time), 4) for f in read_frames(path)]


# --- media kept --------------------------------------------------------------------------------

def test_a_clip_keeps_its_frames_timestamps_duration_and_sound(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "styled.mp4"
    result = run_video(clips / "clip.mp4", clips / "a.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}: 8 frames" in result.stdout
    assert frame_times(out) == frame_times(clips / "clip.mp4")  # 29.97 stays 29.97: 0, 0.0334, ...
    assert streams(out) == {"video": "h264", "audio": "aac"}
    assert abs(audio_seconds(out) - audio_seconds(clips / "clip.mp4")) < 1e-6  # copied, not re-encoded
    with av.open(str(out)) as container, av.open(str(clips / "clip.mp4")) as source:
        assert abs(container.duration - source.duration) <= av.time_base / 29  # within a frame
        assert container.streams.video[0].average_rate == NTSC


def test_a_phone_clip_comes_out_upright_and_untagged(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "phone.mp4"
    assert run_video(clips / "phone.mp4", clips / "a.png", "-o", out).exit_code == 0
    frames = read_frames(out)
    assert (frames[0].width, frames[0].height, frames[0].rotation) == (32, 48, 0)


def test_an_odd_sized_clip_keeps_its_exact_size_in_yuv444(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "odd.mp4"
    result = run_video(clips / "odd.mkv", clips / "a.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    frame = read_frames(out)[0]
    assert (frame.width, frame.height, frame.format.name) == (37, 29, "yuv444p")
    assert "odd-sized" in result.stderr


def test_asking_for_yuv420p_at_an_odd_size_is_a_usage_error(clips: Path, run_video, tmp_path: Path):
    result = run_video(clips / "odd.mkv", clips / "a.png", "-o", tmp_path / "odd.mp4", "--pix-fmt", "yuv420p")
    assert result.exit_code == 2
    one_error_line(result, "libx264 cannot encode 37x29 yuv420p")


def test_variable_frame_rate_stays_variable(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "vfr.mkv"
    assert run_video(clips / "vfr.mkv", clips / "a.png", "-o", out).exit_code == 0
    assert frame_times(out) == [0.0, 0.04, 0.12, 0.13, 0.3]


def test_content_size_sizes_frames_as_stylize_sizes_stills(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "small.mkv"
    assert run_video(clips / "clip.mp4", clips / "a.png", "-o", out, "--content-size", "20").exit_code == 0
    frame = read_frames(out)[0]
    assert (frame.width, frame.height) == (30, 20)


def test_colour_tags_are_carried_over(run_video, clips: Path, tmp_path: Path):
    tags = {"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1}  # BT.709, TV range
    source = make_clip(tmp_path / "hd.mkv", moving_frames(3, 32, 32), color=tags)
    out = tmp_path / "hd-styled.mkv"
    assert run_video(source, clips / "a.png", "-o", out).exit_code == 0
    frame = read_frames(out)[0]
    assert (int(frame.color_range), int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc)) \
        == (1, 1, 1, 1)


def test_webm_takes_opus_so_aac_sound_is_reencoded_and_said(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "styled.webm"
    result = run_video(clips / "clip.mp4", clips / "a.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert streams(out) == {"video": "vp9", "audio": "opus"}
    assert "re-encoded as opus" in result.stderr
    assert abs(audio_seconds(out) - audio_seconds(clips / "clip.mp4")) < 0.05


def test_subtitles_are_dropped_with_one_notice(run_video, clips: Path, tmp_path: Path):
    source = tmp_path / "subtitled.mkv"
    with av.open(str(source), "w") as container:
        picture = container.add_stream("libx264", rate=25)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        container.add_stream("ass")
        for i, pixels in enumerate(moving_frames(3, 32, 32)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
    result = run_video(source, clips / "a.png", "-o", tmp_path / "o.mkv")
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "subtitle" in line]
    assert len(notes) == 1 and "not carried over" in notes[0]
    assert set(streams(tmp_path / "o.mkv")) == {"video"}


def test_no_audio_drops_the_sound(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "silent.mp4"
    assert run_video(clips / "clip.mp4", clips / "a.png", "-o", out, "--no-audio").exit_code == 0
    assert streams(out) == {"video": "h264"}


@pytest.mark.parametrize(("codec", "suffix", "expected"), [
    ("hevc", ".mp4", "hevc"), ("av1", ".mkv", "libdav1d"), ("prores", ".mov", "prores"), ("ffv1", ".mkv", "ffv1"),
])
def test_other_codecs(codec: str, suffix: str, expected: str, clips: Path, run_video, tmp_path: Path):
    out = tmp_path / f"styled{suffix}"
    result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", out, "--codec", codec)
    assert result.exit_code == 0, result.stderr
    assert streams(out)["video"] == expected and len(read_frames(out)) == 5


def test_ffv1_is_lossless_against_the_png_frames(clips: Path, run_video, tmp_path: Path):
    run_video(clips / "vfr.mkv", clips / "a.png", "-o", tmp_path / "lossless.mkv", "--codec", "ffv1")
    run_video(clips / "vfr.mkv", clips / "a.png", "-o", f"{tmp_path / 'frames'}/")
    first = np.asarray(Image.open(tmp_path / "frames" / "frame_000001.png"))
    assert np.array_equal(rgb(read_frames(tmp_path / "lossless.mkv")[0]), first)


def test_crf_and_preset_reach_the_encoder(clips: Path, run_video, tmp_path: Path):
    small, big = tmp_path / "small.mp4", tmp_path / "big.mp4"
    assert run_video(clips / "clip.mp4", clips / "a.png", "-o", small, "--crf", "45", "--preset", "veryfast",
                     "--no-audio").exit_code == 0
    assert run_video(clips / "clip.mp4", clips / "a.png", "-o", big, "--crf", "5", "--no-audio").exit_code == 0
    assert small.stat().st_size < big.stat().st_size


@pytest.mark.parametrize(("name", "options", "message"), [
    ("o.webm", ["--codec", "nosuch"], "no such encoder"),
    ("o.webm", ["--codec", "prores"], "cannot hold prores_ks"),
    ("o.webm", ["--codec", "h264"], "cannot hold libx264"),
    ("o.webm", ["--preset", "fast"], "libvpx-vp9 has no presets"),
    ("o.mp4", ["--preset", "warp-speed"], "cannot encode"),
    ("o.mkv", ["--codec", "ffv1", "--crf", "10"], "ffv1 has no constant-quality setting"),
])
def test_encoder_choices_that_cannot_work_fail_before_any_work(name: str, options: list[str], message: str,
                                                              clips: Path, run_video, tmp_path: Path):
    result = run_video(clips / "clip.mp4", clips / "a.png", "-o", tmp_path / name, *options)
    assert result.exit_code == 2
    one_error_line(result, message)
    assert list(tmp_path.iterdir()) == [tmp_path / "adain-home"]  # no probe or partial file left


def test_frames_folder_out_and_in(clips: Path, run_video, tmp_path: Path):
    result = run_video(clips / "clip.mp4", clips / "a.png", "-o", f"{tmp_path / 'frames'}/")
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(1, 9)]
    assert "carry no sound" in result.stderr
    back = tmp_path / "back.mp4"
    assert run_video(str(tmp_path / "frames" / "*.png"), clips / "a.png", "-o", back, "--fps", "12.5").exit_code == 0
    assert frame_times(back) == [i / 12.5 for i in range(8)]


def test_an_animated_gif_is_a_video(run_video, clips: Path, tmp_path: Path):
    pictures = [Image.fromarray(f) for f in moving_frames(3, 32, 24)]
    pictures[0].save(tmp_path / "anim.gif", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    out = tmp_path / "anim.mp4"
    assert run_video(tmp_path / "anim.gif", clips / "a.png", "-o", out).exit_code == 0
    assert frame_times(out) == [0.0, 0.1, 0.2]


def test_a_segment_is_cut_from_start_for_duration(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "part.mp4"
    result = run_video(clips / "clip.mp4", clips / "a.png", "-o", out, "--start", "0.1", "--duration", "0:00.1")
    assert result.exit_code == 0, result.stderr
    times = frame_times(out)
    assert times[0] == 0.0 and len(times) == 3  # the frames at 0.1001, 0.1335, 0.1668 s
    assert 0.09 < audio_seconds(out) < 0.16


@pytest.mark.parametrize(("text", "seconds"), [("12.5", 12.5), ("1:02.5", 62.5), ("0:07", 7.0), (".5", 0.5)])
def test_times_read_as_seconds_or_minutes(text: str, seconds: float):
    assert media.parse_time(text, "--start") == seconds


@pytest.mark.parametrize("text", ["-1", "1:75", "soon", "1:2:3"])
def test_bad_times_are_usage_errors(text: str):
    with pytest.raises(UsageError, match="--start"):
        media.parse_time(text, "--start")


def test_json_prints_one_summary_object(clips: Path, run_video, tmp_path: Path):
    result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", tmp_path / "o.mp4", "--json")
    summary = json.loads(result.stdout)
    assert summary["input"] == str(clips / "vfr.mkv") and summary["output"] == str(tmp_path / "o.mp4")
    assert summary["frames"] == 5 and summary["status"] == "written" and summary["frames_per_second"] > 0
    assert summary["error"] is None and summary["seconds"] > 0


def test_an_existing_output_is_kept_unless_overwrite(clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", out)
    assert result.exit_code == 0 and "skipped" in result.stdout and out.read_bytes() == b"precious"
    assert run_video(clips / "vfr.mkv", clips / "a.png", "-o", out, "--overwrite").exit_code == 0
    assert len(read_frames(out)) == 5


# --- the same pipeline as stills -----------------------------------------------------------------

def test_with_smooth_0_each_frame_is_adain_stylize_of_that_frame(clips: Path, run_video, tmp_path: Path):
    frames = tmp_path / "in"
    frames.mkdir()
    for i, pixels in enumerate(moving_frames(4, 40, 32)):
        Image.fromarray(pixels).save(frames / f"f{i}.png")
    options = ["--alpha", "0.7", "--luminance-only"]
    assert run_video(frames, clips / "a.png", "-o", f"{tmp_path / 'video'}/", "--smooth", "0",
                     *options).exit_code == 0
    assert adain("stylize", frames, clips / "a.png", "-o", tmp_path / "stills", "--content-size", "0",
                 *SMALL_STYLE, *options).exit_code == 0
    for i in range(4):
        ours = np.asarray(Image.open(tmp_path / "video" / f"frame_{i + 1:06d}.png"), dtype=int)
        still = np.asarray(Image.open(tmp_path / "stills" / f"f{i}_stylized_a.png"), dtype=int)
        assert np.abs(ours - still).max() <= 1  # float rounding: frames may be batched


def test_weights_mix_styles_as_interpolate_does(clips: Path, run_video, tmp_path: Path):
    run_video(clips / "vfr.mkv", clips / "a.png", clips / "b.png", "-w", "1,0", "-o", f"{tmp_path / 'mix'}/")
    run_video(clips / "vfr.mkv", clips / "a.png", "-o", f"{tmp_path / 'one'}/")
    run_video(clips / "vfr.mkv", clips / "a.png", clips / "b.png", "-o", f"{tmp_path / 'even'}/")
    one = Image.open(tmp_path / "one" / "frame_000003.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mix" / "frame_000003.png")), np.asarray(one))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "even" / "frame_000003.png")), np.asarray(one))


def test_keyframes_hold_before_the_first_and_after_the_last(clips: Path, run_video, tmp_path: Path):
    # vfr.mkv shows frames at 0, 0.04, 0.12, 0.13, 0.3 s
    assert run_video(clips / "vfr.mkv", "-k", f"0.05:{clips / 'a.png'}", "-k", f"0.125:{clips / 'b.png'}",
                     "-o", f"{tmp_path / 'keys'}/", "--smooth", "0").exit_code == 0
    for style in ("a", "b"):
        run_video(clips / "vfr.mkv", clips / f"{style}.png", "-o", f"{tmp_path / style}/", "--smooth", "0")

    def frame(folder: str, n: int) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / folder / f"frame_{n:06d}.png"))

    assert np.array_equal(frame("keys", 1), frame("a", 1)) and np.array_equal(frame("keys", 2), frame("a", 2))
    assert np.array_equal(frame("keys", 4), frame("b", 4)) and np.array_equal(frame("keys", 5), frame("b", 5))
    assert not np.array_equal(frame("keys", 3), frame("a", 3)) and not np.array_equal(frame("keys", 3), frame("b", 3))


def test_keyframe_syntax():
    keys = video.parse_keyframes(["0:a.jpg,4.5:b.jpg", "1:30:c d.jpg"])
    assert [(k.time, str(k.style)) for k in keys] == [(0.0, "a.jpg"), (4.5, "b.jpg"), (90.0, "c d.jpg")]
    for bad, message in ((["0:a.jpg"], "at least two"), (["2:a.jpg,1:b.jpg"], "must increase"),
                         (["a.jpg,b.jpg"], "TIME:STYLE")):
        with pytest.raises(UsageError, match=message):
            video.parse_keyframes(bad)


def test_easing_starts_and_ends_gently():
    assert video.ease(0) == 0 and video.ease(1) == 1 and video.ease(0.5) == 0.5
    assert video.ease(0.05) < 0.05 and video.ease(0.95) > 0.95


def test_a_style_video_styles_frame_i_with_its_frame_i_and_loops(run_video, tmp_path: Path):
    still = np.asarray(synthetic_image(32, 32, seed=1))
    content = make_clip(tmp_path / "static.mkv", [still] * 5, codec="ffv1", pix_fmt="bgr0")
    styles = [np.asarray(synthetic_image(32, 32, seed=s)) for s in (5, 6)]
    style_video = make_clip(tmp_path / "style.mkv", styles, codec="ffv1", pix_fmt="bgr0")
    assert run_video(content, style_video, "-o", f"{tmp_path / 'out'}/", "--smooth", "0").exit_code == 0
    out = [np.asarray(Image.open(tmp_path / "out" / f"frame_{n:06d}.png")) for n in range(1, 6)]
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[2], out[4]) and np.array_equal(out[1], out[3])
    assert not np.array_equal(out[0], out[1])


# --- steady frames -------------------------------------------------------------------------------

def stats(mean: float, std: float) -> FeatureStats:
    return FeatureStats(torch.full((1, 4, 1, 1), mean), torch.full((1, 4, 1, 1), std))


def test_smoothing_averages_small_changes_with_a_time_constant():
    smooth = steady.Steady(tau=1.0)
    assert smooth(stats(1.0, 1.0), 0.0).mean[0, 0, 0, 0].item() == 1.0
    follow = smooth(stats(1.2, 1.0), 1.0)  # one time constant later: 1 - 1/e of the way
    assert follow.mean[0, 0, 0, 0].item() == pytest.approx(1.0 + 0.2 * (1 - 1 / np.e), abs=1e-6)


def test_smoothing_restarts_at_a_cut():
    smooth = steady.Steady(tau=10.0)
    smooth(stats(1.0, 1.0), 0.0)
    assert smooth(stats(5.0, 3.0), 0.04).mean[0, 0, 0, 0].item() == 5.0 and smooth.cuts == 1


def test_smooth_0_leaves_each_frame_its_own_statistics():
    own = stats(3.0, 2.0)
    assert steady.Steady(0)(own, 0.0) is own


def crossing(count: int = 6) -> list[np.ndarray]:
    """A still scene with sensor noise and a dark object crossing it."""
    rng = np.random.default_rng(0)
    still = np.asarray(synthetic_image(48, 32, seed=3)).astype(float)
    frames = []
    for i in range(count):
        frame = np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
        frame[12:20, max(8 * i - 8, 0):8 * i] = (30, 30, 40)
        frames.append(frame)
    return frames


def test_smoothed_statistics_change_less_from_frame_to_frame(stylizer):
    # The object shifts each frame's statistics, and with them the colours of everything else.
    own = [stylizer.encode_content(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255).stats
           for f in crossing()]
    smooth = steady.Steady(tau=1.0)
    steadied = [smooth(s, i / 25) for i, s in enumerate(own)]

    def drift(series: list[FeatureStats]) -> float:
        return sum(float((b.mean - a.mean).abs().mean()) for a, b in itertools.pairwise(series))

    assert smooth.cuts == 0 and drift(steadied) < 0.5 * drift(own)


def test_smooth_reaches_the_pipeline(run_video, clips: Path, tmp_path: Path):
    source = make_clip(tmp_path / "crossing.mkv", crossing(), codec="ffv1", pix_fmt="bgr0")
    for value in ("0", "1"):
        assert run_video(source, clips / "a.png", "-o", f"{tmp_path / value}/", "--smooth", value).exit_code == 0
    first = [np.asarray(Image.open(tmp_path / value / "frame_000001.png")) for value in ("0", "1")]
    last = [np.asarray(Image.open(tmp_path / value / "frame_000006.png")) for value in ("0", "1")]
    assert np.array_equal(*first)  # the first frame has only its own statistics
    assert not np.array_equal(*last)


# --- bad input and faults ------------------------------------------------------------------------

def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    (folder / "text.mp4").write_text("not a video\n")
    whole = make_clip(folder / "whole.mp4", moving_frames(4, 32, 32)).read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    with av.open(str(folder / "sound.m4a"), "w") as container:
        sound = container.add_stream("aac", rate=44100, layout="mono")
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 44100, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    with av.open(str(folder / "empty.mkv"), "w") as container:  # a video stream with no frames in it
        picture = container.add_stream("libx264", rate=25)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        sound = container.add_stream("aac", rate=44100, layout="mono")
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    mkv = make_clip(folder / "h264.mkv", moving_frames(2, 32, 32)).read_bytes()
    (folder / "unknown.mkv").write_bytes(mkv.replace(b"V_MPEG4/ISO/AVC", b"V_ZZZZZ/ISO/ZZZ"))
    return {
        "not a video": (folder / "text.mp4", "not a readable video"),
        "truncated": (folder / "truncated.mp4", "not a readable video"),
        "sound only": (folder / "sound.m4a", "has no video stream (found audio)"),
        "zero frames": (folder / "empty.mkv", "has no video frames"),
        "unknown codec": (folder / "unknown.mkv", "cannot be decoded by this FFmpeg build"),
    }


@pytest.mark.parametrize("case", ["not a video", "truncated", "sound only", "zero frames", "unknown codec"])
def test_unusable_inputs_are_one_line_errors_and_write_nothing(case: str, run_video, clips: Path, tmp_path: Path):
    (tmp_path / "bad").mkdir()
    path, message = bad_inputs(tmp_path / "bad")[case]
    out = tmp_path / "out" / "o.mp4"
    result = run_video(path, clips / "a.png", "-o", out)
    assert result.exit_code == 1
    one_error_line(result, str(path), message)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def damaged_clip(path: Path) -> Path:
    """Motion JPEG in AVI with the sixth frame's data overwritten: a decode error at 0.2 s."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(10)]
    data = bytearray(make_clip(path, frames, codec="mjpeg", pix_fmt="yuvj420p", rate=Fraction(25)).read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[starts[5] + 2:starts[5] + 200] = bytes(198)
    path.write_bytes(bytes(data))
    return path


def test_a_decode_error_mid_stream_stops_naming_the_time(run_video, clips: Path, tmp_path: Path):
    source = damaged_clip(tmp_path / "damaged.avi")
    out = tmp_path / "o.mp4"
    result = run_video(source, clips / "a.png", "-o", out)
    assert result.exit_code == 1
    one_error_line(result, str(source), "at 0.200 s", "--skip-bad-frames")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adain-home", "damaged.avi"]  # no partial file


def test_skip_bad_frames_goes_on_and_says_which(run_video, clips: Path, tmp_path: Path):
    source = damaged_clip(tmp_path / "damaged.avi")
    result = run_video(source, clips / "a.png", "-o", tmp_path / "o.mp4", "--skip-bad-frames")
    assert result.exit_code == 0, result.stderr
    assert len(read_frames(tmp_path / "o.mp4")) == 9 and "left out 1 frame(s)" in result.stderr


def test_an_unwritable_output_is_a_one_line_error(run_video, clips: Path, tmp_path: Path):
    (tmp_path / "a-file").write_text("")
    result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", tmp_path / "a-file" / "o.mp4")
    assert result.exit_code == 2
    one_error_line(result, "cannot create output directory")


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "o.txt"], "not a video file name"),
    (["-o", "o.mp4", "--smooth", "-1"], "--smooth"),
    (["-o", "o.mp4", "-w", "1,2"], "interpolation needs at least two styles"),
    (["-o", "o.mp4", "--fps", "30"], "--fps sets the rate of a folder of frames"),
    (["-o", "o.mp4", "-k", "0:x.png,1:y.png"], "either as STYLE arguments or in --keyframes"),
])
def test_options_that_cannot_work_are_usage_errors(args: list[str], message: str, run_video, clips: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = run_video(clips / "vfr.mkv", clips / "a.png", *args)
    assert result.exit_code == 2
    one_error_line(result, message)


def test_the_output_may_not_be_the_input(run_video, clips: Path, tmp_path: Path):
    source = make_clip(tmp_path / "in.mp4", moving_frames(2, 32, 32))
    result = run_video(source, clips / "a.png", "-o", source, "--overwrite")
    assert result.exit_code == 2
    one_error_line(result, "refusing to overwrite an input")


def test_without_pyav_video_says_what_to_install(run_video, clips: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    import adain_cli

    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets when PyAV is not installed
    for name in ("video", "media"):
        monkeypatch.delitem(sys.modules, f"adain_cli.{name}")
        monkeypatch.delattr(adain_cli, name)
    result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 2
    one_error_line(result, "needs PyAV: pip install av")


def test_interrupting_leaves_no_partial_output_and_the_old_one_intact(weights_home: Path, tmp_path: Path):
    source = make_clip(tmp_path / "long.mkv", moving_frames(150, 48, 48), rate=Fraction(25))
    synthetic_image(32, 32, seed=2).save(tmp_path / "s.png")
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    command = [sys.executable, "-m", "adain_cli", "video", str(source), str(tmp_path / "s.png"), "-o", str(out),
               "--overwrite", "--style-size", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "ADAIN_HOME": str(weights_home)})
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".o.*.partial.mp4")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adain-home", "long.mkv", "o.mp4", "s.png"]
