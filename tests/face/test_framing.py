import numpy as np
import pytest

from real3d.errors import NoFaceError
from real3d.face.framing import FACE_CENTER_Y, FACE_FRACTION, frame_face


def test_framing_keeps_aspect_and_places_face():
    f = frame_face((900, 700, 1100, 950), (3000, 2000))
    m = f.matrix
    assert m[0, 1] == 0 and m[1, 0] == 0 and m[0, 0] == pytest.approx(m[1, 1])  # uniform scale: no squashing
    pts = f.map_points(np.array([[900.0, 700.0], [1100.0, 950.0]]))
    face_h = pts[1, 1] - pts[0, 1]
    assert face_h == pytest.approx(512 * FACE_FRACTION, rel=1e-6)
    assert (pts[0, 1] + pts[1, 1]) / 2 == pytest.approx(512 * FACE_CENTER_Y, rel=1e-6)
    assert (pts[0, 0] + pts[1, 0]) / 2 == pytest.approx(256, rel=1e-6)
    assert f.padded_fraction == 0


def test_tight_photo_shrinks_crop_before_padding():
    # a 600x600 photo filled by a 400 px face cannot be framed at 2.4x without padding
    f = frame_face((100, 100, 500, 500), (600, 600), mode="crop")
    pts = f.map_points(np.array([[100.0, 100.0], [500.0, 500.0]]))
    assert 512 / 2.4 < pts[1, 1] - pts[0, 1] <= 512 / 1.7 + 1e-6
    assert (pts[:, 0] >= 0).all() and (pts[:, 1] <= 512).all()  # the face is never cut


def test_tiny_face_is_refused():
    with pytest.raises(NoFaceError, match="too|only"):
        frame_face((10, 10, 30, 32), (1000, 1000))


def test_auto_keeps_a_portrait_crop_whole_and_crops_a_wide_shot():
    full = frame_face((150, 120, 360, 380), (512, 512))  # face fills 40% of a square photo
    np.testing.assert_allclose(full.matrix, [[1, 0, 0], [0, 1, 0]])
    wide = frame_face((150, 120, 250, 240), (1000, 1500))
    assert wide.matrix[0, 0] > 1  # zoomed in on the face
    forced = frame_face((150, 120, 360, 380), (512, 512), mode="crop")
    assert forced.matrix[0, 0] != 1


def test_full_framing_pads_a_tall_photo_to_square():
    f = frame_face((100, 200, 400, 500), (1000, 600), mode="full")
    assert f.matrix[0, 0] == pytest.approx(0.512)
    assert f.padded_fraction == pytest.approx(1 - 0.6, abs=1e-9)
