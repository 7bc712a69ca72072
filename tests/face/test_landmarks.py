"""FaceAnalyzer: one face in the astronaut photo with landmarks where the face is, several faces sorted by size,
none in a blank image, and video tracking that follows a moving face."""

import numpy as np
import pytest
from skimage import data

from real3d.face import topology as topo
from real3d.face.landmarks import FaceAnalyzer


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer() as a:
        yield a


def test_one_face_with_landmarks_on_the_face(analyzer):
    img = data.astronaut()
    faces = analyzer.detect(img)
    assert len(faces) == 1
    lm = faces[0].landmarks
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    x0, y0, x1, y1 = faces[0].bbox
    assert 150 < x0 < x1 < 330 and 40 < y0 < y1 < 260  # the astronaut's face, not the flag or the suit
    eyes_y = lm[[33, 263], 1].mean()
    assert eyes_y < lm[topo.UPPER_LIP_MID, 1] < lm[topo.CHIN, 1]  # eyes above the mouth above the chin


def test_several_faces_largest_first_and_none_in_a_blank_image(analyzer):
    img = data.astronaut()
    small = img[::2, ::2]
    canvas = np.full((512, 1024, 3), 255, np.uint8)
    canvas[:, :512] = img
    canvas[100:356, 640:896] = small
    faces = analyzer.detect(canvas)
    assert len(faces) == 2 and faces[0].area > 2.5 * faces[1].area
    assert faces[0].bbox[2] < 512 < faces[1].bbox[0]
    assert analyzer.detect(np.full((256, 256, 3), 128, np.uint8)) == []


def test_tracking_follows_a_shifted_face():
    img = data.astronaut()
    with FaceAnalyzer() as a:
        first = a.track(img)
        shifted = a.track(np.roll(img, 12, axis=1))
        assert a.track(np.zeros_like(img)) is None
    dx = (shifted[:468, 0] - first[:468, 0]).mean()
    assert 9 < dx < 15 and np.abs(shifted[:468, 1] - first[:468, 1]).mean() < 3
