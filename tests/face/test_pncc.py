"""PNCC/SECC renderer: analytic planes, perspective-correct colours, mirroring, holes, face-0 quirk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from real3d.errors import InputError
from real3d.face.bfm import derive_ncc_code
from real3d.face.pncc import CENTER, FOCAL, FOV_DEG, PNCCRenderer, project_to_screen

S = 64
SCALE = FOCAL / CENTER  # 1 / tan(fov / 2)
BACKENDS = ["numpy", "torch"]


def _x_at(px: float, z: float) -> float:
    """BFM-frame x that projects to screen x `px` (pixels) at distance z."""
    return (px / (S / 2) - 1.0) * z / SCALE


def _y_at(py: float, z: float) -> float:
    return (1.0 - py / (S / 2)) * z / SCALE


def _grid(x0: float, x1: float, y0: float, y1: float, z, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """n x n vertex grid spanning [x0,x1] x [y0,y1]; z a constant or a function z(x, y). Faces [2(n-1)^2,3]."""
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    zs = z(xs, ys) if callable(z) else np.full_like(xs, z)
    verts = np.stack([xs.ravel(), ys.ravel(), zs.ravel()], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])
    return torch.tensor(verts), torch.tensor(faces)


def _rect_plane(z: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plane at depth z whose projection is the pixel rectangle columns [20,44), rows [16,40)."""
    return _grid(_x_at(20, z), _x_at(44, z), _y_at(40, z), _y_at(16, z), z)


