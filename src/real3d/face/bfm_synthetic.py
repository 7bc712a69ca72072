"""Tiny synthetic BFM folders in the official file formats, for tests and end-to-end runs without the real BFM.

`write_synthetic_bfm(dir)` writes, with the official file names, field names, layouts and dtypes (only the
vertex count differs):

* `BFM_model_front.mat` (`front=True`): meanshape [1,3N] f32, meantex [1,3N] f32, idBase [3N,80] f32,
  exBase [3N,64] f64 (the official conversion multiplies by the float64 `std_exp.txt`), texBase [3N,80] f32,
  and the `facemodel_info.mat` fields copied through: tri [F,3], point_buf [N,8], keypoints [1,68],
  frontmask2_idx [M,1], tri_mask2 [G,3], skinmask [1,N] (1-based ids stored as MATLAB doubles; the
  official readers cast them, so the exact integer dtype of the real files does not matter).
* the raw files (`raw=True`): `01_MorphableModel.mat` (shapeMU/PC/EV, texMU/PC/EV with 199 components,
  `tl`), `Exp_Pca.bin` (int32 K=79, float32 mean, float32 [K,3V] basis), `std_exp.txt` (79 values),
  `BFM_front_idx.mat` (`idx`), `BFM_exp_idx.mat` (`trimIndex`), `facemodel_info.mat`. The front model is
  embedded into a larger "expression-model" vertex set and that into a larger "BFM09" set with random
  sorted index maps, so converting the raw files (`real3d.face.bfm.convert_bfm09`) must reproduce the
  front model up to float32 rounding.
* `index_mp468_from_mesh35709.npy`: [468] int64 vertex ids; the 8 silhouette points the official files
  leave unmatched (93, 127, 132, 234, 323, 356, 361, 454) are -999.
* `ncc_code.npy` [3,N] f32 and `bfm_{left,right}_eye_faces.npy` (1-based int64) when `helpers=True`.

Geometry: the front of an ellipsoid (about 1.6 x 2.1 x 0.9 dm, so decimetres as in the real BFM) sampled
on a regular grid and Delaunay-triangulated, with a nose bump, offset from the origin (so recentring
matters). lm68 keypoints sit at a procedural 68-point layout (jaw, brows, nose, eyes, lips); the 468
mediapipe points come from a Tutte embedding of MediaPipe's face-mesh tessellation with its face oval on
the mesh rim. Identity bases are smooth global deformations plus random Gaussian bumps; expression bases
start with jaw-open, smile, two eye closings and a brow raise, then random local bumps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from real3d.face import topology as topo
from real3d.face.bfm import (
    EYE_FACES,
    MP468_INDEX,
    NCC_CODE,
    BFMData,
    derive_eye_faces,
    derive_ncc_code,
)

A_X, B_Y, DEPTH = 0.8, 1.05, 0.9  # face half-width, half-height, depth (dm)
OFFSET = np.array([0.03, 0.12, 0.55])  # the real mean shape is not centred either
MP_UNMATCHED = (93, 127, 132, 234, 323, 356, 361, 454)
N_SHAPE_PC, N_EXP_PC = 199, 79


def _grid(n: int) -> np.ndarray:
    """Exactly n points of a regular grid inside the face ellipse (x,y)."""
    h = np.sqrt(np.pi * A_X * B_Y / n)
    while True:
        xs = np.arange(-A_X, A_X + 1e-9, h)
        ys = np.arange(-B_Y, B_Y + 1e-9, h)
        gx, gy = np.meshgrid(xs - xs.mean(), ys - ys.mean())
        pts = np.stack([gx.ravel(), gy.ravel()], 1)
        r = (pts[:, 0] / A_X) ** 2 + (pts[:, 1] / B_Y) ** 2
        pts, r = pts[r <= 1.0], r[r <= 1.0]
        if len(pts) >= n:
            return pts[np.sort(np.argsort(r, kind="stable")[:n])]
        h *= 0.97


def _surface(xy: np.ndarray) -> np.ndarray:
    x, y = xy[:, 0], xy[:, 1]
    z = DEPTH * np.sqrt(np.clip(1 - (x / (1.2 * A_X)) ** 2 - (y / (1.2 * B_Y)) ** 2, 0, None))
    z = z + 0.22 * np.exp(-((x / 0.13) ** 2) - ((y + 0.02) / 0.28) ** 2)  # nose
    return np.stack([x, y, z], 1)


def _lm68_layout() -> np.ndarray:
    """[68,2] (x right, y up) landmark layout on the face ellipse, in the iBUG 68-point order."""
    pts = []
    t = np.linspace(np.pi * 0.97, np.pi * 2.03, 17)  # jaw: image-left temple, chin, image-right temple
    pts += list(np.stack([0.9 * A_X * np.cos(t), 0.25 + 1.15 * np.sin(t)], 1))
    for cx in (-0.32, 0.32):  # brows 17-21, 22-26 (image-left first)
        xs = cx + np.linspace(-0.17, 0.17, 5)
        pts += list(np.stack([xs, 0.5 + 0.05 * np.cos((xs - cx) / 0.17 * np.pi / 2)], 1))
    pts += [(0.0, y) for y in np.linspace(0.33, 0.02, 4)]  # nose bridge 27-30
    pts += [(x, -0.1 + 0.03 * abs(x) / 0.14) for x in np.linspace(-0.14, 0.14, 5)]  # nostrils 31-35
    for cx in (-0.3, 0.3):  # eyes 36-41 / 42-47: outer/inner corner, two upper, two lower points
        outer, inner = (cx - 0.13, cx + 0.13) if cx < 0 else (cx + 0.13, cx - 0.13)
        xs = np.linspace(outer, inner, 4)
        pts += [(outer, 0.3), (xs[1], 0.35), (xs[2], 0.35), (inner, 0.3), (xs[2], 0.26), (xs[1], 0.26)]
    a = np.linspace(np.pi, 0, 7)  # outer lip 48-59: left corner, upper lip to the right corner, lower lip back
    upper = np.stack([0.26 * np.cos(a), -0.4 + 0.09 * np.sin(a)], 1)
    b = np.linspace(0, -np.pi, 7)[1:-1]
    lower = np.stack([0.26 * np.cos(b), -0.42 + 0.11 * np.sin(b)], 1)
    pts += list(upper) + list(lower)
    c = np.linspace(np.pi, 0, 5)  # inner lip 60-67
    pts += list(np.stack([0.18 * np.cos(c), -0.41 + 0.03 * np.sin(c)], 1))
    d = np.linspace(0, -np.pi, 5)[1:-1]
    pts += list(np.stack([0.18 * np.cos(d), -0.41 + 0.035 * np.sin(d)], 1))
    out = np.asarray(pts, dtype=np.float64)
    assert out.shape == (68, 2)
    return out


def _ellipse(cx: float, cy: float, rx: float, ry: float, angles: np.ndarray) -> np.ndarray:
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)


def _mp468_layout() -> np.ndarray:
    """[468,2] (x right, y up) layout of the MediaPipe face mesh: the face oval on the mesh rim, eye and lip
    loops on the lm68 layout's eyes and lips, nose tip and chin pinned; every other point is the average of
    its tessellation neighbours (a Tutte / harmonic embedding)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    n = 468
    pos: dict[int, np.ndarray] = {}
    oval = list(topo.FACE_OVAL)
    theta = np.pi / 2 - 2 * np.pi * np.arange(len(oval)) / len(oval)  # 10 on top, clockwise in the image
    pos.update(zip(oval, _ellipse(0, 0, 0.93 * A_X, 0.95 * B_Y, theta)))
    k = np.arange(16)
    # subject's right eye = image left; loops start at the outer corner and run along the upper lid
    pos.update(zip(topo.RIGHT_EYE_LOOP, _ellipse(-0.3, 0.3, 0.13, 0.05, np.pi - k * np.pi / 8)))
    pos.update(zip(topo.LEFT_EYE_LOOP, _ellipse(0.3, 0.3, 0.13, 0.05, k * np.pi / 8)))
    a = np.linspace(np.pi, 0, 11)
    pos.update(zip(topo.OUTER_LIP_UPPER, _ellipse(0, -0.4, 0.26, 0.09, a)))
    pos.update(zip(topo.OUTER_LIP_LOWER[1:-1], _ellipse(0, -0.42, 0.26, 0.11, -a[1:-1])))
    pos.update(zip(topo.INNER_LIP_UPPER, _ellipse(0, -0.41, 0.18, 0.03, a)))
    pos.update(zip(topo.INNER_LIP_LOWER[1:-1], _ellipse(0, -0.41, 0.18, 0.035, -a[1:-1])))
    pos[topo.NOSE_TIP] = np.array([0.0, 0.0])
    pos[topo.CHIN] = np.array([0.0, 0.25 - 1.15])
    adj = np.zeros((n, n))
    for i, j in FACEMESH_TESSELATION:
        adj[i, j] = adj[j, i] = 1.0
    fixed_ids = np.asarray(sorted(pos))
    out = np.zeros((n, 2))
    out[fixed_ids] = np.stack([pos[i] for i in fixed_ids])
    free = np.setdiff1d(np.arange(n), fixed_ids)
    lap = np.diag(adj.sum(1)) - adj
    out[free] = np.linalg.solve(lap[np.ix_(free, free)], -lap[np.ix_(free, fixed_ids)] @ out[fixed_ids])
    return out


