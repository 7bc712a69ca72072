"""Blinking by PNCC image editing, as the official `inference/edit_secc.py: blink_eye_for_secc`.

The A2M model is always run with blink = 0 (eyes open), so the released pipeline (`--blink_mode
period`) closes the eyes afterwards by painting over the eye holes of the driving PNCC maps (the official code's SECC):

* schedule (`blink_schedule`): at every frame i with i % 125 == 0 a blink of T = randint(8, 12)
  frames starts (T drawn from the given `random.Random`, like the official global `random` seeded
  with `--seed`); frame i + t gets the closing fraction 4t/T - 4t^2/T^2 (0 at t = 0, 1 at t = T/2).
  The last frame of the clip is never edited (the official loop stops at j >= n - 1).
* editing (`close_eyes`), on the 8-bit quantised map q = int((x + 1) / 2 * 255) (truncation; the
  output is q / 127.5 - 1 even for fraction 0):
  1. face pixels have all three channels != 0; eye holes are non-face pixels inside the priors
     rows [H/4, H/2), columns [W/4, W/2) (left) and [W/2, 3W/4) (right);
  2. around-eye boxes: the holes' row range and each eye's column range, widened by 4 px (end
     exclusive, as the official slices); face pixels in them within 5 px of a hole join the eye;
  3. per column, the upper / lower eye extents move toward the mean eye row by the fraction:
     eye pixels with row <= f*mean + (1-f)*min or row >= f*mean + (1-f)*max are closed;
  4. each closed pixel takes the colour of the nearest remaining around-eye face pixel (KD-tree;
     exact-distance ties may resolve to another equidistant pixel than sklearn's).
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from scipy.spatial import cKDTree

from real3d.errors import InputError

logger = logging.getLogger(__name__)

BLINK_PERIOD = 125
"""Frames between blink onsets (5 s at 25 fps)."""
BLINK_FRAMES = (8, 12)
"""Inclusive range of the blink duration in frames."""
_ROOM = 4
_ERODE_PX = 5.0


def blink_fraction(t: np.ndarray | float, duration: int) -> np.ndarray:
    """Closing fraction 4t/T - 4t^2/T^2 at offset t of a blink lasting T = duration frames."""
    t = np.asarray(t, dtype=np.float64)
    return 4.0 * t / duration - 4.0 * t**2 / duration**2


def blink_schedule(n_frames: int, rng: random.Random, period: int = BLINK_PERIOD) -> np.ndarray:
    """[n_frames] closing fraction per frame, NaN where the frame is left untouched.

    Draws one duration per blink onset (i % period == 0) with `rng.randint(8, 12)`, in frame order.
    """
    if n_frames < 0 or period <= 0:
        raise InputError(f"blink_schedule: need n_frames >= 0 and period > 0, got {n_frames}, {period}")
    out = np.full(n_frames, np.nan)
    for start in range(0, n_frames, period):
        duration = rng.randint(*BLINK_FRAMES)
        stop = min(start + duration, n_frames - 1)  # the official loop breaks at j >= n - 1
        t = np.arange(stop - start)
        out[start:stop] = blink_fraction(t, duration)
    return out


def _quantise(pncc: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [-1,1] -> [H,W,3] int64 levels int((x + 1) / 2 * 255) (float32 math, truncation)."""
    img = pncc.detach().cpu().float().permute(1, 2, 0).numpy()
    return ((img + 1.0) / 2.0 * 255.0).astype(np.int64)


def _dequantise(levels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(levels.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def close_eyes(pncc: torch.Tensor, fraction: float) -> torch.Tensor:
    """Close the eye holes of one PNCC map [3,H,W] (values in [-1,1]) by `fraction` in [0,1].

    Returns a new float32 [3,H,W] CPU tensor on the official 8-bit grid (see module docstring).
    """
    if pncc.ndim != 3 or pncc.shape[0] != 3:
        raise InputError(f"close_eyes: pncc must be [3,H,W], got {tuple(pncc.shape)}")
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"close_eyes: fraction must lie in [0,1], got {fraction}")
    img = _quantise(pncc)
    if fraction == 0:
        return _dequantise(img)
    h, w = img.shape[:2]
    face = (img != 0).all(-1)  # H x W
    prior_l = np.zeros((h, w), dtype=bool)
    prior_r = np.zeros((h, w), dtype=bool)
    prior_l[h // 4 : h // 2, w // 4 : w // 2] = True
    prior_r[h // 4 : h // 2, w // 2 : w // 4 * 3] = True
    holes = ~face & (prior_l | prior_r)
    rows = np.flatnonzero(holes.any(1))
    if rows.size == 0:
        logger.debug("close_eyes: no eye holes in the PNCC map; nothing to close")
        return _dequantise(img)
    r0, r1 = max(rows[0] - _ROOM, 0), rows[-1] + _ROOM
    around = np.zeros((h, w), dtype=bool)
    for prior in (prior_l, prior_r):
        cols = np.flatnonzero((~face & prior).any(0))
        if cols.size:
            around[r0:r1, max(cols[0] - _ROOM, 0) : cols[-1] + _ROOM] = True
    around_face = face & around
    face_yx = np.argwhere(around_face)
    if face_yx.size:
        dist, _ = cKDTree(np.argwhere(holes)).query(face_yx)
        near = face_yx[dist <= _ERODE_PX]
        around_face[near[:, 0], near[:, 1]] = False  # the hole's rim joins the eye
    eye = ~around_face & around  # H x W

    grid = np.arange(h, dtype=np.float64)[:, None]  # H x 1 row coordinate
    n_eye = eye.sum(0)  # W
    mean = np.where(eye, grid, 0.0).sum(0) / np.clip(n_eye, 1, h)
    top = np.where(eye, grid, 99999.0).min(0)  # finite sentinels (columns without eye pixels)
    bottom = np.where(eye, grid, -99999.0).max(0)
    upper = fraction * mean + (1.0 - fraction) * top
    lower = fraction * mean + (1.0 - fraction) * bottom
    closed = eye & ((grid <= upper) | (grid >= lower))  # H x W
    src_yx = np.argwhere(around_face)
    dst_yx = np.argwhere(closed)
    if dst_yx.size and src_yx.size:
        _, nearest = cKDTree(src_yx).query(dst_yx)
        src = src_yx[nearest]
        img[dst_yx[:, 0], dst_yx[:, 1]] = img[src[:, 0], src[:, 1]]
    elif dst_yx.size:
        logger.warning("close_eyes: no face pixels around the eyes to paint with; the eyes stay open")
    return _dequantise(img)


def paint_blinks(pncc: torch.Tensor, fractions: np.ndarray) -> torch.Tensor:
    """Driving PNCC maps [T,3,H,W] with the eyes closed by `fractions` [T] (`close_eyes`; NaN = frame unchanged,
    bit for bit). With `blink_schedule` fractions this is the official `--blink_mode period`."""
    if pncc.ndim != 4 or pncc.shape[1] != 3 or len(fractions) != pncc.shape[0]:
        raise InputError(
            f"paint_blinks: pncc must be [T,3,H,W] with one fraction per frame, got {tuple(pncc.shape)} and "
            f"{len(fractions)} fractions"
        )
    out = pncc.clone()
    for j in np.flatnonzero(np.isfinite(fractions)):
        out[j] = close_eyes(pncc[j], float(fractions[j])).to(out)
    return out
