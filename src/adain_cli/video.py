"""`adain video`: a video (or a folder of frames) stylized frame by frame on the one runner.

    source: frames decoded in order --> runner (runner.py): frames resized ahead on workers,
    batches through encode_contents, steady statistics, the style at that time, render_batch
    --> sink: frames encoded in order on one thread (with the sound)

Each stage runs while the others work, through bounded queues: memory does not grow with
the video's length. The style is encoded once (per style frame for a video style). What
is new against stills is time: the style may change over the clip (`Track`), and the
content statistics are smoothed over time (`Steady`) so colours do not flicker; pixels
are never blended between frames, so nothing ghosts.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from . import color, images, inputs, jobs, media, mixing
from .errors import UsageError
from .model import FeatureStats
from .runner import Failed, Render, Runner
from .steady import DEFAULT_SMOOTH, Steady
from .style_cache import StyleCache
from .stylizer import EncodedContent, Stylizer

DEFAULT_FPS = Fraction(25)  # for a folder of frames, which has no rate of its own


# --- styles over time -----------------------------------------------------------------------------

class Track(Protocol):
    """What styles a frame: statistics for the frame at `time` seconds of the input."""

    def stats(self, index: int, time: float, content: EncodedContent) -> FeatureStats: ...


class StillTrack:
    """One painting for the whole clip, decoded once, its statistics from the style cache
    (encoded once, or per frame where the colour mode recolours it towards each frame)."""

    def __init__(self, styles: StyleCache, path: Path, image: torch.Tensor, color_mode: color.ColorMode) -> None:
        self._styles, self._path, self._image, self._mode = styles, path, image, color_mode

    def stats(self, index: int, time: float, content: EncodedContent) -> FeatureStats:
        return self._styles.stats(self._path, lambda: self._image, content, self._mode)


class VideoTrack:
    """A style video: frame i of the output takes frame i of this video. A shorter style video
    starts again from its beginning (it loops); a longer one is used as far as needed."""

    def __init__(self, stylizer: Stylizer, path: Path, settings: jobs.Settings) -> None:
        self._stylizer, self._path, self._settings = stylizer, path, settings
        self._frames: Iterator[media.Frame] = iter(())
        self._source: media.VideoSource | None = None

    def _next(self) -> np.ndarray:
        for frame in self._frames:
            return frame.pixels
        if self._source is not None:
            self._source.close()
        self._source = media.VideoSource(self._path, max_pixels=self._settings.max_pixels)
        self._frames = self._source.frames()
        return next(self._frames).pixels

    def stats(self, index: int, time: float, content: EncodedContent) -> FeatureStats:
        image = self._settings.prepare_style(Image.fromarray(self._next()), self._path)
        return self._stylizer.style_stats(image, content, self._settings.color_mode)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


class MixTrack:
    """Several styles at fixed weights, mixed as `adain interpolate` mixes them."""

    def __init__(self, tracks: Sequence[Track], weights: Sequence[float]) -> None:
        self._tracks, self._weights = list(tracks), list(weights)

    def stats(self, index: int, time: float, content: EncodedContent) -> FeatureStats:
        return mixing.mix_stats([t.stats(index, time, content) for t in self._tracks], self._weights)


def ease(t: float) -> float:
    """Smoothstep: the change starts and ends gently, with no jolt at a keyframe."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


class KeyframeTrack:
    """Styles pinned to times; between two keyframes the statistics move from one to the next
    (eased), before the first and after the last they hold."""

    def __init__(self, keys: Sequence[tuple[float, Track]]) -> None:
        self._keys = sorted(keys, key=lambda key: key[0])

    def stats(self, index: int, time: float, content: EncodedContent) -> FeatureStats:
        keys = self._keys
        if time <= keys[0][0]:
            return keys[0][1].stats(index, time, content)
        for (t0, a), (t1, b) in itertools.pairwise(keys):
            if time < t1:
                w = ease((time - t0) / (t1 - t0))
                return mixing.mix_stats([a.stats(index, time, content), b.stats(index, time, content)], [1 - w, w])
        return keys[-1][1].stats(index, time, content)


# TIME:STYLE, the time as seconds or mm:ss; the longest time that fits wins, so "1:30:b.jpg" is 90 s.
_KEY = re.compile(r"^(?P<time>(?:\d+:)?(?:\d+(?:\.\d*)?|\.\d+)):(?P<path>.+)$")