def _nearest_unique(targets: np.ndarray, xy: np.ndarray, forbid: set[int]) -> np.ndarray:
    used = set(forbid)
    out = []
    for t in targets:
        order = np.argsort(((xy - t) ** 2).sum(1), kind="stable")
        k = next(int(i) for i in order if int(i) not in used)
        used.add(k)
        out.append(k)
    return np.asarray(out, dtype=np.int64)


def _point_buf(faces: np.ndarray, n: int) -> np.ndarray:
    buf = np.full((n, 8), faces.shape[0] + 1, dtype=np.float64)  # padding = F+1 (1-based)
    count = np.zeros(n, dtype=np.int64)
    for f, tri in enumerate(faces):
        for v in tri:
            if count[v] < 8:
                buf[v, count[v]] = f + 1
                count[v] += 1
    return buf


def _bump(v: np.ndarray, center: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-(((v[:, :2] - center) / width) ** 2).sum(1))


def _make_front(n_vertices: int, rng: np.random.Generator) -> tuple[BFMData, np.ndarray]:
    from scipy.spatial import Delaunay

    xy = _grid(n_vertices)
    v = _surface(xy)
    faces = Delaunay(xy).simplices.astype(np.int64)
    a, b, c = xy[faces[:, 0]], xy[faces[:, 1]], xy[faces[:, 2]]
    cw = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]) < 0
    faces[cw] = faces[cw][:, [0, 2, 1]]  # counter-clockwise seen from the camera on +z

    last = {n_vertices - 1}  # the +1 quirk must stay inside the mesh
    lm68 = _nearest_unique(_lm68_layout(), xy, last)
    mp = _nearest_unique(_mp468_layout(), xy, set())
    mp[list(MP_UNMATCHED)] = -999

    n = n_vertices
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    ids = []
    ids.append(np.stack([x, 0 * x, 0 * x], 1) * 0.06)  # width
    ids.append(np.stack([0 * y, y, 0 * y], 1) * 0.06)  # height
    ids.append(np.stack([0 * z, 0 * z, z - z.mean()], 1) * 0.08)  # depth
    ids.append(np.stack([0 * z, 0 * z, _bump(v, np.array([0.0, 0.0]), 0.15)], 1) * 0.05)  # nose
    while len(ids) < 80:
        d = rng.normal(size=3) * np.array([1.0, 1.0, 1.5])
        d /= np.linalg.norm(d)
        ctr = rng.uniform(-1, 1, 2) * np.array([A_X, B_Y]) * 0.8
        ids.append(_bump(v, ctr, rng.uniform(0.25, 0.6))[:, None] * d * 0.03 / (1 + len(ids) / 20))
    id_base = np.stack(ids, -1).reshape(3 * n, 80).astype(np.float32)

    exps = []
    below = np.clip((-0.4 - y) / (B_Y - 0.4), 0, 1) ** 0.7 * (y < -0.4) + (y < -0.4) * 0.3
    exps.append(np.stack([0 * x, -below * np.exp(-((x / 0.6) ** 2)), -0.3 * below], 1) * 0.08)  # jaw open
    corners = _bump(v, np.array([-0.26, -0.4]), 0.1) + _bump(v, np.array([0.26, -0.4]), 0.1)
    exps.append(np.stack([np.sign(x) * corners, corners, 0 * x], 1) * 0.04)  # smile
    for cx in (-0.3, 0.3):  # eye closing: the upper lid moves down
        lid = _bump(v, np.array([cx, 0.34]), 0.1)
        exps.append(np.stack([0 * x, -lid, 0 * x], 1) * 0.04)
    brows = _bump(v, np.array([-0.32, 0.5]), 0.18) + _bump(v, np.array([0.32, 0.5]), 0.18)
    exps.append(np.stack([0 * x, brows, 0.2 * brows], 1) * 0.04)  # brow raise
    while len(exps) < 64:
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        ctr = rng.uniform(-1, 1, 2) * np.array([A_X, B_Y]) * 0.8
        exps.append(_bump(v, ctr, rng.uniform(0.15, 0.4))[:, None] * d * 0.02)
    exp_base = np.stack(exps, -1).reshape(3 * n, 64).astype(np.float64)

    skin = np.array([205.0, 160.0, 140.0])
    meantex = (skin + rng.normal(scale=4.0, size=(n, 3))).reshape(1, -1).astype(np.float32)
    tex_base = (rng.normal(scale=1.0, size=(3 * n, 80)) * np.linspace(8, 1, 80)).astype(np.float32)

    r2 = (x / A_X) ** 2 + (y / B_Y) ** 2
    front_mask = np.nonzero(r2 < 0.6)[0]
    in_mask = np.zeros(n, bool)
    in_mask[front_mask] = True
    tri_mask2 = faces[in_mask[faces].all(1)]
    data = BFMData(
        meanshape=(v + OFFSET).reshape(1, -1).astype(np.float32),
        id_base=id_base,
        exp_base=exp_base,
        meantex=meantex,
        tex_base=tex_base,
        tri=(faces + 1).astype(np.float64),
        point_buf=_point_buf(faces, n),
        keypoints=(lm68 + 1).astype(np.float64),
        extra={
            "frontmask2_idx": (front_mask + 1).reshape(-1, 1).astype(np.float64),
            "tri_mask2": (tri_mask2 + 1).astype(np.float64),
            "skinmask": (r2 < 0.8).astype(np.float64).reshape(1, -1),
        },
    )
    return data, mp


