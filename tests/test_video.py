"""`adain video` on tiny synthetic clips: timing, sound, orientation, size, styles over time,
steady frames, and every kind of bad input."""

from __future__ import annotations

import itertools
import json
import os
import shutil
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
from clips import (
    HLG,
    NTSC,
    PQ,
    Track,
    audio_seconds,
    hlg_signal,
    make_clip,
    make_hdr_clip,
    make_repeated_clip,
    make_ts_clip,
    moving_frames,
    pq_signal,
    read_frames,
    rgb,
    streams,
)
from conftest import synthetic_image
from PIL import Image
from test_cli import adain, one_error_line

from adain_cli import atomic, media, steady, video
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
    assert summary["error"] is None and summary["seconds"] > 0 and summary["repeated_frames"] == []


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
    # Long enough that it is still running when the signal comes, however fast the machine.
    source = make_clip(tmp_path / "long.mkv", moving_frames(600, 48, 48), rate=Fraction(25))
    synthetic_image(32, 32, seed=2).save(tmp_path / "s.png")
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    command = [sys.executable, "-m", "adain_cli", "video", str(source), str(tmp_path / "s.png"), "-o", str(out),
               "--overwrite", "--style-size", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "ADAIN_HOME": str(weights_home)})
    # The sink's temporary, not the write probe (named alike, gone at once): one seen twice, 0.3 s apart.
    deadline, seen = time.monotonic() + 60, set()
    while time.monotonic() < deadline:
        now = {p.name for p in tmp_path.glob(".o.mp4.*.tmp")}
        if now & seen:
            break
        seen = now
        time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, (stdout, stderr, seen, time.monotonic() - deadline + 60)
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adain-home", "long.mkv", "o.mp4", "s.png"]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def open_sink(source: Path, target: Path) -> tuple[media.VideoSource, media.VideoSink]:
    """A video write in progress: the source's frames go to `target` as they are read."""
    clip = media.VideoSource(source)
    info = clip.info
    encoding = media.Encoding().resolve(target, info.width, info.height, info.rate, info.audio, source)
    return clip, media.VideoSink(target, info, encoding, info.width, info.height)


# Writes a video until its temporary file is on disk, then dies as after a power cut: no clean-up runs.
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from test_video import open_sink, temporaries
clip, sink = open_sink(Path(sys.argv[1]), Path(sys.argv[2]))
for frame in clip.frames():
    sink.write(frame, frame.pixels)
    if temporaries(Path(sys.argv[2]).parent):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_temporary_is_removed_by_the_next_run_and_a_live_runs_is_not(
    clips: Path, run_video, tmp_path: Path
):
    out = tmp_path / "out"
    out.mkdir()
    long_clip = make_clip(tmp_path / "long.mkv", moving_frames(120, 32, 32), rate=Fraction(25))
    path = os.pathsep.join([str(Path(media.__file__).parents[1]), str(Path(__file__).parent)])  # this adain_cli
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(long_clip), str(out / "o.mp4")],
                            env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [stale] = temporaries(out)
    clip, live = open_sink(clips / "clip.mp4", out / "p.mp4")  # another output's write, under way
    frames = list(clip.frames())
    live.write(frames[0], frames[0].pixels)
    try:
        result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", out / "o.mp4", "--json", "--content-size", "0")
        assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "written"  # the stale file is no output
        assert stale not in temporaries(out) and len(temporaries(out)) == 1  # the live write's alone
        for frame in frames[1:]:
            live.write(frame, frame.pixels)
        live.commit()
    finally:
        clip.close()
    assert temporaries(out) == [] and sorted(p.name for p in out.iterdir()) == ["o.mp4", "p.mp4"]
    assert len(read_frames(out / "o.mp4")) == 5 and len(read_frames(out / "p.mp4")) == 8


