"""The interface every renderer implements: (portrait, driving) -> frames.

A run is three steps, each owned by the backend:

    source = backend.prepare(portrait)          # per-source work, done once
    motion = backend.motion(source, driving)    # the driver in the backend's own motion form
    frames = backend.frames(source, motion)     # RGB uint8 frames, one at a time

`real3d.pipeline.Pipeline` reads the portrait and the driver, calls these three, and streams the frames
to the writer; it knows nothing else about a backend. `frames` is a lazy iterator, so a caller can stop
after any frame (the web app's Stop button, live previews) and memory does not grow with the length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Protocol, TypeVar

import numpy as np

from real3d.face.portrait import Portrait
from real3d.motion.driving import Driving

SourceT = TypeVar("SourceT")
MotionT = TypeVar("MotionT", bound=Sized)


class Backend(Protocol[SourceT, MotionT]):
    """A renderer of talking-portrait frames."""

    name: str
    """Short name used on the command line (`--backend NAME`)."""
    timings: dict[str, float]
    """Seconds spent per stage so far (stage names are the backend's own)."""

    def prepare(self, portrait: Portrait) -> SourceT:
        """Everything about the source that every frame needs (computed once per portrait)."""
        ...

    def motion(self, source: SourceT, driving: Driving) -> MotionT:
        """The backend's motion for `driving`; `len(motion)` is the number of frames it will render."""
        ...

    def frames(self, source: SourceT, motion: MotionT) -> Iterator[np.ndarray]:
        """RGB uint8 [H,W,3] frames of size `frame_size(source)`, lazily, `len(motion)` of them."""
        ...

    def frame_size(self, source: SourceT) -> tuple[int, int]:
        """(height, width) of the frames rendered for `source`."""
        ...
