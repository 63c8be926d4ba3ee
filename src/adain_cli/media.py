"""Video files in and out through PyAV (FFmpeg's libraries): frames upright in RGB with their
times, and the sound carried across.

A `Source` yields `Frame`s in display order: 8-bit RGB (H, W, 3), rotation applied,
converted from YUV with the matrix and range the file declares (HDR tone-mapped to SDR
BT.709), each with its own strictly increasing timestamp (variable frame rate stays
variable). A `Sink` writes frames to a temporary file beside the target with the source's
timestamps, colour tags and sound (every audio track the container takes), and renames it
over the target only when complete; a folder of PNG frames is the other kind of sink.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.filter
import numpy as np

from . import images
from .atomic import remove_stale_temporaries, sync_directory, temporary_for
from .errors import OutputError, UsageError, VideoError

# Files whose extension says "video" even where a still of the same name could exist.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts",
                            ".mts", ".m2ts", ".wmv", ".flv", ".ogv", ".3gp", ".nut", ".y4m"})

# --codec names people type, and the FFmpeg encoder each means.
CODEC_ALIASES = {"h264": "libx264", "x264": "libx264", "avc": "libx264", "hevc": "libx265", "h265": "libx265",
                 "x265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "prores": "prores_ks"}
# The codec each output container gets by default.
DEFAULT_CODECS = {".webm": "libvpx-vp9", ".gif": "gif", ".avi": "mpeg4"}
DEFAULT_CODEC = "libx264"
# Pixel formats by default: 4:2:0 plays everywhere; ProRes and FFV1 are for editing and
# archiving, so they keep more (FFV1 in RGB is lossless with respect to our output).
DEFAULT_PIX_FMTS = {"prores_ks": "yuv422p10le", "ffv1": "bgr0", "gif": "rgb8", "png": "rgb24"}
DEFAULT_PIX_FMT = "yuv420p"
# Constant-quality defaults where the codec has a CRF: visually close to the stylized frames.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 31, "libsvtav1": 30}
# Sound that has to be re-encoded goes to the container's usual codec.
AUDIO_FALLBACK = {".webm": "libopus", ".ogv": "libopus"}
DEFAULT_AUDIO = "aac"
# The MP4 family takes PCM (ISO/IEC 23003-5 "ipcm"), but few players play it there;
# QuickTime .mov and Matroska carry PCM that players know, so it is copied into those.
PCM_UNPLAYABLE = frozenset({"mp4", "ipod", "3gp", "3g2"})
# ISO 639-2 has two codes for 20 languages, bibliographic ("fre") and terminology ("fra").
# Matroska stores the first, MP4 the second; QuickTime stores a Macintosh language number,
# and FFmpeg's .mov muxer knows only its table's spelling (libavformat/isom.c: mostly the
# bibliographic codes) and drops any other.
ISO_639_2_TERMINOLOGY = {
    "alb": "sqi", "arm": "hye", "baq": "eus", "bur": "mya", "chi": "zho", "cze": "ces", "dut": "nld", "fre": "fra",
    "geo": "kat", "ger": "deu", "gre": "ell", "ice": "isl", "mac": "mkd", "mao": "mri", "may": "msa", "per": "fas",
    "rum": "ron", "slo": "slk", "tib": "bod", "wel": "cym"}
ISO_639_2_BIBLIOGRAPHIC = {term: bib for bib, term in ISO_639_2_TERMINOLOGY.items()}
QUICKTIME_TERMINOLOGY = frozenset({"fra", "ron", "ces", "slk"})  # the few of isom.c's table not bibliographic
# HDR transfers (AVColorTransferCharacteristic values), tone-mapped to SDR on decoding.
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
# libswscale's colour management (FFmpeg 8): linearise the transfer, tone-map and gamut-map
# with the perceptual intent (it reads the mastering-display and light-level metadata), and
# encode BT.709 primaries, transfer and matrix, in full-range RGB.
TONE_MAP = "out_transfer=bt709:out_primaries=bt709:out_color_matrix=bt709:out_range=pc:intent=perceptual"


@dataclass(frozen=True)
class ColorTags:
    """How the file's YUV relates to RGB; copied to the output so players show the same colours."""

    range: int = 0  # av ColorRange values; 0: unspecified
    space: int = 2  # av Colorspace (AVColorSpace) values; 2: unspecified
    primaries: int = 2
    trc: int = 2

    # Matrices swscale converts with; others (unspecified included) use its default, BT.601.
    _KNOWN_SPACES = frozenset({1, 4, 5, 6, 7, 9})

    @property
    def matrix(self) -> int | None:
        return self.space if self.space in self._KNOWN_SPACES else None

    @property
    def hdr(self) -> str | None:
        """The HDR transfer's name, or None for SDR."""
        return HDR_TRANSFERS.get(self.trc)


