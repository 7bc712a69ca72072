"""Parametric mouth/jaw deformation on the astronaut's neutral canonical landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from real3d.face import topology as topo
from real3d.motion.mouth import MOUTH_PARAMS, build_rig, inner_lip_gap, mouth_offsets


@pytest.fixture(scope="module")
def neutral(astronaut_canonical) -> np.ndarray:
    """The astronaut's neutral canonical face."""
    return astronaut_canonical


def params(**cols) -> np.ndarray:
    n = max(len(np.atleast_1d(v)) for v in cols.values())
    p = np.zeros((n, len(MOUTH_PARAMS)))
    for name, v in cols.items():
        p[:, MOUTH_PARAMS.index(name)] = v
    return p


def test_zero_params_give_zero_offsets(neutral):
    off = mouth_offsets(neutral, np.zeros((3, len(MOUTH_PARAMS))))
    assert off.shape == (3, 478, 3) and off.dtype == np.float32
    assert np.abs(off).max() == 0.0


def test_jaw_opens_mouth_monotonically_and_moves_lower_face_only(neutral):
    jaw = np.linspace(0, 1, 11)
    gap = inner_lip_gap(neutral, params(jaw=jaw))
    g0 = neutral[topo.LOWER_LIP_MID, 1] - neutral[topo.UPPER_LIP_MID, 1]
    assert gap[0] == pytest.approx(max(g0, 0), abs=1e-6)
    assert np.all(np.diff(gap) > 0)
    assert gap[-1] - gap[0] > 0.2  # a wide-open jaw drops the lower lip by > 0.2 eye-distance
    off = mouth_offsets(neutral, params(jaw=[1.0]))[0]
    assert off[topo.CHIN, 1] > 0.7 * off[topo.LOWER_LIP_MID, 1] and off[topo.CHIN, 2] > 0  # chin down, back
    assert off[topo.LOWER_LIP_MID, 1] > 0.2
    for i in list(topo.RIGID) + list(topo.RIGHT_EYE_LOOP) + list(topo.LEFT_EYE_LOOP) + [topo.UPPER_LIP_MID]:
        assert np.abs(off[i]).max() < 1e-3, i
    # smooth decay: a cheek point beside the mouth moves less than the chin but more than the cheekbone
    assert off[topo.CHIN, 1] > off[172, 1] > off[93, 1] >= 0.0


def test_press_closes_inner_lips_exactly_for_any_jaw(neutral):
    jaw = np.linspace(0, 1, 6)
    assert np.all(inner_lip_gap(neutral, params(jaw=jaw, press=1.0)) == 0.0)
    pos = neutral[None] + mouth_offsets(neutral, params(jaw=jaw, press=1.0, spread=0.5))
    up, lo = list(topo.INNER_LIP_UPPER[1:-1]), list(topo.INNER_LIP_LOWER[1:-1])
    assert np.abs(pos[:, lo, 1] - pos[:, up, 1]).max() < 1e-6
    # partial press shrinks the gap, more press shrinks it more
    g = inner_lip_gap(neutral, params(jaw=0.6, press=[0.0, 0.5, 0.7, 0.95]))
    assert g[0] > g[1] > g[2] > g[3] == 0.0


def test_spread_and_round_move_corners_and_lips(neutral):
    off = mouth_offsets(neutral, params(spread=[1.0, 0.0], round=[0.0, 1.0]))
    right, left = 61, 291  # subject's right corner has the smaller canonical x
    assert neutral[right, 0] < neutral[left, 0]
    assert off[0, right, 0] < -0.01 and off[0, left, 0] > 0.01  # spreading: corners outward
    assert off[1, right, 0] > 0.02 and off[1, left, 0] < -0.02  # rounding: corners inward
    assert off[1, topo.UPPER_LIP_MID, 2] < -0.05 and off[1, topo.LOWER_LIP_MID, 2] < -0.05  # lips forward
    assert np.abs(off[:, list(topo.RIGID)]).max() < 1e-6