@dataclass(frozen=True)
class Keyframe:
    time: float
    style: Path


def parse_keyframes(texts: Sequence[str]) -> list[Keyframe]:
    """`--keyframes 0:a.jpg,4.5:b.jpg` (or the option repeated): TIME:STYLE pairs, times as
    seconds or mm:ss, increasing."""
    keys = []
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            match = _KEY.match(part)
            if not match:
                raise UsageError(f"--keyframes: expected TIME:STYLE such as 4.5:painting.jpg, got {part!r}")
            keys.append(Keyframe(media.parse_time(match["time"], "--keyframes"), Path(match["path"])))
    if len(keys) < 2:
        raise UsageError("--keyframes needs at least two TIME:STYLE pairs (one style is a plain STYLE argument)")
    times = [k.time for k in keys]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise UsageError(f"--keyframes: times must increase, got {', '.join(f'{t:g}' for t in times)}")
    return keys


# --- the request ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """What `adain video` adds to the stylizing settings."""

    weights: tuple[float, ...] | None = None
    keyframes: tuple[Keyframe, ...] = ()
    segment: media.Segment = field(default_factory=media.Segment)
    fps: Fraction | None = None
    smooth: float = DEFAULT_SMOOTH
    encoding: media.Encoding = field(default_factory=media.Encoding)
    skip_bad_frames: bool = False


@dataclass
class Plan:
    """A checked request: the source opened (its first frame read), styles found, output decided."""

    source: media.VideoSource | media.FrameFolderSource
    styles: list[Path]
    output: Path
    frames_out: bool
    options: Options
    size: tuple[int, int]  # (width, height) of every output frame
    encoding: media.Encoding | None
    skip: bool  # the output exists and --overwrite was not given
    notices: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        return {"input": str(self.source.path), "styles": [str(s) for s in self.styles], "output": str(self.output)}

    def close(self) -> None:
        self.source.close()


def _open_source(spec: str, settings: jobs.Settings, options: Options) -> media.VideoSource | media.FrameFolderSource:
    path = Path(spec)
    if path.is_file():
        if options.fps is not None:
            raise UsageError("--fps sets the rate of a folder of frames; a video file keeps its own")
        return media.VideoSource(path, options.segment, options.skip_bad_frames, settings.max_pixels)
    frames = inputs.expand(spec)  # a folder or a glob of stills

    def load(frame: Path) -> np.ndarray:
        return np.array(images.load_image(frame, settings.max_pixels))

    return media.FrameFolderSource(frames, options.fps or DEFAULT_FPS, load, options.segment)


def _style_paths(styles: Sequence[str], options: Options) -> list[Path]:
    if options.keyframes:
        if styles:
            raise UsageError("give the styles either as STYLE arguments or in --keyframes, not both")
        if options.weights is not None:
            raise UsageError("--weights mixes STYLE arguments; --keyframes moves from one style to the next")
        paths = [k.style for k in options.keyframes]
    else:
        if not styles:
            raise UsageError("give a STYLE (a painting, or a video) or --keyframes")
        paths = [Path(s) for s in styles]
        if len(paths) > 1 or options.weights is not None:
            mixing.normalise_weights(options.weights, len(paths))
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such style file")
    return paths


def _output_size(width: int, height: int, settings: jobs.Settings, path: Path) -> tuple[int, int]:
    """The frame size the network sees and the output has: a blank frame through the still's rule."""
    return images.prepare(Image.new("L", (width, height)), settings.content_size, settings.crop, path).size


