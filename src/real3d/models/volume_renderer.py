"""Tri-plane volume renderer (EG3D, Chan et al. CVPR 2022, Sec. 4; Real3D-Portrait Sec. 3.1).

Renders three axis-aligned feature planes into a low-resolution feature image, a depth map and the
accumulated opacity used as head alpha by the super-resolution network:

1. one ray per pixel centre from an EG3D camera (`rays_from_camera`; cameras come from
   `real3d.geometry.camera_from_pose`);
2. near/far from the ray/box intersection with the cube [-box_warp/2, box_warp/2]^3;
3. stratified depths, then importance depths drawn from the coarse weights (inverse CDF);
4. tri-plane lookup on the planes (x,y), (x,z), (z,x) and the `TriplaneDecoder` MLP;
5. alpha compositing with midpoint colours and densities (Mip-NeRF style ray marcher).

Every step is a stateless function testable on a few rays; `VolumeRenderer` chains them in ray
chunks. Two sampling modes: `stochastic` follows the released code (uniform jitter and random inverse
CDF, also at inference); `deterministic` replaces both random draws by their documented
deterministic counterparts (midpoint jitter, det=True inverse CDF), which is what the official
parity fixtures were produced with. Shapes use b batch, k planes, c channels, r rays, s samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from real3d.config.volume_renderer import SamplingMode, VolumeRendererConfig
from real3d.errors import CheckpointError
from real3d.layers.equalized import EqualizedLinear

RGB_SCALE = 1 + 2 * 0.001
RGB_OFFSET = -0.001
"""The decoder's colour is RGB_SCALE * sigmoid(logits) + RGB_OFFSET, in (-0.001, 1.001) (EG3D)."""


# --------------------------------------------------------------------------------------------------
# Camera and rays


