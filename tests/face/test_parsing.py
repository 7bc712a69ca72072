import numpy as np
import pytest

from real3d.face.parsing import (
    BACKGROUND,
    BODY_SKIN,
    CLOTHES,
    FACE_SKIN,
    HAIR,
    approximate_parsing,
    head_image,
    inpaint_torso,
    one_hot,
)


@pytest.fixture(scope="module")
def parsed():
    from skimage import data

    from real3d.face.portrait import analyze_portrait

    p = analyze_portrait(data.astronaut(), framing="full")
    return p, approximate_parsing(p.image, p.landmarks, p.person_mask)


def test_classes_at_known_places(parsed):
    p, lab = parsed
    nose = p.landmarks[1, :2].astype(int)
    assert lab[nose[1], nose[0]] == FACE_SKIN
    top = p.landmarks[10, :2].astype(int)
    assert lab[top[1] - 25, top[0]] == HAIR  # above the hairline
    assert lab[490, 200] == CLOTHES  # the space suit
    assert lab[20, 480] == BACKGROUND
    assert set(np.unique(lab)) <= {BACKGROUND, HAIR, BODY_SKIN, FACE_SKIN, CLOTHES}


def test_one_hot_partitions_the_image(parsed):
    _, lab = parsed
    oh = one_hot(lab)
    assert oh.shape == (6,) + lab.shape and oh.dtype == np.float32
    assert (oh.sum(0) == 1).all()


def test_head_image_keeps_only_head_classes(parsed):
    p, lab = parsed
    hd = head_image(p.image, lab)
    head = np.isin(lab, (HAIR, FACE_SKIN))
    assert (hd[~head] == 0).all() and (hd[head] == p.image[head]).all()


def test_inpaint_torso_synthetic():
    """A head block above a torso block: the torso is extended 9 px up into the head with 0.98^k darkening."""
    lab = np.zeros((60, 40), np.uint8)
    lab[5:30, 10:30] = FACE_SKIN
    lab[30:60, 0:40] = CLOTHES
    img = np.full((60, 40, 3), 200, np.uint8)
    out = inpaint_torso(img, lab)
    assert (out[30:, :] == 200).all()  # torso kept
    assert (out[:5] == 0).all()  # above the extension: black
    col = out[:, 20, 0].astype(float)
    np.testing.assert_allclose(col[21:30][::-1], np.round(200 * 0.98 ** np.arange(1, 10)), atol=1)
    assert (out[10:20, 20] == 0).all()  # head removed
    assert (out[25:30, 2] == 0).all()  # columns not under the head are not extended
