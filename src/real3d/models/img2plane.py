"""Img2Plane (I2P): a source portrait to a canonical tri-plane (Real3D-Portrait, paper §3.1).

The paper's image-to-plane model, as released (official-architecture §2.3.1, §8.3):

1. The head-only image [B,3,H,W] gets two positional channels (row/H, col/H in [0,1)).
2. DeepLabV3 with a ResNet-34 encoder at output stride 8 (layer3/layer4 dilated 2/4) and an ASPP
   decoder **without BatchNorm** gives low-resolution features [B,256,H/8,W/8].
3. `LowResolutionViT`: stride-2 overlapping patch embedding to `vit_dim` tokens, 5 SegFormer blocks
   (sr 1), PixelShuffle(2), two (bilinear x2 align_corners=True, conv3, ReLU) stages, conv3 -> 96 at H/2.
4. `HighResoEncoder`: conv7/2 stem (no activation) then 4 x (conv3, LeakyReLU 0.01) and conv3 -> 96 at H/2.
5. `TriplanePredictorViT`: concatenation, two conv3+LeakyReLU, stride-2 patch embedding, 1 SegFormer
   block (sr 2), PixelShuffle(2), skip-concatenation with the low-res features, three conv3+LeakyReLU,
   conv3 -> 3*32 channels.
6. Reshape to [B,3,32,H/2,W/2] and flip: planes 0 and 1 along H, plane 2 along H and W
   (`triplanes_from_features`). The planes are sampled as (x,y), (x,z), (z,x) by the renderer.

The canonical planes depend only on the source image: compute them once per source and cache them.
Submodule names equal the official `cano_img2plane_backbone.*` names (see `remap_official_state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from real3d.config.img2plane import Img2PlaneConfig
from real3d.errors import InputError
from real3d.layers.segformer import Block, OverlapPatchEmbed
from real3d.state_dict import select_prefix

OFFICIAL_PREFIX = "cano_img2plane_backbone."


def triplanes_from_features(feat: torch.Tensor, plane_channels: int) -> torch.Tensor:
    """Backbone output to tri-planes with the official flips.

    feat: [B, 3*C, H, W] -> [B, 3, C, H, W]; plane 0 (xy) and plane 1 (xz) flipped along H,
    plane 2 (zx) along H and W. Returns a new tensor (one full copy plus a third for plane 2).
    """
    planes = rearrange(feat, "b (k c) h w -> b k c h w", k=3, c=plane_channels).flip(-2)
    planes[:, 2] = planes[:, 2].flip(-1)
    return planes


def remap_official_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Select the I2P tensors of an official torso/head generator state dict and strip their prefix.

    sd: `torch.load(ckpt)["state_dict"]["model"]` of `secc2plane(_torso)`. Keys under
    `cano_img2plane_backbone.` map one-to-one onto `Img2Plane(Img2PlaneConfig.official())`.
    """
    return select_prefix(sd, OFFICIAL_PREFIX)


# --------------------------------------------------------------------------------------------
# DeepLabV3 (ResNet-34, output stride 8, ASPP without BatchNorm)


class BasicBlock(nn.Module):
    """ResNet basic block; `dilation` > 1 replaces the stride everywhere in the block (output stride 8)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        needs_projection = stride != 1 or in_ch != out_ch  # decided before dilation removes the stride
        if dilation > 1:
            stride = 1
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if needs_projection:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H/stride,W/stride]."""
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + skip)