def _write_raw(d: Path, data: BFMData, rng: np.random.Generator) -> None:
    """The raw BFM09 files whose `transferBFM09` conversion gives `data` (up to float32 rounding)."""
    from scipy.io import savemat

    n = data.n_vertices
    n_exp = n + max(8, n // 10)
    n_full = n_exp + max(8, n // 10)
    front_in_exp = np.sort(rng.choice(n_exp, n, replace=False))
    exp_in_full = np.sort(rng.choice(n_full, n_exp, replace=False))
    front_in_full = exp_in_full[front_in_exp]

    def scatter(front: np.ndarray, rows: np.ndarray, total: int, filler: np.ndarray) -> np.ndarray:
        k = front.shape[1]
        out = filler.reshape(total, 3, k).copy()
        out[rows] = front.reshape(n, 3, k)
        return out.reshape(3 * total, k)

    def split(base: np.ndarray, n_pc: int, rows: np.ndarray, total: int, scale: float):
        """front base [3n,K] -> (PC [3V,n_pc] f32, EV [n_pc,1]) with (PC * EV / scale)[rows] == base."""
        k = base.shape[1]
        full = rng.normal(scale=base.std() + 1e-6, size=(total, 3, n_pc))
        full[rows, :, :k] = base.reshape(n, 3, k)
        full = full.reshape(3 * total, n_pc)
        ev = np.linalg.norm(full, axis=0) * scale
        return (full * scale / ev).astype(np.float32), ev

    shape_pc, shape_ev = split(data.id_base.astype(np.float64), N_SHAPE_PC, front_in_full, n_full, 1e5)
    tex_pc, tex_ev = split(data.tex_base.astype(np.float64), N_SHAPE_PC, front_in_full, n_full, 1.0)
    filler_mu = rng.normal(size=(3 * n_full, 1)) * 0.5 + np.tile(OFFSET, n_full)[:, None]
    shape_mu = scatter(data.meanshape.reshape(-1, 1).astype(np.float64), front_in_full, n_full, filler_mu) * 1e5
    tex_mu = scatter(
        data.meantex.reshape(-1, 1).astype(np.float64), front_in_full, n_full, np.full((3 * n_full, 1), 180.0)
    )
    tl = front_in_full[data.faces] + 1
    savemat(
        str(d / "01_MorphableModel.mat"),
        {
            "shapeMU": shape_mu.astype(np.float32),
            "shapePC": shape_pc,
            "shapeEV": shape_ev.astype(np.float32)[:, None],
            "texMU": tex_mu.astype(np.float32),
            "texPC": tex_pc,
            "texEV": tex_ev.astype(np.float32)[:, None],
            "tl": tl.astype(np.float64),
        },
    )

    exp_pc, exp_ev = split(data.exp_base.astype(np.float64), N_EXP_PC, front_in_exp, n_exp, 1e5)
    exp_mu = (rng.normal(size=3 * n_exp) * 1e3).astype(np.float32)  # ignored by the official conversion
    with open(d / "Exp_Pca.bin", "wb") as fh:
        fh.write(np.asarray([N_EXP_PC], dtype="<i4").tobytes())
        fh.write(exp_mu.astype("<f4").tobytes())
        fh.write(np.ascontiguousarray(exp_pc.T).astype("<f4").tobytes())  # K x 3V, row-major
    np.savetxt(d / "std_exp.txt", exp_ev)

    savemat(str(d / "BFM_front_idx.mat"), {"idx": (front_in_exp + 1).reshape(-1, 1).astype(np.float64)})
    savemat(str(d / "BFM_exp_idx.mat"), {"trimIndex": (exp_in_full + 1).reshape(-1, 1).astype(np.float64)})
    savemat(
        str(d / "facemodel_info.mat"),
        {"tri": data.tri, "point_buf": data.point_buf, "keypoints": data.keypoints.reshape(1, -1), **data.extra},
    )


def write_synthetic_bfm(
    directory: str | Path,
    n_vertices: int = 1200,
    seed: int = 0,
    front: bool = True,
    raw: bool = False,
    helpers: bool = True,
    mediapipe_index: bool = True,
) -> Path:
    """Write a synthetic BFM folder (see the module docstring) and return its path.

    front: write `BFM_model_front.mat`; raw: write the raw BFM09 files it is converted from; helpers: write
    `ncc_code.npy` and the eye-face files; mediapipe_index: write `index_mp468_from_mesh35709.npy`."""
    from scipy.io import savemat

    if n_vertices < 500:
        raise ValueError(f"n_vertices must be >= 500 (468 distinct mediapipe vertices plus the rest), got {n_vertices}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data, mp = _make_front(n_vertices, rng)
    if front:
        savemat(str(d / "BFM_model_front.mat"), data.to_mat_dict())
    if raw:
        _write_raw(d, data, rng)
    if mediapipe_index:
        np.save(d / MP468_INDEX, mp)
    if helpers:
        np.save(d / NCC_CODE, np.ascontiguousarray(derive_ncc_code(data.meanshape).T))
        for name, ids in zip(EYE_FACES, derive_eye_faces(data)):
            np.save(d / name, ids + 1)
    return d
