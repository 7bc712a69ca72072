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
        raise InputError(
            f"rasterize: face indices must lie in [0, {len(verts)}), got [{faces.min()}, {faces.max()}]"
        )


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
    n_pix = height * width

    tri = verts_np[faces_np]  # Fx3x3 (vertex, xyz), float64
    xy = tri[:, :, :2]  # Fx3x2
    finite = np.isfinite(tri).all(axis=(1, 2))
    in_range = (np.abs(np.where(np.isfinite(xy), xy, 0.0)) <= MAX_COORD_PX).all(axis=(1, 2))
    if not in_range.all():
        logger.warning(
            "rasterize: dropped %d faces with a vertex beyond %g px; clip the mesh to the view first",
            int((~in_range).sum()),
            MAX_COORD_PX,
        )
    keep = finite & in_range
    xy_fix = np.rint(np.where(keep[:, None, None], xy, 0.0) * _ONE).astype(np.int64)  # Fx3x2

    # Signed doubled area in fixed point: cross(v1 - v0, v2 - v0); > 0 = clockwise as displayed.
    e01 = xy_fix[:, 1] - xy_fix[:, 0]
    e02 = xy_fix[:, 2] - xy_fix[:, 0]
    area = e01[:, 0] * e02[:, 1] - e01[:, 1] * e02[:, 0]
    keep &= area != 0
    if cull_backfaces:
        keep &= area < 0

    # Pixel rows/columns whose centres fall inside each face's bounding box, clipped to the image.
    lo_fix = xy_fix.min(axis=1)  # Fx2
    hi_fix = xy_fix.max(axis=1)  # Fx2
    first = np.maximum(-((_HALF - lo_fix) // _ONE), 0)  # Fx2 (col, row): ceil((lo - half) / one)
    last = np.minimum((hi_fix - _HALF) // _ONE, np.array([width - 1, height - 1]))  # Fx2
    keep &= (last >= first).all(axis=1)

    face_idx = np.flatnonzero(keep)
    if face_idx.size == 0:
        return _empty_fragments(height, width, faces_np)

    # Coverage uses a positively oriented copy (swap v1, v2 where area < 0); ids stay the same.
    pos = xy_fix[face_idx]  # Kx3x2
    neg = area[face_idx] < 0
    pos[neg] = pos[neg][:, [0, 2, 1]]
    a = pos  # edge e runs from vertex e to vertex (e + 1) % 3
    b = np.roll(pos, -1, axis=1)
    dx = b[:, :, 0] - a[:, :, 0]  # Kx3
    dy = b[:, :, 1] - a[:, :, 1]  # Kx3
    # Inside edge e  <=>  E(p) = dx*(py - ay) - dy*(px - ax) > 0, or == 0 on a "tie-inside" edge,
    # i.e. E(p) + tie - 1 >= 0. tie = the edge function grows when p moves by (+e, +e^2).
    tie = ((dy < 0) | ((dy == 0) & (dx > 0))).astype(np.int64)
    const = dy * a[:, :, 0] - dx * a[:, :, 1] + tie - 1  # Kx3

    col_first = first[face_idx, 0]
    col_last = last[face_idx, 0]
    row_first = first[face_idx, 1]
    n_rows = last[face_idx, 1] - row_first + 1  # K

    # One entry per (face, row) pair.
    pair_face = np.repeat(np.arange(face_idx.size), n_rows)  # P
    pair_start = np.cumsum(n_rows) - n_rows
    pair_row = row_first[pair_face] + np.arange(pair_face.size) - pair_start[pair_face]  # P
    py = pair_row * _ONE + _HALF
    span_lo = col_first[pair_face]
    span_hi = col_last[pair_face]
    for e in range(3):
        edx = dx[pair_face, e]
        edy = dy[pair_face, e]
        # Condition on column j (px = j*one + half):  edy * one * j <= s - edy * half
        s = edx * py + const[pair_face, e]
        t = s - edy * _HALF
        div = np.where(edy == 0, 1, edy * _ONE)
        span_hi = np.where(edy > 0, np.minimum(span_hi, t // div), span_hi)
        span_lo = np.where(edy < 0, np.maximum(span_lo, -((-t) // div)), span_lo)
        span_hi = np.where((edy == 0) & (s < 0), -1, span_hi)
    n_cols = np.maximum(span_hi - span_lo + 1, 0)  # P

    # One entry per covered (face, pixel) fragment.
    frag_pair = np.repeat(np.arange(pair_face.size), n_cols)  # N
    frag_start = np.cumsum(n_cols) - n_cols
    frag_col = span_lo[frag_pair] + np.arange(frag_pair.size) - frag_start[frag_pair]  # N

    # Depth plane of each face in pixel-index coordinates: z = z_row(face, row) + gx(face) * col.
    plane = _depth_planes(tri[face_idx])  # Kx3 (gx, gy, c) with z = gx*j + gy*i + c
    z_row = plane[pair_face, 1] * pair_row + plane[pair_face, 2]  # P
    frag_k = pair_face[frag_pair]  # N, ids into face_idx
    depth = z_row[frag_pair] + plane[frag_k, 0] * frag_col  # N
    # Snapping can put a sample up to 1/512 px outside the float triangle: keep z within the face's range.
    z_face = tri[face_idx, :, 2]  # Kx3
    depth = np.clip(depth, z_face.min(axis=1)[frag_k], z_face.max(axis=1)[frag_k]).astype(np.float32)
    key = (_float_depth_to_ordered_int(depth).astype(np.int64) << 32) | face_idx[frag_k]
    pix = pair_row[frag_pair] * width + frag_col  # N

    zbuf = np.full(n_pix, _EMPTY_KEY, dtype=np.int64)
    np.minimum.at(zbuf, pix, key)

    covered = np.flatnonzero(zbuf != _EMPTY_KEY)
    won = zbuf[covered]
    face_id = np.full(n_pix, -1, dtype=np.int32)
    face_id[covered] = (won & _LOW32).astype(np.int32)
    depth_img = np.full(n_pix, np.inf, dtype=np.float32)
    depth_img[covered] = _float_depth_to_ordered_int((won >> 32).astype(np.int32)).view(np.float32)
    bary = np.zeros((n_pix, 3), dtype=np.float32)
    bary[covered] = _barycentrics(tri[face_id[covered], :, :2], covered, width)

    return Fragments(
        face_id=face_id.reshape(height, width),
        bary=bary.reshape(height, width, 3),
        depth=depth_img.reshape(height, width),
        faces=faces_np,
    )


def _empty_fragments(height: int, width: int, faces: np.ndarray) -> Fragments:
    return Fragments(
        face_id=np.full((height, width), -1, dtype=np.int32),
        bary=np.zeros((height, width, 3), dtype=np.float32),
        depth=np.full((height, width), np.inf, dtype=np.float32),
        faces=faces,
    )


def _depth_planes(tri: np.ndarray) -> np.ndarray:
    """tri [K,3,3] float64 -> [K,3] (gx, gy, c): z at pixel (i, j) = gx*j + gy*i + c (screen-linear)."""
    x, y, z = tri[:, :, 0], tri[:, :, 1], tri[:, :, 2]  # Kx3 each
    x1, y1, z1 = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0], z[:, 1] - z[:, 0]
    x2, y2, z2 = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0], z[:, 2] - z[:, 0]
    det = x1 * y2 - x2 * y1
    det = np.where(det == 0, 1.0, det)  # only faces degenerate in float but not in fixed point
    gx = (z1 * y2 - z2 * y1) / det
    gy = (x1 * z2 - x2 * z1) / det
    c = z[:, 0] + gx * (0.5 - x[:, 0]) + gy * (0.5 - y[:, 0])
    return np.stack([gx, gy, c], axis=1)


def _barycentrics(tri_xy: np.ndarray, pix: np.ndarray, width: int) -> np.ndarray:
    """tri_xy [N,3,2] float64 visible face per pixel, pix [N] flat pixel index -> [N,3] float32."""
    px = (pix % width).astype(np.float64) + 0.5
    py = (pix // width).astype(np.float64) + 0.5
    x0, y0 = tri_xy[:, 0, 0], tri_xy[:, 0, 1]
    x1, y1 = tri_xy[:, 1, 0] - x0, tri_xy[:, 1, 1] - y0
    x2, y2 = tri_xy[:, 2, 0] - x0, tri_xy[:, 2, 1] - y0
    qx, qy = px - x0, py - y0
    det = x1 * y2 - x2 * y1
    det = np.where(det == 0, 1.0, det)
    b1 = (qx * y2 - x2 * qy) / det
    b2 = (x1 * qy - qx * y1) / det
    return np.stack([1.0 - b1 - b2, b1, b2], axis=1).astype(np.float32)


def interpolate(fragments: Fragments, attrs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Barycentric interpolation of per-vertex attributes: attrs [V,C] -> [H,W,C] (0 where empty).

    A numpy input gives a float32 numpy output; a torch tensor gives a tensor of its dtype/device
    (differentiable w.r.t. attrs).
    """
    if attrs.ndim != 2:
        raise InputError(f"interpolate: attrs must have shape [V,C], got {tuple(attrs.shape)}")
    h, w = fragments.face_id.shape
    flat_id = fragments.face_id.reshape(-1)
    covered = np.flatnonzero(flat_id >= 0)
    vid = fragments.faces[flat_id[covered]]  # Nx3
    bary = fragments.bary.reshape(-1, 3)[covered]  # Nx3
    if isinstance(attrs, torch.Tensor):
        vid_t = torch.from_numpy(vid).to(attrs.device)
        bary_t = torch.from_numpy(bary).to(device=attrs.device, dtype=attrs.dtype)
        vals = torch.einsum("nk,nkc->nc", bary_t, attrs[vid_t])  # NxC
        out = attrs.new_zeros(h * w, attrs.shape[1])
        out = out.index_copy(0, torch.from_numpy(covered).to(attrs.device), vals)
        return out.reshape(h, w, attrs.shape[1])
    attrs_np = np.asarray(attrs, dtype=np.float32)
    out = np.zeros((h * w, attrs_np.shape[1]), dtype=np.float32)
    a = attrs_np[vid]  # Nx3xC
    out[covered] = bary[:, 0, None] * a[:, 0] + bary[:, 1, None] * a[:, 1] + bary[:, 2, None] * a[:, 2]
    return out.reshape(h, w, attrs_np.shape[1])


def sample_texture(
    texture: np.ndarray, uv_px: np.ndarray, fragments: Fragments
) -> tuple[np.ndarray, np.ndarray]:
    """Texture the rasterized mesh: bilinear lookup (cv2.remap) of interpolated texture coordinates.

    texture: [Ht,Wt,C] uint8 (C = 3 usually). uv_px: [V,2] texture coordinates in texture pixels,
    same convention as the screen (texel (r, c) is centred at (c + 0.5, r + 0.5)); outside the
    texture the border texel is repeated. Returns (image [H,W,C] uint8, 0 where empty; mask [H,W] bool).
    """
    if texture.ndim not in (2, 3) or texture.dtype != np.uint8:
        raise InputError(f"sample_texture: texture must be HxW or HxWxC uint8, got {texture.shape} {texture.dtype}")
    uv = np.asarray(uv_px, dtype=np.float32)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise InputError(f"sample_texture: uv_px must have shape [V,2], got {uv.shape}")
    mask = fragments.mask
    maps = interpolate(fragments, uv) - 0.5  # HxWx2, cv2 samples texel centres at integers
    image = cv2.remap(
        texture, maps[..., 0], maps[..., 1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    image[~mask] = 0
    return image, mask
