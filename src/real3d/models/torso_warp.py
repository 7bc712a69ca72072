"""Warping torso network of HTB-SR (Real3D-Portrait, Ye et al. 2024, Sec. 3.3 "torso branch").

A face-vid2vid-style model (Wang et al. 2021) that animates the source torso from 4 driving landmarks:

1. `AppearanceFeatureExtractor`: torso RGB + neck/clothes masks -> 3-D volume [C,D,h,w]
   (multiplied by the dilated torso mask).
2. `MotionFieldEstimator`: keypoint heatmaps and keypoint-shifted copies of the compressed volume
   -> hourglass -> fused with an encoding of the rendered head (RGB + opacity) -> softmax over K+1
   motions -> deformation grid [D,h,w,3]; two occlusion maps (the second becomes the torso alpha).
3. `Generator`: warp the volume with `grid_sample`, spectral-norm conv/res/up blocks -> torso RGB and
   hidden features [64, 256, 256].
4. `occlusion_2_predictor`: refines the torso alpha at full resolution from the hidden features.

Checkpoint keys equal the official `superresolution.torso_model.*` keys (legacy spectral norm:
`weight_orig`, `weight_u`, `weight_v`; SyncBatchNorm stored as BatchNorm). Source-only work
(appearance volume, masks, compressed volume) is split into `encode_source` so a video computes it once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from real3d.config.htbsr import TorsoWarpConfig


class SNConv2d(nn.Module):
    """Conv2d with (legacy-format) spectral normalisation: effective weight = weight_orig / sigma,
    sigma = u^T W v with W = weight_orig viewed [out, -1]. Training mode runs one power iteration on u, v
    first (as `torch.nn.utils.spectral_norm`); eval mode uses the stored u, v."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.padding = padding
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_orig = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        # start u, v near the top singular pair so a freshly built module is already normalised in eval
        mat = self.weight_orig.detach().reshape(out_channels, -1)  # [out, in*k*k]
        u = F.normalize(torch.randn(out_channels), dim=0, eps=eps)
        for _ in range(20):
            v = F.normalize(mat.t() @ u, dim=0, eps=eps)
            u = F.normalize(mat @ v, dim=0, eps=eps)
        self.register_buffer("weight_u", u)
        self.register_buffer("weight_v", v)

    def sigma(self) -> torch.Tensor:
        """The spectral-norm estimate u^T W v (a 0-d tensor)."""
        mat = self.weight_orig.reshape(self.weight_orig.shape[0], -1)  # [out, in*k*k]
        u, v = self.weight_u, self.weight_v
        if self.training:
            with torch.no_grad():
                v = F.normalize(mat.t() @ u, dim=0, eps=self.eps)
                u = F.normalize(mat @ v, dim=0, eps=self.eps)
                self.weight_u.copy_(u)
                self.weight_v.copy_(v)
            u, v = u.clone(), v.clone()
        with torch.autocast(mat.device.type, enabled=False):  # float32 under autocast (dot needs one dtype)
            return torch.dot(u, mat @ v)

    def normalized_weight(self) -> torch.Tensor:
        """The normalised weight [out, in, k, k]."""
        return self.weight_orig / self.sigma()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H,W]."""
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class ConvBlock(nn.Module):
    """conv / BatchNorm / activation in the order of `pattern` ('CNA' or 'NAC'); keys `layers.{i}.*`."""

    def __init__(
        self,
        pattern: str,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int,
        spectral: bool = False,
        leaky: bool = False,
    ) -> None:
        super().__init__()
        norm_channels = out_channels if pattern.index("C") < pattern.index("N") else in_channels
        conv: nn.Module
        if spectral:
            if dim != 2:
                raise ValueError("spectral norm is only used on 2-D convs")
            conv = SNConv2d(in_channels, out_channels, kernel_size, padding)
        else:
            conv = (nn.Conv2d if dim == 2 else nn.Conv3d)(in_channels, out_channels, kernel_size, 1, padding)
        parts = {
            "C": conv,
            "N": (nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d)(norm_channels),
            "A": nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True),  # on a fresh C or N output
        }
        self.layers = nn.Sequential(*[parts[c] for c in pattern])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,(D,)H,W] -> [B,Cout,(D,)H,W]."""
        return self.layers(x)


