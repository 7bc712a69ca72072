"""Smooth 0 -> 1 ramps shared by the audio cues and the motion models."""

from __future__ import annotations

import numpy as np


def smoothstep(u: np.ndarray) -> np.ndarray:
    """3u^2 - 2u^3 of u clipped to [0, 1]: 0 at u <= 0, 1 at u >= 1, flat at both ends."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)
