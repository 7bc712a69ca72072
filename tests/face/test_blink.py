"""SECC blink painting: schedule, closing fraction, eye holes closing on a synthetic map."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from real3d.errors import InputError
from real3d.face.blink import blink_fraction, blink_schedule, close_eyes, paint_blinks

H = W = 128


def _synthetic_secc() -> torch.Tensor:
    """[3,128,128]: an oval face with a smooth colour gradient and two elliptical eye holes in the priors."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    face = ((xx - 64) / 52) ** 2 + ((yy - 68) / 60) ** 2 < 1
    img = np.stack([0.2 + 0.6 * xx / W, 0.2 + 0.6 * yy / H, np.full_like(xx, 0.5)])  # colours in [0.2, 0.8]
    for cx in (48.0, 80.0):
        eye = ((xx - cx) / 10) ** 2 + ((yy - 48) / 6) ** 2 < 1
        face &= ~eye
    secc = np.where(face[None], img * 2 - 1, -1.0)
    return torch.tensor(secc, dtype=torch.float32)


def _holes(secc: torch.Tensor) -> np.ndarray:
    """Background pixels inside the eye priors."""
    bg = (secc == -1).all(0).numpy()
    prior = np.zeros((H, W), dtype=bool)
    prior[H // 4 : H // 2, W // 4 : W // 4 * 3] = True
    return bg & prior


def test_blink_fraction_shape():
    np.testing.assert_allclose(blink_fraction(np.arange(11), 10)[[0, 5, 10]], [0.0, 1.0, 0.0])
    assert blink_fraction(2, 8) == pytest.approx(4 * 2 / 8 - 4 * 4 / 64)


def test_blink_schedule_frames_and_values():
    n = 300
    fractions = blink_schedule(n, random.Random(7))
    ref_rng = random.Random(7)
    durations = [ref_rng.randint(8, 12) for _ in range(3)]  # onsets 0, 125, 250
    expected = np.full(n, np.nan)
    for start, dur in zip((0, 125, 250), durations):
        t = np.arange(dur)
        expected[start : start + dur] = 4 * t / dur - 4 * t**2 / dur**2
    np.testing.assert_allclose(fractions, expected)
    assert all(8 <= d <= 12 for d in durations)
    assert fractions[0] == 0.0 and np.isnan(fractions[13:125]).all()


def test_blink_schedule_never_edits_the_last_frame():
    fractions = blink_schedule(5, random.Random(0))
    np.testing.assert_allclose(fractions[:4], blink_fraction(np.arange(4), random.Random(0).randint(8, 12)))
    assert np.isnan(fractions[4])
    assert np.isnan(blink_schedule(1, random.Random(0))).all()


def test_eye_hole_closes_fully_at_the_peak():
    secc = _synthetic_secc()
    holes = _holes(secc)
    assert holes.sum() > 50
    out = close_eyes(secc, 1.0)
    assert _holes(out).sum() == 0
    # painted pixels copy colours of face pixels (on the 8-bit grid): all inside the face colour range
    painted = out[:, torch.from_numpy(holes)]
    assert (painted > -1).all()
    assert painted.min() >= 0.2 * 2 - 1 - 0.01 and painted.max() <= 0.8 * 2 - 1 + 0.01
    # pixels far from the eyes are untouched up to the 8-bit grid
    far = torch.zeros(H, W, dtype=torch.bool)
    far[90:, :] = True
    assert (out[:, far] - secc[:, far]).abs().max() <= 2 / 255 + 1e-6


def test_partial_closing_and_zero_fraction():
    secc = _synthetic_secc()
    n0 = _holes(secc).sum()
    half = _holes(close_eyes(secc, 0.5)).sum()
    assert 0 < half < n0
    most = _holes(close_eyes(secc, 0.75)).sum()
    assert 0 < most < half  # monotone in the fraction (small ones only eat the 5-px rim that joins the eye)
    zero = close_eyes(secc, 0.0)
    np.testing.assert_array_equal(_holes(zero), _holes(secc))
    # fraction 0 still quantises like the official code: int((x + 1) / 2 * 255) / 127.5 - 1
    q = np.floor((secc.numpy() + 1) / 2 * 255) / 127.5 - 1
    np.testing.assert_allclose(zero.numpy(), q, atol=1e-6)


def test_paint_blinks_edits_only_scheduled_frames():
    secc = _synthetic_secc()[None].repeat(140, 1, 1, 1)
    fractions = blink_schedule(140, random.Random(3))
    out = paint_blinks(secc, fractions)
    edited = ~np.isnan(fractions)
    for j in np.flatnonzero(~edited):
        assert torch.equal(out[j], secc[j])
    peak = int(np.nanargmax(fractions))
    assert _holes(out[peak]).sum() < _holes(secc[0]).sum() // 4
    with pytest.raises(InputError, match="one fraction per frame"):
        paint_blinks(secc[0], fractions)
    with pytest.raises(InputError):
        close_eyes(secc[0], 1.5)
