"""Parametric mouth and jaw deformation of the 478 MediaPipe landmarks in the canonical face frame.

Parameters per frame (`MOUTH_PARAMS`, all in [0,1] except as noted):
  jaw          jaw opening: the lower lip, chin and lower face rotate down about a jaw hinge near the ears;
               the weight of each landmark decays smoothly from the lower lip to the cheeks.
  spread       lip spreading (ee, s): mouth corners move outward (and slightly up).
  round        lip rounding/protrusion (oo, w): corners move inward, lips move forward (-z).
  press        lip closure (p, b, m, silence): the inner lips meet; no effect below PRESS_START, the
               inner-lip gap is exactly 0 for press >= PRESS_FULL.
  labiodental  f/v: the lower lip rises to the upper teeth and tucks back, the upper lip lifts a little.

Every size is in canonical units (outer-eye-corner distance) and relative to the source's own mouth
width, so the same parameters fit any face. The inner-lip gap (upper 13 to lower 14) grows
monotonically with `jaw` when the other parameters are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from real3d.face import topology as topo
from real3d.face.mouth_state import mouth_gap
from real3d.ramps import smoothstep

MOUTH_PARAMS = ("jaw", "spread", "round", "press", "labiodental")
"""Names of the columns of a mouth parameter array [T,k]."""
JAW, SPREAD, ROUND, PRESS, LABIODENTAL = range(len(MOUTH_PARAMS))

JAW_MAX_DROP = 0.26
"""Downward travel of the lower-lip centre at jaw = 1 (canonical units = outer-eye-corner distances). Was 0.32;
once the upper lip's middle rings stopped following the jaw (they had stretched the upper lip over a third of
the opening), the rendered openings of the audio driver measured 1.37x the real speakers' (median sd ratio over
the development clips, 0.90-1.70); 0.26 = 0.32 x 0.8 centres them."""
SPREAD_MAX = 0.15
"""Outward travel of each mouth corner at spread = 1, as a fraction of the half mouth width."""
ROUND_MAX = 0.22
"""Inward travel of each mouth corner at round = 1, as a fraction of the half mouth width."""
PROTRUDE_MAX = 0.08
"""Forward (-z) travel of the lip centre at round = 1."""
PRESS_FULL = 0.9
"""press at and above which the inner lips touch exactly."""
PRESS_START = 0.3
"""press below which the lips are not pulled together at all (blended partial closures do not leak)."""

_UPPER_PAIRS = topo.INNER_LIP_UPPER[1:-1]
_LOWER_PAIRS = topo.INNER_LIP_LOWER[1:-1]
_CORNERS = (61, 291, 78, 308)


@dataclass(frozen=True)
class MouthRig:
    """Per-face constants of the deformation (computed once from the neutral landmarks)."""

    neutral: np.ndarray
    """[N,3] neutral canonical landmarks (N = 478 or a subset when built for a few points)."""
    jaw_weight: np.ndarray
    """[N] how much each landmark follows the jaw rotation."""
    hinge: np.ndarray
    """[3] jaw hinge position (rotation about the canonical x axis through it)."""
    max_angle: float
    """Jaw rotation (radians) at jaw = 1."""
    mouth_mask: np.ndarray
    """[N] lip-region weight for spreading/rounding."""
    lip_mask: np.ndarray
    """[N] tight lip weight (protrusion, labiodental)."""
    side: np.ndarray
    """[N] 0 = upper lip side, 1 = lower lip side, 0.5 on the corners."""
    lip_falloff: np.ndarray
    """[N] 1 on the inner lips, decaying with distance from them (closure follow-through)."""
    center: np.ndarray
    """[3] mouth centre."""
    half_width: float
    """Half the distance between the mouth corners."""
    pair_x: np.ndarray
    """[P] x of the inner-lip pairs (sorted) for interpolating gap profiles."""
    pair_order: np.ndarray
    """[P] argsort of the pairs by x."""


def build_rig(neutral: np.ndarray) -> MouthRig:
    """Rig of one face from its neutral canonical landmarks [478,3]."""
    q = np.asarray(neutral, np.float64)
    if q.shape != (478, 3) and q.shape != (468, 3):
        raise ValueError(f"neutral landmarks must be [478,3] canonical, got {q.shape}")
    up, lo = q[list(_UPPER_PAIRS)], q[list(_LOWER_PAIRS)]
    inner = q[list(topo.INNER_LIP_LOOP)]
    center = inner.mean(0)
    half_width = max(0.5 * abs(q[291, 0] - q[61, 0]), 1e-3)
    corner_y = 0.5 * (q[61, 1] + q[291, 1])
    order = np.argsort(up[:, 0])
    pair_x = up[order, 0]
    mid_y = 0.5 * (up[:, 1] + lo[:, 1])[order]
    x, y = q[:, 0], q[:, 1]
    line_y = np.interp(x, pair_x, mid_y, left=corner_y, right=corner_y)
    # which side of the lip line each point lies on; explicit for the lip loops
    side = smoothstep(0.5 + (y - line_y) / 0.1)
    # every lip point belongs to one lip: with the lips together the middle rings of the upper lip lie close to
    # the lip line and would otherwise follow the jaw halfway, stretching the upper lip over the opening
    side[list(topo.INNER_LIP_UPPER) + list(topo.OUTER_LIP_UPPER) + list(topo.UPPER_LIP_MIDDLE)] = 0.0
    side[list(topo.INNER_LIP_LOWER) + list(topo.OUTER_LIP_LOWER) + list(topo.LOWER_LIP_MIDDLE)] = 1.0
    side[list(_CORNERS) + list(topo.LIP_MIDDLE_CORNERS)] = 0.5
    lateral = 1.0 - smoothstep((np.abs(x - center[0]) / half_width - 0.9) / 0.6)
    cheek = smoothstep((y - (corner_y - 0.05)) / 0.45)
    jaw_weight = lateral * side + (1.0 - lateral) * cheek
    # hinge: at the height of the face-oval points at the ears (234, 454), placed far enough behind the
    # lips that the chin drops nearly as much as the lower lip (jaw opening = rotation + condyle glide)
    ear = 0.5 * (q[234] + q[454])
    lip = q[topo.LOWER_LIP_MID]
    hinge = np.array([0.0, ear[1], lip[2] + 2.0])
    # downward travel of the lower lip for small angles: dy = -r_z * angle (r_z < 0 in front of the hinge)
    max_angle = float(JAW_MAX_DROP / (hinge[2] - lip[2]))
    dy = y - center[1]
    ell = ((x - center[0]) / (1.7 * half_width)) ** 2 + (dy / np.where(dy < 0, 0.22, 0.45)) ** 2
    mouth_mask = np.clip(1.0 - ell, 0.0, 1.0)
    ell_lip = ((x - center[0]) / (1.15 * half_width)) ** 2 + (dy / 0.2) ** 2
    lip_mask = np.clip(1.0 - ell_lip, 0.0, 1.0)
    lips = list(topo.INNER_LIP_LOOP) + list(topo.OUTER_LIP_UPPER) + list(topo.OUTER_LIP_LOWER)
    lip_mask[lips] = np.maximum(lip_mask[lips], 0.6)
    mouth_mask[list(topo.RIGID)] = 0.0  # the pose-defining points never move with expression
    lip_mask[list(topo.RIGID)] = 0.0
    dist_line = np.abs(y - line_y)
    lip_falloff = (1.0 - smoothstep(dist_line / 0.3)) * lateral
    lip_falloff[list(topo.INNER_LIP_LOOP)] = 1.0
    return MouthRig(
        neutral=q,
        jaw_weight=jaw_weight,
        hinge=hinge,
        max_angle=max_angle,
        mouth_mask=mouth_mask,
        lip_mask=lip_mask,
        side=side,
        lip_falloff=lip_falloff,
        center=center,
        half_width=float(half_width),
        pair_x=pair_x,
        pair_order=order,
    )


def _check_params(params: np.ndarray) -> np.ndarray:
    p = np.asarray(params, np.float64)
    if p.ndim != 2 or p.shape[1] != len(MOUTH_PARAMS):
        raise ValueError(f"mouth params must be [T,{len(MOUTH_PARAMS)}] ({', '.join(MOUTH_PARAMS)}), got {p.shape}")
    return p


def _deform(rig: MouthRig, p: np.ndarray) -> np.ndarray:
    """[T,k] params -> [T,N,3] deformed landmarks (float64)."""
    q = rig.neutral
    t = len(p)
    pos = np.broadcast_to(q, (t,) + q.shape).copy()  # T x N x 3
    # 1. jaw: rotation about the hinge's x axis, weighted per landmark
    ang = p[:, JAW, None] * rig.max_angle  # T x 1
    ry, rz = q[:, 1] - rig.hinge[1], q[:, 2] - rig.hinge[2]  # N
    c, s = np.cos(ang) - 1.0, np.sin(ang)
    w = rig.jaw_weight[None, :]
    pos[..., 1] += w * (c * ry - s * rz)
    pos[..., 2] += w * (s * ry + c * rz)
    # 2. spread / round: scale about the mouth centre in x, protrude lips in -z
    u = np.clip((q[:, 0] - rig.center[0]) / rig.half_width, -1.5, 1.5)  # N
    horiz = (SPREAD_MAX * p[:, SPREAD, None] - ROUND_MAX * p[:, ROUND, None]) * rig.half_width  # T x 1
    pos[..., 0] += horiz * u[None, :] * rig.mouth_mask[None, :]
    pos[..., 1] -= 0.03 * p[:, SPREAD, None] * (u**2 * rig.mouth_mask)[None, :]
    pos[..., 2] -= PROTRUDE_MAX * p[:, ROUND, None] * rig.lip_mask[None, :]
    # 3. labiodental: the lower lip rises towards the upper lip and tucks back; the upper lip lifts
    lab = p[:, LABIODENTAL, None]
    gap_now = pos[:, 14, 1] - pos[:, 13, 1]  # T
    lower = rig.side * rig.lip_falloff
    upper = (1.0 - rig.side) * rig.lip_falloff
    rise = np.maximum(gap_now - 0.02, 0.0)[:, None]
    pos[..., 1] -= lab * rise * lower[None, :]
    pos[..., 2] += 0.04 * lab * lower[None, :]
    pos[..., 1] -= 0.015 * lab * upper[None, :]
    # 4. press: move the inner-lip pairs to their midpoints (gap exactly 0 at full press)
    pe = smoothstep((p[:, PRESS] - PRESS_START) / (PRESS_FULL - PRESS_START))[:, None]  # T x 1
    up_i, lo_i = list(_UPPER_PAIRS), list(_LOWER_PAIRS)
    gaps = pos[:, lo_i, 1] - pos[:, up_i, 1]  # T x P
    gx = rig.pair_x
    half_gap = np.stack([np.interp(q[:, 0], gx, g[rig.pair_order]) for g in gaps]) * 0.5  # T x N
    half_gap[:, up_i] = 0.5 * gaps
    half_gap[:, lo_i] = 0.5 * gaps
    shift = pe * half_gap
    # inner-lip pairs have falloff 1 and side 0/1 and carry their own gap, so each closes by exactly pe * gap
    pos[..., 1] += shift * (upper - lower)[None, :]
    return pos


def mouth_offsets(neutral: np.ndarray, params: np.ndarray, rig: MouthRig | None = None) -> np.ndarray:
    """Landmark offsets [T,478,3] (float32, canonical) of the mouth/jaw parameters [T,k] on a neutral
    canonical face [478,3]."""
    r = rig or build_rig(neutral)
    p = _check_params(params)
    return (_deform(r, p) - r.neutral[None]).astype(np.float32)


def inner_lip_gap(neutral: np.ndarray, params: np.ndarray, rig: MouthRig | None = None) -> np.ndarray:
    """[T] vertical inner-lip gap (landmark 14 minus 13, canonical units, clipped at 0) for params [T,k],
    computed in blocks so long tracks need no [T,478,3] array."""
    r = rig or build_rig(neutral)
    p = _check_params(params)
    out = np.empty(len(p), np.float32)
    step = 512
    for a in range(0, len(p), step):
        pos = _deform(r, p[a : a + step])
        out[a : a + step] = np.maximum(pos[:, topo.LOWER_LIP_MID, 1] - pos[:, topo.UPPER_LIP_MID, 1], 0.0)
    return out


OPENING_GAIN_LIMITS = (0.5, 2.0)
"""Range of the factor `normalise_opening` applies to the jaw. The cues' own amplitude is within a factor ~1.5 of
the target on the development clips; a larger correction would come from audio that hardly opens the jaw (a
whisper, one long hum) and would only magnify noise."""


def normalise_opening(
    rest: np.ndarray, params: np.ndarray, target_sd: float, where: np.ndarray | None = None, rig: MouthRig | None = None
) -> tuple[np.ndarray, float]:
    """(params with the jaw scaled, the factor): the jaw column of `params` [T,k] scaled so that the standard
    deviation of the inner-lip gap (`inner_lip_gap` on the rest face [478,3]) over the frames `where` [T] (all when
    None) is `target_sd` (canonical units); the factor is clipped to OPENING_GAIN_LIMITS. The gap is nearly linear
    in the jaw (closures stay closed), so one correction after the first estimate reaches the target to ~1 %.
    Fewer than 10 frames, or a gap that does not move, are returned unchanged (factor 1)."""
    r = rig or build_rig(rest)
    p = _check_params(params).copy()
    sel = np.ones(len(p), bool) if where is None else np.asarray(where, bool)
    if sel.sum() < 10 or not target_sd > 0:
        return p, 1.0
    gain = 1.0
    for _ in range(2):
        trial = p.copy()
        trial[:, JAW] *= gain
        sd = float(np.std(inner_lip_gap(rest, trial[sel], r)))
        if sd < 1e-6:
            return p, 1.0
        gain = float(np.clip(gain * target_sd / sd, *OPENING_GAIN_LIMITS))
    p[:, JAW] *= gain
    return p, gain


CLOSED_GAP = 0.01
"""Inner-lip gap (canonical units) under which a mouth counts as closed (MediaPipe's lip points of a closed
mouth sit 0-0.005 apart; a speaking frame or a smile with teeth shows 0.03-0.15)."""


def closed_mouth(neutral: np.ndarray) -> np.ndarray:
    """The same face [478,3] with its lips together: the rest pose of a talking mouth.

    A photo taken mid-word or with a toothy smile has its lips apart. The jaw is raised (the rig's jaw rotation,
    run backwards) until the lip centres meet, then the inner-lip pairs are pressed together, so the upper lip,
    the mouth corners (a smile stays a smile) and the upper face keep their place. A closed mouth is returned
    unchanged."""
    q = np.asarray(neutral, np.float64)
    gap = mouth_gap(q)
    if gap <= CLOSED_GAP:
        return q.copy()
    rig = build_rig(q)
    mid = max(0.0, q[topo.LOWER_LIP_MID, 1] - q[topo.UPPER_LIP_MID, 1])
    p = np.zeros((1, len(MOUTH_PARAMS)))
    p[0, JAW] = -mid / JAW_MAX_DROP  # jaw = 1 drops the lower-lip centre by JAW_MAX_DROP
    p[0, PRESS] = 1.0
    return _deform(rig, p)[0]