def rays_from_camera(camera: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre ((i + 0.5) / resolution), ray index r = row * resolution + col.

    camera: [B,25] (c2w row-major 16 + normalised K 9, OpenCV axes: +x right, +y down, +z forward).
    Returns origins [B,R,3] and unit directions [B,R,3], R = resolution**2.
    """
    if camera.ndim != 2 or camera.shape[-1] != 25:
        raise ValueError(f"camera must be [B,25] (c2w 16 + K 9), got {tuple(camera.shape)}")
    b = camera.shape[0]
    c2w = rearrange(camera[:, :16], "b (i j) -> b i j", i=4)
    intr = rearrange(camera[:, 16:25], "b (i j) -> b i j", i=3)
    fx, fy = intr[:, 0, 0, None], intr[:, 1, 1, None]  # Bx1
    cx, cy, sk = intr[:, 0, 2, None], intr[:, 1, 2, None], intr[:, 0, 1, None]
    centres = torch.arange(resolution, dtype=camera.dtype, device=camera.device) * (1.0 / resolution) + (
        0.5 / resolution
    )
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    x_cam = cols.reshape(1, -1)  # 1xR
    y_cam = rows.reshape(1, -1)  # 1xR
    x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx  # BxR
    y_lift = (y_cam - cy) / fy  # BxR
    ones = torch.ones_like(x_lift)
    cam_points = torch.stack([x_lift, y_lift, ones, ones], -1)  # BxRx4
    world = (c2w @ cam_points.transpose(1, 2)).transpose(1, 2)[..., :3]  # BxRx3
    origins = c2w[:, None, :3, 3].expand(b, resolution * resolution, 3)  # BxRx3
    directions = F.normalize(world - origins, dim=-1)
    return origins.contiguous(), directions


def ray_box_intersection(
    origins: torch.Tensor, directions: torch.Tensor, box_warp: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the cube [-box_warp/2, box_warp/2]^3.

    origins, directions: [..., 3]. Returns near [...], far [...], valid [...] (bool). Missed rays get
    near = -1, far = -2 (the official marker values), so `far > near` is false for them.
    """
    half = box_warp / 2
    inv = 1.0 / directions
    negative = inv < 0
    valid = torch.ones(origins.shape[:-1], dtype=torch.bool, device=origins.device)
    near = far = None
    for axis in range(3):
        o, i, neg = origins[..., axis], inv[..., axis], negative[..., axis]
        t_lo = (torch.where(neg, half, -half) - o) * i
        t_hi = (torch.where(neg, -half, half) - o) * i
        if near is None:
            near, far = t_lo, t_hi
            continue
        valid = valid & ~((near > t_hi) | (t_lo > far))
        near, far = torch.maximum(near, t_lo), torch.minimum(far, t_hi)
    near = torch.where(valid, near, torch.full_like(near, -1.0))
    far = torch.where(valid, far, torch.full_like(far, -2.0))
    return near, far, valid


def fill_missed_rays(near: torch.Tensor, far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give rays that miss the box the official placeholder interval (batch-wide, as released).

    near, far: [B,R]. Missed rays (far <= near) get near = min(valid near) and far = max(valid near)
    (the release uses the *near* maximum for far, reproduced here). Returns near, far, hit [B,R].
    """
    hit = far > near
    if hit.any() and not hit.all():
        near_hit = near[hit]
        near = torch.where(hit, near, near_hit.min())
        far = torch.where(hit, far, near_hit.max())
    return near, far, hit


# --------------------------------------------------------------------------------------------------
# Depth sampling


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def stratified_depths(
    near: torch.Tensor,
    far: torch.Tensor,
    num_samples: int,
    mode: SamplingMode = "deterministic",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """t_i = near + i/(S-1) * (far - near) + u_i * (far - near)/(S-1), i = 0..S-1.

    near, far: [B,R]. `deterministic` uses u = 0.5 (so the last sample lies half a step past far,
    as in the official layout); `stochastic` draws u ~ U[0,1). Returns depths [B,R,S].
    """
    steps = torch.arange(num_samples, dtype=near.dtype, device=near.device) / (num_samples - 1)  # S
    span = far - near  # BxR
    depths = near[..., None] + steps * span[..., None]  # BxRxS
    delta = span / (num_samples - 1)
    if mode == "deterministic":
        return depths + 0.5 * delta[..., None]
    return depths + _uniform(depths.shape, depths, generator) * delta[..., None]


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    num_samples: int,
    mode: SamplingMode = "deterministic",
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-linear CDF over bin edges (NeRF importance sampling).

    bins: [N,M+1] or longer (only edges 0..M are used); weights: [N,M]. `deterministic` uses
    u = linspace(0, 1, num_samples) (both ends included), `stochastic` u ~ U[0,1). Returns [N,num].
    """
    n, m = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # Nx(M+1)
    if mode == "deterministic":
        u = torch.linspace(0, 1, num_samples, dtype=cdf.dtype, device=cdf.device).expand(n, num_samples)
    else:
        u = _uniform((n, num_samples), cdf, generator)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    lo = (idx - 1).clamp_min(0)
    hi = idx.clamp_max(m)
    cdf_lo, cdf_hi = cdf.gather(1, lo), cdf.gather(1, hi)
    bin_lo, bin_hi = bins.gather(1, lo), bins.gather(1, hi)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def importance_depths(
    depths: torch.Tensor,
    weights: torch.Tensor,
    num_samples: int,
    mode: SamplingMode = "deterministic",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EG3D importance samples from the coarse pass.

    depths: [B,R,S] coarse depths; weights: [B,R,S-1] coarse interval weights. The weights are
    max-pooled (k2, pad 1), avg-pooled (k2) and raised by 0.01; the end bins are dropped and the S-1
    interval midpoints serve as bin edges. Returns [B,R,num_samples] (unsorted).
    """
    b, r, s = depths.shape
    with torch.no_grad():
        w = rearrange(weights, "b r s -> (b r) 1 s").float()
        w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1)[:, 0] + 0.01  # (BR)x(S-1)
        z = rearrange(depths, "b r s -> (b r) s")
        mids = 0.5 * (z[:, :-1] + z[:, 1:])  # (BR)x(S-1)
        fine = sample_pdf(mids, w[:, 1:-1], num_samples, mode, generator)
    return rearrange(fine, "(b r) s -> b r s", b=b, r=r)


# --------------------------------------------------------------------------------------------------
# Tri-plane features and decoder


PLANE_AXES = ((0, 1), (0, 2), (2, 0))
"""The point coordinates (grid_sample x = width axis, grid_sample y = height axis) each plane is indexed by:
the planes (x,y), (x,z), (z,x), i.e. the first two columns of `points @ inv(axes_k)` for the released
(fixed EG3D) plane axes."""


def project_to_planes(points: torch.Tensor) -> torch.Tensor:
    """points [B,P,3] -> plane coordinates [B,3,P,2] for the planes of `PLANE_AXES`."""
    uv = [points[..., list(pair)] for pair in PLANE_AXES]  # 3 x BxPx2
    return torch.stack(uv, 1)  # Bx3xPx2


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """Bilinear plane lookup (zeros padding, align_corners=False) at points scaled by 2/box_warp.

    planes: [B,3,C,H,W]; points: [B,P,3] world coordinates. Returns features [B,3,P,C].
    """
    b, k, c, h, w = planes.shape
    if k != 3 or points.shape[0] != b or points.shape[-1] != 3:
        raise ValueError(
            f"need planes [B,3,C,H,W] and points [B,P,3], got {tuple(planes.shape)} and {tuple(points.shape)}"
        )
    grid = rearrange(project_to_planes((2 / box_warp) * points), "b k p two -> (b k) 1 p two")
    feats = F.grid_sample(
        rearrange(planes, "b k c h w -> (b k) c h w"),
        grid.to(planes.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (BK)xCx1xP
    return rearrange(feats, "(b k) c 1 p -> b k p c", k=k)


PLANE_PAD = (1, 2)
"""Zero texels added before / after each plane axis by `plane_table` (see `sample_triplanes_mean`)."""


def plane_table(planes: torch.Tensor) -> torch.Tensor:
    """planes [B,3,C,H,W] -> [(B*3*(H+3)*(W+3)),C]: one row of C features per texel of the planes padded
    with one zero texel before and two after on both axes (for `sample_triplanes_mean`; built once per
    render)."""
    lo, hi = PLANE_PAD
    b, k, c, h, w = planes.shape
    table = planes.new_zeros(b, k, h + lo + hi, w + lo + hi, c)
    table[:, :, lo : lo + h, lo : lo + w] = rearrange(planes, "b k c h w -> b k h w c")
    return table.reshape(-1, c)


def sample_triplanes_mean(
    table: torch.Tensor, planes_shape: tuple[int, ...], points: torch.Tensor, box_warp: float = 1.0
) -> torch.Tensor:
    """`sample_triplanes(planes, points, box_warp).mean(1)` as one weighted gather.

    Each point reads 4 texels on each of the 3 planes with the bilinear weights divided by 3 (the mean
    over planes), summed by `embedding_bag`. Zeros padding (grid_sample's, align_corners=False) comes
    from the zero border of the table: texel coordinates are clamped to [-1, size], where every texel
    outside the plane is a zero row, so no per-corner bounds masks are needed; a point further out
    reads zeros with weight 1 and a plane texel with weight 0, i.e. 0 as grid_sample gives. NaN
    coordinates read zeros. Equal to the grid_sample path up to float rounding.
    table: `plane_table(planes)`; planes_shape: planes.shape (B,3,C,H,W); points: [B,P,3] -> [B,P,C].
    """
    b, k, c, h, w = planes_shape
    if k != 3 or points.shape[0] != b or points.shape[-1] != 3:
        raise ValueError(
            f"need planes [B,3,C,H,W] and points [B,P,3], got {tuple(planes_shape)} and {tuple(points.shape)}"
        )
    lo, hi = PLANE_PAD
    hp, wp = h + lo + hi, w + lo + hi
    scaled = (2 / box_warp) * points
    # grid x (width) and grid y (height) coordinates of each plane (`PLANE_AXES`), BxPx3
    u = scaled.index_select(-1, torch.tensor([a for a, _ in PLANE_AXES], device=points.device))
    v = scaled.index_select(-1, torch.tensor([b for _, b in PLANE_AXES], device=points.device))
    ix = (((u + 1) * w - 1) / 2).clamp_(-1, w).nan_to_num_(-1.0)  # texel coordinates
    iy = (((v + 1) * h - 1) / 2).clamp_(-1, h).nan_to_num_(-1.0)
    x0, y0 = ix.floor(), iy.floor()
    fx, fy = ix - x0, iy - y0
    i32 = torch.int32
    first = (torch.arange(b * k, dtype=i32, device=points.device) * (hp * wp)).reshape(b, 1, k)  # padded plane starts
    corner = first + (y0.to(i32) + lo) * wp + (x0.to(i32) + lo)  # BxPx3 row of the top-left texel
    rows = corner.unsqueeze(-1) + torch.tensor([0, 1, wp, wp + 1], dtype=i32, device=points.device)  # BxPx3x4
    wy0, wy1 = (1 - fy) * (1 / k), fy * (1 / k)
    weights = torch.stack([wy0 * (1 - fx), wy0 * fx, wy1 * (1 - fx), wy1 * fx], -1)  # BxPx3x4, same corner order
    feats = F.embedding_bag(
        rows.reshape(-1, 4 * k), table, mode="sum", per_sample_weights=weights.reshape(-1, 4 * k).to(table.dtype)
    )  # (BP)xC
    return feats.reshape(b, -1, c)


@dataclass
class DecodedSamples:
    """Decoder output per sample."""

    rgb: torch.Tensor
    """[B,P,C] colours/features in (-0.001, 1.001)."""
    sigma: torch.Tensor
    """[B,P] raw density (before softplus(sigma - 1))."""


class TriplaneDecoder(nn.Module):
    """EG3D `OSGDecoder`: mean over planes, FC(C,64) - Softplus - FC(64,1+C), equalized lr.

    Keys `net.0.weight/bias`, `net.2.weight/bias` as in the official `decoder.net.*`.
    """

    def __init__(self, feature_dim: int = 32, hidden_dim: int = 64, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            EqualizedLinear(feature_dim, hidden_dim, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            EqualizedLinear(hidden_dim, 1 + feature_dim, lr_multiplier=lr_multiplier),
        )

    def forward(self, features: torch.Tensor) -> DecodedSamples:
        """features: [B,3,P,C] plane samples -> DecodedSamples (rgb [B,P,C], sigma [B,P])."""
        probs, sigma = self.decode_mean(features.mean(1))
        return DecodedSamples(rgb=probs * RGB_SCALE + RGB_OFFSET, sigma=sigma)

    def decode_mean(self, mean_features: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """mean_features: [B,P,C] (the mean over the planes) -> (sigmoid(rgb logits) [B,P,C], sigma [B,P]).

        The colour is `RGB_SCALE * sigmoid + RGB_OFFSET`; the renderer applies that affine map after
        compositing (on [B,R,C] instead of every sample). Without autograd the MLP runs `chunk` samples
        at a time (the 64-wide hidden layer of a chunk stays in cache) and writes straight into the
        outputs; the result equals `net` applied at once."""
        if torch.is_grad_enabled() and (mean_features.requires_grad or any(p.requires_grad for p in self.parameters())):
            x = self.net(mean_features)  # BxPx(1+C)
            return torch.sigmoid(x[..., 1:]), x[..., 0]
        first, last = self.net[0], self.net[2]
        w1, b1 = (first.weight * first.weight_gain).t(), first.bias * first.bias_gain  # [C,hid], [hid]
        w2, b2 = last.weight * last.weight_gain, last.bias * last.bias_gain  # [1+C,hid], [1+C]
        w_sigma, w_rgb = w2[0].contiguous(), w2[1:].t().contiguous()  # [hid], [hid,C]
        lead = mean_features.shape[:-1]
        x = mean_features.reshape(-1, mean_features.shape[-1])
        probs = x.new_empty(x.shape[0], w_rgb.shape[1])
        sigma = x.new_empty(x.shape[0])
        for start in range(0, x.shape[0], chunk):
            part = slice(start, start + chunk)
            hidden = F.softplus(torch.addmm(b1, x[part], w1))  # nxhid
            torch.addmm(b2[1:], hidden, w_rgb, out=probs[part]).sigmoid_()
            torch.mv(hidden, w_sigma, out=sigma[part]).add_(b2[0])
        return probs.reshape(*lead, -1), sigma.reshape(lead)


# --------------------------------------------------------------------------------------------------
# Ray marching


@dataclass
class RayMarchResult:
    """Composited values per ray."""

    rgb: torch.Tensor
    """[B,R,C] composite colour/feature scaled to 2*sum(w c) - 1."""
    depth: torch.Tensor
    """[B,R] expected depth sum(w t_mid)/sum(w) (+inf where sum(w) = 0 and unclamped)."""
    weights: torch.Tensor
    """[B,R,S-1] interval weights w = alpha * transmittance."""


def march_rays(
    colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, clamp_depth: bool = True
) -> RayMarchResult:
    """Alpha compositing over S-1 intervals with midpoint colours and densities (MipRayMarcher2).

    colors: [B,R,S,C]; densities: [B,R,S] raw sigma; depths: [B,R,S] sorted. Density is
    softplus(sigma_mid - 1), alpha = 1 - exp(-density * delta), T_i = prod_{j<i}(1 - alpha_j + 1e-10).
    With `clamp_depth` the depth is clamped to the min/max of all given depths (the released rule);
    the renderer clamps itself with the batch-wide range instead.
    """
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2  # BxRx(S-1)xC
    weights = interval_weights(densities, depths)
    rgb = torch.einsum("brs,brsc->brc", weights, colors_mid)  # BxRxC
    depth = expected_depth(weights, depths)
    if clamp_depth:
        depth = depth.clamp(depths.min(), depths.max())
    return RayMarchResult(rgb=rgb * 2 - 1, depth=depth, weights=weights)


def interval_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weights w = alpha * T of the S-1 intervals (see `march_rays`).

    densities: [B,R,S] raw sigma; depths: [B,R,S] sorted -> [B,R,S-1]."""
    deltas = depths[..., 1:] - depths[..., :-1]  # BxRx(S-1)
    density_mid = F.softplus((densities[..., :-1] + densities[..., 1:]) / 2 - 1)
    alpha = 1 - torch.exp(-(density_mid * deltas))
    shifted = torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], -1)  # BxRxS
    return alpha * torch.cumprod(shifted, -1)[..., :-1]


def expected_depth(weights: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """sum(w t_mid) / sum(w) per ray (+inf where sum(w) = 0). weights [B,R,S-1], depths [B,R,S] -> [B,R]."""
    depths_mid = (depths[..., :-1] + depths[..., 1:]) / 2
    return torch.nan_to_num(torch.sum(weights * depths_mid, -1) / weights.sum(-1), nan=math.inf)


def composite_unsorted(weights: torch.Tensor, order: torch.Tensor, colors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """sum_i w_i (c_i + c_{i+1}) / 2 over the depth-sorted samples, without sorting the colours.

    Each sample's colour enters with the mean weight u of its two neighbouring intervals (u_t =
    (w_{t-1} + w_t) / 2, w_{-1} = w_{S-1} = 0); `order` maps sorted positions to the concatenated
    (unsorted) samples, so u is scattered back and each colour set is composited where it lies.
    weights: [B,R,S-1] (sorted); order: [B,R,S] (from the depth sort); colors: [B,R,S_j,C] each, with
    sum S_j = S, in concatenation order -> [B,R,C]. Equals `march_rays`' rgb (before `* 2 - 1`) up to
    rounding.
    """
    u = 0.5 * (F.pad(weights, (0, 1)) + F.pad(weights, (1, 0)))  # BxRxS, sorted positions
    u = torch.empty_like(u).scatter_(-1, order, u)  # BxRxS, concatenated positions
    out, start = None, 0
    for c in colors:
        part = torch.einsum("brs,brsc->brc", u[..., start : start + c.shape[2]], c)  # BxRxC
        out = part if out is None else out + part
        start += c.shape[2]
    return out


def merge_samples(
    depths_a: torch.Tensor,
    depths_b: torch.Tensor,
    values_a: tuple[torch.Tensor, ...],
    values_b: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Concatenate two sample sets along s and sort them by depth.

    depths_*: [B,R,S*]; each value tensor: [B,R,S*,...] (e.g. colours [B,R,S*,C], sigma [B,R,S*]).
    Returns depths [B,R,S] and the values in the same order, [B,R,S,...] each.
    """
    depths, order = torch.sort(torch.cat([depths_a, depths_b], -1), dim=-1)  # BxRxS
    merged = []
    for va, vb in zip(values_a, values_b, strict=True):
        values = torch.cat([va, vb], 2)
        index = order.reshape(order.shape + (1,) * (values.ndim - 3)).expand_as(values)
        merged.append(values.gather(2, index))
    return depths, merged


# --------------------------------------------------------------------------------------------------
# Renderer


@dataclass
class VolumeRenderOutput:
    """Rendered images (channels-first) and the per-ray samples that produced them."""

    feature_image: torch.Tensor
    """[B,C,H,W] composited features before any clamp; channels 0-2 are RGB in ~[-1,1]."""
    depth: torch.Tensor
    """[B,1,H,W] expected ray depth, clamped to the batch-wide sample range."""
    opacity: torch.Tensor
    """[B,1,H,W] accumulated opacity sum(w) (the head alpha; the official `weights_img`)."""
    depths_coarse: torch.Tensor
    """[B,R,Sc] stratified depths, ray r = row * W + col."""
    depths_fine: torch.Tensor | None
    """[B,R,Sf] importance depths before merging (None without a fine pass)."""
    ray_hit: torch.Tensor
    """[B,R] bool, whether the ray intersects the box."""

    @property
    def image_raw(self) -> torch.Tensor:
        """[B,3,H,W] RGB clamped to [-1,1] (the official `image_raw`)."""
        return self.feature_image[:, :3].clamp(-1, 1)


DEFAULT_CHUNK_RAYS = 2048
"""Rays evaluated at once by default (bounds memory; the result does not depend on it)."""


class VolumeRenderer(nn.Module):
    """Tri-plane importance renderer; its only weights are the decoder's (`decoder.net.*`).

    `mode` (the volume sampling, see `SamplingMode`) and `chunk_rays` (rays per decoder pass) are run-time
    settings of this instance, not part of the saved config."""

    def __init__(
        self,
        config: VolumeRendererConfig | None = None,
        mode: SamplingMode = "deterministic",
        chunk_rays: int = DEFAULT_CHUNK_RAYS,
    ) -> None:
        super().__init__()
        if mode not in ("deterministic", "stochastic"):
            raise ValueError(f"mode must be 'deterministic' or 'stochastic', got {mode!r}")
        if chunk_rays < 1:
            raise ValueError(f"chunk_rays must be positive, got {chunk_rays}")
        self.mode: SamplingMode = mode
        self.chunk_rays = chunk_rays
        self.config = config or VolumeRendererConfig()
        cfg = self.config
        self.decoder = TriplaneDecoder(cfg.feature_dim, cfg.decoder_hidden_dim, cfg.decoder_lr_multiplier)

    def _decode(
        self,
        table: torch.Tensor,
        planes_shape: tuple[int, ...],
        origins: torch.Tensor,
        directions: torch.Tensor,
        depths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """table: `plane_table(planes)`; origins, directions [B,r,3], depths [B,r,s] -> sigmoid(rgb logits)
        [B,r,s,C], sigma [B,r,s]. The colour of a sample is RGB_SCALE * sigmoid + RGB_OFFSET (applied after
        compositing)."""
        b, r, s = depths.shape
        points = origins[:, :, None] + depths[..., None] * directions[:, :, None]  # Bxrxsx3
        points = rearrange(points, "b r s d -> b (r s) d")
        feats = sample_triplanes_mean(table, planes_shape, points, self.config.box_warp)
        probs, sigma = self.decoder.decode_mean(feats)
        probs = rearrange(probs, "b (r s) c -> b r s c", r=r, s=s)
        return probs, rearrange(sigma, "b (r s) -> b r s", r=r, s=s)

    def forward(
        self, planes: torch.Tensor, camera: torch.Tensor, generator: torch.Generator | None = None
    ) -> VolumeRenderOutput:
        """planes: [B,3,C,Hp,Wp] tri-plane features; camera: [B,25] EG3D camera.

        `generator` seeds the stochastic mode (ignored in deterministic mode). The composition equals
        `march_rays` over `merge_samples` of the coarse and fine samples, computed without sorting the
        colours (`composite_unsorted`) and with the decoder's colour affine map applied per ray.
        """
        cfg = self.config
        if planes.ndim != 5 or planes.shape[1] != 3 or planes.shape[2] != cfg.feature_dim:
            raise ValueError(f"planes must be [B,3,{cfg.feature_dim},H,W], got {tuple(planes.shape)}")
        if camera.shape != (planes.shape[0], 25):
            raise ValueError(f"camera must be [{planes.shape[0]},25], got {tuple(camera.shape)}")
        res = cfg.resolution
        origins, directions = rays_from_camera(camera.to(planes.dtype), res)  # BxRx3
        near, far, _ = ray_box_intersection(origins, directions, cfg.box_warp)
        near, far, hit = fill_missed_rays(near, far)
        depths_coarse = stratified_depths(near, far, cfg.num_samples_coarse, self.mode, generator)  # BxRxSc
        table = plane_table(planes)  # (B*3*Hp*Wp)xC

        rgb, depth, opacity, fine_all, lows, highs = [], [], [], [], [], []
        for start in range(0, res * res, self.chunk_rays):
            sl = slice(start, start + self.chunk_rays)
            o, d, z = origins[:, sl], directions[:, sl], depths_coarse[:, sl]
            probs, sigma = self._decode(table, planes.shape, o, d, z)
            colors: tuple[torch.Tensor, ...] = (probs,)
            order = None
            if cfg.num_samples_fine > 0:
                z_fine = importance_depths(z, interval_weights(sigma, z), cfg.num_samples_fine, self.mode, generator)
                probs_fine, sigma_fine = self._decode(table, planes.shape, o, d, z_fine)
                z, order = torch.sort(torch.cat([z, z_fine], -1), dim=-1)  # Bxrx(Sc+Sf)
                sigma = torch.cat([sigma, sigma_fine], -1).gather(-1, order)
                colors = (probs, probs_fine)
                fine_all.append(z_fine)
            w = interval_weights(sigma, z)  # Bxrx(S-1)
            if order is None:
                order = torch.arange(z.shape[-1], device=z.device).expand_as(z)
            acc = w.sum(-1)  # Bxr
            feat = composite_unsorted(w, order, colors) * RGB_SCALE + (RGB_OFFSET * acc)[..., None]  # BxrxC
            rgb.append(feat * 2 - 1)
            depth.append(expected_depth(w, z))
            opacity.append(acc)
            lows.append(z.min())
            highs.append(z.max())

        # the release clamps to the range of all sample depths of the batch, not of one chunk
        depth_map = torch.cat(depth, 1).clamp(torch.stack(lows).min(), torch.stack(highs).max())  # BxR
        return VolumeRenderOutput(
            feature_image=rearrange(torch.cat(rgb, 1), "b (h w) c -> b c h w", h=res),
            depth=rearrange(depth_map, "b (h w) -> b 1 h w", h=res),
            opacity=rearrange(torch.cat(opacity, 1), "b (h w) -> b 1 h w", h=res),
            depths_coarse=depths_coarse,
            depths_fine=torch.cat(fine_all, 1) if fine_all else None,
            ray_hit=hit,
        )


def remap_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official torso/secc2plane state dict -> `VolumeRenderer` state dict (the `decoder.*` keys).

    The official decoder keys (`decoder.net.{0,2}.{weight,bias}`) already match this module, so the
    mapping is a selection; other models' keys (e.g. `*.low_reso_encoder.decoder.*`) are ignored.
    """
    expected = ("decoder.net.0.weight", "decoder.net.0.bias", "decoder.net.2.weight", "decoder.net.2.bias")
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"official state dict lacks the tri-plane decoder keys {missing}; pass "
            "ckpt['state_dict']['model'] of a secc2plane / secc2plane_torso checkpoint"
        )
    return {k: v for k, v in state_dict.items() if k.startswith("decoder.")}
