"""Triangle rasterizer with a real z-buffer, in vectorized numpy (no compiled extension).

Used by the mesh backend (MediaPipe face mesh, ~900 triangles) and the PNCC renderer (BFM mesh,
~70k triangles). Semantics follow pytorch3d's `rasterize_meshes` with `faces_per_pixel=1`: each pixel
gets the nearest covering face, its screen-space barycentric coordinates and its depth.

Conventions
-----------
* Screen space: x to the right, y down, in pixels; pixel (i, j) (row i, column j) samples the point
  (j + 0.5, i + 0.5). `z` is depth, smaller = nearer. Depth and barycentrics are linear in screen
  space (pass screen-space z for an orthographic camera, or NDC z for a perspective one).
* Coverage is exact: vertex x, y are snapped to 1/256 pixel (like GPU rasterizers) and the edge
  tests run in int64, with a tie rule for sample points lying exactly on an edge (equivalent to
  nudging the sample by an infinitesimal (+e, +e^2)). Hence a watertight mesh is covered once per
  pixel: no cracks and no double coverage, also on shared vertices.
* Front faces are those whose vertices run counter-clockwise *as the image is displayed* (x right,
  y down), i.e. negative signed area in pixel coordinates; this is OpenGL's default. Flip a mesh's
  winding with `faces[:, [0, 2, 1]]`.

Algorithm: per triangle the covered pixel rows are enumerated, the exact covered column span of
each (triangle, row) pair is solved from the three integer edge functions, every covered pixel
becomes a fragment whose key packs (float32 depth, face id) into one int64, and `np.minimum.at`
keeps the nearest fragment per pixel. Barycentrics are then computed once per covered pixel from
the unsnapped float64 vertices (so they reproduce linear attributes exactly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from real3d.errors import InputError

logger = logging.getLogger(__name__)

SUBPIXEL_BITS = 8
"""Vertex x, y are snapped to 1 / 2**SUBPIXEL_BITS pixel for the exact integer coverage test."""
MAX_COORD_PX = float(2**20)
"""Triangles with a vertex farther than this from the origin (in pixels) are dropped (int64 headroom)."""

_ONE = 1 << SUBPIXEL_BITS
_HALF = _ONE >> 1
_EMPTY_KEY = np.iinfo(np.int64).max
_LOW32 = np.int64(0xFFFFFFFF)


@dataclass(frozen=True)
class Fragments:
    """Result of `rasterize`: the nearest face per pixel."""

    face_id: np.ndarray
    """[H,W] int32 index into `faces` of the visible face, -1 where no face covers the pixel."""
    bary: np.ndarray
    """[H,W,3] float32 screen-space barycentric coordinates w.r.t. faces[face_id] (0 where empty)."""
    depth: np.ndarray
    """[H,W] float32 interpolated z of the visible face, +inf where empty."""
    faces: np.ndarray
    """[F,3] int64 the faces that were rasterized (used by `interpolate`)."""

    @property
    def mask(self) -> np.ndarray:
        """[H,W] bool: True where some face covers the pixel."""
        return self.face_id >= 0


def _check_inputs(verts: np.ndarray, faces: np.ndarray, height: int, width: int) -> None:
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise InputError(f"rasterize: verts must have shape [V,3], got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"rasterize: faces must have shape [F,3], got {faces.shape}")
    if height <= 0 or width <= 0 or height * width >= 2**31:
        raise InputError(f"rasterize: image size must be positive and < 2**31 pixels, got {height}x{width}")
    if len(faces) >= 2**31:
        raise InputError(f"rasterize: at most 2**31 - 1 faces are supported, got {len(faces)}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise InputError(f"rasterize: face indices must lie in [0, {len(verts)}), got [{faces.min()}, {faces.max()}]")


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _float_depth_to_ordered_int(z: np.ndarray) -> np.ndarray:
    """float32 -> int32 with the same ordering (an involution on the bit pattern)."""
    bits = z.view(np.int32)
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


def rasterize(
    verts: np.ndarray | torch.Tensor,
    faces: np.ndarray | torch.Tensor,
    height: int,
    width: int,
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterize a triangle mesh with a z-buffer (one face per pixel, nearest wins).

    verts: [V,3] float: x, y in pixels (pixel centres at integer + 0.5), z = depth (smaller = nearer).
    faces: [F,3] int vertex indices.
    cull_backfaces: drop faces that are clockwise as displayed (see module docstring).
    Degenerate, off-screen and non-finite faces are ignored. Ties in depth go to the lower face id.
    """
    verts_np = _to_numpy(verts).astype(np.float64, copy=False)
    faces_np = _to_numpy(faces).astype(np.int64, copy=False)
    _check_inputs(verts_np, faces_np, height, width)
    visible = _visible(verts_np, faces_np, height, width, cull_backfaces)
    if visible is None:
        return _empty_fragments(height, width, faces_np)
    geo, covered, won = visible
    slot = won & _LOW32  # M, index into the kept faces
    face_id = np.full(height * width, -1, dtype=np.int32)
    face_id[covered] = geo.face_idx[slot]
    depth_img = np.full(height * width, np.inf, dtype=np.float32)
    won >>= 32
    depth_img[covered] = _float_depth_to_ordered_int(won.astype(np.int32)).view(np.float32)
    bary = np.zeros((height * width, 3), dtype=np.float32)
    _put_rows(bary, covered, _barycentrics(geo.bary_coef.take(slot, axis=0), covered, width))

    return Fragments(
        face_id=face_id.reshape(height, width),
        bary=bary.reshape(height, width, 3),
        depth=depth_img.reshape(height, width),
        faces=faces_np,
    )