class ResBlock(nn.Module):
    """x + (BN-ReLU-conv)^2 (x); keys `layers.{0,1}.layers.{0: bn, 2: conv}`."""

    def __init__(self, dim: int, channels: int, spectral: bool = False) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ConvBlock("NAC", dim, channels, channels, 3, 1, spectral),
            ConvBlock("NAC", dim, channels, channels, 3, 1, spectral),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,C,(D,)H,W] -> same shape."""
        return x + self.layers(x)


class DownBlock(nn.Module):
    """conv-BN-ReLU then 2x average pooling over H and W; keys `layers.0.layers.*`."""

    def __init__(self, dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        pool = nn.AvgPool2d((2, 2)) if dim == 2 else nn.AvgPool3d((1, 2, 2))
        self.layers = nn.Sequential(ConvBlock("CNA", dim, in_channels, out_channels, 3, 1), pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,(D,)H,W] -> [B,Cout,(D,)H/2,W/2]."""
        return self.layers(x)


class UpBlock(nn.Module):
    """2x nearest upsampling over H and W then conv-BN-ReLU; keys `layers.1.layers.*`."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, spectral: bool = False) -> None:
        super().__init__()
        scale = (2.0, 2.0) if dim == 2 else (1.0, 2.0, 2.0)
        self.layers = nn.Sequential(
            nn.Upsample(scale_factor=scale, mode="nearest"),
            ConvBlock("CNA", dim, in_channels, out_channels, 3, 1, spectral),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,(D,)H,W] -> [B,Cout,(D,)2H,2W]."""
        return self.layers(x)


