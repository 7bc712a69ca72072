import cv2
import numpy as np

from real3d.face.segmentation import PersonSegmenter, knn_fill


def test_knn_fill_changes_exactly_the_uncovered_pixels_with_nearest_colours():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    fg = np.zeros((50, 70), bool)
    fg[15:35, 25:45] = True
    fg[5, 5] = True
    margin = 3
    out = knn_fill(img, fg, margin=margin)
    dist = cv2.distanceTransform((~fg).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    keep = dist > margin
    assert (out[keep] == img[keep]).all()
    ky, kx = np.nonzero(keep)
    for y, x in zip(*np.nonzero(~keep)):
        d = (ky - y) ** 2 + (kx - x) ** 2
        nearest = {tuple(img[ky[i], kx[i]]) for i in np.flatnonzero(d == d.min())}
        assert tuple(out[y, x]) in nearest


def test_knn_fill_without_foreground_is_identity():
    img = np.full((8, 8, 3), 7, np.uint8)
    assert (knn_fill(img, np.zeros((8, 8), bool)) == img).all()


def test_person_mask_covers_the_astronaut_not_the_corners(astronaut):
    seg = PersonSegmenter()
    m = seg(astronaut)
    seg.close()
    assert m.shape == astronaut.shape[:2] and m.dtype == np.float32
    assert m[200, 220] > 0.8  # face
    assert m[20, 500] < 0.2  # background corner