def _visible(
    verts: np.ndarray, faces: np.ndarray, height: int, width: int, cull_backfaces: bool
) -> tuple[_FaceSetup, np.ndarray, np.ndarray] | None:
    """The z-buffer: (face setup, covered pixels [M] (flat, ascending), winning key per covered pixel [M]: depth
    as ordered int32 in the high half, the kept face's slot in `geo` in the low half); None when nothing draws."""
    geo = _setup_faces(verts, faces, height, width, cull_backfaces)
    if geo is None:
        return None
    pair_k, pair_row, span_lo, n_cols = _row_spans(geo)

    # Depth along each span is linear; its end values are clamped to the face's z range (snapping
    # can put a sample up to 1/512 px outside the float triangle, which matters for edge-on slivers).
    gx, gy, gc = geo.plane
    span_hi = span_lo + n_cols - 1
    z_row = np.repeat(gy, geo.n_rows) * pair_row + np.repeat(gc, geo.n_rows)  # P
    gx_p = np.repeat(gx, geo.n_rows)
    zmin_p = np.repeat(geo.z_min, geo.n_rows)
    zmax_p = np.repeat(geo.z_max, geo.n_rows)
    z_lo = np.clip(z_row + gx_p * span_lo, zmin_p, zmax_p)  # P
    z_hi = np.clip(z_row + gx_p * span_hi, zmin_p, zmax_p)  # P
    slope = ((z_hi - z_lo) / np.maximum(n_cols - 1, 1)).astype(np.float32)  # P

    # One entry per covered (face, pixel) fragment; key = (depth as ordered int32, face slot k).
    # int32 pixel indices (H*W < 2**31 is checked) and in-place updates keep the memory traffic low.
    n_frag = int(n_cols.sum())
    frag_start = (np.cumsum(n_cols) - n_cols).astype(np.int32)  # P
    local = np.arange(n_frag, dtype=np.int32)
    local -= np.repeat(frag_start, n_cols)  # N: column offset inside the span
    pix = np.repeat((pair_row * width + span_lo).astype(np.int32), n_cols)
    pix += local  # N
    depth = local.astype(np.float32)
    depth *= np.repeat(slope, n_cols)
    depth += np.repeat(z_lo.astype(np.float32), n_cols)  # N
    key = _float_depth_to_ordered_int(depth).astype(np.int64)
    key <<= 32
    key |= np.repeat(pair_k, n_cols)  # N

    zbuf = np.full(height * width, _EMPTY_KEY, dtype=np.int64)
    np.minimum.at(zbuf, pix, key)

    covered = np.flatnonzero(zbuf != _EMPTY_KEY)  # M
    return geo, covered, zbuf[covered]