class AppearanceFeatureExtractor(nn.Module):
    """[B,5,256,256] -> 7x7 conv -> 2 down blocks -> 1x1 conv to C*D -> view [B,C,D,64,64] -> 3-D res blocks."""

    def __init__(self, cfg: TorsoWarpConfig) -> None:
        super().__init__()
        ch = cfg.appearance_channels
        self.channels, self.depth = cfg.feature_channels, cfg.feature_depth
        self.in_conv = ConvBlock("CNA", 2, cfg.in_channels, ch[0], 7, 3)
        self.down = nn.Sequential(*[DownBlock(2, ch[i], ch[i + 1]) for i in range(len(ch) - 1)])
        self.mid_conv = nn.Conv2d(ch[-1], self.channels * self.depth, 1)
        self.res = nn.Sequential(*[ResBlock(3, self.channels) for _ in range(cfg.appearance_res_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,C,D,h,w]."""
        x = self.mid_conv(self.down(self.in_conv(x)))  # [B, C*D, h, w]
        b, _, h, w = x.shape
        x = x.reshape(b, self.channels, self.depth, h, w)  # B x (C D) x h x w -> B x C x D x h x w
        return self.res(x)


def coordinate_grid_3d(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """[D,H,W,3] grid of (x, y, z) in [-1, 1] (align_corners=True convention; x along W, y along H)."""

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, device=like.device, dtype=like.dtype) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def fuse_depth_constant(conv: nn.Conv3d, x: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
    """`conv(cat([x, const repeated over depth], 1))` for a stride-1, zero-padded 'same' Conv3d.

    x: [B,Cx,D,h,w]; const: [B,Cc,h,w] -> [B,Cout,D,h,w]. A depth-constant input contributes, at output
    depth d, a 2-D convolution with the kernel summed over the depth taps that land inside [0, D); there are
    at most kd distinct tap ranges, so the constant channels cost one 2-D convolution instead of D times kd
    3-D kernel slices (equal up to float rounding)."""
    b, cx, d = x.shape[:3]
    kd, kh, kw = conv.kernel_size
    pd, ph, pw = conv.padding  # type: ignore[misc]
    if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1 or 2 * pd != kd - 1:
        return conv(torch.cat([x, const.unsqueeze(2).expand(-1, -1, d, -1, -1)], dim=1))
    w = conv.weight
    y = F.conv3d(x, w[:, :cx], conv.bias, padding=conv.padding)  # [B,Cout,D,h,w]
    ranges = [(max(0, pd - i), min(kd, d + pd - i)) for i in range(d)]  # valid taps per output depth
    distinct = sorted(set(ranges))
    wc = w[:, cx:]  # [Cout,Cc,kd,kh,kw]
    kernels = torch.cat([wc[:, :, lo:hi].sum(2) for lo, hi in distinct])  # [n*Cout,Cc,kh,kw]
    part = F.conv2d(const.to(y.dtype), kernels.to(y.dtype), padding=(ph, pw))  # [B,n*Cout,h,w]
    part = part.reshape(b, len(distinct), -1, *part.shape[2:])  # [B,n,Cout,h,w]
    idx = torch.tensor([distinct.index(r) for r in ranges], device=part.device)  # [D]
    return y + part[:, idx].transpose(1, 2)  # [B,D,Cout,h,w] -> [B,Cout,D,h,w]


class MotionFieldEstimator(nn.Module):
    """Dense 3-D motion from K keypoint pairs (FOMM / face-vid2vid), conditioned on the rendered head."""

    def __init__(self, cfg: TorsoWarpConfig) -> None:
        super().__init__()
        k = cfg.num_keypoints
        self.kp_variance = cfg.kp_variance
        in_ch = cfg.feature_channels + 2  # appearance volume + neck/clothes masks
        hg_in = (k + 1) * (cfg.compressed_channels + 1)
        down = (hg_in, *cfg.hourglass_channels)
        up = (*cfg.hourglass_channels[::-1], cfg.hourglass_out_channels)
        hid = cfg.head_channels
        self.compress = nn.Conv3d(in_ch, cfg.compressed_channels, 1)
        self.down = nn.Sequential(*[DownBlock(3, down[i], down[i + 1]) for i in range(len(down) - 1)])
        self.up = nn.Sequential(*[UpBlock(3, up[i], up[i + 1]) for i in range(len(up) - 1)])
        self.tgt_head_encoder = nn.Sequential(
            ConvBlock("CNA", 2, 3 + 1, hid, 7, 3), *[ResBlock(2, hid) for _ in range(cfg.head_res_blocks)]
        )
        self.tgt_head_fuser = nn.Conv3d(hid + hg_in + up[-1], hid, 7, 1, 3)
        self.mask_conv = nn.Conv3d(hid, k + 1, 7, 1, 3)
        self.occlusion_conv = nn.Conv2d(hid * cfg.feature_depth, 1, 7, 1, 3)
        self.occlusion_conv2 = nn.Conv2d(hid * cfg.feature_depth, 1, 7, 1, 3)

    def heatmaps(self, kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """kp: [B,K,3], grid: [D,H,W,3] -> Gaussians [B,K,D,H,W]."""
        diff = grid[None, None] - kp[:, :, None, None, None, :]  # [B,K,D,H,W,3]
        return torch.exp(-0.5 * diff.square().sum(-1) / self.kp_variance)

    def forward(
        self,
        fs_compressed: torch.Tensor,
        kp_s: torch.Tensor,
        kp_d: torch.Tensor,
        head_rgb: torch.Tensor,
        head_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fs_compressed: [B,4,D,h,w] (`compress` of the source volume), kp_s/kp_d: [B,K,3] in [-1,1],
        head_rgb: [B,3,R,R], head_weights: [B,1,R,R]
        -> (deformation [B,D,h,w,3], occlusion [B,1,h,w], occlusion_2 [B,1,h,w])."""
        b, c, d, h, w = fs_compressed.shape
        k = kp_s.shape[1]
        grid = coordinate_grid_3d(d, h, w, fs_compressed)  # [D,H,W,3]
        heat = self.heatmaps(kp_d, grid) - self.heatmaps(kp_s, grid)  # [B,K,D,H,W]
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)  # background channel first
        # identity rotations: driving->source motion of keypoint k is grid - kp_d[k] + kp_s[k]
        shifted = grid[None, None] - kp_d[:, :, None, None, None, :] + kp_s[:, :, None, None, None, :]  # [B,K,D,H,W,3]
        sparse_motion = torch.cat([grid.expand(b, 1, d, h, w, 3), shifted], dim=1)  # [B,K+1,D,H,W,3]
        src = fs_compressed.unsqueeze(1).expand(b, k + 1, c, d, h, w)  # [B,K+1,c,D,h,w]
        src = src.reshape(b * (k + 1), c, d, h, w)  # [B*(K+1),c,D,h,w]
        grids = sparse_motion.reshape(b * (k + 1), d, h, w, 3)  # [B*(K+1),D,h,w,3]
        deformed = F.grid_sample(src, grids, align_corners=True)  # [B*(K+1),c,D,h,w]
        deformed = deformed.reshape(b, k + 1, c, d, h, w)  # [B,K+1,c,D,h,w]
        # per motion k: (heatmap, c deformed channels), then flattened: [B,K+1,1+c,D,h,w] -> [B,(K+1)(1+c),D,h,w]
        inp = torch.cat([heat.unsqueeze(2), deformed], dim=2).reshape(b, (k + 1) * (c + 1), d, h, w)
        x = torch.cat([inp, self.up(self.down(inp))], dim=1)  # [B, hg_in + hg_out, D, h, w]

        head = torch.cat([head_rgb, head_weights], dim=1)  # [B,4,R,R]
        r = head.shape[-1]
        head = F.interpolate(head, size=(r // 2, r // 2), mode="bilinear", align_corners=False)
        head = F.interpolate(self.tgt_head_encoder(head), size=(h, w), mode="bilinear", align_corners=False)
        # tgt_head_fuser(cat([x, head repeated over D])), with the head part done once instead of D times
        x = fuse_depth_constant(self.tgt_head_fuser, x, head)  # [B,hid,D,h,w]

        mask = F.softmax(self.mask_conv(x), dim=1).unsqueeze(-1)  # [B,K+1,D,h,w,1]
        deformation = (sparse_motion * mask).sum(dim=1)  # [B,D,h,w,3]
        x2d = x.reshape(b, -1, h, w)  # B x hid x D x h x w -> B x (hid D) x h x w
        # both occlusion convs in one call (they read the same input; one output channel each)
        convs = (self.occlusion_conv, self.occlusion_conv2)
        weight, bias = torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs])
        occlusion, occlusion_2 = torch.sigmoid(F.conv2d(x2d, weight, bias, padding=convs[0].padding)).split(1, dim=1)
        return deformation, occlusion, occlusion_2


class Generator(nn.Module):
    """Warp the appearance volume and decode it: SN conv-BN-lrelu, 1x1 conv, SN res blocks, SN up blocks, 7x7 RGB."""

    def __init__(self, cfg: TorsoWarpConfig) -> None:
        super().__init__()
        ch = cfg.generator_channels
        cd = cfg.feature_channels * cfg.feature_depth
        self.in_conv = ConvBlock("CNA", 2, cd, ch[0], 3, 1, spectral=True, leaky=True)
        self.mid_conv = nn.Conv2d(ch[0], ch[0], 1)
        self.res = nn.Sequential(*[ResBlock(2, ch[0], spectral=True) for _ in range(cfg.generator_res_blocks)])
        self.up = nn.Sequential(*[UpBlock(2, ch[i], ch[i + 1], spectral=True) for i in range(len(ch) - 1)])
        self.out_conv = nn.Conv2d(ch[-1], 3, 7, 1, 3)

    def forward(self, fs: torch.Tensor, deformation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fs: [B,C,D,h,w], deformation: [B,D,h,w,3] -> (rgb [B,3,H,W], hidden [B,ch[-1],H,W])."""
        b, _, _, h, w = fs.shape
        warped = F.grid_sample(fs, deformation, align_corners=True, padding_mode="border")  # [B,C,D,h,w]
        x = warped.reshape(b, -1, h, w)  # B x C x D x h x w -> B x (C D) x h x w
        x = x.contiguous(memory_format=torch.channels_last)  # NHWC: faster oneDNN convolutions
        hid = self.up(self.res(self.mid_conv(self.in_conv(x))))
        return self.out_conv(hid), hid


def dilate(mask: torch.Tensor, ksize: int) -> torch.Tensor:
    """Max-pool dilation with reflect padding. mask: [B,1,H,W] -> same shape."""
    pad = (ksize - 1) // 2
    return F.max_pool2d(F.pad(mask, [pad, pad, pad, pad], mode="reflect"), kernel_size=ksize, stride=1)


def scale_grad(x: torch.Tensor, s: float) -> torch.Tensor:
    """Identity forward (up to 1 ulp), gradient times `s`: s*x + (1-s)*x.detach() as in the release."""
    return x * s + x.detach() * (1 - s)


@dataclass
class TorsoSource:
    """Per-source torso features (depend only on the source torso image and segmentation)."""

    appearance_raw: torch.Tensor
    """[B,C,D,h,w] appearance volume before the torso-mask multiplication."""
    appearance: torch.Tensor
    """[B,C,D,h,w] appearance volume times the dilated torso mask (what the generator warps)."""
    compressed: torch.Tensor
    """[B,4,D,h,w] `compress(cat(appearance, masks))`, the motion-estimator source volume."""

    def expand(self, batch: int) -> TorsoSource:
        """Broadcast a batch-1 source to `batch` frames."""
        if self.appearance.shape[0] == batch:
            return self
        if self.appearance.shape[0] != 1:
            raise ValueError(f"cannot broadcast a torso source of batch {self.appearance.shape[0]} to {batch}")
        parts = (self.appearance_raw, self.appearance, self.compressed)
        return TorsoSource(*(t.expand(batch, *t.shape[1:]) for t in parts))


@dataclass
class TorsoWarpOutput:
    """Outputs of `TorsoWarp.forward`."""

    rgb: torch.Tensor
    """[B,3,R,R] warped torso RGB (generator output, unclamped)."""
    hidden: torch.Tensor
    """[B,64,R,R] generator hidden features (`deformed_torso_hid`)."""
    deformation: torch.Tensor
    """[B,D,h,w,3] motion field, a `grid_sample` grid (align_corners=True)."""
    occlusion: torch.Tensor
    """[B,1,h,w] first occlusion map (returned; unused downstream)."""
    occlusion_2_pre: torch.Tensor
    """[B,1,h,w] torso alpha from the motion estimator, before the refining predictor."""
    occlusion_2: torch.Tensor
    """[B,1,R,R] refined torso alpha in (0,1)."""


class TorsoWarp(nn.Module):
    """The official `WarpBasedTorsoModelMediaPipe('standard')` (v2, `rgb_alpha` input, 4 keypoints)."""

    def __init__(self, cfg: TorsoWarpConfig) -> None:
        super().__init__()
        self.config = cfg
        self.appearance_extractor = AppearanceFeatureExtractor(cfg)
        self.motion_field_estimator = MotionFieldEstimator(cfg)
        self.deform_based_generator = Generator(cfg)
        hid, oh = cfg.generator_channels[-1], cfg.occlusion_hidden
        self.occlusion_2_predictor = nn.Sequential(
            nn.Conv2d(hid + 1, oh, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(oh, oh, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(oh, 1, 3, 1, 1),
            nn.Sigmoid(),
        )

    def encode_source(self, torso_img: torch.Tensor, segmap: torch.Tensor) -> TorsoSource:
        """torso_img: [B,3,R,R] in [-1,1]; segmap: [B,6,S,S] one-hot float (channels 2 = neck, 4 = clothes)."""
        cfg = self.config
        r, fr = cfg.resolution, cfg.feature_resolution
        if torso_img.shape[-2:] != (r, r):
            raise ValueError(f"torso image must be [B,3,{r},{r}], got {list(torso_img.shape)}")
        body = segmap[:, [2, 4]].float()
        body_r = F.interpolate(body, size=(r, r), mode="bilinear", align_corners=False)
        raw = self.appearance_extractor(torch.cat([torso_img, body_r], dim=1))  # [B,C,D,h,w]
        body_f = F.interpolate(body, size=(fr, fr), mode="bilinear", align_corners=False)  # [B,2,h,w]
        mask = dilate(body_f.sum(dim=1, keepdim=True), cfg.mask_dilate_ksize)  # [B,1,h,w]
        feats = raw * mask.unsqueeze(1)
        masks = body_f.unsqueeze(2).expand(-1, -1, feats.shape[2], -1, -1)  # [B,2,h,w] -> [B,2,D,h,w]
        motion_in = torch.cat([feats, masks], dim=1)  # [B,C+2,D,h,w]
        return TorsoSource(raw, feats, self.motion_field_estimator.compress(motion_in))

    def forward(
        self,
        source: TorsoSource,
        kp_s: torch.Tensor,
        kp_d: torch.Tensor,
        head_rgb: torch.Tensor,
        head_weights: torch.Tensor,
    ) -> TorsoWarpOutput:
        """kp_s/kp_d: [B,68,3] landmarks in [-1,1] (z = 0); head_rgb: [B,3,R,R] rendered head;
        head_weights: [B,1,R,R] its opacity."""
        cfg = self.config
        idx = list(cfg.keypoint_indices)
        source = source.expand(kp_s.shape[0])
        deformation, occlusion, occlusion_2 = self.motion_field_estimator(
            source.compressed, kp_s[:, idx], kp_d[:, idx], head_rgb, head_weights
        )
        deformation = scale_grad(deformation, cfg.grad_scale)
        occlusion = scale_grad(occlusion, cfg.grad_scale)
        occlusion_2 = scale_grad(occlusion_2, cfg.grad_scale)
        rgb, hid = self.deform_based_generator(source.appearance, deformation)
        up = F.interpolate(occlusion_2, size=hid.shape[-2:], mode="bilinear", align_corners=False)
        refined = self.occlusion_2_predictor(torch.cat([hid, up], dim=1))
        return TorsoWarpOutput(rgb, hid, deformation, occlusion, occlusion_2, refined)
