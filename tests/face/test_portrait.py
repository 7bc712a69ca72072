import numpy as np
import pytest

from real3d.errors import InputError, NoFaceError
from real3d.face.portrait import analyze_portrait


def test_astronaut_portrait(astronaut):
    p = analyze_portrait(astronaut)
    assert p.image.shape == (512, 512, 3) and p.landmarks.shape == (478, 3)
    x0, y0 = p.landmarks[:, :2].min(0)
    x1, y1 = p.landmarks[:, :2].max(0)
    # framed consistently: face ~1/2.4 of the crop, centred horizontally
    assert 0.3 < (y1 - y0) / 512 < 0.55
    assert abs((x0 + x1) / 2 - 256) < 30
    assert p.person_mask.shape == (512, 512)
    # background: person pixels were replaced (no face left where the face was)
    face_px = p.image[int(y0) : int(y1), int(x0) : int(x1)].astype(float)
    bg_px = p.background[int(y0) : int(y1), int(x0) : int(x1)].astype(float)
    assert np.abs(face_px - bg_px).mean() > 10
    assert p.n_faces == 1


def test_two_faces_largest_first_and_selectable(astronaut):
    small = astronaut[::2, ::2]
    canvas = np.full((512, 1024, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[100:356, 640:896] = small
    big = analyze_portrait(canvas)
    other = analyze_portrait(canvas, face_index=1)
    assert big.n_faces == 2
    # the crop of face 1 comes from the right half of the canvas
    assert big.framing.matrix[0, 2] > other.framing.matrix[0, 2]
    with pytest.raises(InputError, match="2 face"):
        analyze_portrait(canvas, face_index=2)


def test_no_face_raises():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="no face"):
        analyze_portrait(noise)


def test_replacement_background(astronaut):
    bg = np.zeros((300, 600, 3), np.uint8)
    bg[..., 1] = 255
    p = analyze_portrait(astronaut, background=bg)
    assert p.background.shape == (512, 512, 3) and (p.background[..., 1] == 255).all()