@dataclass
class _FaceSetup:
    """Per kept face (K of them) quantities used by the span and fragment stages."""

    face_idx: np.ndarray  # K int32, ids into the caller's faces
    row_first: np.ndarray  # K
    n_rows: np.ndarray  # K
    col_first: np.ndarray  # K
    col_last: np.ndarray  # K
    edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # 3 x (a, b, d), K each: on row i the
    # edge admits column j iff dy*one*j <= a*i + b; d = |dy|*one (1*one where dy == 0)
    edge_sign: list[np.ndarray]  # 3 x K int8: +1 upper bound on j, -1 lower bound, 0 row-constant
    plane: tuple[np.ndarray, np.ndarray, np.ndarray]  # z at pixel (i, j) = gx*j + gy*i + c
    z_min: np.ndarray  # K
    z_max: np.ndarray  # K
    bary_coef: np.ndarray  # Kx6 float32 (x0 - .5, y0 - .5, c1x, c1y, c2x, c2y):
    # b_m at pixel (i, j) = cmx*(j + .5 - x0) + cmy*(i + .5 - y0), m = 1, 2


def _setup_faces(
    verts: np.ndarray, faces: np.ndarray, height: int, width: int, cull_backfaces: bool
) -> _FaceSetup | None:
    """Snap, cull and bound the faces; None when nothing is left to draw."""
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]  # V each
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    usable = finite & (np.abs(x) <= MAX_COORD_PX) & (np.abs(y) <= MAX_COORD_PX)  # V
    if (finite & ~usable).any():
        logger.warning(
            "rasterize: %d vertices lie beyond %g px; faces using them are dropped (clip the mesh first)",
            int((finite & ~usable).sum()),
            MAX_COORD_PX,
        )
    xi = np.rint(np.where(usable, x, 0.0) * _ONE).astype(np.int64)  # V
    yi = np.rint(np.where(usable, y, 0.0) * _ONE).astype(np.int64)  # V
    i0, i1, i2 = faces[:, 0], faces[:, 1], faces[:, 2]  # F each
    keep = usable[i0] & usable[i1] & usable[i2]
    x0, x1, x2 = xi[i0], xi[i1], xi[i2]
    y0, y1, y2 = yi[i0], yi[i1], yi[i2]
    # Signed doubled area in fixed point: cross(v1 - v0, v2 - v0); > 0 = clockwise as displayed.
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    keep &= area < 0 if cull_backfaces else area != 0
    # Pixel rows/columns whose centres lie in the face's bounding box, clipped to the image:
    # first = ceil((lo - half) / one), last = floor((hi - half) / one).
    col_first = np.maximum(-((_HALF - np.minimum(np.minimum(x0, x1), x2)) >> SUBPIXEL_BITS), 0)
    col_last = np.minimum((np.maximum(np.maximum(x0, x1), x2) - _HALF) >> SUBPIXEL_BITS, width - 1)
    row_first = np.maximum(-((_HALF - np.minimum(np.minimum(y0, y1), y2)) >> SUBPIXEL_BITS), 0)
    row_last = np.minimum((np.maximum(np.maximum(y0, y1), y2) - _HALF) >> SUBPIXEL_BITS, height - 1)
    keep &= (col_last >= col_first) & (row_last >= row_first)
    face_idx = np.flatnonzero(keep)
    if face_idx.size == 0:
        return None
    if face_idx.size < keep.size:
        x0, x1, x2, y0, y1, y2, area = (a[face_idx] for a in (x0, x1, x2, y0, y1, y2, area))
        row_first, row_last = row_first[face_idx], row_last[face_idx]
        col_first, col_last = col_first[face_idx], col_last[face_idx]
        faces = faces[face_idx]

    # Coverage uses a positively oriented copy (v1 and v2 swapped where area < 0).
    neg = area < 0
    x1, x2 = np.where(neg, x2, x1), np.where(neg, x1, x2)
    y1, y2 = np.where(neg, y2, y1), np.where(neg, y1, y2)
    edges, edge_sign = [], []
    for ax, ay, bx, by in ((x0, y0, x1, y1), (x1, y1, x2, y2), (x2, y2, x0, y0)):
        dx, dy = bx - ax, by - ay
        # Inside  <=>  E(p) = dx*(py - ay) - dy*(px - ax) > 0, or == 0 on a "tie-inside" edge, i.e.
        # E + tie - 1 >= 0; tie = E grows when the sample moves by (+e, +e^2). With px = one*j + half,
        # py = one*i + half this reads  dx*one*i + b0 >= dy*one*j.
        tie = (dy < 0) | ((dy == 0) & (dx > 0))
        b0 = dx * (_HALF - ay) + dy * (ax - _HALF) + tie - 1
        edges.append((dx << SUBPIXEL_BITS, b0, np.maximum(np.abs(dy), 1) << SUBPIXEL_BITS))
        edge_sign.append(np.sign(dy).astype(np.int8))

    # Depth plane and barycentric coefficients from the unsnapped float vertices.
    fx, fy, fz = x[faces], y[faces], z[faces]  # Kx3 each
    ex1, ey1, ez1 = fx[:, 1] - fx[:, 0], fy[:, 1] - fy[:, 0], fz[:, 1] - fz[:, 0]
    ex2, ey2, ez2 = fx[:, 2] - fx[:, 0], fy[:, 2] - fy[:, 0], fz[:, 2] - fz[:, 0]
    det = ex1 * ey2 - ex2 * ey1
    det = np.where(det == 0, 1.0, det)  # only faces degenerate in float but not in fixed point
    gx = (ez1 * ey2 - ez2 * ey1) / det
    gy = (ex1 * ez2 - ex2 * ez1) / det
    gc = fz[:, 0] + gx * (0.5 - fx[:, 0]) + gy * (0.5 - fy[:, 0])
    # Pixel (i, j) is at (j + 0.5, i + 0.5): store the first vertex as (x0 - 0.5, y0 - 0.5).
    bary_coef = np.stack([fx[:, 0] - 0.5, fy[:, 0] - 0.5, ey2 / det, -ex2 / det, -ey1 / det, ex1 / det], axis=1).astype(
        np.float32
    )  # Kx6

    return _FaceSetup(
        face_idx=face_idx.astype(np.int32),
        row_first=row_first,
        n_rows=row_last - row_first + 1,
        col_first=col_first,
        col_last=col_last,
        edges=edges,
        edge_sign=edge_sign,
        plane=(gx, gy, gc),
        z_min=np.minimum(np.minimum(fz[:, 0], fz[:, 1]), fz[:, 2]),
        z_max=np.maximum(np.maximum(fz[:, 0], fz[:, 1]), fz[:, 2]),
        bary_coef=bary_coef,
    )


