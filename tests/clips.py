"""Tiny synthetic videos made with PyAV for the tests: a few frames, small sizes, optional sound."""

from __future__ import annotations

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
              rotation: int = 0, time_base: Fraction | None = None, color: dict[str, int] | None = None) -> Path:
    """Write `frames` (H, W, 3 uint8) as a video; `pts` in `time_base` (default 1/rate units) for a
    variable frame rate; an AAC sine tone of `audio_seconds` if > 0; a display rotation tag."""
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
        sound = container.add_stream("aac", rate=44100, layout="mono") if audio_seconds > 0 else None
        stamps = pts if pts is not None else [round(i / rate / time_base) for i in range(len(frames))]
        for pixels, stamp in zip(frames, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
            for name, value in (color or {}).items():
                setattr(frame, name, value)
            frame.pts, frame.time_base = stamp, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            samples = int(audio_seconds * 44100)
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 44100)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
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