def test_labiodental_brings_lower_lip_to_upper(neutral):
    g = inner_lip_gap(neutral, params(jaw=0.5, labiodental=[0.0, 1.0]))
    assert g[1] < 0.3 * g[0]


def test_deformation_is_translation_invariant_and_gap_matches_landmarks(neutral):
    p = params(jaw=[0.3, 0.8], spread=[0.5, 0.0], round=[0.0, 0.7], press=[0.2, 0.0])
    a = mouth_offsets(neutral, p)
    b = mouth_offsets(neutral + np.array([0.3, -0.2, 0.5]), p)
    np.testing.assert_allclose(a, b, atol=1e-5)
    pos = neutral[None] + a
    np.testing.assert_allclose(inner_lip_gap(neutral, p), pos[:, 14, 1] - pos[:, 13, 1], atol=1e-6)


def test_bad_params_shape(neutral):
    with pytest.raises(ValueError, match="mouth params"):
        mouth_offsets(neutral, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="neutral"):
        build_rig(np.zeros((10, 3)))


def test_closed_mouth_brings_the_lips_of_an_open_source_together(neutral):
    """A photo taken mid-word (the astronaut with her jaw opened by the rig): its rest pose has the lips together,
    the upper lip and the upper face where they were, and a closed mouth stays as it is."""
    from real3d.motion.mouth import CLOSED_GAP, closed_mouth, mouth_gap

    rest = closed_mouth(neutral)
    opened = rest + mouth_offsets(rest, params(jaw=[0.5]))[0]
    assert mouth_gap(opened) > 0.1
    closed = closed_mouth(opened)
    up, lo = list(topo.INNER_LIP_UPPER[1:-1]), list(topo.INNER_LIP_LOWER[1:-1])
    assert mouth_gap(closed) == 0.0 and np.abs(closed[lo, 1] - closed[up, 1]).max() < 1e-9
    assert abs(closed[topo.UPPER_LIP_MID, 1] - opened[topo.UPPER_LIP_MID, 1]) < 0.02  # the lower lip does the moving
    assert closed[topo.CHIN, 1] < opened[topo.CHIN, 1] - 0.1  # the jaw rose
    rigid = list(topo.RIGID) + list(topo.RIGHT_EYE_LOOP) + list(topo.LEFT_EYE_LOOP)
    np.testing.assert_allclose(closed[rigid], opened[rigid], atol=1e-3)
    np.testing.assert_allclose(closed_mouth(closed), closed)  # already closed: unchanged
    assert mouth_gap(rest) <= CLOSED_GAP


def test_normalise_opening_scales_the_jaw_to_a_target_sd(neutral):
    """The jaw alone is scaled so that the inner-lip gap of the selected frames moves by the target sd; closures
    stay closed; the factor is clipped to OPENING_GAIN_LIMITS; too few frames are left alone."""
    from real3d.motion.mouth import OPENING_GAIN_LIMITS, closed_mouth, normalise_opening

    rest = closed_mouth(neutral)
    rng = np.random.default_rng(0)
    n = 300
    p = params(jaw=rng.uniform(0.0, 0.8, n), spread=rng.uniform(0.0, 0.5, n), press=np.arange(n) % 7 == 0)
    for where in (None, np.arange(n) < 150):
        out, gain = normalise_opening(rest, p, 0.04, where)
        sel = slice(None) if where is None else where
        assert np.std(inner_lip_gap(rest, out)[sel]) == pytest.approx(0.04, rel=0.02)
        np.testing.assert_allclose(out[:, 1:], p[:, 1:])  # only the jaw column changes
        np.testing.assert_allclose(out[:, 0], gain * p[:, 0])
        assert np.all(inner_lip_gap(rest, out)[::7] == 0.0)  # the pressed frames stay closed
    assert normalise_opening(rest, p, 10.0)[1] == OPENING_GAIN_LIMITS[1]
    assert normalise_opening(rest, p, 1e-4)[1] == OPENING_GAIN_LIMITS[0]
    few, gain = normalise_opening(rest, p[:5], 0.04)
    assert gain == 1.0 and np.array_equal(few, p[:5])