# What tone-mapped frames are: BT.709 primaries, transfer and matrix (the range is the source's).
BT709 = ColorTags(space=1, primaries=1, trc=1)


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream of the source, numbered as players number tracks (1 = the first)."""

    number: int
    index: int  # the stream's index in the file
    codec: str
    language: str | None = None
    title: str | None = None

    def describe(self) -> str:
        tags = [tag for tag in (self.language, self.title and repr(self.title)) if tag]
        return f"audio track {self.number} ({', '.join([self.codec, *tags])})"


@dataclass(frozen=True)
class Frame:
    """One decoded frame: upright 8-bit RGB and when it is shown, from the start of the output."""

    index: int
    time: float  # seconds
    pts: int  # in the source's time base
    pixels: np.ndarray  # (H, W, 3) uint8


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, as far as the output needs to know before the first frame."""

    path: Path
    width: int  # upright, as displayed
    height: int
    rate: Fraction  # average frame rate
    time_base: Fraction
    duration: float | None  # seconds, of the part that will be read
    frames: int | None  # an estimate, for progress; None if unknown
    rotation: int = 0  # degrees counter-clockwise that were applied
    color: ColorTags = field(default_factory=ColorTags)  # of the frames as yielded (and the output)
    audio: tuple[AudioTrack, ...] = ()
    dropped: tuple[str, ...] = ()  # subtitle and data streams not carried over, by kind
    origin: float = 0.0  # the file's time, in seconds, at the output's zero
    until: float = math.inf  # the file's time where the segment ends
    hdr: str | None = None  # the HDR transfer that was tone-mapped to SDR BT.709, if any


# --- times --------------------------------------------------------------------------------------

