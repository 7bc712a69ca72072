"""EG3D's dual discriminator with camera conditioning and lazy R1 (training only).

Chan et al., "Efficient Geometry-aware 3D Generative Adversarial Networks" (EG3D, CVPR 2022), Sec. 4.2
"dual discrimination": the final image and the raw neural rendering (bilinearly upsampled to the final
size) are concatenated into 6 channels and judged by one StyleGAN2 residual discriminator (Karras et al.,
"Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020, Fig. 7c) conditioned on the camera
through a projection of a mapped camera embedding (StyleGAN2-ADA's conditional discriminator). Real3D-
Portrait (Ye et al., ICLR 2024, App. B) trains its generator against it in every image stage, with R1
on the real pairs applied lazily every 16 steps (Mescheder et al. 2018; StyleGAN2 Sec. 3.1).

Blocks: fromRGB (1x1) at the first resolution, then per resolution two 3x3 convs (the second one
blurred and strided, FIR [1,3,3,1]) plus a 1x1 strided skip, summed with gain sqrt(1/2); the 4x4
epilogue adds minibatch-stddev, a 3x3 conv, a dense layer and the projection onto the camera embedding.
What differs from the official training code: no fp16 blocks (autocast covers reduced precision), and
the input is not clamped here (the stage clamps both inputs to [-1,1] as the official task does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from real3d.layers.equalized import (
    EqualizedConv2d,
    EqualizedLinear,
    bias_act,
    fir_filter,
)
from real3d.layers.stylegan2 import upfirdn2d


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of the dual discriminator."""

    img_resolution: int = 512
    """Side of the final image (the raw image is upsampled to it)."""
    img_channels: int = 6
    """Input channels: RGB of the final image + RGB of the raw rendering."""
    c_dim: int = 25
    """Camera condition size (EG3D camera: c2w 16 + K 9); 0 = unconditional."""
    channel_base: int = 32768
    """Channels at resolution r are min(channel_base // r, channel_max)."""
    channel_max: int = 512
    """Most channels of any block."""
    cmap_dim: int | None = None
    """Camera-embedding size (None = the 4x4 block's channels)."""
    mapping_layers: int = 8
    """Layers of the camera mapping network (StyleGAN2-ADA's default)."""
    mbstd_group: int = 4
    """Minibatch-stddev group size (clamped to the batch)."""
    c_noise_std: float = 1.0
    """Std of the Gaussian noise added to the camera condition in training (official `disc_c_noise`)."""

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @classmethod
    def official(cls) -> DiscriminatorConfig:
        """EG3D FFHQ-512 sizes (the official stage-2/3 discriminator)."""
        return cls()

    @classmethod
    def tiny(cls, img_resolution: int = 32) -> DiscriminatorConfig:
        """Test size: a few thousand parameters."""
        return cls(
            img_resolution=img_resolution,
            channel_base=128,
            channel_max=16,
            mapping_layers=2,
        )


