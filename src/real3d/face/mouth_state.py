"""The source photo's mouth: is it open, and does it show teeth (where, and what colour)?

A portrait is often taken mid-word or with a smile that shows the teeth. The drivers close such a mouth for
its rest pose (`real3d.motion.mouth.closed_mouth`); the mesh backend then redraws the inside of every opening,
and uses the person's own teeth where the photo shows them (`real3d.backends.mesh`).

Teeth pixels are found inside the inner-lip contour as pixels brighter than the lips (CIE L*) and less
saturated than them (HSV S): enamel is near-white, lips and the mouth's inside are red or dark. A tooth pixel
belongs to the upper row when it lies nearer the upper inner lip than the lower one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from real3d.face import topology as topo

OPEN_GAP = 0.03
"""Inner-lip gap (canonical units, outer-eye-corner distance = 1) above which the source mouth counts as open
(closed lips measure 0-0.01; a slightly parted mouth ~0.02; speaking frames and toothy smiles 0.03-0.15)."""
MIN_TEETH_FRACTION = 0.08
"""Share of the inner-mouth area that must be teeth for the photo's own teeth to be used."""


def mouth_gap(q: np.ndarray) -> float:
    """Largest vertical inner-lip gap of canonical landmarks [478,3] (over the inner-lip pairs; 0 if they cross)."""
    q = np.asarray(q, np.float64)
    up, lo = list(topo.INNER_LIP_UPPER[1:-1]), list(topo.INNER_LIP_LOWER[1:-1])
    return float(max(0.0, np.max(q[lo, 1] - q[up, 1])))


@dataclass(frozen=True)
class MouthState:
    """What the source's mouth shows."""

    gap: float
    """Largest inner-lip gap, canonical units."""
    is_open: bool
    """gap above OPEN_GAP."""
    upper_teeth: np.ndarray
    """[H,W] float32 in [0,1]: upper-teeth pixels of the source image (0 outside the mouth)."""
    lower_teeth: np.ndarray
    """[H,W] float32 in [0,1]: lower-teeth pixels."""
    teeth_fraction: float
    """Share of the inner-mouth area that shows teeth."""
    cavity_rgb: np.ndarray | None
    """[3] median colour of the dark inside of the mouth (None when the photo shows none)."""

    @property
    def shows_teeth(self) -> bool:
        """The photo shows enough teeth to draw them from it."""
        return self.is_open and self.teeth_fraction >= MIN_TEETH_FRACTION


def mouth_state(image: np.ndarray, landmarks: np.ndarray, canonical: np.ndarray) -> MouthState:
    """Measure the mouth of an RGB uint8 image [H,W,3] from its landmarks [478,3] (pixels) and the same
    landmarks in the canonical frame [478,3]."""
    h, w = image.shape[:2]
    gap = mouth_gap(canonical)
    empty = np.zeros((h, w), np.float32)
    if gap <= OPEN_GAP:
        return MouthState(gap, False, empty, empty.copy(), 0.0, None)
    lm = np.asarray(landmarks, np.float64)
    inner = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inner, [np.round(lm[list(topo.INNER_LIP_LOOP), :2]).astype(np.int32)], 1)
    lips = np.zeros((h, w), np.uint8)
    outer = list(topo.OUTER_LIP_UPPER) + list(topo.OUTER_LIP_LOWER)[::-1]
    cv2.fillPoly(lips, [np.round(lm[outer, :2]).astype(np.int32)], 1)
    lips &= 1 - inner
    area = int(inner.sum())
    if area < 20 or lips.sum() < 20:
        return MouthState(gap, True, empty, empty.copy(), 0.0, None)
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    sat = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
    lip_l, lip_s = float(np.median(lum[lips > 0])), float(np.median(sat[lips > 0]))
    teeth = (inner > 0) & (lum > lip_l + 8.0) & (sat < 0.8 * lip_s)
    teeth = cv2.morphologyEx(teeth.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)) > 0
    dark = (inner > 0) & (lum < 0.6 * lip_l)
    cavity = np.median(image[dark], 0).astype(np.float32) if dark.sum() >= 10 else None
    upper, lower = _split_rows(teeth, inner > 0, lm)
    soft = lambda m: cv2.GaussianBlur(m.astype(np.float32), (3, 3), 0)  # noqa: E731
    return MouthState(gap, True, soft(upper), soft(lower), float(teeth.sum() / area), cavity)


