import numpy as np
import pytest

from real3d.face.parsing import (
    BACKGROUND,
    BODY_SKIN,
    CLOTHES,
    FACE_SKIN,
    HAIR,
    OTHERS,
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


def _inpaint_torso_loops(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """inpaint_torso written pixel by pixel, as the official job reads: the reference of the vectorised one."""
    import cv2

    h, w = labels.shape
    img = image.astype(np.float32)
    head = np.isin(labels, (HAIR, FACE_SKIN, OTHERS))
    torso = np.isin(labels, (BODY_SKIN, CLOTHES))
    out = np.where(torso[..., None], img, 0.0)
    filled, inpainted = torso.copy(), np.zeros((h, w), bool)
    top = np.where(torso.any(0), torso.argmax(0), h)
    for x in range(w):
        if 0 < top[x] < h and head[top[x] - 1, x]:
            for k in range(1, 10):
                if top[x] - k >= 0:
                    out[top[x] - k, x] = img[top[x], x] * 0.98**k
                    filled[top[x] - k, x] = inpainted[top[x] - k, x] = True
    neck = labels == BODY_SKIN
    if neck.any():
        neck_d = cv2.dilate(neck.astype(np.uint8), np.ones((3, 1), np.uint8)).astype(bool) & ~head | neck
        for x in range(w):
            if not neck_d[:, x].any():
                continue
            y0 = min(neck_d[:, x].argmax() + 4, h - 1)
            for k in range(54):
                y = y0 - k
                if y >= 0 and (not torso[y, x] or k <= 4):
                    out[y, x] = img[y0, x] * 0.98**k
                    filled[y, x] = inpainted[y, x] = True
        if inpainted.any():
            out[inpainted] = cv2.GaussianBlur(out, (5, 5), 0)[inpainted]
    out[~filled] = 0.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def test_inpaint_torso_equals_the_pixel_by_pixel_rule(parsed):
    p, lab = parsed
    assert np.array_equal(inpaint_torso(p.image, lab), _inpaint_torso_loops(p.image, lab))
    rng = np.random.default_rng(0)
    for _ in range(20):  # blocky random parsings: heads, necks and torsos in every arrangement, up to the edges
        lab = np.kron(rng.integers(0, 6, (8, 6)), np.ones((rng.integers(3, 9), rng.integers(3, 9)), int))
        lab = lab.astype(np.uint8)
        img = rng.integers(0, 256, (*lab.shape, 3), np.uint8)
        assert np.array_equal(inpaint_torso(img, lab), _inpaint_torso_loops(img, lab))
