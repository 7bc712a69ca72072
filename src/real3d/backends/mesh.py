"""The weights-free mesh backend: (Portrait, MotionTrack) -> 512x512 frames.

Per frame:
1. The source's canonical face plus the frame's expression (and eyelid closure) is posed by the
   frame's head rotation/translation (a similarity on top of the source's own head frame) and
   rasterized with a z-buffer, textured by the source photo. Eyes are separate "eyeball" fans that
   move rigidly with the head, so lids close over them; the inner mouth is a hole.
2. Everything else follows a smooth dense warp: hair and ears move rigidly with the head (points
   lifted onto a head ellipsoid behind the face), the torso follows the head's translation damped
   (the paper's torso observation), the neck blends between the two. The warp is piecewise linear
   over a fixed triangulation of control points (all face landmarks + a grid), precomputed once as
   a sparse matrix, then inverted on a coarse grid by fixed-point iteration.
3. The person layer is composited over the background (the KNN-filled source, or a replacement);
   the mouth interior (cavity, upper/lower teeth) is drawn inside the target inner-lip contour, and
   the face layer goes on top with a feathered edge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import sparse
from scipy.spatial import Delaunay

from real3d.face import topology as topo
from real3d.face.mouth_state import lips_filled, mouth_gap, mouth_state
from real3d.face.portrait import Portrait
from real3d.geometry import euler_to_matrix
from real3d.io.prefetch import prefetch
from real3d.motion.driving import Driving, TrackedVideo
from real3d.motion.from_audio import AudioDriver
from real3d.motion.from_video import stream_track_from_landmarks, track_from_landmarks
from real3d.motion.track import MotionStream, MotionTrack
from real3d.render.rasterize import texture_mesh

N_MESH = 468
MOUTH_FILL_GAP = 0.01
"""Inner-lip gap of the photo (canonical units) above which its opening is painted over with lip colour: the
drivers close such mouths for their rest pose (`real3d.motion.mouth.CLOSED_GAP`); closed mouths keep their own
lip line."""
LIPS_MEET_GAP = 0.004
"""Canonical inner-lip gap under which the lips count as meeting (no mouth inside is drawn): MediaPipe reads
0.000-0.005 on the development clips' closed mouths."""
LIPS_APART_GAP = 0.016
"""Gap from which the mouth's inside is drawn fully (a slightly parted mouth, ~0.02, shows its dark line)."""


@dataclass
class MeshConfig:
    """Tunables of the mesh backend (defaults are for any portrait, not one photo)."""

    torso_follow: float = 0.35
    """Fraction of the head's translation the torso follows."""
    grid_step: int = 16
    """Spacing (px) of the warp's control grid outside the face."""
    field_step: int = 8
    """Spacing (px) of the coarse grid the warp is evaluated and inverted on."""
    face_feather: int = 7
    """Gaussian kernel (px) that feathers the face layer's edge."""
    eye_depth: float = 0.04
    """How far (canonical units) the eyeballs sit behind the lids."""
    max_gaze: float = 0.3
    """Largest iris shift inside the eye, as a fraction of the eye's width."""
    teeth_height: float = 0.075
    """Height of the upper teeth below the resting upper lip, canonical units (eye-corner distance = 1)."""


def _fan(loop: tuple[int, ...], center: int) -> np.ndarray:
    n = len(loop)
    return np.array([[loop[i], loop[(i + 1) % n], center] for i in range(n)], dtype=np.int64)


