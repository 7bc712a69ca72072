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