def ncc_code_from_meanshape(verts: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(derive_ncc_code(verts.numpy()))


def test_constants():
    assert FOV_DEG == pytest.approx(12.594, abs=1e-3)
    assert math.tan(math.radians(FOV_DEG) / 2) == pytest.approx(112 / 1015, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plane_covers_projected_rectangle(backend):
    verts, faces = _rect_plane()
    r = PNCCRenderer(
        faces,
        ncc_code_from_meanshape(verts + torch.rand_like(verts)),
        image_size=S,
        backend=backend,
        face_zero_background="never",
    )
    img = r(verts[None])
    assert img.shape == (1, 3, S, S) and img.dtype == torch.float32
    expected = np.zeros((S, S), dtype=bool)
    expected[16:40, 20:44] = True
    covered = (r.face_ids(verts[None])[0] >= 0).numpy()
    np.testing.assert_array_equal(covered, expected)
    assert (img[0][:, ~torch.from_numpy(expected)] == -1).all()  # background is exactly -1


@pytest.mark.parametrize("backend", BACKENDS)
def test_colours_interpolate_linearly_on_a_frontal_plane(backend):
    z = 10.0
    verts, faces = _rect_plane(z)
    colors = ncc_code_from_meanshape(verts + torch.tensor([0.0, 0.0, 1.0]) * torch.rand(len(verts), 1))
    r = PNCCRenderer(faces, colors, image_size=S, backend=backend, face_zero_background="never")
    img = r(verts[None])[0]
    rows, cols = np.mgrid[16:40, 20:44]
    x = _x_at(cols + 0.5, z)
    y = _y_at(rows + 0.5, z)
    vx, vy = verts[:, 0].numpy(), verts[:, 1].numpy()
    exp_r = (x - vx.min()) / (vx.max() - vx.min())
    exp_g = (y - vy.min()) / (vy.max() - vy.min())
    np.testing.assert_allclose(img[0, 16:40, 20:44].numpy(), (exp_r - 0.5) / 0.5, atol=2e-5)
    np.testing.assert_allclose(img[1, 16:40, 20:44].numpy(), (exp_g - 0.5) / 0.5, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_colours_are_perspective_correct_on_a_tilted_plane(backend):
    """Colour = affine function of the 3-D point: it must match at the ray/plane intersection."""

    def depth(x, y):
        return 10.0 + 1.5 * x  # plane z = 10 + 1.5 x, strongly slanted

    verts, faces = _grid(-0.3, 0.3, -0.3, 0.3, depth, n=3)
    colors = ncc_code_from_meanshape(verts)
    r = PNCCRenderer(faces, colors, image_size=S, backend=backend, face_zero_background="never")
    img = r(verts[None])[0]
    mask = r.face_ids(verts[None])[0] >= 0
    rows, cols = np.nonzero(mask.numpy())
    # pixel ray: x = a z, y = b z with a = (px/(S/2) - 1)/s, b = (1 - py/(S/2))/s; z = 10 + 1.5 a z
    a = ((cols + 0.5) / (S / 2) - 1.0) / SCALE
    b = (1.0 - (rows + 0.5) / (S / 2)) / SCALE
    zz = 10.0 / (1.0 - 1.5 * a)
    pts = np.stack([a * zz, b * zz, zz], 1)
    lo, hi = verts.min(0).values.numpy(), verts.max(0).values.numpy()
    expected = (pts - lo) / (hi - lo)
    got = (img[:, rows, cols].numpy().T + 1.0) / 2.0
    np.testing.assert_allclose(got, expected, atol=3e-5)
    # screen-linear interpolation would be off by far more than that somewhere on this plane
    assert mask.sum() > 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_x_is_mirrored_like_the_bfm_projection(backend):
    """pytorch3d has +X left and the official code negates x: +x lands right, as u = 1015 x/z + 112."""
    z = 10.0
    tri = torch.tensor([[0.30, 0.05, z], [0.40, 0.05, z], [0.35, 0.15, z]], dtype=torch.float64)
    r = PNCCRenderer(
        torch.tensor([[0, 1, 2]]), torch.rand(3, 3), image_size=S, backend=backend, face_zero_background="never"
    )
    mask = (r.face_ids(tri[None])[0] >= 0).numpy()
    rows, cols = np.nonzero(mask)
    assert cols.min() > S / 2 and rows.max() < S / 2  # right half, upper half
    u = FOCAL * tri[:, 0].numpy() / z + CENTER  # the official 224-px projection, y flipped
    v = 224 - (FOCAL * tri[:, 1].numpy() / z + CENTER)
    assert cols.mean() + 0.5 == pytest.approx(u.mean() * S / 224, abs=1.0)
    assert rows.mean() + 0.5 == pytest.approx(v.mean() * S / 224, abs=1.0)
    mirrored = tri * torch.tensor([-1.0, 1.0, 1.0])
    np.testing.assert_array_equal((r.face_ids(mirrored[None])[0] >= 0).numpy(), mask[:, ::-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_face_wins(backend):
    far_v, far_f = _rect_plane(12.0)
    near_v, near_f = _grid(_x_at(24, 9.0), _x_at(32, 9.0), _y_at(30, 9.0), _y_at(20, 9.0), 9.0, n=2)
    verts = torch.cat([near_v, far_v])
    faces = torch.cat([far_f + len(near_v), near_f])  # near faces come last in the face list
    r = PNCCRenderer(faces, torch.rand(len(verts), 3), image_size=S, backend=backend, face_zero_background="never")
    ids = r.face_ids(verts[None])[0].numpy()
    n_far = len(far_f)
    assert (ids[20:30, 24:32] >= n_far).all()
    assert (ids[16:20, 20:44] < n_far).all() and (ids[16:20, 20:44] >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eye_faces_become_holes(backend):
    verts, faces = _rect_plane()
    eye = torch.tensor([10, 11, 26, 27])  # two quads in the middle of the 4x4 quad grid
    r = PNCCRenderer(
        faces,
        torch.rand(len(verts), 3) * 0.5 + 0.25,
        eye_faces=eye,
        image_size=S,
        backend=backend,
        face_zero_background="never",
    )
    full = PNCCRenderer(faces, r.colors, image_size=S, backend=backend, face_zero_background="never")
    img, ref = r(verts[None])[0], full(verts[None])[0]
    hole = (img[0] == -1) & (ref[0] != -1)
    assert hole.sum() > 20
    assert (img[:, hole] == -1).all()
    np.testing.assert_array_equal(img[:, ~hole].numpy(), ref[:, ~hole].numpy())
    with pytest.raises(InputError, match="eye_faces"):
        PNCCRenderer(faces, r.colors, eye_faces=torch.tensor([len(faces)]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_face_zero_is_background_like_the_official_mask(backend):
    """pix_to_face > 0 on packed ids: face 0 is background in the first frame of a call only."""
    verts, faces = _rect_plane()
    colors = torch.rand(len(verts), 3) * 0.5 + 0.25
    batch = verts[None].repeat(2, 1, 1)
    ids = PNCCRenderer(faces, colors, image_size=S, backend=backend).face_ids(batch)
    face0 = ids == 0
    assert face0[0].sum() > 5
    out = {
        q: PNCCRenderer(faces, colors, image_size=S, backend=backend, face_zero_background=q)(batch)
        for q in ("first_in_batch", "always", "never")
    }
    assert (out["first_in_batch"][0][:, face0[0]] == -1).all()
    assert (out["first_in_batch"][1][:, face0[1]] > -1).all()
    assert (out["always"][:, :, face0[0]] == -1).all()
    assert (out["never"][:, :, face0[0]] > -1).all()
    np.testing.assert_array_equal(out["first_in_batch"][1].numpy(), out["never"][1].numpy())


def test_backends_agree_on_a_curved_mesh():
    def depth(x, y):
        return 10.0 - 0.6 * np.sqrt(np.clip(1.0 - x**2 / 0.7 - y**2 / 1.1, 0.02, None))

    verts, faces = _grid(-0.8, 0.8, -1.0, 1.0, depth, n=40)
    colors = ncc_code_from_meanshape(verts)
    batch = verts[None] + torch.randn(3, 1, 3, dtype=torch.float64) * 0.02
    out = {b: PNCCRenderer(faces, colors, image_size=96, backend=b, chunk_size=2) for b in BACKENDS}
    ids = {b: r.face_ids(batch) for b, r in out.items()}
    assert (ids["numpy"] == ids["torch"]).float().mean() > 0.999
    imgs = {b: r(batch) for b, r in out.items()}
    same = ids["numpy"] == ids["torch"]
    diff = (imgs["numpy"] - imgs["torch"]).abs().amax(1)
    assert diff[same].max() < 1e-6
    assert (imgs["numpy"] > -1).float().mean() > 0.3


def test_ncc_code_is_the_min_max_normalised_mean_shape():
    m = np.array([[0.0, -1.0, 5.0], [2.0, 1.0, 6.0], [1.0, 0.0, 5.5]])
    np.testing.assert_allclose(derive_ncc_code(m), [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5]])


def test_project_to_screen_centre_and_scale():
    v = torch.tensor([[[0.0, 0.0, 10.0], [10.0 / SCALE, 10.0 / SCALE, 10.0]]], dtype=torch.float64)
    s = project_to_screen(v, 512)
    np.testing.assert_allclose(s[0].numpy(), [[256, 256, 10], [512, 0, 10]], atol=1e-9)


def test_bad_inputs():
    verts, faces = _rect_plane()
    r = PNCCRenderer(faces, torch.rand(len(verts), 3), image_size=S)
    with pytest.raises(InputError, match="vertices"):
        r(verts)  # missing batch axis
    with pytest.raises(InputError, match="0-based"):
        PNCCRenderer(faces + 1, torch.rand(len(verts) - 1, 3))
