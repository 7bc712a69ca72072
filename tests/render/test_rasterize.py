"""Tests of the z-buffer rasterizer against analytic / brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from real3d.errors import InputError
from real3d.render import Fragments, interpolate, rasterize, sample_texture, texture_mesh


def _pixel_centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """[H,W] x and y of every pixel centre."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs + 0.5, ys + 0.5


def _edge_distances(tri_xy: np.ndarray, h: int, w: int) -> np.ndarray:
    """[3,H,W] signed distance of each pixel centre to the 3 edges, > 0 inside (any orientation)."""
    px, py = _pixel_centres(h, w)
    area = np.cross(tri_xy[1] - tri_xy[0], tri_xy[2] - tri_xy[0])
    out = []
    for e in range(3):
        a, b = tri_xy[e], tri_xy[(e + 1) % 3]
        d = b - a
        cross = d[0] * (py - a[1]) - d[1] * (px - a[0])
        out.append(np.sign(area) * cross / np.hypot(*d))
    return np.stack(out)


def _reference(verts: np.ndarray, faces: np.ndarray, h: int, w: int, margin: float = 0.01):
    """Brute force: per face inside test + planar depth; returns (face_id, depth, ambiguous mask)."""
    px, py = _pixel_centres(h, w)
    best_z = np.full((h, w), np.inf)
    second_z = np.full((h, w), np.inf)
    best_id = np.full((h, w), -1)
    ambiguous = np.zeros((h, w), dtype=bool)
    for f, tri in enumerate(verts[faces]):
        dist = _edge_distances(tri[:, :2], h, w)
        inside = (dist > 0).all(axis=0)
        ambiguous |= (np.abs(dist) < margin).any(axis=0) & (dist > -margin).all(axis=0)
        m = np.array([[tri[0, 0], tri[0, 1], 1], [tri[1, 0], tri[1, 1], 1], [tri[2, 0], tri[2, 1], 1]])
        gx, gy, c = np.linalg.solve(m, tri[:, 2])
        z = gx * px + gy * py + c
        nearer = inside & (z < best_z)
        second_z = np.where(nearer, best_z, np.where(inside, np.minimum(second_z, z), second_z))
        best_z = np.where(nearer, z, best_z)
        best_id = np.where(nearer, f, best_id)
    both = np.isfinite(second_z)
    ambiguous[both] |= np.abs(second_z[both] - best_z[both]) < 1e-4
    return best_id, best_z, ambiguous


def _coverage_count(verts: np.ndarray, faces: np.ndarray, h: int, w: int) -> np.ndarray:
    """[H,W] how many faces cover each pixel, each face rasterized on its own."""
    count = np.zeros((h, w), dtype=np.int64)
    for f in faces:
        count += rasterize(verts, f[None], h, w).mask
    return count


def _grid_mesh(n: int, x0: float, y0: float, step: float, jitter: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """n x n vertex grid, interior vertices jittered, 2 (n-1)^2 triangles with mixed diagonals."""
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float64)
    xy = np.stack([x0 + gx * step, y0 + gy * step], axis=-1)
    xy[1:-1, 1:-1] += rng.uniform(-jitter, jitter, size=(n - 2, n - 2, 2))
    verts = np.concatenate([xy.reshape(-1, 2), rng.uniform(0, 1, size=(n * n, 1))], axis=1)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]] if (i + j) % 2 else [[a, b, c], [b, d, c]]
    return verts, np.array(faces)


def test_single_triangle_covers_pixels_with_centres_inside() -> None:
    rng = np.random.default_rng(0)
    h, w = 40, 50
    for _ in range(20):
        verts = np.concatenate([rng.uniform(-10, 60, size=(3, 2)), rng.uniform(-1, 1, size=(3, 1))], axis=1)
        frags = rasterize(verts, np.array([[0, 1, 2]]), h, w)
        dist = _edge_distances(verts[:, :2], h, w)
        inside = (dist > 0).all(axis=0)
        clear = (np.abs(dist) > 0.01).all(axis=0)  # snapping to 1/256 px only matters closer than this
        assert np.array_equal(frags.mask[clear], inside[clear])
        assert frags.face_id.dtype == np.int32 and frags.bary.dtype == np.float32
        assert np.all(frags.face_id[frags.mask] == 0)
        assert np.all(np.isinf(frags.depth[~frags.mask])) and np.all(frags.bary[~frags.mask] == 0)