_TIME = re.compile(r"^(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def parse_time(text: str, option: str) -> float:
    """Seconds from "12.5" or "mm:ss(.ff)"; UsageError otherwise."""
    match = _TIME.match(text.strip())
    if not match:
        raise UsageError(f"{option}: expected seconds (12.5) or mm:ss(.ff) (1:02.5), got {text!r}")
    minutes, seconds = match.groups()
    if minutes is not None and float(seconds) >= 60:
        raise UsageError(f"{option}: seconds must be below 60 in mm:ss, got {text!r}")
    return int(minutes or 0) * 60 + float(seconds)


@dataclass(frozen=True)
class Segment:
    """The part of the input to read: from `start` for `duration` seconds (None: to the end)."""

    start: float = 0.0
    duration: float | None = None

    @property
    def end(self) -> float:
        return math.inf if self.duration is None else self.start + self.duration


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


# --- reading --------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds."""
    return getattr(exc, "strerror", None) or str(exc)


def _upright(frame: av.VideoFrame, color: ColorTags, tone_map: _ToneMap | None = None) -> np.ndarray:
    """The frame as (H, W, 3) uint8 RGB in display orientation (SDR BT.709 through `tone_map`)."""
    if tone_map is not None:
        pixels = tone_map(frame).to_ndarray(format="rgb24")
    else:
        pixels = frame.to_ndarray(format="rgb24", src_colorspace=color.matrix, src_color_range=color.range or None)
    turns = frame.rotation % 360 // 90
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


class _ToneMap:
    """HDR frames to SDR BT.709 RGB through an FFmpeg filter graph (`TONE_MAP`). The graph
    builds its 3D LUT on the first frame (seconds, once per source), then costs little."""

    def __init__(self) -> None:
        self._graph: av.filter.Graph | None = None
        self._key: tuple[int, int, str] | None = None

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:  # the first frame, or a stream whose size changes
            self._graph, self._key = self._build(*key), key
        self._graph.push(frame)
        return self._graph.pull()

    @staticmethod
    def _build(width: int, height: int, pix_fmt: str) -> av.filter.Graph:
        graph = av.filter.Graph()
        steps = [graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=Fraction(1, 1000)),
                 graph.add("scale", TONE_MAP), graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in itertools.pairwise(steps):
            a.link_to(b)
        graph.configure()
        return graph


class VideoSource:
    """Frames of a video file's first video stream, decoded in order.

    Segment times (`Segment.start`, `.duration`) count from the first video frame, not from
    the container's start: in MPEG-TS the sound often begins before the picture.
    """

    def __init__(self, path: Path, segment: Segment = Segment(), skip_bad_frames: bool = False,
                 max_pixels: int | None = images.DEFAULT_MAX_PIXELS) -> None:
        self.path = path
        self.segment = segment
        self.skip_bad_frames = skip_bad_frames
        self.skipped: list[float] = []  # times of frames that could not be decoded and were skipped
        self.repeated: list[float] = []  # times of frames left out because their timestamp repeats
        self._container = self._open()
        try:
            self.info = self._probe(max_pixels)
        except BaseException:
            self._container.close()
            raise

    def _open(self) -> av.container.InputContainer:
        if not self.path.is_file():
            raise VideoError(self.path, "no such file" if not self.path.exists() else "not a file")
        try:
            return av.open(str(self.path), "r")
        except av.error.FFmpegError as exc:
            raise VideoError(self.path, f"not a readable video ({_reason(exc)})") from exc

    def _probe(self, max_pixels: int | None) -> SourceInfo:
        container = self._container
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoError(self.path, f"has no video stream (found {', '.join(kinds)})")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError(self.path, "its video codec cannot be decoded by this FFmpeg build")
        stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the network
        # A damaged frame is an error, not a silently patched-up picture: the user decides to
        # stop (the default) or to leave such frames out (--skip-bad-frames).
        stream.codec_context.options = {"err_detect": "explode"}
        self._stream = stream
        self._zero = self._first_video_time()
        self._begin = self._zero + self.segment.start
        self._end = math.inf if self.segment.duration is None else self._begin + self.segment.duration
        # The output's zero: the file's start (sound leading the picture is kept), or a
        # segment's first frame (set below, once it is decoded).
        self._offset = (container.start_time or 0) / av.time_base
        first = self._first_frame()
        if max_pixels is not None and first.width * first.height > max_pixels:
            raise VideoError(self.path, f"{first.width}x{first.height} frames are more than the "
                                        f"{max_pixels:,} pixels allowed (--max-pixels)")
        self._pending = first
        if self.segment != Segment():
            self._offset = float(first.pts * stream.time_base)
        rotation = first.rotation % 360
        width, height = (first.width, first.height) if rotation in (0, 180) else (first.height, first.width)
        color = ColorTags(int(first.color_range), int(first.colorspace), int(first.color_primaries),
                          int(first.color_trc))
        self._color = replace(color, range=color.range or int(stream.codec_context.color_range))
        self._tone_map = self._tone_mapper(first) if self._color.hdr else None
        shown = self._color if self._tone_map is None else replace(BT709, range=self._color.range)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        duration = self._duration()
        frames = round(duration * rate) if duration is not None else (stream.frames or None)
        # Subtitles and data; and sound in a codec this FFmpeg does not know, which cannot be carried.
        dropped = tuple(s.type for s in container.streams
                        if s.type not in ("video", "audio") or (s.type == "audio" and s.codec_context is None))
        return SourceInfo(self.path, width, height, Fraction(rate), Fraction(stream.time_base), duration, frames,
                          rotation, shown, _audio_tracks(container), dropped, self._offset, self._end,
                          self._color.hdr)

    def _first_video_time(self) -> float:
        """The file's time of the first video frame: where segments are measured from."""
        stream = self._stream
        if stream.start_time is not None:
            return float(stream.start_time * stream.time_base)
        return (self._container.start_time or 0) / av.time_base

    def _tone_mapper(self, first: av.VideoFrame) -> _ToneMap:
        """The HDR to SDR conversion, proved on the first frame (an FFmpeg without it is an error
        here, not a video whose tags lie)."""
        tone_map = _ToneMap()
        try:
            tone_map(first)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(self.path, f"is HDR ({self._color.hdr}) and this FFmpeg build cannot tone-map it to "
                                        f"SDR ({_reason(exc)})") from exc
        return tone_map

    def _duration(self) -> float | None:
        stream, container = self._stream, self._container
        if stream.duration is not None:
            end = float((stream.start_time or 0) * stream.time_base) + float(stream.duration * stream.time_base)
        elif container.duration is not None:
            end = ((container.start_time or 0) + container.duration) / av.time_base
        else:
            return None
        remaining = max(end - self._begin, 0.0)
        return remaining if self.segment.duration is None else min(remaining, self.segment.duration)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Frames in presentation order from the segment's start; decode errors are VideoErrors
        naming the time, or skipped under skip_bad_frames."""
        if self.segment.start > 0 and self._seek(int(self._begin / self._stream.time_base), self._stream):
            tolerance = 0.5 / float(self._stream.average_rate or 1000)
            landed = False
            for frame in self._decode():
                if not landed and float(frame.pts * self._stream.time_base) > self._begin + tolerance:
                    break  # past the start (a seek in a file without an index, MPEG-TS say)
                landed = True
                yield frame
            else:
                if landed:
                    return
            # Nothing decodable after the seek (it met no keyframe), or past the start: read
            # from the beginning instead, discarding frames up to the start.
            self._seek(self._container.start_time or 0)
        yield from self._decode()

    def _seek(self, target: int, stream: av.VideoStream | None = None) -> bool:
        """Seek to the keyframe at or before `target` (in the stream's time base; without a
        stream, in av.time_base units); False where the file cannot seek."""
        try:
            self._container.seek(target, stream=stream, backward=True)
        except av.error.FFmpegError:
            return False
        return True

    def _decode(self) -> Iterator[av.VideoFrame]:
        last_time = self._begin
        for packet in self._container.demux(self._stream):
            if packet.pts is not None:
                last_time = float(packet.pts * self._stream.time_base)
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                self._bad_frame(last_time, f"cannot be decoded ({_reason(exc)})")
                continue
            for frame in decoded:
                if frame.pts is None:
                    continue
                if not frame.is_corrupt:
                    yield frame
                else:
                    self._bad_frame(float(frame.time or 0), "is damaged")

    def _bad_frame(self, when: float, problem: str) -> None:
        """Stop with an error naming the frame's time, or note the time and go on."""
        at = when - self._zero
        if not self.skip_bad_frames:
            raise VideoError(self.path, f"the frame at {at:.3f} s {problem}; --skip-bad-frames goes on without it")
        self.skipped.append(at)

    def _first_frame(self) -> av.VideoFrame:
        self._frames = self._in_segment()
        for frame in self._frames:
            return frame
        where = f" after {self.segment.start:g} s" if self.segment.start else ""
        raise VideoError(self.path, f"has no video frames{where}")

    def _in_segment(self) -> Iterator[av.VideoFrame]:
        tolerance = 0.5 / float(self._stream.average_rate or 1000)  # frames land on the start within rounding
        for frame in self._decoded():
            if frame.pts is None:
                continue
            when = float(frame.pts * self._stream.time_base)
            if when < self._begin - tolerance:
                continue
            if when >= self._end - tolerance:
                return
            yield frame

    def frames(self) -> Iterator[Frame]:
        """Every frame of the segment, upright RGB, with strictly increasing timestamps: a frame
        whose timestamp repeats an earlier one (broken input) is left out and its time noted,
        as no muxer takes it and no player would show it."""
        origin = round(self._offset / self._stream.time_base)
        index, last = 0, -1
        try:
            for frame in self._chain():
                pts = max(frame.pts - origin, 0)  # a first frame a hair before the start shows at zero
                if pts <= last:
                    self.repeated.append(float(frame.pts * self._stream.time_base) - self._zero)
                    continue
                last = pts
                pixels = _upright(frame, self._color, self._tone_map)
                yield Frame(index, float(pts * self._stream.time_base), pts, pixels)
                index += 1
        except av.error.FFmpegError as exc:  # a demuxer error: the file ends in the middle, say
            raise VideoError(self.path, f"cannot read past frame {index} ({_reason(exc)})") from exc

    def _chain(self) -> Iterator[av.VideoFrame]:
        pending, self._pending = self._pending, None
        if pending is not None:
            yield pending
        yield from self._frames

    def close(self) -> None:
        self._container.close()


def _audio_tracks(container: av.container.InputContainer) -> tuple[AudioTrack, ...]:
    """The audio streams this FFmpeg can handle, with their language and title tags."""
    tracks = []
    for number, stream in enumerate(container.streams.audio, start=1):
        if stream.codec_context is None:
            continue
        language = stream.metadata.get("language")
        tracks.append(AudioTrack(number, stream.index, stream.codec_context.name,
                                 None if language in (None, "", "und") else language, stream.metadata.get("title")))
    return tuple(tracks)


class FrameFolderSource:
    """Still images (a folder or a glob, in name order) as frames at a fixed rate."""

    def __init__(self, paths: Sequence[Path], rate: Fraction, load: Callable[[Path], np.ndarray],
                 segment: Segment = Segment()) -> None:
        self.path = paths[0].parent
        self.skipped: list[float] = []
        self.repeated: list[float] = []  # frames of a folder never share a time
        first = max(0, math.ceil(segment.start * rate - 1e-9))
        last = len(paths) if segment.duration is None else min(len(paths), math.ceil(segment.end * rate - 1e-9))
        self._paths = list(paths[first:last])
        if not self._paths:
            raise VideoError(self.path, f"has no frames after {segment.start:g} s at {rate} frames/s")
        self._load = load
        self._first = load(self._paths[0])
        height, width = self._first.shape[:2]
        self.info = SourceInfo(self.path, width, height, rate, 1 / rate, len(self._paths) / rate,
                               len(self._paths))

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self._paths):
            pixels = self._first if index == 0 else self._load(path)
            if pixels.shape[:2] != (self.info.height, self.info.width):
                raise VideoError(path, f"frame is {pixels.shape[1]}x{pixels.shape[0]}, the first was "
                                       f"{self.info.width}x{self.info.height}: frames must share one size")
            yield Frame(index, index / float(self.info.rate), index, pixels)

    def close(self) -> None:
        pass