FILL_BAND = 0.012
"""How far beyond MediaPipe's inner-lip contour `lips_filled` always paints, in outer-eye-corner distances (2 px on a
512-px portrait whose eyes are 160 px apart): the contour sits up to ~2 px inside the dark opening on the development
clips' speaking first frames."""
FILL_REACH = 0.06
"""How far beyond the contour `lips_filled` also paints pixels that are not lip-coloured (dark or teeth): the corners
of a wide-open mouth reach several pixels past MediaPipe's inner-lip corners."""
DARK_LIP = 0.7
"""A pixel darker than this share of the lips' median luminance (CIE L*) is the mouth's inside, not lip (the lips'
own shading stays above ~0.8 on the development clips' first frames; `mouth_state` counts under 0.6 as cavity)."""


def lips_filled(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A copy of an RGB uint8 image [H,W,3] whose mouth opening is painted over from the surrounding lips (Telea
    inpainting). The opening: inside the inner-lip contour of `landmarks` [478,3] (pixels) grown by FILL_BAND, plus
    the dark or teeth-coloured pixels inside the outer lip contour up to FILL_REACH beyond the inner one.

    A renderer that closes a photographed open mouth textures the lips from this image: the lips' inner edge and
    whatever the warp squeezes into the closed lip line then carry lip colour instead of the photo's teeth and dark
    cavity (which would otherwise show as a dark seam between lips that meet)."""
    lm = np.asarray(landmarks, np.float64)
    out = image.copy()
    eye = float(np.linalg.norm(lm[263, :2] - lm[33, :2]))
    band, reach = max(1, int(round(FILL_BAND * eye))), max(2, int(round(FILL_REACH * eye)))
    outer_idx = list(topo.OUTER_LIP_UPPER) + list(topo.OUTER_LIP_LOWER)[::-1]
    outer_pts = lm[outer_idx, :2]
    h, w = image.shape[:2]
    pad = reach + 6  # inpainting reads a few pixels around the region
    x0, y0 = np.maximum(np.floor(outer_pts.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(outer_pts.max(0)).astype(int) + pad + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    sub = np.ascontiguousarray(image[y0:y1, x0:x1])
    poly = lambda pts: [np.round((pts - [x0, y0]) * 16).astype(np.int32)]  # noqa: E731
    disc = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    inner = np.zeros(sub.shape[:2], np.uint8)
    cv2.fillPoly(inner, poly(lm[list(topo.INNER_LIP_LOOP), :2]), 1, cv2.LINE_8, shift=4)
    lips = np.zeros_like(inner)
    cv2.fillPoly(lips, poly(outer_pts), 1, cv2.LINE_8, shift=4)
    ring = (lips > 0) & (inner == 0)
    region = cv2.dilate(inner, disc(band))
    if ring.sum() >= 20:
        lum = cv2.cvtColor(sub, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
        sat = cv2.cvtColor(sub, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
        lip_l, lip_s = float(np.median(lum[ring])), float(np.median(sat[ring]))
        odd = (lum < DARK_LIP * lip_l) | ((lum > lip_l + 8.0) & (sat < 0.8 * lip_s))  # inside or teeth (`mouth_state`)
        near = (cv2.dilate(inner, disc(reach)) > 0) & (cv2.dilate(lips, disc(band)) > 0)
        region |= (odd & near).astype(np.uint8)
        region = cv2.dilate(region, disc(1))
    if region.any():
        out[y0:y1, x0:x1] = cv2.inpaint(sub, region, 3, cv2.INPAINT_TELEA)
    return out


def _split_rows(teeth: np.ndarray, inner: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) teeth masks. In each column the upper row is the run of teeth that starts in the upper half
    of the opening, down to the first dark break (the gap between the rows, or the cavity); teeth after that
    break, or starting in the lower half, are the lower row. A smile shows the upper row nearly down to the lower
    lip, so splitting at the middle would cut the upper teeth in two."""
    h, w = teeth.shape
    cols = np.arange(w, dtype=np.float64)
    ux, uy = lm[list(topo.INNER_LIP_UPPER), 0], lm[list(topo.INNER_LIP_UPPER), 1]
    lx, ly = lm[list(topo.INNER_LIP_LOWER), 0], lm[list(topo.INNER_LIP_LOWER), 1]
    mid = 0.5 * (np.interp(cols, *_sorted(ux, uy)) + np.interp(cols, *_sorted(lx, ly)))  # W
    rows = np.arange(h, dtype=np.float64)[:, None]
    t = cv2.morphologyEx(teeth.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 1), np.uint8)) > 0  # 1-px seams
    seen = np.maximum.accumulate(t, axis=0)  # a tooth above (or here) in this column
    starts_high = np.any(t & (rows <= mid[None, :]), axis=0)  # W: the column's teeth begin in the upper half
    broke = np.maximum.accumulate(seen & ~t & inner, axis=0)  # the run of teeth has ended above
    upper = teeth & ~broke & starts_high[None, :]
    return upper, teeth & ~upper


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.argsort(x)
    return x[o], y[o]
