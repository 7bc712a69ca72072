"""Framing a photo into the 512x512 head-and-shoulders crop both backends work on.

Unlike the official code (which squashes any photo to 512x512), the crop is square in the photo,
keeps the aspect ratio and puts the face at a consistent size and place: face box = 1/2.4 of the
crop side, face centre at 45% of the height. When the photo is too tight, the crop shrinks (down to
1.7x the face) before the missing border is padded by edge replication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from real3d.errors import NoFaceError

SIZE = 512
FACE_FRACTION = 1 / 2.4
MIN_FACE_FRACTION_TIGHT = 1 / 1.7
FACE_CENTER_Y = 0.45
MIN_FACE_PX = 40
FULL_MIN_FACE_FRACTION = 0.28
"""`auto` keeps the whole photo when the face box is at least this fraction of its shorter side and the
photo is nearly square (it is already a portrait crop); otherwise it crops head-and-shoulders."""

FramingMode = Literal["auto", "crop", "full"]


@dataclass
class Framing:
    """Affine map from photo pixels to the crop."""

    matrix: np.ndarray
    """[2,3] float64: crop = matrix @ [x, y, 1]."""
    size: int
    """Crop side in pixels."""
    padded_fraction: float
    """Fraction of the crop that lies outside the photo (filled by edge replication)."""

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Warp a photo-sized image into the crop."""
        scale = self.matrix[0, 0]
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return cv2.warpAffine(image, self.matrix, (self.size, self.size), flags=interp, borderMode=cv2.BORDER_REPLICATE)

    def map_points(self, pts: np.ndarray) -> np.ndarray:
        """[N,2|3] photo points -> crop points (z scaled like x)."""
        out = np.array(pts, dtype=np.float64, copy=True)
        out[:, :2] = pts[:, :2] @ self.matrix[:, :2].T + self.matrix[:, 2]
        if out.shape[1] > 2:
            out[:, 2] = pts[:, 2] * self.matrix[0, 0]
        return out


def frame_face(
    bbox: tuple[float, float, float, float], image_size: tuple[int, int], size: int = SIZE, mode: FramingMode = "auto"
) -> Framing:
    """Choose the square crop for a face box (x0, y0, x1, y1) in a photo of (height, width).

    mode: "crop" = head-and-shoulders crop; "full" = the whole photo, scaled to fit and padded to a
    square; "auto" = "full" for photos that already are portrait crops, else "crop".
    """
    h, w = image_size
    x0, y0, x1, y1 = bbox
    face = max(x1 - x0, y1 - y0)
    if face < MIN_FACE_PX:
        raise NoFaceError(
            f"the face is only {face:.0f} px tall in this photo; use a photo where the face is at least "
            f"{MIN_FACE_PX} px (ideally 200+ px) tall"
        )
    if mode == "auto":
        square = 0.8 <= w / h <= 1.25
        mode = "full" if square and face >= FULL_MIN_FACE_FRACTION * min(h, w) else "crop"
    if mode == "full":
        s = size / max(h, w)
        m = np.array([[s, 0.0, (size - w * s) / 2], [0.0, s, (size - h * s) / 2]])
        return Framing(matrix=m, size=size, padded_fraction=float(1 - (w * s) * (h * s) / size**2))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = face / FACE_FRACTION
    # shrink toward the tight limit while the crop sticks out of the photo
    tight = face / MIN_FACE_FRACTION_TIGHT
    while side > tight and _overflow(cx, cy, side, w, h) > 0:
        side = max(tight, side * 0.95)
    left = cx - side / 2
    top = cy - FACE_CENTER_Y * side
    # slide the crop inside the photo where that is possible without losing the face
    left = _slide(left, side, w, x0, x1)
    top = _slide(top, side, h, y0, y1)
    s = size / side
    m = np.array([[s, 0.0, -s * left], [0.0, s, -s * top]])
    pad = _outside_fraction(left, top, side, w, h)
    return Framing(matrix=m, size=size, padded_fraction=pad)


def _slide(start: float, side: float, extent: float, f0: float, f1: float) -> float:
    if side <= extent:
        start = min(max(start, 0.0), extent - side)
    else:
        start = (extent - side) / 2
    # never cut the face
    return min(max(start, f1 - side + 1), f0 - 1)


def _overflow(cx: float, cy: float, side: float, w: int, h: int) -> float:
    left, top = cx - side / 2, cy - FACE_CENTER_Y * side
    return max(0.0, -left) + max(0.0, left + side - w) + max(0.0, -top) + max(0.0, top + side - h)


def _outside_fraction(left: float, top: float, side: float, w: int, h: int) -> float:
    ix = max(0.0, min(left + side, w) - max(left, 0.0))
    iy = max(0.0, min(top + side, h) - max(top, 0.0))
    return float(1.0 - ix * iy / (side * side))