def test_triangle_with_exact_vertices_matches_analytic_interior() -> None:
    # Vertices on the 1/256 grid: float64 edge functions are exact, so compare every pixel;
    # pixel centres exactly on an edge are the only ones allowed to differ (fill rule decides).
    h, w = 32, 32
    verts = np.array([[2.0, 3.5], [29.5, 9.25], [7.5, 30.5]])
    verts = np.concatenate([verts, np.zeros((3, 1))], axis=1)
    frags = rasterize(verts, np.array([[0, 1, 2]]), h, w)
    dist = _edge_distances(verts[:, :2], h, w)
    on_edge = (dist == 0).any(axis=0) & (dist >= 0).all(axis=0)
    inside = (dist > 0).all(axis=0)
    assert on_edge.sum() > 0
    assert np.array_equal(frags.mask[~on_edge], inside[~on_edge])


def test_shared_edge_covered_exactly_once() -> None:
    h, w = 24, 24
    # The diagonal and the quad's sides pass exactly through pixel centres.
    verts = np.array([[2.5, 2.5, 0], [20.5, 2.5, 0], [20.5, 20.5, 0], [2.5, 20.5, 0]], dtype=np.float64)
    for faces in (np.array([[0, 1, 2], [0, 2, 3]]), np.array([[0, 1, 3], [1, 2, 3]]), np.array([[0, 2, 1], [0, 3, 2]])):
        count = _coverage_count(verts, faces, h, w)
        assert count.max() == 1
        px, py = _pixel_centres(h, w)
        strict = (px > 2.5) & (px < 20.5) & (py > 2.5) & (py < 20.5)
        assert np.all(count[strict] == 1)
        # The two faces together cover the same pixels as the quad, each of them exactly once.
        assert count.sum() == rasterize(verts, faces, h, w).mask.sum()


def test_fan_around_pixel_centre_covered_once() -> None:
    # 12 triangles around a vertex sitting exactly on a pixel centre, spokes through pixel centres.
    h, w = 33, 33
    centre = np.array([16.5, 16.5])
    ring = np.array(
        [[8, 0], [8, 8], [0, 8], [-8, 8], [-8, 0], [-8, -8], [0, -8], [8, -8], [8, -3], [3, 8], [-8, 3], [-3, -8]],
        dtype=np.float64,
    )
    ang = np.arctan2(ring[:, 1], ring[:, 0])
    ring = ring[np.argsort(ang)] + centre
    verts = np.concatenate([np.vstack([centre, ring]), np.zeros((13, 1))], axis=1)
    faces = np.array([[0, 1 + k, 1 + (k + 1) % 12] for k in range(12)])
    count = _coverage_count(verts, faces, h, w)
    assert count.max() == 1
    assert count[16, 16] == 1  # the shared vertex's own pixel
    assert count[12:21, 12:21].min() == 1


def test_jittered_grid_mesh_is_watertight() -> None:
    rng = np.random.default_rng(1)
    h, w = 48, 48
    verts, faces = _grid_mesh(9, 4.5, 4.5, 4.75, 1.5, rng)  # outer square [4.5, 42.5]^2
    count = _coverage_count(verts, faces, h, w)
    assert count.max() == 1
    px, py = _pixel_centres(h, w)
    strict = (px > 4.5) & (px < 42.5) & (py > 4.5) & (py < 42.5)
    assert np.all(count[strict] == 1)
    assert not count[~((px >= 4.5) & (px <= 42.5) & (py >= 4.5) & (py <= 42.5))].any()


def test_interpenetrating_triangles_nearest_wins() -> None:
    h, w = 40, 40
    # Two triangles crossing in depth along a slanted line.
    verts = np.array(
        [[2, 5, 0.0], [38, 8, 1.0], [10, 36, 0.0], [36, 3, 0.2], [30, 38, 0.9], [3, 20, 0.7]], dtype=np.float64
    )
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, h, w)
    ref_id, ref_z, ambiguous = _reference(verts, faces, h, w)
    both = np.zeros((h, w), dtype=bool)
    for f in range(2):
        both_f = (_edge_distances(verts[faces[f], :2], h, w) > 0).all(axis=0)
        both = both & both_f if f else both_f
    assert (both & (ref_id == 0)).sum() > 20 and (both & (ref_id == 1)).sum() > 20  # a real crossing
    ok = ~ambiguous
    assert np.array_equal(frags.face_id[ok], ref_id[ok])
    cov = ok & (ref_id >= 0)
    np.testing.assert_allclose(frags.depth[cov], ref_z[cov], atol=1e-5)


