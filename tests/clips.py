"""Tiny synthetic videos made with PyAV for the tests: a few frames, small sizes, optional sound."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from conftest import synthetic_image

NTSC = Fraction(30000, 1001)


def moving_frames(count: int, width: int, height: int, seed: int = 1, step: int = 2) -> list[np.ndarray]:
    """A synthetic picture panning sideways by `step` px a frame."""
    base = np.asarray(synthetic_image(width + step * count, height, seed=seed))
    return [np.ascontiguousarray(base[:, i * step:i * step + width]) for i in range(count)]


def make_clip(path: Path, frames: list[np.ndarray], *, rate: Fraction = NTSC, pts: list[int] | None = None,
              codec: str = "libx264", pix_fmt: str = "yuv420p", audio_seconds: float = 0.0,
              rotation: int = 0, time_base: Fraction | None = None, color: dict[str, int] | None = None,
              tracks: list[Track] | None = None) -> Path:
    """Write `frames` (H, W, 3 uint8) as a video; `pts` in `time_base` (default 1/rate units) for a
    variable frame rate; an AAC sine tone of `audio_seconds` if > 0, or the audio `tracks` given
    (each that long); a display rotation tag."""
    height, width = frames[0].shape[:2]
    time_base = time_base or 1 / rate
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        for name, value in (color or {}).items():
            setattr(video.codec_context, name, value)
        if rotation:
            video.set_display_rotation(rotation)
        if tracks is None:
            tracks = [Track()] if audio_seconds > 0 else []
        sounds = [(track.add(container), track.pitch) for track in tracks]
        stamps = pts if pts is not None else [round(i / rate / time_base) for i in range(len(frames))]
        for pixels, stamp in zip(frames, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
            for name, value in (color or {}).items():
                setattr(frame, name, value)
            frame.pts, frame.time_base = stamp, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for sound, pitch in sounds:
            write_tone(container, sound, audio_seconds, pitch)
    return path


@dataclass(frozen=True)
class Track:
    """An audio track for `make_clip`: a sine tone in this codec, with these tags."""

    codec: str = "aac"
    language: str | None = None
    title: str | None = None
    pitch: float = 440.0

    def add(self, container: av.container.OutputContainer) -> av.AudioStream:
        stream = container.add_stream(self.codec, rate=44100, layout="mono")
        for key in ("language", "title"):
            if getattr(self, key):
                stream.metadata[key] = getattr(self, key)
        return stream


def write_tone(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float,
               pitch: float = 440.0) -> None:
    """A quiet sine tone of `seconds` in the stream's codec."""
    samples = int(seconds * 44100)
    tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * pitch / 44100)).astype(np.float32)
    resample = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=44100)
    for start in range(0, samples, 1024):
        chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 44100, start
        for frame in resample.resample(chunk):
            container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# --- HDR: the BT.2100 transfers, to make clips whose colours are known ----------------------------

def pq_signal(nits: np.ndarray | float) -> np.ndarray:
    """SMPTE ST 2084 (PQ) inverse EOTF: display light in cd/m2 to the non-linear signal in [0, 1]."""
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (np.asarray(nits, float) / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def hlg_signal(scene: np.ndarray | float) -> np.ndarray:
    """ITU-R BT.2100 HLG OETF: normalised scene light in [0, 1] to the signal in [0, 1]."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.asarray(scene, float)
    return np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - b, 1e-12)) + c)


PQ, HLG = 16, 18  # AVColorTransferCharacteristic values
# HDR10 static metadata as x265 writes it: P3 mastering display, 1000 cd/m2 peak; MaxCLL 1000, MaxFALL 400.
HDR10 = "hdr10=1:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"


def make_hdr_clip(path: Path, patches: list[tuple[float, float, float]], trc: int, count: int = 2) -> Path:
    """HEVC Main10 (yuv420p10le), BT.2020 primaries and matrix, TV range, PQ or HLG: a row of
    16x32 patches of these non-linear R'G'B' signals; PQ clips carry HDR10 mastering metadata."""
    for attempt in range(3):  # the wheel's x265 has failed now and then on flushing frames this small
        try:
            return _write_hdr_clip(path, patches, trc, count)
        except av.FFmpegError:
            if attempt == 2:
                raise
    return path


def _write_hdr_clip(path: Path, patches: list[tuple[float, float, float]], trc: int, count: int) -> Path:
    rgb = np.zeros((32, 16 * len(patches), 3), np.uint16)
    for i, signal in enumerate(patches):
        rgb[:, 16 * i:16 * i + 16] = np.round(np.asarray(signal) * 65535)
    tags = {"color_range": 1, "colorspace": 9, "color_primaries": 9, "color_trc": trc}
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx265", rate=25)
        video.width, video.height, video.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p10le"
        # One thread: x265's thread pools fail now and then on frames this small (EINVAL on flushing).
        params = "log-level=error:pools=none:frame-threads=1" + (f":{HDR10}" if trc == PQ else "")
        video.codec_context.options = {"x265-params": params}
        for name, value in tags.items():
            setattr(video.codec_context, name, value)
        for i in range(count):
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb48le")
            picture = picture.reformat(format="yuv420p10le", dst_colorspace=9, dst_color_range=1)  # BT.2020 NCL
            for name, value in tags.items():
                setattr(picture, name, value)
            picture.pts = i
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
    return path


def make_ts_clip(path: Path, count: int, lead: float) -> Path:
    """MPEG-TS at 25 fps whose AAC sound starts `lead` seconds before the first video frame."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        video.codec_context.time_base = Fraction(1, 25)
        sound = container.add_stream("aac", rate=44100, layout="mono")
        for i, pixels in enumerate(moving_frames(count, 32, 32)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i + round(lead * 25)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        write_tone(container, sound, lead + count / 25)
    return path


def make_repeated_clip(path: Path, stamps: list[int]) -> Path:
    """Motion JPEG in Matroska at 25 fps whose packets carry these timestamps (some repeated,
    as broken muxers write them; Matroska takes timestamps that do not strictly increase)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mjpeg", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuvj420p"
        video.codec_context.time_base = Fraction(1, 25)
        for i, (pixels, stamp) in enumerate(zip(moving_frames(len(stamps), 32, 32), stamps, strict=True)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuvj420p")
            frame.pts = i
            for packet in video.encode(frame):
                packet.pts = packet.dts = stamp
                container.mux(packet)
    return path


def read_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def streams(path: Path) -> dict[str, str]:
    """Stream type -> codec name."""
    with av.open(str(path)) as container:
        return {s.type: s.codec_context.name for s in container.streams if s.codec_context is not None}


def audio_seconds(path: Path) -> float:
    """How long the sound plays, from its packets."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        ends = [float((p.pts + p.duration) * stream.time_base) for p in container.demux(stream) if p.pts is not None]
    return max(ends)
