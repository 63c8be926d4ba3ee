"""Steady frames: a video's content statistics smoothed over time, so colours do not flicker.

AdaIN gives each frame its own content's mean and std normalised away; small changes in
them from frame to frame (noise, a hand-held camera) come out as flicker of colour and
texture. Averaging them over time steadies the output. Only statistics are averaged,
never pixels: a moving object is drawn where it is in each frame, with no ghost.
"""

from __future__ import annotations

import math

from .model import FeatureStats

# The time constant of --smooth by default, in seconds: see BENCHMARKS.md ("Steady frames").
DEFAULT_SMOOTH = 0.25
# A change of content statistics this large between frames is a cut, not flicker: smoothing
# restarts there instead of dragging the last shot's colours into the next. Measured `jump`s
# (benchmarks/video_flicker.py --jumps): cuts between the sample photos 0.54-0.98; an object
# crossing a still scene up to 0.23; panning 0.04; sensor noise 0.007.
CUT_THRESHOLD = 0.4


# --- steady frames --------------------------------------------------------------------------------

class Steady:
    """Content statistics smoothed over time: an exponential average with time constant `tau`
    seconds (0: each frame its own statistics, exactly as a still). A frame whose statistics
    jump by more than CUT_THRESHOLD (relative to the average's spread) starts afresh: a cut."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self._state: FeatureStats | None = None
        self._time = 0.0
        self.cuts = 0

    def __call__(self, own: FeatureStats, time: float) -> FeatureStats:
        if self.tau <= 0:
            return own
        state = self._state
        if state is None or self.jump(own, state) > CUT_THRESHOLD:
            self.cuts += state is not None
            self._state, self._time = own, time
            return own
        keep = math.exp(-max(time - self._time, 0.0) / self.tau)
        self._state = FeatureStats(keep * state.mean + (1 - keep) * own.mean, keep * state.std + (1 - keep) * own.std)
        self._time = time
        return self._state

    @staticmethod
    def jump(own: FeatureStats, state: FeatureStats) -> float:
        """How far a frame's statistics are from the running ones, in units of the features' spread."""
        change = (own.mean - state.mean).abs().mean() + (own.std - state.std).abs().mean()
        return float(change / state.std.mean().clamp_min(1e-6))