def _row_spans(geo: _FaceSetup) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact covered column span of every (face, row) pair.

    Returns pair_k (P, face slot), pair_row (P), span_lo (P) and n_cols (P, 0 for an empty span).
    """
    n_rows = geo.n_rows
    n_pairs = int(n_rows.sum())
    pair_start = np.cumsum(n_rows) - n_rows  # K
    pair_k = np.repeat(np.arange(n_rows.size, dtype=np.int64), n_rows)  # P
    pair_row = np.arange(n_pairs, dtype=np.int64) + np.repeat(geo.row_first - pair_start, n_rows)  # P
    span_lo = np.repeat(geo.col_first, n_rows)
    span_hi = np.repeat(geo.col_last, n_rows)
    for (a, b, d), sign in zip(geo.edges, geo.edge_sign):
        lhs = np.repeat(a, n_rows) * pair_row + np.repeat(b, n_rows)  # P
        # dy > 0: j <= floor(lhs / d);  dy < 0: j >= ceil(-lhs / d) = -floor(lhs / d);  dy == 0: lhs >= 0.
        q = lhs // np.repeat(d, n_rows)  # P
        sign_p = np.repeat(sign, n_rows)
        span_hi = np.where(sign_p > 0, np.minimum(span_hi, q), span_hi)
        span_lo = np.where(sign_p < 0, np.maximum(span_lo, -q), span_lo)
        span_hi = np.where((sign_p == 0) & (lhs < 0), -1, span_hi)
    n_cols = np.maximum(span_hi - span_lo + 1, 0)
    return pair_k, pair_row, span_lo, n_cols


def _empty_fragments(height: int, width: int, faces: np.ndarray) -> Fragments:
    return Fragments(
        face_id=np.full((height, width), -1, dtype=np.int32),
        bary=np.zeros((height, width, 3), dtype=np.float32),
        depth=np.full((height, width), np.inf, dtype=np.float32),
        faces=faces,
    )


def _barycentrics(coef: np.ndarray, pix: np.ndarray, width: int) -> np.ndarray:
    """coef [M,6] of the visible face per pixel (see _FaceSetup.bary_coef), pix [M] flat index -> [M,3].

    float32 on offsets from the face's first vertex: the sample position is exact to ~3e-5 px (float32
    at 512 px), so a 1-px face gets barycentrics to ~3e-5, ample for shading.
    """
    row, col = np.divmod(pix, width)
    qx = col.astype(np.float32)
    qx -= coef[:, 0]
    qy = row.astype(np.float32)
    qy -= coef[:, 1]
    out = np.empty((pix.size, 3), dtype=np.float32)
    b1, b2 = out[:, 1], out[:, 2]
    np.multiply(coef[:, 2], qx, out=b1)
    b1 += coef[:, 3] * qy
    np.multiply(coef[:, 4], qx, out=b2)
    b2 += coef[:, 5] * qy
    np.subtract(1.0, b1, out=out[:, 0])
    out[:, 0] -= b2
    return out


def interpolate(fragments: Fragments, attrs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Barycentric interpolation of per-vertex attributes: attrs [V,C] -> [H,W,C] (0 where empty).

    A numpy input gives a float32 numpy output; a torch tensor gives a tensor of its dtype/device
    (differentiable w.r.t. attrs).
    """
    if attrs.ndim != 2:
        raise InputError(f"interpolate: attrs must have shape [V,C], got {tuple(attrs.shape)}")
    faces = fragments.faces
    if faces.size and attrs.shape[0] <= int(faces.max()):
        raise InputError(f"interpolate: attrs has {attrs.shape[0]} rows but faces index vertex {int(faces.max())}")
    h, w = fragments.face_id.shape
    n_ch = attrs.shape[1]
    flat_id = fragments.face_id.reshape(-1)
    covered = np.flatnonzero(flat_id >= 0)  # M
    vid = faces.take(flat_id[covered], axis=0)  # Mx3
    bary = _take_rows(fragments.bary.reshape(-1, 3), covered)  # Mx3
    if isinstance(attrs, torch.Tensor):
        vid_t = torch.from_numpy(vid).to(attrs.device)
        bary_t = torch.from_numpy(bary).to(device=attrs.device, dtype=attrs.dtype)
        vals = torch.einsum("mk,mkc->mc", bary_t, attrs[vid_t])  # MxC
        out = attrs.new_zeros(h * w, n_ch)
        out = out.index_copy(0, torch.from_numpy(covered).to(attrs.device), vals)
        return out.reshape(h, w, n_ch)
    out = np.zeros((h * w, n_ch), dtype=np.float32)
    _put_rows(out, covered, _blend_rows(bary, vid, np.ascontiguousarray(attrs, dtype=np.float32)))
    return out.reshape(h, w, n_ch)