class _DownConv(nn.Module):
    """Blur (FIR [1,3,3,1]) then a stride-2 conv, StyleGAN2 `Conv2dLayer(down=2)`."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, activation: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.register_buffer("resample_filter", fir_filter())
        self.activation = activation
        self.gain = 1.0 / math.sqrt(cin * kernel * kernel)
        p = (4 - 2) + (kernel - 1)
        self.pad = ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = upfirdn2d(x, self.resample_filter.to(x.dtype), padding=self.pad)
        x = F.conv2d(x, (self.weight * self.gain).to(x.dtype), stride=2)
        x = bias_act(x, self.bias, self.activation)  # type: ignore[arg-type]
        return x * gain if gain != 1.0 else x


class DiscriminatorBlock(nn.Module):
    """Residual block res -> res/2 (fromRGB at the first one)."""

    def __init__(self, cin: int, ctmp: int, cout: int, img_channels: int) -> None:
        super().__init__()
        self.fromrgb = EqualizedConv2d(img_channels, ctmp, 1, activation="lrelu") if cin == 0 else None
        self.conv0 = EqualizedConv2d(ctmp, ctmp, 3, activation="lrelu")
        self.conv1 = _DownConv(ctmp, cout, 3, bias=True, activation="lrelu")
        self.skip = _DownConv(ctmp, cout, 1, bias=False, activation="linear")

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        assert x is not None
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class CameraMapping(nn.Module):
    """Camera condition -> embedding: normalise (2nd moment), then `layers` lrelu dense layers."""

    def __init__(self, c_dim: int, out_dim: int, layers: int) -> None:
        super().__init__()
        self.embed = EqualizedLinear(c_dim, out_dim)
        self.net = nn.ModuleList(
            [EqualizedLinear(out_dim, out_dim, activation="lrelu", lr_multiplier=0.01) for _ in range(layers)]
        )

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = self.embed(c)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.net:
            x = layer(x)
        return x


class Epilogue(nn.Module):
    """4x4: minibatch stddev, conv, dense, then the projection onto the camera embedding."""

    def __init__(self, channels: int, cmap_dim: int, mbstd_group: int) -> None:
        super().__init__()
        self.mbstd_group = mbstd_group
        self.conv = EqualizedConv2d(channels + 1, channels, 3, activation="lrelu")
        self.fc = EqualizedLinear(channels * 16, channels, activation="lrelu")
        self.out = EqualizedLinear(channels, cmap_dim)

    def minibatch_std(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        while b % g:
            g -= 1
        y = rearrange(x, "(g m) c h w -> g m c h w", g=g)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # M x C x H x W
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)  # M x 1 x 1 x 1
        y = y.repeat(g, 1, h, w)  # B x 1 x H x W
        return torch.cat([x, y], 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(self.minibatch_std(x))
        x = self.out(self.fc(x.flatten(1)))  # B x cmap_dim
        if cmap is None:
            return x[:, :1]
        return (x * cmap).sum(1, keepdim=True) / math.sqrt(cmap.shape[1])


class DualDiscriminator(nn.Module):
    """D(image [B,3,R,R], image_raw [B,3,r,r], camera [B,25]) -> logits [B,1]."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DiscriminatorConfig()
        res_log2 = int(math.log2(cfg.img_resolution))
        if 2**res_log2 != cfg.img_resolution or cfg.img_resolution < 8:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {cfg.img_resolution}")
        resolutions = [2**i for i in range(res_log2, 2, -1)]
        cmap_dim = cfg.cmap_dim or cfg.channels(4)
        self.blocks = nn.ModuleList()
        cin = 0
        for res in resolutions:
            ctmp = cfg.channels(res) if cin == 0 else cin
            cout = cfg.channels(res // 2)
            self.blocks.append(DiscriminatorBlock(cin, ctmp, cout, cfg.img_channels))
            cin = cout
        self.mapping = CameraMapping(cfg.c_dim, cmap_dim, cfg.mapping_layers) if cfg.c_dim > 0 else None
        self.epilogue = Epilogue(cfg.channels(4), cmap_dim, cfg.mbstd_group)

    def forward(
        self,
        image: torch.Tensor,
        image_raw: torch.Tensor,
        camera: torch.Tensor | None = None,
        c_noise: float | None = None,
    ) -> torch.Tensor:
        """image: [B,3,R,R]; image_raw: [B,3,r,r] (upsampled to R here); camera: [B,c_dim].
        c_noise: std of Gaussian noise added to the camera (default `config.c_noise_std` in train mode, 0 in eval)."""
        r = self.config.img_resolution
        if image.shape[-1] != r:
            raise ValueError(f"the discriminator expects {r}x{r} images, got {tuple(image.shape)}")
        raw = F.interpolate(
            image_raw,
            size=(r, r),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )
        img = torch.cat([image, raw], 1)
        cmap = None
        if self.mapping is not None:
            if camera is None:
                raise ValueError("this discriminator is camera-conditioned: pass camera [B,25]")
            std = self.config.c_noise_std if (c_noise is None and self.training) else (c_noise or 0.0)
            c = camera + torch.randn_like(camera) * std if std > 0 else camera
            cmap = self.mapping(c)
        x = None
        for block in self.blocks:
            x = block(x, img)
        return self.epilogue(x, cmap)


def r1_penalty(logits: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """R1: batch mean of sum ||dD/dx||^2 over each real input, averaged over the inputs (the official task's
    mean over `image` and `image_raw`). `inputs` must have requires_grad and have produced `logits`."""
    grads = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return torch.stack([g.square().sum(dim=(1, 2, 3)).mean() for g in grads]).mean()
