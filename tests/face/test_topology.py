from collections import Counter

import numpy as np

from real3d.face import topology as topo


def _edges(tris):
    c = Counter()
    for t in tris:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            c[tuple(sorted((int(a), int(b))))] += 1
    return c


def test_triangulation_is_a_manifold_with_eye_and_mouth_holes():
    tris = topo.face_triangles()
    assert tris.shape[1] == 3 and len(tris) > 800
    assert tris.min() >= 0 and tris.max() < 468
    edges = _edges(tris)
    assert max(edges.values()) <= 2  # no edge is shared by three triangles
    for loop in (topo.RIGHT_EYE_LOOP, topo.LEFT_EYE_LOOP, topo.INNER_LIP_LOOP):
        # every edge of a hole's rim belongs to exactly one triangle (the hole side is open)
        for a, b in zip(loop, loop[1:] + loop[:1]):
            assert edges[tuple(sorted((a, b)))] == 1, (a, b)
        # and no triangle lies inside the hole
        s = set(loop)
        assert not any(set(map(int, t)) <= s for t in tris)


def test_oriented_makes_positive_area():
    xy = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    tris = np.array([[0, 1, 2], [1, 2, 3]])
    o = topo.oriented(tris, xy)
    a, b, c = xy[o[:, 0]], xy[o[:, 1]], xy[o[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (area > 0).all()