def test_random_triangle_soup_matches_brute_force_zbuffer() -> None:
    rng = np.random.default_rng(2)
    h, w = 48, 64
    n = 40
    verts = np.concatenate([rng.uniform(-8, 72, size=(3 * n, 2)), rng.uniform(-2, 2, size=(3 * n, 1))], axis=1)
    faces = np.arange(3 * n).reshape(n, 3)
    frags = rasterize(verts, faces, h, w)
    ref_id, ref_z, ambiguous = _reference(verts, faces, h, w)
    ok = ~ambiguous
    assert ok.mean() > 0.8
    assert np.array_equal(frags.face_id[ok], ref_id[ok])
    cov = ok & (ref_id >= 0)
    np.testing.assert_allclose(frags.depth[cov], ref_z[cov], atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_texture_mesh_equals_sample_texture_of_rasterize(seed: int) -> None:
    """The one-pass face layer gives the same pixels as rasterize + sample_texture: overlapping, off-screen and
    degenerate triangles, texture coordinates outside the texture, and nothing on screen at all."""
    rng = np.random.default_rng(seed)
    h, w, n = 40, 56, 60
    verts = np.concatenate([rng.uniform(-10, 70, size=(3 * n, 2)), rng.uniform(-2, 2, size=(3 * n, 1))], axis=1)
    verts[3:6] = verts[3]  # a degenerate face
    faces = np.arange(3 * n).reshape(n, 3)
    texture = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    uv = rng.uniform(-5, 55, size=(3 * n, 2))
    image, mask = texture_mesh(verts, faces, h, w, texture, uv)
    ref_image, ref_mask = sample_texture(texture, uv, rasterize(verts, faces, h, w))
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(image, ref_image)
    off = verts + [500.0, 0.0, 0.0]
    image, mask = texture_mesh(off, faces, h, w, texture, uv)
    assert not mask.any() and not image.any()


def test_barycentrics_reproduce_linear_attribute() -> None:
    rng = np.random.default_rng(3)
    h, w = 48, 48
    verts, faces = _grid_mesh(7, 3.3, 2.7, 7.1, 2.0, rng)
    coef = np.array([[0.7, -1.3, 5.0], [-0.2, 0.4, -3.0]])  # attr_c = a x + b y + c
    attrs = verts[:, :2] @ coef[:, :2].T + coef[:, 2]  # Vx2
    frags = rasterize(verts, faces, h, w)
    out = interpolate(frags, attrs)
    px, py = _pixel_centres(h, w)
    expect = np.stack([coef[c, 0] * px + coef[c, 1] * py + coef[c, 2] for c in range(2)], axis=-1)
    m = frags.mask
    assert m.sum() > 1000
    np.testing.assert_allclose(out[m], expect[m], atol=2e-4)
    assert np.all(out[~m] == 0)
    np.testing.assert_allclose(frags.bary[m].sum(-1), 1.0, atol=1e-6)
    # Depth is the same screen-linear interpolation of z.
    z_interp = interpolate(frags, verts[:, 2:])[..., 0]
    np.testing.assert_allclose(frags.depth[m], z_interp[m], atol=1e-5)


def test_interpolate_torch_matches_numpy_and_is_differentiable() -> None:
    rng = np.random.default_rng(4)
    verts, faces = _grid_mesh(5, 1.0, 1.0, 6.0, 1.0, rng)
    frags = rasterize(torch.from_numpy(verts), torch.from_numpy(faces), 28, 28)
    attrs = rng.normal(size=(len(verts), 3)).astype(np.float32)
    attrs_t = torch.from_numpy(attrs).requires_grad_(True)
    out_t = interpolate(frags, attrs_t)
    assert out_t.shape == (28, 28, 3)
    np.testing.assert_allclose(out_t.detach().numpy(), interpolate(frags, attrs), atol=1e-6)
    out_t.sum().backward()
    assert attrs_t.grad is not None and attrs_t.grad.abs().sum() > 0


def test_texture_identity_mapping_reproduces_texture() -> None:
    rng = np.random.default_rng(5)
    h, w = 40, 56
    texture = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    xy = np.array([[0, 0], [w, 0], [w, h], [0, h], [w * 0.4, h * 0.6]], dtype=np.float64)
    verts = np.concatenate([xy, np.zeros((5, 1))], axis=1)
    faces = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    image, mask = sample_texture(texture, xy, rasterize(verts, faces, h, w))
    assert mask.all()
    assert image.dtype == np.uint8 and image.shape == texture.shape
    assert np.abs(image.astype(int) - texture.astype(int)).max() <= 1


def test_texture_half_scale_and_mask() -> None:
    # Screen quad covering the left half, uv spanning the whole texture: a 2x horizontal minification.
    h, w = 16, 32
    texture = np.tile(np.arange(w, dtype=np.uint8)[None, :, None] * 8, (h, 1, 3))
    xy = np.array([[0, 0], [w / 2, 0], [w / 2, h], [0, h]], dtype=np.float64)
    uv = xy * np.array([2.0, 1.0])
    verts = np.concatenate([xy, np.zeros((4, 1))], axis=1)
    image, mask = sample_texture(texture, uv, rasterize(verts, np.array([[0, 1, 2], [0, 2, 3]]), h, w))
    assert mask[:, : w // 2].all() and not mask[:, w // 2 :].any()
    # Screen column j samples texture x = 2 (j + 0.5), i.e. halfway between texels 2j and 2j+1.
    expect = (np.arange(w // 2) * 16 + 4).astype(np.uint8)
    assert np.abs(image[3, : w // 2, 0].astype(int) - expect).max() <= 1
    assert not image[:, w // 2 :].any()


def test_degenerate_offscreen_and_invalid_faces_are_ignored() -> None:
    h, w = 20, 20
    good = [[2, 2, 0.5], [17, 3, 0.5], [5, 18, 0.5]]
    verts = np.array(
        good
        + [[1, 1, 0], [5, 5, 0], [9, 9, 0]]  # collinear
        + [[4, 4, 0], [4, 4, 0], [12, 6, 0]]  # repeated vertex
        + [[30, 30, 0], [60, 31, 0], [35, 50, 0]]  # off-screen
        + [[-50, -3, 0], [-10, -40, 0], [-1, -0.6, 0]]  # off-screen (negative side)
        + [[3, 3, np.nan], [15, 3, 0], [3, 15, 0]]  # non-finite
        + [[3, 3, 0], [4e7, 3, 0], [3, 15, 0]]  # absurdly large
        + [[6, 6, 0], [6.001, 6.001, 0], [6.002, 6.0, 0]],  # far below a pixel
        dtype=np.float64,
    )
    faces = np.arange(len(verts)).reshape(-1, 3)
    frags = rasterize(verts, faces, h, w)
    alone = rasterize(verts, faces[:1], h, w)
    assert np.array_equal(frags.face_id, alone.face_id)
    assert np.array_equal(frags.bary, alone.bary)
    empty = rasterize(verts, np.zeros((0, 3), dtype=np.int64), h, w)
    assert not empty.mask.any() and np.isinf(empty.depth).all()
    assert not rasterize(verts, faces[1:], h, w).mask.any()


def test_huge_triangle_clipped_to_view() -> None:
    h, w = 30, 30
    verts = np.array([[-1e4, -1e4, 1.0], [1e4, -1e4, 1.0], [0, 1e4, 1.0]])
    frags = rasterize(verts, np.array([[0, 1, 2]]), h, w)
    assert frags.mask.all()
    np.testing.assert_allclose(frags.depth, 1.0)


def test_cull_backfaces_keeps_counter_clockwise_as_displayed() -> None:
    # (2,2) -> (2,18) -> (18,2): down then up-right, counter-clockwise on screen (y down).
    verts = np.array([[2, 2, 0], [2, 18, 0], [18, 2, 0]], dtype=np.float64)
    front, back = np.array([[0, 1, 2]]), np.array([[0, 2, 1]])
    assert rasterize(verts, front, 20, 20, cull_backfaces=True).mask.sum() > 50
    assert not rasterize(verts, back, 20, 20, cull_backfaces=True).mask.any()
    assert np.array_equal(rasterize(verts, back, 20, 20).mask, rasterize(verts, front, 20, 20).mask)


def test_equal_depth_goes_to_lower_face_id() -> None:
    verts = np.array([[1, 1, 0.3], [15, 1, 0.3], [1, 15, 0.3]], dtype=np.float64)
    frags = rasterize(verts, np.array([[0, 1, 2], [0, 2, 1]]), 16, 16)
    assert frags.mask.sum() > 50 and np.all(frags.face_id[frags.mask] == 0)


def test_bad_inputs_raise_input_error() -> None:
    verts = np.zeros((3, 3))
    with pytest.raises(InputError, match="verts"):
        rasterize(np.zeros((3, 2)), np.array([[0, 1, 2]]), 8, 8)
    with pytest.raises(InputError, match="faces"):
        rasterize(verts, np.array([0, 1, 2]), 8, 8)
    with pytest.raises(InputError, match="indices"):
        rasterize(verts, np.array([[0, 1, 3]]), 8, 8)
    with pytest.raises(InputError, match="size"):
        rasterize(verts, np.array([[0, 1, 2]]), 0, 8)
    frags = rasterize(verts, np.array([[0, 1, 2]]), 8, 8)
    assert isinstance(frags, Fragments)
    with pytest.raises(InputError, match="attrs"):
        interpolate(frags, np.zeros(3))
    with pytest.raises(InputError, match="rows"):
        interpolate(frags, np.zeros((2, 4)))
    with pytest.raises(InputError, match="texture"):
        sample_texture(np.zeros((4, 4, 3), dtype=np.float32), np.zeros((3, 2)), frags)
