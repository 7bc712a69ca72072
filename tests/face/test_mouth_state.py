"""The source's mouth state: open or closed, teeth and their rows, the colour inside."""

from __future__ import annotations

import cv2
import numpy as np

from real3d.face import topology as topo
from real3d.face.canonical import head_frame
from real3d.face.mouth_state import MIN_TEETH_FRACTION, mouth_state


def test_astronaut_smile_shows_upper_teeth(astronaut, astronaut_landmarks):
    lm = astronaut_landmarks
    st = mouth_state(astronaut, lm, head_frame(lm).to_canonical(lm))
    assert st.is_open and st.shows_teeth and st.teeth_fraction > 0.3
    assert st.upper_teeth.sum() > 5 * st.lower_teeth.sum()  # her smile shows the upper row
    teeth = st.upper_teeth > 0.5
    lum = cv2.cvtColor(astronaut, cv2.COLOR_RGB2LAB)[..., 0]
    lips = np.zeros(lum.shape, np.uint8)
    cv2.fillPoly(lips, [np.round(lm[list(topo.OUTER_LIP_LOWER), :2]).astype(np.int32)], 1)
    assert lum[teeth].mean() > lum[lips > 0].mean() + 20  # the teeth found are brighter than the lips


def test_dark_open_mouth_without_teeth_and_a_closed_mouth(astronaut, astronaut_landmarks):
    lm = astronaut_landmarks
    q = head_frame(lm).to_canonical(lm)
    img = astronaut.copy()
    cv2.fillPoly(img, [np.round(lm[list(topo.INNER_LIP_LOOP), :2]).astype(np.int32)], (60, 20, 25))
    st = mouth_state(img, lm, q)
    assert st.is_open and not st.shows_teeth and st.teeth_fraction < MIN_TEETH_FRACTION
    np.testing.assert_allclose(st.cavity_rgb, (60, 20, 25), atol=3)
    shut = q.copy()
    shut[list(topo.INNER_LIP_LOWER), 1] = shut[list(topo.INNER_LIP_UPPER), 1]
    st = mouth_state(astronaut, lm, shut)
    assert not st.is_open and not st.shows_teeth and st.upper_teeth.max() == 0.0


def test_lips_filled_paints_the_opening_from_the_lips_and_nothing_else(astronaut, astronaut_landmarks):
    """The astronaut's open smile: inside her inner-lip contour no tooth-bright or cavity-dark pixel is left (the
    colours come from her lips), and the photo is unchanged away from the mouth."""
    from real3d.face.mouth_state import DARK_LIP, lips_filled

    lm = astronaut_landmarks
    out = lips_filled(astronaut, lm)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    inner = np.zeros(astronaut.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.round(lm[list(topo.INNER_LIP_LOOP), :2]).astype(np.int32)], 1)
    lips = np.zeros_like(inner)
    outer = list(topo.OUTER_LIP_UPPER) + list(topo.OUTER_LIP_LOWER)[::-1]
    cv2.fillPoly(lips, [np.round(lm[outer, :2]).astype(np.int32)], 1)
    ring = (lips > 0) & (cv2.dilate(inner, np.ones((9, 9), np.uint8)) == 0)  # lip pixels clear of the opening
    lum_src = cv2.cvtColor(astronaut, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
    lum_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0].astype(float)
    dark = DARK_LIP * np.median(lum_src[ring])
    sat_src = cv2.cvtColor(astronaut, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
    sat_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
    lip_l, lip_s = np.median(lum_src[ring]), np.median(sat_src[ring])

    def teeth_share(lum, sat):  # `mouth_state`'s teeth: brighter and less saturated than the lips
        return np.mean((lum > lip_l + 8.0) & (sat < 0.8 * lip_s))

    m = inner > 0
    assert teeth_share(lum_src[m], sat_src[m]) > 0.3 and lum_src[m].min() < dark  # teeth and dark corners
    assert teeth_share(lum_out[m], sat_out[m]) < 0.05 and lum_out[m].min() > dark, teeth_share(lum_out[m], sat_out[m])
    far = cv2.dilate(lips, np.ones((41, 41), np.uint8)) == 0
    assert np.array_equal(out[far], astronaut[far])
