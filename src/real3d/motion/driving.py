"""What drives a portrait, read once by the pipeline and handed to a backend's `motion` step.

`Driving` is backend-neutral: speech samples, and/or landmarks tracked on a driving video and a pose
video, plus the user's motion options. Each backend turns it into its own motion (the mesh backend a
stream of `MotionTrack` chunks, the neural backend a `BFMTrack`) and renders frames from that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from real3d.errors import InputError
from real3d.io.audio import load_audio
from real3d.io.prefetch import prefetch
from real3d.io.video import iter_frames, probe_video
from real3d.motion.blink import BlinkMode
from real3d.motion.from_video import fill_missing_landmarks, video_landmarks

SPEECH_RATE = 16000
"""Sample rate (Hz) of `Driving.speech` (what every audio analysis here reads)."""
DRIVER_MAX_SIDE = 640
"""Driver frames are downscaled to this longer side before landmark tracking (speed; precision is ample)."""

FrameProgress = Callable[[int, int], None]
"""Called with (frames done, frames in all) while a driving video is tracked."""


@dataclass(frozen=True)
class TrackedVideo:
    """Face landmarks of a driving (or pose) video, resampled to the output frame rate."""

    path: Path
    """The video file."""
    landmarks: np.ndarray
    """[T,478,3] float32 MediaPipe landmarks in pixels of the tracked frames (frames without a face interpolated)."""
    size: tuple[int, int]
    """(height, width) of the tracked frames."""

    def __len__(self) -> int:
        return len(self.landmarks)


@dataclass(frozen=True)
class Driving:
    """Everything that drives one run, in the form every backend reads."""

    fps: float
    """Output frame rate."""
    speech: np.ndarray | None = None
    """[N] float32 mono samples at `SPEECH_RATE` when speech drives the mouth (audio driving)."""
    video: TrackedVideo | None = None
    """The driving video's landmarks: expression and head pose (video driving)."""
    pose: TrackedVideo | None = None
    """Head pose from this video instead (ping-pong when shorter)."""
    still: bool = False
    """Hold the source's head pose (no head motion)."""
    max_frames: int | None = None
    """Stop after this many frames (None = the driver's length)."""
    mouth_amp: float = 0.45
    """Mouth amplitude for audio driving (official default 0.45 = neutral)."""
    blink: BlinkMode = "natural"
    """Blink schedule for audio driving: natural, periodic (the official every 5 s) or none."""
    seed: int = 0
    """Seed of everything random (blinks, idle head motion, A2M sampling)."""

    def __post_init__(self) -> None:
        if (self.speech is None) == (self.video is None):
            raise InputError("give exactly one driver: a video (expression + pose) or speech audio")
        if not 0 < self.fps <= 120:
            raise InputError(f"fps {self.fps} is out of range; use a frame rate between 1 and 120")

    def limit(self, n_frames: int) -> int:
        """`n_frames` cut to `max_frames`."""
        return n_frames if self.max_frames is None else min(n_frames, self.max_frames)


def read_speech(path: str | Path) -> np.ndarray:
    """[N] float32 mono samples at `SPEECH_RATE` of any audio file (or a video's sound)."""
    return load_audio(path, sample_rate=SPEECH_RATE, mono=True).samples


def track_video(
    path: str | Path, fps: float, max_frames: int | None = None, progress: FrameProgress | None = None
) -> TrackedVideo:
    """Landmarks of a driving video at `fps` (at most `max_frames` frames), with a fresh tracker so no
    tracking state carries over from another image or video. The next frames are decoded in a background
    thread while the current one is tracked (`prefetch`); `progress` is called from the caller's thread."""
    info = probe_video(path)
    total = max(1, int(round(info.duration * fps)))
    if max_frames is not None:
        total = min(total, max_frames)
    sizes: list[tuple[int, int]] = []

    def frames() -> Iterator[np.ndarray]:
        decoded = islice(iter_frames(path, max_size=DRIVER_MAX_SIDE, fps=fps), total)
        for i, frame in enumerate(prefetch(decoded, depth=3, name="real3d-decode-driver")):
            if not sizes:
                sizes.append(frame.shape[:2])
            yield frame
            if progress is not None:
                progress(i + 1, total)

    lms = fill_missing_landmarks(video_landmarks(frames()).astype(np.float64))
    return TrackedVideo(Path(path), lms.astype(np.float32), sizes[0])