def test_a_killed_runs_frames_folder_is_removed_by_the_next_run_and_not_taken_for_the_output(
    clips: Path, run_video, tmp_path: Path
):
    stale = atomic.temporary_for(tmp_path / "frames")  # where a killed run was writing its frames
    stale.mkdir()
    Image.fromarray(moving_frames(1, 32, 32)[0]).save(stale / "frame_000001.png")
    elsewhere = atomic.temporary_for(tmp_path / "other.mp4")  # another run's, in progress
    elsewhere.write_bytes(b"")
    result = run_video(clips / "vfr.mkv", clips / "a.png", "-o", f"{tmp_path / 'frames'}/", "--json",
                       "--content-size", "0")
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "written"
    assert not stale.exists() and elsewhere.exists()
    assert len(list((tmp_path / "frames").glob(media.FRAME_FILES))) == 5


# --- the cases people bring (issue 19) ---------------------------------------------------------

def one_notice(stderr: str, *parts: str) -> str:
    lines = [line for line in stderr.splitlines() if all(part in line for part in parts)]
    assert len(lines) == 1, stderr
    return lines[0]


def adain_process(args: list[str | Path], home: Path, *, read_only: Path | None = None,
                  unprivileged: bool = False) -> subprocess.CompletedProcess:
    """`adain` in a process of its own, offline with no weights (so a check that comes too late
    fails differently): over a read-only mount at `read_only` (a user namespace lets anyone
    mount one), or without root's power to write anywhere (CAP_DAC_OVERRIDE) when run as root."""
    command = [sys.executable, "-m", "adain_cli", *map(str, args)]
    if read_only is not None:
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare(1) to mount a read-only file system")
        probe = subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"user namespaces are not available here: {probe.stderr.decode().strip()}")
        command = ["unshare", "--map-root-user", "--mount", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"',
                   str(read_only), *command]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv(1) to drop root's override of file permissions")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *command]
    env = {**os.environ, "ADAIN_HOME": str(home), "ADAIN_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_a_read_only_file_system_is_one_line_before_any_work(clips: Path, tmp_path: Path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "no-weights").mkdir()
    out = tmp_path / "ro" / "o.mp4"
    done = adain_process(["video", clips / "clip.mp4", clips / "a.png", "-o", out], tmp_path / "no-weights",
                         read_only=tmp_path / "ro")
    assert done.returncode == 1, done.stderr  # the output-error code, before the model (weights: 3)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{out}: cannot write here (Read-only file system)" in done.stderr
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_folder_without_write_permission_is_one_line_before_any_work(clips: Path, tmp_path: Path):
    (tmp_path / "no-weights").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    out = locked / "o.mp4"
    try:
        done = adain_process(["video", clips / "clip.mp4", clips / "a.png", "-o", out], tmp_path / "no-weights",
                             unprivileged=True)
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert f"{out}: cannot write here (Permission denied)" in done.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# BT.709 green at 100 cd/m2 in BT.2020 coordinates (the green column of BT.2087's 709 -> 2020 matrix).
GREEN_709_IN_2020 = (0.3293, 0.9195, 0.0880)
HDR_PATCHES = {
    PQ: [pq_signal([nits] * 3) for nits in (0, 100, 203, 1000)] + [pq_signal(np.multiply(GREEN_709_IN_2020, 100))],
    # scene light 0, 1/12 (signal 0.5), 0.2647 (signal 0.75: BT.2408's reference white), 1
    HLG: [hlg_signal([scene] * 3) for scene in (0, 1 / 12, 0.2647, 1.0)],
}


def patch_colours(pixels: np.ndarray, count: int) -> list[tuple[int, ...]]:
    """The colour at the middle of each 16 px patch."""
    return [tuple(int(v) for v in pixels[16, 16 * i + 8]) for i in range(count)]


@pytest.mark.parametrize("trc", [PQ, HLG], ids=["PQ", "HLG"])
def test_hdr_frames_are_tone_mapped_to_sdr_bt709(trc: int, tmp_path: Path):
    source = media.VideoSource(make_hdr_clip(tmp_path / "hdr.mkv", HDR_PATCHES[trc], trc))
    try:
        assert source.info.color == media.ColorTags(range=1, space=1, primaries=1, trc=1)  # what the output says
        assert source.info.hdr.startswith("PQ" if trc == PQ else "HLG")
        colours = patch_colours(next(source.frames()).pixels, len(HDR_PATCHES[trc]))
    finally:
        source.close()
    greys = [np.mean(c) for c in colours[:4]]
    assert all(max(c) - min(c) <= 3 for c in colours[:4])  # neutral stays neutral
    assert max(colours[0]) <= 3 and greys == sorted(greys)  # black stays black, the order kept
    assert greys[3] >= 245  # the peak (PQ: the 1000 cd/m2 mastering display's) reaches SDR white...
    if trc == PQ:
        assert greys[2] <= greys[3] - 40  # ...and 203 cd/m2 (BT.2408 reference white) below it: a curve, no clip
        r, g, b = colours[4]
        assert g >= 2 * r and g >= 3 * b  # BT.709 green, given in BT.2020, comes out as green
    else:
        assert 150 <= greys[2] <= 215  # BT.2408 reference white a bright grey


def test_an_hdr_clip_comes_out_8_bit_sdr_tagged_bt709_with_one_notice(run_video, clips: Path, tmp_path: Path):
    source = make_hdr_clip(tmp_path / "hdr.mp4", HDR_PATCHES[PQ], PQ)
    out = tmp_path / "sdr.mp4"
    result = run_video(source, clips / "a.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    one_notice(result.stderr, str(source), "HDR (PQ", "tone-mapped to SDR BT.709")
    frame = read_frames(out)[0]
    assert frame.format.name == "yuv420p"
    assert (int(frame.color_primaries), int(frame.color_trc), int(frame.colorspace)) == (1, 1, 1)
    assert not any(d.type.name in ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL") for d in frame.side_data)


def test_frames_whose_timestamp_repeats_are_left_out_counted_and_said(run_video, clips: Path, tmp_path: Path):
    source = make_repeated_clip(tmp_path / "repeats.mkv", [0, 1, 1, 2, 3, 3])  # in 1/25 s
    out = tmp_path / "o.mkv"
    result = run_video(source, clips / "a.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}: 4 frames" in result.stdout
    one_notice(result.stderr, "left out 2 frame(s)", str(source), "timestamp repeats", "0.040, 0.120 s")
    assert frame_times(out) == [0.0, 0.04, 0.08, 0.12]


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip with two audio tracks, tagged (AAC English "Main", PCM French "Commentary")."""
    path = tmp_path_factory.mktemp("tracks") / "tracks.mkv"
    return make_clip(path, moving_frames(3, 32, 32), audio_seconds=0.1,
                     tracks=[Track("aac", "eng", "Main"), Track("pcm_s16le", "fre", "Commentary", 660)])


def audio_tracks(path: Path) -> list[tuple[str, str | None, str | None]]:
    with av.open(str(path)) as container:
        return [(s.codec_context.name, s.metadata.get("language"), s.metadata.get("title"))
                for s in container.streams.audio]


def test_every_audio_track_is_kept_with_its_language_and_title(tracks: Path, clips: Path, run_video, tmp_path: Path):
    out = tmp_path / "o.mkv"
    result = run_video(tracks, clips / "a.png", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert audio_tracks(out) == [("aac", "eng", "Main"), ("pcm_s16le", "fre", "Commentary")]  # both copied
    mp4 = tmp_path / "o.mp4"
    assert run_video(tracks, clips / "a.png", "-o", mp4).exit_code == 0
    assert [(codec, language) for codec, language, _ in audio_tracks(mp4)] == [("aac", "eng"), ("aac", "fra")]


def test_pcm_is_reencoded_to_aac_for_mp4_with_a_notice_and_copied_into_mov(clips: Path, run_video, tmp_path: Path):
    source = make_clip(tmp_path / "pcm.mkv", moving_frames(3, 32, 32), audio_seconds=0.1,
                       tracks=[Track("pcm_s16le", "ger")])
    result = run_video(source, clips / "a.png", "-o", tmp_path / "o.mp4")
    assert result.exit_code == 0, result.stderr
    assert [(codec, language) for codec, language, _ in audio_tracks(tmp_path / "o.mp4")] == [("aac", "deu")]
    one_notice(result.stderr, "audio track 1 (pcm_s16le, ger)", "plays in few players in mp4", "re-encoded as aac")
    result = run_video(source, clips / "a.png", "-o", tmp_path / "o.mov")
    assert result.exit_code == 0 and "re-encoded" not in result.stderr
    assert audio_tracks(tmp_path / "o.mov")[0][:2] == ("pcm_s16le", "ger")  # QuickTime's own spelling


def test_audio_track_keeps_the_tracks_it_names_in_its_order(tracks: Path, clips: Path, run_video, tmp_path: Path):
    result = run_video(tracks, clips / "a.png", "-o", tmp_path / "one.mkv", "--audio-track", "2")
    assert result.exit_code == 0, result.stderr
    assert audio_tracks(tmp_path / "one.mkv") == [("pcm_s16le", "fre", "Commentary")]
    one_notice(result.stderr, f"audio track(s) 1 of {tracks}", "not picked by --audio-track")
    result = run_video(tracks, clips / "a.png", "-o", tmp_path / "two.mkv", "--audio-track", "2", "--audio-track", "1")
    assert result.exit_code == 0, result.stderr
    assert audio_tracks(tmp_path / "two.mkv") == [("pcm_s16le", "fre", "Commentary"), ("aac", "eng", "Main")]


@pytest.mark.parametrize(("options", "message"), [
    (["--audio-track", "3"], "--audio-track 3: {tracks} has 2 audio tracks"),
    (["--audio-track", "1", "--no-audio"], "--no-audio keeps none"),
])
def test_audio_track_choices_that_cannot_work_are_usage_errors(options: list[str], message: str, tracks: Path,
                                                              clips: Path, run_video, tmp_path: Path):
    result = run_video(tracks, clips / "a.png", "-o", tmp_path / "o.mkv", *options)
    assert result.exit_code == 2
    one_error_line(result, message.format(tracks=tracks))


def test_audio_track_with_png_frames_out_is_a_usage_error(clips: Path, run_video, tmp_path: Path):
    result = run_video(clips / "clip.mp4", clips / "a.png", "-o", f"{tmp_path / 'frames'}/", "--audio-track", "1")
    assert result.exit_code == 2
    one_error_line(result, "PNG frames carry no sound")


def test_an_existing_output_in_a_locked_folder_is_skipped_not_an_error(clips: Path, tmp_path: Path):
    (tmp_path / "no-weights").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "o.mp4").write_bytes(b"made before")
    locked.chmod(0o555)
    try:
        done = adain_process(["video", clips / "clip.mp4", clips / "a.png", "-o", locked / "o.mp4"],
                             tmp_path / "no-weights", unprivileged=True)
        assert done.returncode == 0, done.stderr
        assert (locked / "o.mp4").read_bytes() == b"made before"
    finally:
        locked.chmod(0o755)


def test_a_segment_counts_from_the_first_video_frame_not_the_container_start(run_video, clips: Path,
                                                                             tmp_path: Path):
    source = make_ts_clip(tmp_path / "lead.ts", 10, lead=0.4)  # the sound starts 0.4 s before the picture
    for name, options in (("head", []), ("middle", ["--start", "0.1"])):
        out = tmp_path / f"{name}.mkv"
        result = run_video(source, clips / "a.png", "-o", out, *options, "--duration", "0.2", "--smooth", "0")
        assert result.exit_code == 0, result.stderr
        times = frame_times(out)  # Matroska may shift all by the part of an AAC packet before the start
        assert times[0] < 0.025 and [round(t - times[0], 4) for t in times] == [0.0, 0.04, 0.08, 0.12, 0.16]
        assert 0.15 < audio_seconds(out) < 0.3  # the sound cut to the segment, not the lead-in