def plan(source_spec: str, styles: Sequence[str], output: str, settings: jobs.Settings,
         options: Options = Options()) -> Plan:
    """Check everything that can be checked before the model loads: the input decodes, the styles
    exist, the output container takes the codec at this size and its folder is writable."""
    if options.smooth < 0 or not math.isfinite(options.smooth):
        raise UsageError(f"--smooth must be 0 (off) or a time in seconds, got {options.smooth}")
    style_paths = _style_paths(styles, options)
    frames_out = output.endswith(("/", "\\")) or Path(output).is_dir()
    target = Path(output)
    if not frames_out and not media.is_video_path(target):
        raise UsageError(f"{target}: not a video file name (use .mp4, .mov, .mkv, .webm, .avi or .gif, "
                         "or a folder ending in / for PNG frames)")
    source = _open_source(source_spec, settings, options)
    try:
        inputs_used = [source.path, *style_paths]
        jobs.refuse_collisions([(target, "the video")], inputs_used)
        size = _output_size(source.info.width, source.info.height, settings, source.path)
        settings.check_work_size(*size, source.path)
        skip = jobs.skipped(target, settings.overwrite, media.FRAME_FILES if frames_out else None)
        if frames_out and options.encoding.audio_tracks is not None:
            raise UsageError("--audio-track picks tracks for a video file; PNG frames carry no sound")
        jobs.make_parent_dirs([target])  # a frames folder itself appears only when complete
        if not skip:
            media.check_writable(target)
        encoding = None if frames_out else options.encoding.resolve(target, *size, source.info.rate,
                                                                     source.info.audio, source.path)
        return Plan(source, style_paths, target, frames_out, options, size, encoding, skip,
                    _notices(source, encoding, frames_out))
    except BaseException:
        source.close()
        raise


def _notices(source: media.VideoSource | media.FrameFolderSource, encoding: media.Encoding | None,
             frames_out: bool) -> list[str]:
    """What the output will not carry as the input does, one line each."""
    info, notices = source.info, []
    if info.hdr:
        notices.append(f"{source.path} is HDR ({info.hdr}): tone-mapped to SDR BT.709 and tagged so")
    if info.dropped:
        notices.append(f"{', '.join(info.dropped)} stream(s) of {source.path} are not carried over")
    if encoding is not None:
        kept = {sound.track.number for sound in encoding.sound}
        left = [str(track.number) for track in info.audio if track.number not in kept]
        if left and encoding.audio and encoding.audio_tracks is not None:
            notices.append(f"audio track(s) {', '.join(left)} of {source.path} not picked by --audio-track: "
                           "not carried over")
        notices.extend(encoding.notices)
    if frames_out and info.audio:
        notices.append("PNG frames carry no sound: the audio is not written")
    return notices


# --- running ----------------------------------------------------------------------------------

@dataclass
class Result:
    """What became of the video, for the summary line and --json."""

    plan: Plan
    status: jobs.Status
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    skipped_frames: list[float] = field(default_factory=list)
    repeated_frames: list[float] = field(default_factory=list)  # left out: their timestamp repeats

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**self.plan.describe(), "frames": self.frames, "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.rate, 3), "status": self.status, "error": self.error,
                "skipped_frames": [round(t, 3) for t in self.skipped_frames],
                "repeated_frames": [round(t, 3) for t in self.repeated_frames]}

    def warnings(self) -> list[str]:
        """What became of frames that were read but not written (other than --skip-bad-frames)."""
        if not self.repeated_frames:
            return []
        times = ", ".join(f"{t:.3f}" for t in self.repeated_frames[:5])
        more = f" and {len(self.repeated_frames) - 5} more" if len(self.repeated_frames) > 5 else ""
        return [f"left out {len(self.repeated_frames)} frame(s) of {self.plan.source.path} whose timestamp repeats "
                f"an earlier frame's (at {times} s{more}): no player shows them"]


def _tracks(stylizer: Stylizer, plan_: Plan, settings: jobs.Settings) -> tuple[Track, list[VideoTrack]]:
    def track(path: Path) -> Track:
        if media.is_video_path(path) and path.suffix.lower() != ".gif":
            video = VideoTrack(stylizer, path, settings)
            videos.append(video)
            return video
        return StillTrack(styles, path, settings.load_style(path), settings.color_mode)

    videos: list[VideoTrack] = []
    styles = StyleCache(stylizer)
    options = plan_.options
    if options.keyframes:
        return KeyframeTrack([(k.time, track(k.style)) for k in options.keyframes]), videos
    tracks = [track(p) for p in plan_.styles]
    if len(tracks) == 1:
        return tracks[0], videos
    return MixTrack(tracks, mixing.normalise_weights(options.weights, len(tracks))), videos