class MeshRenderer:
    """Renders frames of one portrait. Construction does the per-source work once."""

    def __init__(self, portrait: Portrait, config: MeshConfig | None = None) -> None:
        self.p = portrait
        self.config = config or MeshConfig()
        h, w = portrait.image.shape[:2]
        self.size = (h, w)
        self.src_lm = portrait.landmarks.astype(np.float64)
        self.canon = portrait.canonical.astype(np.float64)

        # --- face layer topology: face triangles over 0..477 plus two eyeball fans (vertex copies 478..)
        eye_r = list(topo.RIGHT_EYE_LOOP) + [468]
        eye_l = list(topo.LEFT_EYE_LOOP) + [473]
        self._eye_src_idx = np.array(eye_r + eye_l)
        self._iris_rows = np.array([len(eye_r) - 1, len(eye_r) + len(eye_l) - 1])  # the fan centres
        base = len(self.src_lm)
        n_r = len(eye_r)
        fan_r = _fan(tuple(range(base, base + n_r - 1)), base + n_r - 1)
        fan_l = _fan(tuple(range(base + n_r, base + n_r + len(eye_l) - 1)), base + n_r + len(eye_l) - 1)
        self.faces = np.concatenate([topo.face_triangles().astype(np.int64), fan_r, fan_l])
        self.uv = np.concatenate([self.src_lm[:, :2], self.src_lm[self._eye_src_idx, :2]]).astype(np.float32)

        # --- warp control points: the 468 mesh landmarks + a grid outside the face oval
        step = self.config.grid_step
        gy, gx = np.mgrid[0 : h + 1 : step, 0 : w + 1 : step]
        grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
        oval = self.src_lm[list(topo.FACE_OVAL), :2].astype(np.float32)
        centre = oval.mean(0)
        grown = (centre + (oval - centre) * 1.12).astype(np.float32)
        inside = np.array([cv2.pointPolygonTest(grown, (float(x), float(y)), False) >= 0 for x, y in grid])
        self.nodes = grid[~inside]
        ctrl = np.concatenate([self.src_lm[:N_MESH, :2], self.nodes])
        fs = self.config.field_step
        fy, fx = np.mgrid[0 : h + 1 : fs, 0 : w + 1 : fs]
        self._field_shape = fy.shape
        field_pts = np.stack([fx.ravel(), fy.ravel()], 1).astype(np.float64)
        self._W = _barycentric_matrix(ctrl, field_pts)
        self._invert = _FieldInverter(self._field_shape, fs, (h, w))

        # --- per-node head weight and canonical position on a head ellipsoid
        self._node_q, self._node_wh = self._lift_nodes(self.nodes)

        # --- background and mouth colours
        self.background = portrait.background.astype(np.float32)
        # the person continues below the frame (torso) but not above or beside it: outside the photo the
        # alpha is the bottom row repeated downward and 0 elsewhere, so a head moving down reveals
        # background, not replicated hair streaks
        person = portrait.person_mask.astype(np.float32)
        self.person = np.concatenate([person, np.repeat(person[-1:], h // 4, axis=0)])
        skin_px = portrait.image[_polygon_mask(self.size, self.src_lm[list(topo.FACE_OVAL), :2])]
        skin = np.median(skin_px, 0).astype(np.float32) if len(skin_px) else np.array([190, 150, 130], np.float32)
        k = float(np.clip(skin.mean() / 160.0, 0.6, 1.1))  # overall exposure of the photo
        white = np.array([242, 238, 228], np.float32) * k
        self._teeth_rgb = 0.85 * white + 0.15 * skin  # enamel: near-white, lit like the face
        self._lower_teeth_rgb = 0.85 * self._teeth_rgb
        self._cavity_rgb = skin * np.array([0.30, 0.16, 0.16], np.float32)
        self._tongue_rgb = skin * np.array([0.78, 0.45, 0.45], np.float32)
        self.mouth = mouth_state(portrait.image, portrait.landmarks, portrait.canonical)
        """The photo's mouth: open or not, its teeth (drawn from the photo when it shows them)."""
        if self.mouth.cavity_rgb is not None:  # the person's own mouth colour, lit like the synthetic one
            self._cavity_rgb = 0.5 * self._cavity_rgb + 0.5 * np.minimum(self.mouth.cavity_rgb, 1.6 * self._cavity_rgb)
        self._texture = portrait.image
        """The image the face and the person layer are drawn from: the photo, with an open mouth painted over
        with lip colour (`lips_filled`) so lips that meet show no seam of the photo's teeth and cavity; every
        opening's inside is drawn by `_draw_mouth` (the photo's own teeth come from `portrait.image`)."""
        if self.mouth.gap > MOUTH_FILL_GAP:
            self._texture = lips_filled(portrait.image, self.src_lm)

    # ------------------------------------------------------------------ per-source helpers
    def _lift_nodes(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fr = self.p.frame
        q = self.canon
        p3 = np.concatenate([nodes, np.full((len(nodes), 1), fr.center[2])], 1)
        qn = fr.to_canonical(p3)
        oval = q[list(topo.FACE_OVAL)]
        rx = 1.15 * np.abs(oval[:, 0]).max()
        ry = 1.25 * 0.5 * (oval[:, 1].max() - oval[:, 1].min())
        cy = 0.5 * (oval[:, 1].max() + oval[:, 1].min()) - 0.1
        cz = float(oval[:, 2].mean()) + 0.25
        rz = 0.9 * rx
        u = 1.0 - (qn[:, 0] / rx) ** 2 - ((qn[:, 1] - cy) / ry) ** 2
        qn[:, 2] = cz - rz * np.sqrt(np.clip(u, 0.0, 1.0))
        chin_y = q[topo.CHIN, 1]
        t = np.clip((qn[:, 1] - (chin_y - 0.1)) / 0.8, 0.0, 1.0)
        wh = 1.0 - t * t * (3 - 2 * t)  # smoothstep: head above the chin, torso below the neck
        return qn, wh

    # ------------------------------------------------------------------ per-frame
    def pose(self, track: MotionTrack, i: int):
        """(transform q -> image px) for frame i of the track."""
        fr = self.p.frame
        r_rel = euler_to_matrix(track.euler[i].astype(np.float64))
        rot = r_rel @ fr.rotation
        dx, dy, dz = track.trans[i].astype(np.float64)
        scale = fr.scale * np.exp(dz)
        center = fr.center + fr.scale * np.array([dx, dy, 0.0])
        return rot, scale, center

    def target_landmarks(self, track: MotionTrack, i: int) -> np.ndarray:
        """[478,3] posed, deformed landmarks of frame i in image pixels."""
        rot, scale, center = self.pose(track, i)
        q = self.canon + track.expression[i].astype(np.float64)
        b = float(track.blink[i])
        if b > 0:
            q = close_eyes(q, b)
        return center + scale * (q @ rot.T)

    def render(self, track: MotionTrack, i: int) -> np.ndarray:
        """Frame i of `track` as RGB uint8 [H,W,3]."""
        h, w = self.size
        rot, scale, center = self.pose(track, i)
        tgt = self.target_landmarks(track, i)
        eye_q = self.canon[self._eye_src_idx].copy()
        # gaze: the fan centre (iris centre) follows the driver's iris inside the rigid eye, which
        # slides the iris texture; bounded to a third of the eye width
        gaze = track.expression[i, [468, 473], :2].astype(np.float64)
        eye_w = np.linalg.norm(self.canon[[133, 362]] - self.canon[[33, 263]], axis=1)
        gaze *= np.minimum(1.0, self.config.max_gaze * eye_w / np.maximum(np.linalg.norm(gaze, axis=1), 1e-9))[:, None]
        eye_q[self._iris_rows, :2] += gaze
        eyes = center + scale * (eye_q @ rot.T)
        eyes[:, 2] += self.config.eye_depth * scale
        verts = np.concatenate([tgt, eyes])

        # dense warp of the person layer
        fr = self.p.frame
        d_ctrl = np.empty((N_MESH + len(self.nodes), 2))
        d_ctrl[:N_MESH] = tgt[:N_MESH, :2] - self.src_lm[:N_MESH, :2]
        head_now = center + scale * (self._node_q @ rot.T)
        head_src = fr.to_image(self._node_q)
        d_head = (head_now - head_src)[:, :2]
        d_torso = self.config.torso_follow * (center - fr.center)[:2]
        d_ctrl[N_MESH:] = self._node_wh[:, None] * d_head + (1 - self._node_wh[:, None]) * d_torso
        fwd = (self._W @ d_ctrl).reshape(*self._field_shape, 2).astype(np.float32)
        map_x, map_y = self._invert(fwd)
        warped = cv2.remap(self._texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.remap(self.person, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # out = warped * alpha + background * (1 - alpha); OpenCV's per-channel float ops round like NumPy's and
        # skip NumPy's slow broadcast of a one-channel alpha over three channels
        out = warped.astype(np.float32)
        cv2.multiply(out, cv2.merge([alpha] * 3), dst=out)
        cv2.add(out, cv2.multiply(self.background, cv2.merge([1 - alpha] * 3)), dst=out)

        # mouth interior under the face layer
        jaw_rest = center + scale * (self.canon[list(topo.INNER_LIP_UPPER)] @ rot.T)
        self._draw_mouth(out, tgt, jaw_rest, scale, mouth_gap(self.canon + track.expression[i].astype(np.float64)))

        # face layer, rasterized in its bounding box only
        pad = 4
        x0, y0 = np.maximum(np.floor(verts[:, :2].min(0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(verts[:, :2].max(0)).astype(int) + pad, [w, h])
        if x1 > x0 and y1 > y0:
            local = verts - np.array([x0, y0, 0.0])
            face, mask = texture_mesh(local, self.faces, int(y1 - y0), int(x1 - x0), self._texture, self.uv)
            k = self.config.face_feather | 1
            fa = cv2.GaussianBlur(cv2.erode(mask.astype(np.float32), np.ones((3, 3), np.uint8)), (k, k), 0)
            fa = np.minimum(fa, mask)
            sub = out[y0:y1, x0:x1]  # += (face - sub) * fa, in place (as above)
            step = cv2.multiply(cv2.subtract(face.astype(np.float32), sub), cv2.merge([fa] * 3))
            cv2.add(sub, step, dst=sub)
        out += 0.5
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)

    def _draw_mouth(
        self, out: np.ndarray, tgt: np.ndarray, jaw_rest: np.ndarray, scale: float, gap_q: float = 1.0
    ) -> None:
        """Cavity, tongue and teeth inside the target inner-lip contour (drawn under the face layer).
        jaw_rest: [11,3] the upper inner lip at rest, posed with the head (where the upper teeth hang); gap_q: the
        frame's inner-lip gap in canonical units (`mouth_gap`).

        Lips that meet (gap_q under LIPS_MEET_GAP) get no inside at all: the sliver the posed contour may still
        enclose (the pressed lip pairs share their height, not their depth) shows the lips of the person layer
        underneath (the photo with its opening painted over: `_texture`), not a seam of teeth and cavity; the inside
        fades in up to LIPS_APART_GAP.

        Where the photo shows the person's teeth (`real3d.face.mouth_state`), they are drawn from the photo:
        the upper row moves rigidly with the head, the lower row with the lower lip. Otherwise upper teeth
        hang from the rest position of the upper lip (visible from a small opening on), lower teeth show in a
        wide opening, and the cavity darkens toward the back of the mouth with the tongue low in it."""
        loop = tgt[list(topo.INNER_LIP_LOOP), :2]
        upper = tgt[list(topo.INNER_LIP_UPPER), :2]
        lower = tgt[list(topo.INNER_LIP_LOWER), :2]
        gap = float(np.max(lower[:, 1] - upper[:, 1]))
        shown = float(np.clip((gap_q - LIPS_MEET_GAP) / (LIPS_APART_GAP - LIPS_MEET_GAP), 0.0, 1.0))
        if gap < 0.5 or shown <= 0.0:
            return
        x0, y0 = np.floor(loop.min(0)).astype(int) - 2
        x1, y1 = np.ceil(loop.max(0)).astype(int) + 3
        h, w = out.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        off = np.array([x0, y0], np.float64)
        sub = (y1 - y0, x1 - x0)
        sh = 4  # sub-pixel bits for cv2 polygon drawing
        to_i = lambda pts: np.round((pts - off) * (1 << sh)).astype(np.int32)  # noqa: E731
        region = np.zeros(sub, np.float32)
        cv2.fillPoly(region, [to_i(loop)], 1.0, cv2.LINE_AA, shift=sh)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        cx, half_w = float(loop[:, 0].mean()), max(0.5 * float(np.ptp(loop[:, 0])), 1.0)
        top = np.interp(xx[0], *_ascending(upper))[None, :]  # 1 x W: the upper lip's edge per column
        bottom = np.interp(xx[0], *_ascending(lower))[None, :]
        span = np.maximum(bottom - top, 1.0)
        v = np.clip((yy - top) / span, 0.0, 1.0)  # 0 at the upper lip, 1 at the lower lip
        u = (xx - cx) / half_w  # -1..1 corner to corner
        # cavity: lit near the lips, darker toward the back (the middle of the opening) and the corners
        depth = np.clip(1.0 - np.sqrt(u**2 + ((v - 0.45) / 0.6) ** 2), 0.0, 1.0)
        shade = (1.0 - 0.55 * depth) * (1.0 - 0.35 * np.abs(u) ** 2)
        colour = self._cavity_rgb * shade[..., None]
        # tongue: a low rounded hump behind the lower teeth, visible once the mouth is open a little
        if gap > 0.08 * scale:
            tw = np.clip(1.0 - (u / 0.6) ** 2 - ((v - 1.05) / 0.32) ** 2, 0.0, 1.0)
            tongue = np.clip(tw * 3.0, 0.0, 1.0)[..., None]
            lit = 0.55 + 0.35 * np.clip((v - 0.7) / 0.3, 0.0, 1.0)[..., None]  # its back is in the shadow
            colour = colour * (1 - tongue) + self._tongue_rgb * lit * tongue
        across = (1.0 - 0.45 * np.abs(u) ** 1.5)[..., None]  # teeth darken toward the corners
        if self.mouth.shows_teeth:
            colour = self._source_teeth(colour, tgt, jaw_rest, (x0, y0), sub)
        else:
            # upper teeth hang from the skull: their edge is the rest position of the upper lip (posed
            # rigidly, no expression) lowered by the teeth height; a raised lip shows more of them
            edge = jaw_rest[:, :2] + [0.0, self.config.teeth_height * scale]
            edge[:, 1] = np.minimum(edge[:, 1], upper[:, 1] + 0.45 * gap)
            teeth = np.zeros(sub, np.float32)
            cv2.fillPoly(teeth, [to_i(np.concatenate([upper, edge[::-1]]))], 1.0, cv2.LINE_AA, shift=sh)
            # lower teeth show only in a wide-open mouth
            low_h = min(0.05 * scale, 0.2 * gap) if gap > 0.3 * scale else 0.0
            lteeth = np.zeros(sub, np.float32)
            if low_h > 0.5:
                cv2.fillPoly(
                    lteeth, [to_i(np.concatenate([lower, (lower - [0, low_h])[::-1]]))], 1.0, cv2.LINE_AA, shift=sh
                )
            # the gaps between incisors, canines and premolars, and the lip's shadow on the enamel
            seams = np.ones(sub, np.float32)
            for b in (0.0, 0.2, 0.37, 0.52, 0.66):
                for sgn in (1.0,) if b == 0 else (1.0, -1.0):
                    seams -= 0.25 * np.exp(-(((u - sgn * b) * half_w) ** 2) / 0.8)
            enamel = (seams * (0.7 + 0.3 * np.clip((yy - top) / max(0.04 * scale, 1.0), 0.0, 1.0)))[..., None]
            colour = colour * (1 - lteeth[..., None]) + self._lower_teeth_rgb * enamel * across * lteeth[..., None]
            colour = colour * (1 - teeth[..., None]) + self._teeth_rgb * enamel * across * teeth[..., None]
        r = shown * region[..., None]
        patch = out[y0:y1, x0:x1]
        patch[:] = colour * r + patch * (1 - r)

    def _source_teeth(
        self, colour: np.ndarray, tgt: np.ndarray, jaw_rest: np.ndarray, origin: tuple[int, int], sub: tuple[int, int]
    ) -> np.ndarray:
        """The photo's own teeth over `colour` [h,w,3] (the patch at `origin`): the upper row by the similarity
        that takes the photo's upper inner lip to its posed rest position, the lower row by the one that takes
        the photo's lower inner lip to the frame's."""
        src_up = self.src_lm[list(topo.INNER_LIP_UPPER), :2].astype(np.float32)
        src_lo = self.src_lm[list(topo.INNER_LIP_LOWER), :2].astype(np.float32)
        shift = np.array([[0.0, 0.0, origin[0]], [0.0, 0.0, origin[1]]])
        size = (sub[1], sub[0])
        for mask, src, dst in (
            (self.mouth.lower_teeth, src_lo, tgt[list(topo.INNER_LIP_LOWER), :2]),
            (self.mouth.upper_teeth, src_up, jaw_rest[:, :2]),
        ):
            m, _ = cv2.estimateAffinePartial2D(src, dst.astype(np.float32), method=cv2.LMEDS)
            if m is None:
                continue
            m = m - shift
            a = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
            tex = cv2.warpAffine(self.p.image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            colour = colour * (1 - a) + tex.astype(np.float32) * a
        return colour


def _ascending(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of 2-D points sorted by x, for np.interp."""
    o = np.argsort(pts[:, 0])
    return pts[o, 0], pts[o, 1]


def close_eyes(q: np.ndarray, amount: float) -> np.ndarray:
    """Move the eyelids of canonical landmarks q [478,3] shut by `amount` in [0,1] (upper lid does most)."""
    q = q.copy()
    for up, lo in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER), (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)):
        upper, lower = list(up), list(lo)
        meet = 0.75 * q[lower] + 0.25 * q[upper]  # the lids meet low on the eye, in 3-D
        q[upper] += amount * (meet - q[upper])
        q[lower] += amount * (meet - q[lower])
    return q


def _barycentric_matrix(ctrl: np.ndarray, pts: np.ndarray) -> sparse.csr_matrix:
    """Sparse [P_pts, P_ctrl] piecewise-linear interpolation weights over a Delaunay triangulation."""
    tri = Delaunay(ctrl)
    simplex = tri.find_simplex(pts)
    outside = simplex < 0
    if outside.any():  # clamp to nearest control point
        nearest = np.argmin(((pts[outside, None, :] - ctrl[None]) ** 2).sum(-1), axis=1)
    simplex = np.where(outside, 0, simplex)
    t = tri.transform[simplex]
    b2 = np.einsum("nij,nj->ni", t[:, :2], pts - t[:, 2])
    bary = np.concatenate([b2, 1 - b2.sum(1, keepdims=True)], 1)
    cols = tri.simplices[simplex]
    rows = np.repeat(np.arange(len(pts)), 3)
    vals = bary.ravel()
    cols = cols.ravel()
    if outside.any():
        idx = np.flatnonzero(outside)
        vals = vals.reshape(-1, 3)
        cols = cols.reshape(-1, 3)
        vals[idx] = [1.0, 0.0, 0.0]
        cols[idx] = np.stack([nearest, nearest, nearest], 1)
        vals, cols = vals.ravel(), cols.ravel()
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(pts), len(ctrl)))


class _FieldInverter:
    """Backward sampling maps (cv2.remap convention) from forward displacement fields on one node grid.

    A field is [Gh,Gw,2] displacements (px) of source points at grid nodes (x = j*step, y = i*step); the
    inverse solves x + D(x) = y for every output pixel y by fixed-point iteration on the grid, then upsamples
    the node maps to pixels. The grids, which depend only on the sizes, are built once."""

    def __init__(self, field_shape: tuple[int, int], step: int, size: tuple[int, int]) -> None:
        self.step = step
        gy, gx = np.mgrid[0 : field_shape[0], 0 : field_shape[1]].astype(np.float32)
        self._xs, self._ys = gx * step, gy * step
        h, w = size
        # node (i,j) sits at pixel coordinate (j*step, i*step); pixel centres are +0.5
        px = (np.arange(w, dtype=np.float32) + 0.5) / step
        py = (np.arange(h, dtype=np.float32) + 0.5) / step
        self._mx, self._my = np.meshgrid(px, py)

    def __call__(self, fwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step, xs, ys = self.step, self._xs, self._ys
        bx, by = xs - fwd[..., 0], ys - fwd[..., 1]
        for _ in range(4):
            d = cv2.remap(fwd, bx / step, by / step, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            bx, by = xs - d[..., 0], ys - d[..., 1]
        map_x = cv2.remap(bx, self._mx, self._my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        map_y = cv2.remap(by, self._mx, self._my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        map_x -= 0.5
        map_y -= 0.5
        return map_x, map_y


def _polygon_mask(size: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


class MeshBackend:
    """The weights-free backend behind `real3d.backends.base.Backend`: a `MeshRenderer` per source, motion as a
    `MotionStream` of retargeted `MotionTrack` chunks (landmark tracking of a video, or the audio driver)."""

    name = "mesh"

    def __init__(self, config: MeshConfig | None = None) -> None:
        self.config = config
        self.timings: dict[str, float] = {}

    def prepare(self, portrait: Portrait) -> MeshRenderer:
        return MeshRenderer(portrait, self.config)

    def motion(self, source: MeshRenderer, driving: Driving) -> MotionStream:
        """Retargeted motion chunks. A driving video is tracked and retargeted while the frames render (in a
        background thread, a few frames ahead), so the two share the cores; a pose video is tracked first."""
        canonical = source.p.canonical
        pose = None if driving.pose is None else _video_track(driving.pose, canonical, driving.fps)
        if driving.video is not None:
            video = driving.video
            retargeted = stream_track_from_landmarks(video.chunks(), canonical, driving.fps)
            chunks = prefetch(self._timed(retargeted), depth=TRACK_AHEAD_CHUNKS, name="real3d-track-driver")
            stream = MotionStream(driving.limit(video.n_frames), (_mark_driver(c, video.path) for c in chunks))
            if pose is not None:
                stream = stream.with_pose_of(pose)
            return stream.without_pose() if driving.still else stream
        driver = AudioDriver(
            driving.speech,
            canonical,
            fps=driving.fps,
            mouth_amp=driving.mouth_amp,
            blink=driving.blink,
            still=driving.still,
            seed=driving.seed,
        )
        stream = MotionStream(driving.limit(len(driver)), driver.chunks(AUDIO_CHUNK_FRAMES))
        return stream if pose is None else stream.with_pose_of(pose)

    def _timed(self, chunks: Iterator[MotionTrack]) -> Iterator[MotionTrack]:
        """`chunks`, adding the time spent making them to `timings["driver_tracking"]` (overlaps rendering)."""
        self.timings["driver_tracking"] = 0.0
        while True:
            t = time.perf_counter()
            chunk = next(chunks, None)
            self.timings["driver_tracking"] += time.perf_counter() - t
            if chunk is None:
                return
            yield chunk

    def frames(self, source: MeshRenderer, motion: MotionStream) -> Iterator[np.ndarray]:
        for chunk in motion:
            for i in range(len(chunk)):
                yield source.render(chunk, i)

    def frame_size(self, source: MeshRenderer) -> tuple[int, int]:
        return source.size


AUDIO_CHUNK_FRAMES = 250
"""Frames of audio-driven motion computed at a time (bounded memory for long speech)."""
TRACK_AHEAD_CHUNKS = 4
"""Motion chunks of a driving video the tracker may run ahead of the renderer (bounded memory, slack for
uneven frame times)."""


def _video_track(video: TrackedVideo, source_canonical: np.ndarray, fps: float) -> MotionTrack:
    return _mark_driver(track_from_landmarks(video.landmarks, source_canonical, fps), video.path)


def _mark_driver(track: MotionTrack, path: Path) -> MotionTrack:
    track.meta["driver"] = str(path)
    return track