def _blend_rows(bary: np.ndarray, vid: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """[M,C] float32: per pixel, its face's three vertex attributes weighted by its barycentrics."""
    vals = bary[:, 0:1] * attrs.take(vid[:, 0], axis=0)  # MxC
    vals += bary[:, 1:2] * attrs.take(vid[:, 1], axis=0)
    vals += bary[:, 2:3] * attrs.take(vid[:, 2], axis=0)
    return vals


def _row_view(a: np.ndarray) -> np.ndarray:
    """[N,C] C-contiguous -> [N] void view, so that row gathers/scatters copy one item per row."""
    return a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).reshape(-1)


def _take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[idx] for a C-contiguous [N,C] array, faster than numpy's fancy row indexing."""
    return _row_view(a)[idx].view(a.dtype).reshape(-1, a.shape[1])


def _put_rows(dst: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """dst[idx] = rows for C-contiguous [N,C] arrays of one dtype."""
    _row_view(dst)[idx] = _row_view(np.ascontiguousarray(rows, dtype=dst.dtype))


def sample_texture(texture: np.ndarray, uv_px: np.ndarray, fragments: Fragments) -> tuple[np.ndarray, np.ndarray]:
    """Texture the rasterized mesh: bilinear lookup (cv2.remap) of interpolated texture coordinates.

    texture: [Ht,Wt,C] uint8 (C = 3 usually). uv_px: [V,2] texture coordinates in texture pixels,
    same convention as the screen (texel (r, c) is centred at (c + 0.5, r + 0.5)); outside the
    texture the border texel is repeated. Returns (image [H,W,C] uint8, 0 where empty; mask [H,W] bool).
    """
    uv = _check_texture(texture, uv_px)
    return _sample(texture, interpolate(fragments, uv), fragments.mask)


def texture_mesh(
    verts: np.ndarray, faces: np.ndarray, height: int, width: int, texture: np.ndarray, uv_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`sample_texture(texture, uv_px, rasterize(verts, faces, height, width))` in one pass, the same pixels:
    texture coordinates are interpolated for the covered pixels straight from the z-buffer, without the
    full-frame barycentric and depth images (the mesh backend's face layer, every frame)."""
    uv = _check_texture(texture, uv_px)
    verts_np = np.asarray(verts, dtype=np.float64)
    faces_np = np.asarray(faces, dtype=np.int64)
    _check_inputs(verts_np, faces_np, height, width)
    maps = np.zeros((height * width, 2), dtype=np.float32)
    mask = np.zeros(height * width, dtype=bool)
    visible = _visible(verts_np, faces_np, height, width, cull_backfaces=False)
    if visible is not None:
        geo, covered, won = visible
        slot = won & _LOW32
        bary = _barycentrics(geo.bary_coef.take(slot, axis=0), covered, width)
        vid = faces_np.take(geo.face_idx[slot], axis=0)
        _put_rows(maps, covered, _blend_rows(bary, vid, uv))
        mask[covered] = True
    return _sample(texture, maps.reshape(height, width, 2), mask.reshape(height, width))


def _check_texture(texture: np.ndarray, uv_px: np.ndarray) -> np.ndarray:
    """uv_px as float32 [V,2], after checking both inputs."""
    if texture.ndim not in (2, 3) or texture.dtype != np.uint8:
        raise InputError(f"sample_texture: texture must be HxW or HxWxC uint8, got {texture.shape} {texture.dtype}")
    uv = np.ascontiguousarray(uv_px, dtype=np.float32)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise InputError(f"sample_texture: uv_px must have shape [V,2], got {uv.shape}")
    return uv


def _sample(texture: np.ndarray, uv_image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(texture looked up at uv_image [H,W,2] (texel centres at +0.5), 0 where not `mask`; mask)."""
    maps = uv_image - 0.5  # cv2 samples texel centres at integers
    image = cv2.remap(
        texture, maps[..., 0], maps[..., 1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    np.multiply(image, mask.reshape(mask.shape + (1,) * (image.ndim - 2)), out=image)  # 0 where empty
    return image, mask