def run(stylizer: Stylizer, plan_: Plan, settings: jobs.Settings,
        on_frames: Callable[[int], None] | None = None) -> Result:
    """Stylize every frame; the output appears complete or not at all. Errors raise (a VideoError
    names the file and time); KeyboardInterrupt leaves nothing behind."""
    if plan_.skip:
        return Result(plan_, "skipped")
    began = time.perf_counter()
    track, video_tracks = _tracks(stylizer, plan_, settings)
    sink = media.FrameFolderSink(plan_.output, _digits(plan_.source.info.frames)) if plan_.frames_out \
        else media.VideoSink(plan_.output, plan_.source.info, plan_.encoding, *plan_.size)
    try:
        frames = _pipeline(stylizer, plan_, settings, track, sink, on_frames)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    finally:
        for video in video_tracks:
            video.close()
    return Result(plan_, "written", frames, time.perf_counter() - began, skipped_frames=plan_.source.skipped,
                  repeated_frames=plan_.source.repeated)


def _digits(frames: int | None) -> int:
    return max(6, len(str(2 * frames))) if frames else 6


class _Frame:
    """One frame of the input: a runner item (runner.py), its pixels decoded in the source's order."""

    def __init__(self, frame: media.Frame, styling: _Styling) -> None:
        self.frame, self._styling = frame, styling
        self.color_mode = styling.settings.color_mode
        self.work_size = styling.settings.work_size

    def begin(self) -> bool:
        return True

    def cached(self) -> None:
        return None

    def load(self) -> torch.Tensor:
        """On a worker: the frame at the output's size, (H, W, 3) 8-bit, pinned for a GPU."""
        return self._styling.prepare(self.frame.pixels)

    def renders(self, content: EncodedContent) -> list[Render | Failed]:
        return [self._styling.render(self.frame, content)]

    def failed(self, error: BaseException) -> list[Failed]:
        raise error  # a frame that cannot be made ends the run: a video has no holes


@dataclass
class _Styling:
    """What turns each frame's content into its render: steady statistics (frames in order:
    the runner calls `render` in the source's order), the style at that time, alpha."""

    plan: Plan
    settings: jobs.Settings
    track: Track
    pin: bool

    def __post_init__(self) -> None:
        self._steady = Steady(self.plan.options.smooth)
        info = self.plan.source.info
        self.resizes = self.plan.size != (info.width, info.height)

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        if self.resizes:
            pixels = np.array(images.prepare(Image.fromarray(pixels), self.settings.content_size, self.settings.crop,
                                             self.plan.source.path))
        tensor = torch.from_numpy(pixels)
        return tensor.pin_memory() if self.pin else tensor

    def render(self, frame: media.Frame, content: EncodedContent) -> Render:
        content = replace(content, stats=self._steady(content.stats, frame.time))
        style = self.track.stats(frame.index, frame.time + self.plan.options.segment.start, content)
        return Render(frame, content, style, self.settings.alpha)


class _Encoded:
    """The sink: each output frame (8 bits, rounded on the device as stills are) written in order."""

    def __init__(self, sink: media.VideoSink | media.FrameFolderSink) -> None:
        self._sink = sink

    def finish(self, frame: media.Frame, pixels: torch.Tensor) -> None:
        self._sink.write(frame, pixels[0].permute(1, 2, 0).numpy())

    def done(self, frame: media.Frame, result: BaseException | None) -> None:
        if isinstance(result, BaseException):
            raise result


def _pipeline(stylizer: Stylizer, plan_: Plan, settings: jobs.Settings, track: Track,
              sink: media.VideoSink | media.FrameFolderSink, on_frames: Callable[[int], None] | None,
              ) -> int:
    """Frames decoded in order (the source), prepared ahead on workers, stylized in batches,
    encoded in order on one thread: every queue bounded, so memory does not grow with the video."""
    device = stylizer.device
    styling = _Styling(plan_, settings, track, pin=device.type == "cuda")

    def collate(frames: list[torch.Tensor]) -> torch.Tensor:  # (N, H, W, 3) 8-bit to (N, 3, H, W) on the device
        return images.from_8bit(torch.stack(frames).to(device, non_blocking=True).permute(0, 3, 1, 2))

    size = max(stylizer.execution.batch_size, 1)
    # Workers resize frames; frames at their own size need none (each hand-over between threads costs).
    workers = 2 if styling.resizes else 0
    runner = Runner(stylizer, workers=workers, ahead=2 * size, finishers=1, behind=2 * size, collate=collate,
                    to_host=lambda out: images.to_8bit(out).cpu())  # 8 bits on the device: a quarter of the copy
    return runner.run((_Frame(frame, styling) for frame in plan_.source.frames()), _Encoded(sink), on_frames)
