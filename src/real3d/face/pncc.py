"""PNCC ("SECC") maps of the BFM face: the geometry condition of Real3D-Portrait (paper Sec. 3.2).

The official renderer (`deep_3drecon/secc_renderer.py`) draws the BFM mesh with pytorch3d and colours
every pixel with the barycentric interpolation of the per-vertex normalised-coordinate code (NCC:
the min-max normalised mean shape). This module reproduces it without pytorch3d.

Camera (pytorch3d `FoVPerspectiveCameras(fov=2*atan(112/1015), znear=5, zfar=15)`, R = I, T = 0)
-----------------------------------------------------------------------------------------------
Input vertices are in the BFM camera frame of `compute_face_vertex` (x right, y up, z = 10 - z_model,
i.e. the distance in front of the camera). The official code negates x before rasterizing because
pytorch3d's view/NDC space has +X pointing *left* and +Y up. With s = 1/tan(fov/2) = 1015/112:

    x_ndc = s * (-x) / z,   y_ndc = s * y / z

pytorch3d samples pixel (row i, column j) of an S x S image at the NDC point
(1 - (2j + 1)/S, 1 - (2i + 1)/S) (`PixToNonSquareNdc` with reversed indices: +X left, +Y up).
In the screen convention of `real3d.render.rasterize` (pixel (i, j) samples (j + .5, i + .5), y down):

    x_px = S/2 * (1 - x_ndc) = S/2 * (1 + s*x/z),   y_px = S/2 * (1 - y_ndc) = S/2 * (1 - s*y/z)

so the two x flips cancel: the map is the official 224-px BFM projection (u = 1015 x/z + 112,
v = 224 - (1015 y/z + 112)) scaled by S/224, with the subject's right side where +x projects.

Rasterization (`MeshRasterizer`, `image_size=S`, `blur_radius=0`, `faces_per_pixel=1`)
---------------------------------------------------------------------------------------
* One face per pixel, the nearest view-space depth wins; ties go to the lower face id.
* Barycentrics are perspective-correct (pytorch3d turns `perspective_correct` on for a perspective
  camera): b_i' = (b_i / z_i) / sum_k (b_k / z_k) from the screen-space b_i. The depth test uses the
  perspective-correct view depth, i.e. screen-linear -1/z, which is what is passed to the z-buffer.
* znear/zfar do not clip (pytorch3d keeps view z as depth); faces with a vertex closer than znear/2
  (pytorch3d's `z_clip_value`) are dropped here instead of being clipped (never happens for a face
  at distance 10).
* Coverage: exact integer edge tests on vertices snapped to 1/256 px with a top-left style tie rule
  (`real3d.render.rasterize`). pytorch3d uses a strict float32 inside test; the two differ only for
  pixel centres within ~1/512 px of an edge.
* Mask `pix_to_face > 0` on pytorch3d's *packed* face ids (face f of batch element b has id
  b*F + f): the first kept face (id 0) is background in batch element 0 only, i.e. in the first frame
  of every official render call (chunks of `OFFICIAL_CHUNK` frames, and the single-frame src/cano
  renders). `face_zero_background` selects that behaviour ("first_in_batch", default), every frame
  ("always") or none ("never").
* Output `(colour - 0.5) / 0.5`, with -1 wherever the mask is off: background, the removed eye
  faces (holes) and the face-0 quirk.

Two interchangeable z-buffers: "numpy" (`real3d.render.rasterize`, one frame at a time) and "torch"
(scatter-min over (face, pixel) candidates, batched, on any device). They share the coverage rule and
the shading code and agree pixel for pixel except where two faces' depths tie to float32 precision.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
from einops import rearrange

from real3d.errors import InputError
from real3d.render.rasterize import rasterize

logger = logging.getLogger(__name__)

FOCAL = 1015.0
"""Focal length of the BFM camera in pixels of its 224-px image."""
CENTER = 112.0
"""Principal point of the BFM camera (half of 224)."""
FOV_DEG = 2.0 * math.degrees(math.atan(CENTER / FOCAL))
"""Field of view of the official SECC camera: 2*atan(112/1015) = 12.594 degrees."""
ZNEAR = 5.0
"""Near plane of the official camera (only its half, the clip value, matters; see module docstring)."""
ZFAR = 15.0
"""Far plane of the official camera (no effect on the rasterized image)."""
OFFICIAL_CHUNK = 50
"""Frames per official render call; the face-0 quirk hits the first frame of each."""

Backend = Literal["auto", "numpy", "torch"]
FaceZeroBackground = Literal["first_in_batch", "always", "never"]

_SUB = 8  # sub-pixel bits of the fixed-point coverage test (as real3d.render.rasterize)
_ONE = 1 << _SUB
_HALF = _ONE >> 1
_EMPTY = torch.iinfo(torch.int64).max


def project_to_screen(vertices: torch.Tensor, image_size: int) -> torch.Tensor:
    """BFM camera-frame vertices [B,N,3] (z = distance) -> screen [B,N,3]: x, y pixels (centres at
    integer + 0.5, y down) and the view depth z (see module docstring)."""
    s = FOCAL / CENTER  # 1 / tan(fov / 2)
    x, y, z = vertices.unbind(-1)
    half = image_size / 2.0
    return torch.stack([half * (1.0 + s * x / z), half * (1.0 - s * y / z), z], -1)


class PNCCRenderer:
    """Renders PNCC maps (the official SECC) [B,3,S,S] in [-1,1] (background -1) from BFM vertices.

    faces: [F,3] int, 0-based vertex ids (the BFM `tri` minus 1). ncc_colors: [N,3] per-vertex code in
    [0,1] (`real3d.face.bfm.derive_ncc_code`, or the official `ncc_code.npy` transposed). eye_faces: 0-based
    indices into `faces` of the faces to remove (the official `bfm_{left,right}_eye_faces.npy` are
    1-based: subtract 1). backend: z-buffer ("auto": numpy for CPU tensors, torch otherwise).
    chunk_size: frames per z-buffer call (memory bound of the torch path; the face-0 quirk follows
    `face_zero_background` per `__call__`, not per chunk). Stateless; `__init__` does no I/O.
    """

    def __init__(
        self,
        faces: np.ndarray | torch.Tensor,
        ncc_colors: np.ndarray | torch.Tensor,
        eye_faces: np.ndarray | torch.Tensor | None = None,
        image_size: int = 512,
        backend: Backend = "auto",
        face_zero_background: FaceZeroBackground = "first_in_batch",
        chunk_size: int = 8,
    ) -> None:
        faces_t = torch.as_tensor(np.asarray(faces), dtype=torch.int64)
        colors = torch.as_tensor(np.asarray(ncc_colors), dtype=torch.float32)
        if faces_t.ndim != 2 or faces_t.shape[1] != 3 or len(faces_t) == 0:
            raise InputError(f"PNCCRenderer: faces must be a non-empty [F,3] array, got {tuple(faces_t.shape)}")
        if colors.ndim != 2 or colors.shape[1] != 3:
            raise InputError(f"PNCCRenderer: ncc_colors must be [N,3], got {tuple(colors.shape)}")
        if faces_t.min() < 0 or faces_t.max() >= len(colors):
            raise InputError(
                f"PNCCRenderer: face vertex ids must lie in [0, {len(colors)}) (0-based; the BFM `tri` is "
                f"1-based, subtract 1), got [{int(faces_t.min())}, {int(faces_t.max())}]"
            )
        keep = torch.ones(len(faces_t), dtype=torch.bool)
        if eye_faces is not None:
            eye = torch.as_tensor(np.asarray(eye_faces), dtype=torch.int64).reshape(-1)
            if eye.numel() and (eye.min() < 0 or eye.max() >= len(faces_t)):
                raise InputError(
                    f"PNCCRenderer: eye_faces must be 0-based indices into faces [0, {len(faces_t)}) (the "
                    f"official .npy files are 1-based), got [{int(eye.min())}, {int(eye.max())}]"
                )
            keep[eye] = False
        if image_size <= 0 or chunk_size <= 0:
            raise InputError(
                f"PNCCRenderer: image_size and chunk_size must be positive, got {image_size}, {chunk_size}"
            )
        self.faces = faces_t[keep].contiguous()  # Fk x 3, kept faces; id 0 is the quirk face
        self.colors = colors  # N x 3
        self.image_size = image_size
        self.backend: Backend = backend
        self.face_zero_background: FaceZeroBackground = face_zero_background
        self.chunk_size = chunk_size

    def face_ids(self, vertices: torch.Tensor) -> torch.Tensor:
        """[B,N,3] BFM camera-frame vertices -> [B,S,S] int64 visible kept-face id, -1 where empty."""
        screen = self._screen(vertices)
        out = [self._zbuffer(chunk) for chunk in screen.split(self.chunk_size)]
        return torch.cat(out)

    def __call__(self, vertices: torch.Tensor) -> torch.Tensor:
        """[B,N,3] BFM camera-frame vertices (euler = trans = 0) -> PNCC [B,3,S,S] float32 in [-1,1]."""
        screen = self._screen(vertices)
        out = []
        for k, chunk in enumerate(screen.split(self.chunk_size)):
            face_id = self._zbuffer(chunk)  # b x S x S
            mask = face_id >= 0
            quirk = self.face_zero_background
            if quirk == "always":
                mask &= face_id != 0
            elif quirk == "first_in_batch" and k == 0:
                mask[0] &= face_id[0] != 0
            out.append(self._shade(chunk, face_id, mask))
        return torch.cat(out)

    # ---------------------------------------------------------------------------------------------

    def _screen(self, vertices: torch.Tensor) -> torch.Tensor:
        if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[1] != len(self.colors):
            raise InputError(
                f"PNCCRenderer: vertices must be [B,{len(self.colors)},3] (one row per NCC colour), "
                f"got {tuple(vertices.shape)}"
            )
        v = vertices.detach().double()
        screen = project_to_screen(v, self.image_size)  # B x N x 3
        near = ~(v[..., 2] > ZNEAR / 2)  # also NaN
        if near.any():
            logger.warning(
                "PNCCRenderer: %d vertices closer than %g; their faces are dropped", int(near.sum()), ZNEAR / 2
            )
            screen = screen.masked_fill(near.unsqueeze(-1), float("nan"))
        return screen

    def _zbuffer(self, screen: torch.Tensor) -> torch.Tensor:
        backend = self.backend
        if backend == "auto":  # numpy is a little faster on CPU; torch runs where the tensors are
            backend = "numpy" if screen.device.type == "cpu" else "torch"
        if backend == "numpy":
            faces = self.faces.numpy()
            ids = []
            for frame in screen.cpu().numpy():
                verts = frame.copy()
                verts[:, 2] = -1.0 / frame[:, 2]  # screen-linear depth; smaller = nearer
                ids.append(torch.from_numpy(rasterize(verts, faces, self.image_size, self.image_size).face_id))
            return torch.stack(ids).long().to(screen.device)
        if backend == "torch":
            return zbuffer_torch(screen, self.faces.to(screen.device), self.image_size)
        raise InputError(f"PNCCRenderer: backend must be 'numpy' or 'torch', got {self.backend!r}")

    def _shade(self, screen: torch.Tensor, face_id: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Perspective-correct barycentric interpolation of the NCC colours at the masked pixels."""
        b, s = face_id.shape[0], self.image_size
        flat_mask = rearrange(mask, "b h w -> (b h w)")
        idx = flat_mask.nonzero().squeeze(1)  # M, flat (b, pixel) indices
        frame = idx // (s * s)
        pix = idx % (s * s)
        fid = rearrange(face_id, "b h w -> (b h w)")[idx]  # M
        vid = self.faces.to(face_id.device)[fid]  # M x 3
        tri = screen[frame.unsqueeze(1), vid]  # M x 3 x 3 (x, y, z) float64
        px = (pix % s).double() + 0.5
        py = (pix // s).double() + 0.5
        x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
        e1x, e1y = tri[:, 1, 0] - x0, tri[:, 1, 1] - y0
        e2x, e2y = tri[:, 2, 0] - x0, tri[:, 2, 1] - y0
        det = e1x * e2y - e2x * e1y
        qx, qy = px - x0, py - y0
        b1 = (qx * e2y - qy * e2x) / det
        b2 = (e1x * qy - e1y * qx) / det
        bary = torch.stack([1.0 - b1 - b2, b1, b2], -1)  # M x 3, screen space
        bary = bary / tri[..., 2]  # perspective correction: b_i / z_i, renormalised
        bary = bary / bary.sum(-1, keepdim=True)
        colors = self.colors.to(face_id.device)
        val = torch.einsum("mk,mkc->mc", bary.float(), colors[vid])  # M x 3
        img = torch.full((b * s * s, 3), -1.0, dtype=torch.float32, device=face_id.device)
        img[idx] = (val - 0.5) / 0.5
        return rearrange(img, "(b h w) c -> b c h w", b=b, h=s, w=s)


def zbuffer_torch(screen: torch.Tensor, faces: torch.Tensor, image_size: int, small: int = 4) -> torch.Tensor:
    """Batched scatter-min z-buffer with the coverage rule of `real3d.render.rasterize`.

    screen: [B,N,3] float64 (x, y pixels, view depth z > 0); faces: [F,3] int64 -> [B,S,S] int64 face
    id (-1 empty). Per (frame, face) the edge functions (exact, fixed point) and the screen-linear depth
    -1/z are set up as planes over the pixel centres of the face's bounding box. Faces whose box fits
    in `small` x `small` pixels are evaluated at each box offset for all faces at once (no gathers);
    larger ones enumerate their box pixels. Keys (depth as ordered float32 bits | face id) are
    combined per pixel with `scatter_reduce(amin)`.
    """
    b, n_faces, s = screen.shape[0], faces.shape[0], image_size
    dev = screen.device
    tri = rearrange(screen[:, faces], "b f k c -> (b f) k c")  # P x 3 x 3, P = B*F (frame, face) pairs
    ok = torch.isfinite(tri).all(-1).all(-1) & (tri[..., :2].abs() < 2.0**20).all(-1).all(-1)  # P
    tri = torch.where(ok[:, None, None], tri, torch.ones_like(tri))
    fx = torch.round(tri[..., 0] * _ONE).long()  # P x 3 fixed point
    fy = torch.round(tri[..., 1] * _ONE).long()
    area = (fx[:, 1] - fx[:, 0]) * (fy[:, 2] - fy[:, 0]) - (fy[:, 1] - fy[:, 0]) * (fx[:, 2] - fx[:, 0])
    col0 = (-torch.div(_HALF - fx.min(-1).values, _ONE, rounding_mode="floor")).clamp(min=0)
    col1 = torch.div(fx.max(-1).values - _HALF, _ONE, rounding_mode="floor").clamp(max=s - 1)
    row0 = (-torch.div(_HALF - fy.min(-1).values, _ONE, rounding_mode="floor")).clamp(min=0)
    row1 = torch.div(fy.max(-1).values - _HALF, _ONE, rounding_mode="floor").clamp(max=s - 1)
    ncol, nrow = col1 - col0 + 1, row1 - row0 + 1
    live = ok & (area != 0) & (ncol > 0) & (nrow > 0)
    sel = live.nonzero().squeeze(1)
    zbuf = torch.full((b * s * s,), _EMPTY, dtype=torch.int64, device=dev)
    if sel.numel() == 0:
        return torch.full((b, s, s), -1, dtype=torch.int64, device=dev)
    fx, fy, area, tri = fx[sel], fy[sel], area[sel], tri[sel]
    col0, row0, ncol, nrow = col0[sel], row0[sel], ncol[sel], nrow[sel]
    # Counter-clockwise copy (v1, v2 swapped where the fixed-point area is negative).
    flip = (area < 0)[:, None]
    fx = torch.where(flip, fx[:, [0, 2, 1]], fx)
    fy = torch.where(flip, fy[:, [0, 2, 1]], fy)
    # Edge k at pixel (row0 + i, col0 + j): E = e0 + i*ey - j*ex' ; inside iff E + tie > 0.
    px0, py0 = (col0 * _ONE + _HALF)[:, None], (row0 * _ONE + _HALF)[:, None]  # P x 1
    dx, dy = fx[:, [1, 2, 0]] - fx, fy[:, [1, 2, 0]] - fy  # P x 3
    tie = (dy < 0) | ((dy == 0) & (dx > 0))
    e0 = dx * (py0 - fy) - dy * (px0 - fx) + tie.long()  # P x 3
    step_i, step_j = dx * _ONE, -dy * _ONE
    # Screen-linear depth plane of w = -1/z (nearer = smaller), clamped to the vertices' range.
    w = -1.0 / tri[..., 2]  # P x 3
    e1, e2, dw1, dw2 = (
        tri[:, 1, :2] - tri[:, 0, :2],
        tri[:, 2, :2] - tri[:, 0, :2],
        w[:, 1] - w[:, 0],
        w[:, 2] - w[:, 0],
    )
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    det = torch.where(det == 0, torch.ones_like(det), det)
    gx = (dw1 * e2[:, 1] - dw2 * e1[:, 1]) / det
    gy = (e1[:, 0] * dw2 - e2[:, 0] * dw1) / det
    d0 = w[:, 0] + gx * (col0 + 0.5 - tri[:, 0, 0]) + gy * (row0 + 0.5 - tri[:, 0, 1])
    wmin, wmax = w.min(-1).values, w.max(-1).values
    frame = torch.div(sel, n_faces, rounding_mode="floor")
    face = sel - frame * n_faces
    base = frame * (s * s) + row0 * s + col0  # P flat index of the box corner

    def emit(p: torch.Tensor, i: torch.Tensor | int, j: torch.Tensor | int) -> None:
        """Scatter the covered candidates (pair p, box offset (i, j)) into the z-buffer."""
        if isinstance(i, int):  # one offset for all small faces: no gathers before the inside test
            inside = (nrow_s > i) & (ncol_s > j)
            for k in range(3):
                inside &= (e0_s[k] + i * step_i_s[k] + j * step_j_s[k]) > 0
            p = p[inside]
        else:
            inside = ((e0[p] + i[:, None] * step_i[p] + j[:, None] * step_j[p]) > 0).all(-1)
            p, i, j = p[inside], i[inside], j[inside]
        depth = (d0[p] + i * gy[p] + j * gx[p]).clamp(wmin[p], wmax[p]).float()
        bits = depth.view(torch.int32)
        key = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).long() << 32) | face[p]
        zbuf.scatter_reduce_(0, base[p] + i * s + j, key, reduce="amin")

    is_small = (ncol <= small) & (nrow <= small)
    p_small = is_small.nonzero().squeeze(1)
    # Box offsets and edge values of small faces stay below 2**31: int32, edge-major rows.
    e0_s, step_i_s, step_j_s = (rearrange(a[p_small], "p k -> k p").int().contiguous() for a in (e0, step_i, step_j))
    nrow_s, ncol_s = nrow[p_small], ncol[p_small]
    for i in range(small):
        for j in range(small):
            emit(p_small, i, j)
    p_big = (~is_small).nonzero().squeeze(1)
    if p_big.numel():
        cnt = ncol[p_big] * nrow[p_big]
        for chunk_p, chunk_c in zip(p_big.split(4096), cnt.split(4096)):
            cand = torch.repeat_interleave(chunk_p, chunk_c)
            start = torch.cumsum(chunk_c, 0) - chunk_c
            local = torch.arange(int(chunk_c.sum()), device=dev) - torch.repeat_interleave(start, chunk_c)
            width = ncol[cand]
            emit(cand, torch.div(local, width, rounding_mode="floor"), local % width)
    face_id = torch.where(zbuf != _EMPTY, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1))
    return rearrange(face_id, "(b h w) -> b h w", b=b, h=s, w=s)