# --- writing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Encoding:
    """How the output video is encoded; `resolve` fills the defaults and checks it can work."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    audio: bool = True
    audio_tracks: tuple[int, ...] | None = None  # the track numbers to keep (None: every one)
    # Decided by `resolve`: each kept track's fate ("copy" or an encoder's name), and why.
    sound: tuple[Sound, ...] = ()
    notices: tuple[str, ...] = ()

    def resolve(self, target: Path, width: int, height: int, rate: Fraction,
                audio: Sequence[AudioTrack] = (), source: Path | None = None) -> Encoding:
        """The encoding for `target`'s container at this size, the encoder opened once to prove it;
        `audio` are the source's audio tracks, each copied if the container plays its codec, else
        re-encoded, or dropped (said) where the container holds no sound.

        An odd size that the pixel format cannot take (H.264 and HEVC in 4:2:0) is encoded
        in 4:4:4 instead, which takes any size, unless --pix-fmt asked for the format.
        """
        suffix = target.suffix.lower()
        codec = CODEC_ALIASES.get(self.codec or "", self.codec) or DEFAULT_CODECS.get(suffix, DEFAULT_CODEC)
        try:
            name = av.codec.Codec(codec, "w").name
        except (av.error.FFmpegError, ValueError):
            raise UsageError(f"--codec {self.codec}: no such encoder in this FFmpeg build "
                             f"(try h264, hevc, vp9, av1, prores, ffv1)") from None
        container, accepted = _container_codecs(target)
        if name not in accepted:
            raise UsageError(f"{target}: the {container} container cannot hold {codec} video")
        sound, notices = _sound_for(self._chosen(audio, source), container, accepted, suffix)
        known = _option_names(codec)
        if self.preset is not None and "preset" not in known:
            raise UsageError(f"--preset: {codec} has no presets")
        if self.crf is not None and not {"crf", "cq"} & known:
            raise UsageError(f"--crf: {codec} has no constant-quality setting")
        pix_fmt = self.pix_fmt or DEFAULT_PIX_FMTS.get(codec, DEFAULT_PIX_FMT)
        crf = self.crf if self.crf is not None else DEFAULT_CRF.get(codec)
        resolved = replace(self, codec=codec, crf=crf, pix_fmt=pix_fmt, sound=sound, notices=notices)
        problem = resolved._open_problem(width, height, rate)
        if problem and self.pix_fmt is None and (width % 2 or height % 2) and pix_fmt.startswith("yuv4"):
            full = pix_fmt.replace("420", "444").replace("422", "444")
            wide = replace(resolved, pix_fmt=full, notices=(*notices, f"{width}x{height} is odd-sized: encoding "
                           f"{codec} in {full}, which takes any size (an even --content-size gives {pix_fmt})"))
            if wide._open_problem(width, height, rate) is None:
                return wide
        if problem:
            raise UsageError(f"{codec} cannot encode {width}x{height} {pix_fmt} with these options ({problem})")
        return resolved

    def _chosen(self, audio: Sequence[AudioTrack], source: Path | None) -> list[AudioTrack]:
        """The tracks --audio-track names, in its order (every track by default, none under --no-audio)."""
        if self.audio_tracks is not None and not self.audio:
            raise UsageError("--audio-track picks the tracks to keep; --no-audio keeps none: give one of the two")
        if not self.audio:
            return []
        if self.audio_tracks is None:
            return list(audio)
        numbered = {track.number: track for track in audio}
        for number in self.audio_tracks:
            if number not in numbered:
                raise UsageError(f"--audio-track {number}: {source or 'the input'} has "
                                 f"{len(audio) or 'no'} audio track{'' if len(audio) == 1 else 's'}")
        return [numbered[number] for number in dict.fromkeys(self.audio_tracks)]

    def options(self) -> dict[str, str]:
        """Encoder options FFmpeg takes by name."""
        options = {}
        if self.crf is not None:
            options["crf" if "crf" in _option_names(self.codec or "") else "cq"] = str(self.crf)
            if self.codec == "libvpx-vp9":
                options["b"] = "0"  # constant quality, not constrained by a bit rate
        if self.preset is not None:
            options["preset"] = self.preset
        if self.codec == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints to stderr itself otherwise
        elif self.codec == "libsvtav1":
            options["svtav1-params"] = "log-level=1"
        return options

    def _configure(self, context: av.VideoCodecContext, width: int, height: int, rate: Fraction) -> None:
        context.width, context.height, context.pix_fmt = width, height, self.pix_fmt
        context.time_base = 1 / rate
        context.framerate = rate
        context.options = self.options()

    def _open_problem(self, width: int, height: int, rate: Fraction) -> str | None:
        context = av.CodecContext.create(self.codec, "w")
        try:
            self._configure(context, width, height, rate)
            context.open()
        except (av.error.FFmpegError, ValueError) as exc:
            return _reason(exc)
        return None


def _option_names(codec: str) -> set[str]:
    """The options an encoder takes by name (its own and FFmpeg's generic ones)."""
    options = av.CodecContext.create(codec, "w").supported_options
    return {option.name for option in (*options.generic, *options.private)}


def _container_codecs(target: Path) -> tuple[str, frozenset[str]]:
    """The container the extension names, and the codecs it holds (FFmpeg's own list). PyAV
    opens the file only when writing starts, so this creates nothing (see `check_writable`)."""
    try:
        container = av.open(str(target.parent / f".probe{target.suffix}"), "w")
    except ValueError as exc:
        raise UsageError(f"{target}: no video container for {target.suffix or 'a name without extension'!r} "
                         f"(use .mp4, .mov, .mkv, .webm, .avi or .gif, or a folder ending in /)") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputError(target, f"cannot write here ({_reason(exc)})") from exc
    try:
        return container.format.name, frozenset(container.supported_codecs)
    finally:
        container.close()


def check_writable(target: Path) -> None:
    """Prove that files can be made beside `target` by making one (an access() check misses
    read-only mounts, ACLs and full disks); OutputError if not, and nothing is left behind."""
    probe = temporary_for(target)
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputError(target, f"cannot write here ({exc.strerror or exc})") from exc
    try:
        try:
            os.write(descriptor, b"\0")
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise OutputError(target, f"cannot write here ({exc.strerror or exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


@dataclass(frozen=True)
class Sound:
    """One audio track of the source and how it goes into the output: "copy", or an encoder."""

    track: AudioTrack
    codec: str


def _sound_for(tracks: Sequence[AudioTrack], container: str, accepted: frozenset[str],
               suffix: str) -> tuple[tuple[Sound, ...], tuple[str, ...]]:
    """Copy each track whose codec the container takes (and players play there), else re-encode
    it to the container's usual codec; a container that holds no sound drops them, said once."""
    fallback = AUDIO_FALLBACK.get(suffix, DEFAULT_AUDIO)
    can_encode = av.codec.Codec(fallback, "w").name in accepted
    sounds, notices = [], []
    for track in tracks:
        unplayable = track.codec.startswith("pcm_") and container in PCM_UNPLAYABLE
        if track.codec in accepted and not unplayable:
            sounds.append(Sound(track, "copy"))
            continue
        why = "plays in few players in" if unplayable else "cannot go in"
        if can_encode:
            sounds.append(Sound(track, fallback))
            notices.append(f"{track.describe()}: {track.codec} {why} {container}: re-encoded as "
                           f"{fallback.removeprefix('lib')}")
        else:
            notices.append(f"{track.describe()}: {track.codec} {why} {container}, which takes no sound this "
                           "FFmpeg can encode: dropped")
    return tuple(sounds), tuple(notices)


def _temporary(target: Path) -> Path:
    """A name for the output in progress, in the one scheme of `atomic.temporary_for`; first the
    temporaries that killed runs left for this target are removed (see `remove_stale_temporaries`)."""
    remove_stale_temporaries(target.parent, {target.name})
    return temporary_for(target)


class VideoSink:
    """Writes frames (and the source's sound) to a temporary file; `commit` renames it over the target."""

    def __init__(self, target: Path, info: SourceInfo, encoding: Encoding, width: int, height: int) -> None:
        self.target = target
        self._tmp = _temporary(target)
        self._info = info
        container, _ = _container_codecs(target)  # by the target's extension: the temporary's is ".tmp"
        try:
            self._container = av.open(str(self._tmp), "w", format=container)
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(target, f"cannot write ({_reason(exc)})") from exc
        try:
            self._video = self._add_video(encoding, width, height)
            self._sound = _Sound(info, self._container, encoding.sound) if encoding.sound else None
        except BaseException:
            self.abort()
            raise

    def _add_video(self, encoding: Encoding, width: int, height: int) -> av.VideoStream:
        info = self._info
        stream = self._container.add_stream(encoding.codec, rate=info.rate)
        encoding._configure(stream.codec_context, width, height, info.rate)
        stream.codec_context.time_base = info.time_base  # every frame keeps its own timestamp
        stream.time_base = info.time_base
        context = stream.codec_context
        if info.color.range:
            context.color_range = info.color.range
        if info.color.matrix is not None:
            context.colorspace = info.color.space
            context.color_primaries = info.color.primaries
            context.color_trc = info.color.trc
        return stream

    def write(self, frame: Frame, pixels: np.ndarray) -> None:
        """One stylized frame (H, W, 3) uint8, shown at the source frame's time (the sources'
        timestamps strictly increase)."""
        out = self._frame(pixels)
        out.pts = frame.pts
        out.time_base = self._info.time_base
        self._container.mux(self._video.encode(out))
        if self._sound is not None:
            self._sound.up_to(frame.time)

    def _frame(self, pixels: np.ndarray) -> av.VideoFrame:
        color, context = self._info.color, self._video.codec_context
        rgb = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        return rgb.reformat(format=context.pix_fmt, dst_colorspace=color.matrix, dst_color_range=color.range or None)

    def commit(self) -> None:
        """Flush the encoders, close the file and rename it over the target."""
        try:
            self._container.mux(self._video.encode(None))
            if self._sound is not None:
                self._sound.finish()
            self._container.close()
            os.replace(self._tmp, self.target)
            sync_directory(self.target.parent)
        except (av.error.FFmpegError, OSError) as exc:
            self.abort()
            raise OutputError(self.target, f"cannot write ({_reason(exc)})") from exc
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file; the target is as it was."""
        with contextlib.suppress(Exception):
            self._container.close()
        self._tmp.unlink(missing_ok=True)


class _Sound:
    """The source's chosen audio tracks, read by one demuxer and muxed in step with the video
    so nothing piles up; each track copied or re-encoded (`_Lane`)."""

    def __init__(self, info: SourceInfo, output: av.container.OutputContainer, sounds: Sequence[Sound]) -> None:
        self._input = av.open(str(info.path), "r")
        self._lanes = {sound.track.index: _Lane(self._input.streams[sound.track.index], output, sound, info.origin)
                       for sound in sounds}
        streams = [lane.input for lane in self._lanes.values()]
        self._offset, self._end = info.origin, info.until
        if self._offset > 0:
            with contextlib.suppress(av.error.FFmpegError):  # not seekable: earlier packets are skipped as they come
                self._input.seek(int(self._offset / streams[0].time_base), stream=streams[0], backward=True)
        self._packets = self._input.demux(*streams)
        self._done = False

    def up_to(self, time: float) -> None:
        """Mux the sound up to `time` seconds of output (a little ahead: muxers interleave)."""
        while not self._done:
            packet = next(self._packets, None)
            if packet is None:
                self._done = True
                return
            if packet.pts is None:
                continue  # a flush packet, one per stream
            lane = self._lanes[packet.stream.index]
            source_time = float(packet.pts * packet.time_base)
            if source_time + float((packet.duration or 0) * packet.time_base) <= self._offset - 1e-6:
                continue  # ends before the start (a priming packet before zero still plays into it)
            if source_time >= self._end:
                lane.ended = True
                self._done = all(lane.ended for lane in self._lanes.values())
                continue
            lane.send(packet)
            if source_time - self._offset > time + 0.5:
                return

    def finish(self) -> None:
        self.up_to(math.inf)
        for lane in self._lanes.values():
            lane.finish()
        self._input.close()


def _language_for(container: str, code: str) -> str:
    """The ISO 639-2 code spelt as `container` stores it (see ISO_639_2_TERMINOLOGY)."""
    bibliographic = ISO_639_2_BIBLIOGRAPHIC.get(code, code)
    terminology = ISO_639_2_TERMINOLOGY.get(code, code)
    if container == "mov":
        return terminology if terminology in QUICKTIME_TERMINOLOGY else bibliographic
    if container in ("mp4", "ipod", "3gp", "3g2"):
        return terminology
    return bibliographic if container in ("matroska", "webm") else code


def _layout(stream: av.AudioStream) -> str:
    """The stream's channel layout; a count alone (PCM in Matroska, say) as the usual layout for
    it, which encoders such as AAC require."""
    layout = stream.codec_context.layout
    if layout.name.endswith("channels"):
        return _USUAL_LAYOUTS.get(layout.nb_channels, layout.name)
    return layout.name


_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


class _Lane:
    """One audio track: packets copied when the output plays its codec, else decoded, resampled
    and re-encoded; its language and title tags go along."""

    def __init__(self, stream: av.AudioStream, output: av.container.OutputContainer, sound: Sound,
                 origin: float) -> None:
        self.input, self.ended = stream, False
        self._output = output
        self._copy = sound.codec == "copy"
        if self._copy:
            self._out = output.add_stream_from_template(stream)
        else:
            rate = 48000 if sound.codec == "libopus" else stream.codec_context.sample_rate
            self._out = output.add_stream(sound.codec, rate=rate, layout=_layout(stream))
            self._resampler = av.AudioResampler(format=self._out.codec_context.format,
                                                layout=self._out.codec_context.layout, rate=rate)
        language = sound.track.language and _language_for(output.format.name, sound.track.language)
        for key, value in (("language", language), ("title", sound.track.title)):
            if value:
                self._out.metadata[key] = value
        self._shift = round(origin / stream.time_base)

    def send(self, packet: av.Packet) -> None:
        if self._copy:
            packet.pts -= self._shift
            if packet.dts is not None:
                packet.dts -= self._shift
            packet.stream = self._out
            self._output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None if frame.pts is None else frame.pts - self._shift
            for resampled in self._resampler.resample(frame):
                self._output.mux(self._out.encode(resampled))

    def finish(self) -> None:
        if not self._copy:
            for resampled in self._resampler.resample(None):
                self._output.mux(self._out.encode(resampled))
            self._output.mux(self._out.encode(None))


FRAME_FILES = "frame_*.png"  # what a folder of frames holds, as `FrameFolderSink.name` names them


class FrameFolderSink:
    """Numbered PNG frames in a temporary folder beside the target, moved into it when complete."""

    def __init__(self, target: Path, digits: int = 6) -> None:
        self.target = target
        self._digits = digits
        self._tmp = _temporary(target)
        try:
            self._tmp.mkdir(parents=True)
        except OSError as exc:
            raise OutputError(target, f"cannot write ({exc.strerror or exc})") from exc
        self._count = 0

    def name(self, index: int) -> str:
        return f"frame_{index + 1:0{self._digits}d}.png"

    def write(self, frame: Frame, pixels: np.ndarray) -> None:
        images.save_image(images.Image.fromarray(pixels), self._tmp / self.name(self._count))
        self._count += 1

    def commit(self) -> None:
        try:
            if not self.target.exists():
                os.replace(self._tmp, self.target)
            else:
                for old in self.target.glob(FRAME_FILES):
                    old.unlink()
                for new in sorted(self._tmp.iterdir()):
                    os.replace(new, self.target / new.name)
                self._tmp.rmdir()
            sync_directory(self.target)
            sync_directory(self.target.parent)
        except OSError as exc:
            self.abort()
            raise OutputError(self.target, f"cannot write ({exc.strerror or exc})") from exc

    def abort(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

