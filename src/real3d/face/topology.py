"""Face-mesh topology: triangles of MediaPipe's 478-point mesh and named landmark groups.

MediaPipe publishes the tessellation as an *edge* set; the triangles are its 3-cliques (the
tessellation is planar, so every 3-clique is a face). Triangles that would close the eyes or
the inner mouth are removed, so those regions are holes that the renderer fills with eyelids
and a mouth interior.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Landmark groups (MediaPipe face-mesh indices). "Left"/"right" are the subject's, as MediaPipe names them.
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_EYE_LOOP = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_LOOP = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)
INNER_LIP_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LIP_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
INNER_LIP_LOOP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIP_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LIP_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# the two rings between the outer and the inner lip contour (MediaPipe's "semi-outer" and "semi-inner" lip
# annotations), corners excluded: they belong to one lip each
UPPER_LIP_MIDDLE = (184, 74, 73, 72, 11, 302, 303, 304, 408, 183, 42, 41, 38, 12, 268, 271, 272, 407)
LOWER_LIP_MIDDLE = (77, 90, 180, 85, 16, 315, 404, 320, 307, 96, 89, 179, 86, 15, 316, 403, 319, 325)
LIP_MIDDLE_CORNERS = (76, 306, 62, 292)
MOUTH_CORNERS = (61, 291)
UPPER_LIP_MID, LOWER_LIP_MID = 13, 14
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
CHIN = 152
FOREHEAD = 10
NOSE_TIP = 1
FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)

# Points that do not move with expression (forehead, temples, nose bridge/tip, eye corners, upper cheeks):
# used to separate head pose from expression.
RIGID = (
    10,
    151,
    9,
    8,
    168,
    6,
    197,
    195,
    5,
    4,
    1,
    33,
    133,
    263,
    362,
    21,
    251,
    54,
    284,
    103,
    332,
    67,
    297,
    109,
    338,
    127,
    356,
    234,
    454,
    93,
    323,
    98,
    327,
    129,
    358,
    64,
    294,
)
# Subject-left/right pairs among the rigid points and midline points, for a template-free head frame.
SYMMETRIC_PAIRS = (
    (33, 263),
    (133, 362),
    (21, 251),
    (54, 284),
    (103, 332),
    (67, 297),
    (109, 338),
    (127, 356),
    (234, 454),
    (93, 323),
    (98, 327),
    (129, 358),
    (64, 294),
)
MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1)


def _tessellation_edges() -> list[tuple[int, int]]:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return sorted(tuple(sorted(e)) for e in FACEMESH_TESSELATION)


@lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """[F,3] int32 triangles of the 468-point mesh, consistently oriented (counter-clockwise as seen
    from the camera in image coordinates with y down, i.e. positive signed area), eyes and inner
    mouth left open."""
    edges = _tessellation_edges()
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]}
    holes = [set(RIGHT_EYE_LOOP), set(LEFT_EYE_LOOP), set(INNER_LIP_LOOP)]
    keep = [t for t in sorted(tris) if not any(set(t) <= h for h in holes)]
    # a 3-clique that encloses a vertex (a "separating triangle") is not a face: all three of its
    # edges are then shared by three cliques
    count: dict[tuple[int, int], int] = {}
    for t in keep:
        for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            count[e] = count.get(e, 0) + 1
    keep = [t for t in keep if not all(count[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.asarray(keep, dtype=np.int32)


def oriented(tris: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Reorder each triangle so its signed area on the 2-D points `xy` [V,2] is positive."""
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    out = tris.copy()
    flip = area < 0
    out[flip, 1], out[flip, 2] = tris[flip, 2], tris[flip, 1]
    return out