class ResNetEncoder(nn.Module):
    """ResNet stem + 4 stages; layer3/layer4 dilated (2, 4) for output stride 8. Returns the layer4 map."""

    def __init__(self, in_ch: int, blocks: tuple[int, ...], widths: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, widths[0], 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        prev = widths[0]
        for i, (n, width, stride, dilation) in enumerate(zip(blocks, widths, (1, 2, 2, 2), (1, 1, 2, 4))):
            layer = nn.Sequential(
                *(BasicBlock(prev if j == 0 else width, width, stride if j == 0 else 1, dilation) for j in range(n))
            )
            self.add_module(f"layer{i + 1}", layer)
            prev = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,widths[-1],H/8,W/8]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _ASPPPooling(nn.Sequential):
    """Image-pooling ASPP branch: global average -> 1x1 conv -> ReLU -> broadcast back to H x W."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H,W]."""
        return super().forward(x).expand(-1, -1, *x.shape[-2:])  # bilinear resize of a 1x1 map = broadcast


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (1x1, three dilated 3x3, image pooling), BN-free, then a 1x1 projection."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.ReLU(inplace=True))]
        for r in rates:
            conv = nn.Conv2d(in_ch, out_ch, 3, padding=r, dilation=r, bias=False)
            branches.append(nn.Sequential(conv, nn.ReLU(inplace=True)))
        branches.append(_ASPPPooling(in_ch, out_ch))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_ch, out_ch, 1, bias=False), nn.ReLU(inplace=True), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H,W]."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3(nn.Module):
    """ResNet encoder + (ASPP, conv3 without bias/BN/activation) decoder."""

    def __init__(self, cfg: Img2PlaneConfig, in_ch: int) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(in_ch, cfg.resnet_blocks, cfg.resnet_widths)
        c = cfg.aspp_channels
        self.decoder = nn.Sequential(
            ASPP(cfg.resnet_widths[-1], c, cfg.atrous_rates), nn.Conv2d(c, c, 3, padding=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,aspp_channels,H/8,W/8]."""
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------------------------
# The two ViTs and the high-resolution CNN


def _up2(x: torch.Tensor) -> torch.Tensor:
    """`nn.UpsamplingBilinear2d(scale_factor=2)`: bilinear x2 with align_corners=True."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class LowResolutionViT(nn.Module):
    """SegFormer blocks on the DeepLabV3 features, then upsampling to half the input resolution."""

    def __init__(self, cfg: Img2PlaneConfig) -> None:
        super().__init__()
        d = cfg.vit_dim
        self.num_blocks = cfg.low_res_blocks
        self.patch_embed = OverlapPatchEmbed(cfg.aspp_channels, d, patch_size=3, stride=2)
        for i in range(1, self.num_blocks + 1):
            self.add_module(f"block{i}", Block(d, cfg.vit_heads, cfg.vit_mlp_ratio, sr_ratio=1, eps=cfg.ln_eps))
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_after_upsample1 = nn.Conv2d(d // 4, cfg.low_res_hidden, 3, padding=1)
        self.conv_after_upsample2 = nn.Conv2d(cfg.low_res_hidden, cfg.low_res_hidden, 3, padding=1)
        self.final_conv = nn.Conv2d(cfg.low_res_hidden, cfg.feature_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,256,h,w] (h = H/8) -> [B,96,4h,4w]."""
        tokens, h, w = self.patch_embed(x)  # B x (h/2*w/2) x 1024
        for i in range(1, self.num_blocks + 1):
            tokens = getattr(self, f"block{i}")(tokens, h, w)
        y = self.pixel_shuffle(rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w))  # B x 256 x h x w
        y = F.relu(self.conv_after_upsample1(_up2(y)), inplace=True)  # B x 128 x 2h x 2w
        y = F.relu(self.conv_after_upsample2(_up2(y)), inplace=True)  # B x 128 x 4h x 4w
        return self.final_conv(y)


class HighResoEncoder(nn.Module):
    """Plain CNN on the full-resolution input: conv7/2 stem (no activation), conv3+LeakyReLU layers, conv3."""

    def __init__(self, cfg: Img2PlaneConfig, in_ch: int) -> None:
        super().__init__()
        c = cfg.feature_channels
        self.first = nn.Conv2d(in_ch, cfg.high_res_stem, 7, 2, padding=3)
        layers: list[nn.Module] = []
        for i in range(cfg.high_res_layers):
            layers += [nn.Conv2d(cfg.high_res_stem if i == 0 else c, c, 3, padding=1), nn.LeakyReLU(0.01, inplace=True)]
        self.conv_layers = nn.Sequential(*layers)
        self.final = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,5,H,W] -> [B,96,H/2,W/2]."""
        return self.final(self.conv_layers(self.first(x)))


class TriplanePredictorViT(nn.Module):
    """Fuses low- and high-resolution features with SegFormer blocks into the 3*C plane channels."""

    def __init__(self, cfg: Img2PlaneConfig) -> None:
        super().__init__()
        d, f = cfg.vit_dim, cfg.feature_channels
        h1, h2 = cfg.triplane_hidden
        a1, a2, a3 = cfg.triplane_after_cat
        self.num_blocks = cfg.triplane_blocks
        self.first_conv = nn.Conv2d(2 * f, h1, 3, padding=1)
        self.second_conv = nn.Conv2d(h1, h2, 3, padding=1)
        self.patch_embed = OverlapPatchEmbed(h2, d, patch_size=3, stride=2)
        for i in range(1, self.num_blocks + 1):
            block = Block(d, cfg.vit_heads, cfg.vit_mlp_ratio, sr_ratio=cfg.triplane_sr_ratio, eps=cfg.ln_eps)
            self.add_module(f"block{i}", block)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.first_conv_after_cat = nn.Conv2d(d // 4 + f, a1, 3, padding=1)
        self.second_conv_after_cat = nn.Conv2d(a1, a2, 3, padding=1)
        self.third_conv_after_cat = nn.Conv2d(a2, a3, 3, padding=1)
        self.final_conv = nn.Conv2d(a3, 3 * cfg.plane_channels, 3, padding=1)

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor) -> torch.Tensor:
        """x_low, x_high: [B,96,h,w] (h = H/2) -> [B,3*C,h,w]."""
        y = F.leaky_relu(self.first_conv(torch.cat([x_low, x_high], dim=1)), 0.01, inplace=True)
        y = F.leaky_relu(self.second_conv(y), 0.01, inplace=True)  # B x 128 x h x w
        tokens, th, tw = self.patch_embed(y)  # B x (h/2*w/2) x 1024
        for i in range(1, self.num_blocks + 1):
            tokens = getattr(self, f"block{i}")(tokens, th, tw)
        y = self.pixel_shuffle(rearrange(tokens, "b (h w) c -> b c h w", h=th, w=tw))  # B x 256 x h x w
        y = torch.cat([y, x_low], dim=1)  # B x 352 x h x w
        y = F.leaky_relu(self.first_conv_after_cat(y), 0.01, inplace=True)
        y = F.leaky_relu(self.second_conv_after_cat(y), 0.01, inplace=True)
        y = F.leaky_relu(self.third_conv_after_cat(y), 0.01, inplace=True)
        return self.final_conv(y)


# --------------------------------------------------------------------------------------------


class Img2Plane(nn.Module):
    """Source image -> canonical tri-plane (paper §3.1, "I2P"). Built from `Img2PlaneConfig`; no I/O."""

    def __init__(self, config: Img2PlaneConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or Img2PlaneConfig.official()
        in_ch = cfg.image_channels + 2  # + row/col positional grid
        self.low_reso_encoder = DeepLabV3(cfg, in_ch)
        self.high_reso_encoder = HighResoEncoder(cfg, in_ch)
        self.low_reso_vit = LowResolutionViT(cfg)
        self.triplane_predictor_vit = TriplanePredictorViT(cfg)

    def _check_input(self, img: torch.Tensor) -> None:
        c = self.config.image_channels
        if img.ndim != 4 or img.shape[1] != c:
            raise InputError(f"Img2Plane expects an image batch [B,{c},H,W], got shape {tuple(img.shape)}")
        h, w = img.shape[-2:]
        if h % 16 or w % 16:
            raise InputError(f"Img2Plane needs H and W divisible by 16 (the release uses 512x512), got {h}x{w}")

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """img: [B,3,H,W] in [-1,1] -> plane features before the reshape, [B,3*C,H/2,W/2]."""
        self._check_input(img)
        b, _, h, w = img.shape
        rows = (torch.arange(h, device=img.device, dtype=img.dtype) / h).view(1, 1, h, 1).expand(b, 1, h, w)
        cols = (torch.arange(w, device=img.device, dtype=img.dtype) / h).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([img, rows, cols], dim=1)  # B x 5 x H x W
        feat_low = self.low_reso_vit(self.low_reso_encoder(x))  # B x 96 x H/2 x W/2
        feat_high = self.high_reso_encoder(x)  # B x 96 x H/2 x W/2
        return self.triplane_predictor_vit(feat_low, feat_high)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img: [B,3,H,W] head-only image in [-1,1] (background -1) -> planes [B,3,C,H/2,W/2]."""
        return triplanes_from_features(self.features(img), self.config.plane_channels)
