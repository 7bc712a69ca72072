"""Mix-Transformer (SegFormer) building blocks, shared by `Img2Plane` and `MotionAdapter`.

SegFormer (Xie et al., NeurIPS 2021): overlapping patch embeddings, efficient self-attention whose
keys/values are spatially reduced by a strided conv (`sr_ratio`), and a Mix-FFN whose depth-wise 3x3
conv replaces positional encodings. `MixVisionTransformer` is the four-stage hierarchical encoder
(MiT-B0 in Real3D-Portrait's motion adapter); `SegFormerHead` is the all-MLP decoder that projects
the four stages to one width, resizes them to the first stage and fuses them with a 1x1 conv.

Submodule names follow the official checkpoints (`patch_embed1.proj`, `block1.0.attn.kv`,
`mlp.dwconv.dwconv`, `linear_fuse.conv`/`.bn`, ...), so state dicts load without renaming.
Tokens are kept as [B, N, C] with N = H*W in row-major order between the patch embedding and the
stage output, as the official code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (padding = kernel // 2) followed by LayerNorm over channels.

    Keys: `proj.{weight,bias}`, `norm.{weight,bias}`.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """x: [B,Cin,H,W] -> (tokens [B,h*w,C], h, w) with h, w the strided size."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        tokens = rearrange(x, "b c h w -> b (h w) c")
        return self.norm(tokens), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with spatial reduction of keys/values (SegFormer §3.1).

    With `sr_ratio` r > 1 the keys/values come from an r x r, stride-r conv of the token map followed
    by LayerNorm (eps 1e-5), i.e. N/r^2 key tokens. Keys: `q`, `kv` (k and v stacked on the output
    axis), `proj`, and for r > 1 `sr`, `norm`.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B,N=h*w,C] -> [B,N,C]."""
        q = rearrange(self.q(x), "b n (m d) -> b m n d", m=self.num_heads)
        if self.sr_ratio > 1:
            grid = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
            x = self.norm(rearrange(self.sr(grid), "b c h w -> b (h w) c"))  # B x N/r^2 x C
        k, v = rearrange(self.kv(x), "b n (two m d) -> two b m n d", two=2, m=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(rearrange(out, "b m n d -> b n (m d)"))


class DWConv(nn.Module):
    """Depth-wise 3x3 conv applied to a token sequence laid out on an h x w grid. Key: `dwconv`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B,h*w,C] -> [B,h*w,C]."""
        y = self.dwconv(rearrange(x, "b (h w) c -> b c h w", h=h, w=w))
        return rearrange(y, "b c h w -> b (h w) c")


class MixFFN(nn.Module):
    """Mix-FFN: Linear -> depth-wise 3x3 conv -> GELU (exact) -> Linear. Keys: `fc1`, `dwconv.dwconv`, `fc2`."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B,h*w,C] -> [B,h*w,C]."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MixFFN(LN(x)).

    `eps` is the epsilon of `norm1`/`norm2` (1e-6 in MiT-B0, PyTorch's 1e-5 in Real3D's I2P ViTs).
    Drop-path is omitted (identity at inference; the released models train with it only in MiT).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B,h*w,C] -> [B,h*w,C]."""
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class MixVisionTransformer(nn.Module):
    """Four-stage hierarchical Mix-Transformer encoder (MiT). Returns the four stage maps.

    Stage i: `patch_embed{i}` (7x7/4 for stage 1, 3x3/2 after), `block{i}` (a ModuleList of `Block`),
    `norm{i}` (LayerNorm with `eps`). Patch-embedding LayerNorms keep PyTorch's 1e-5 as in the
    official code. MiT-B0: dims (32, 64, 160, 256), heads (1, 2, 5, 8), depths (2, 2, 2, 2),
    sr (8, 4, 2, 1), mlp ratio 4, eps 1e-6.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dims: Sequence[int],
        num_heads: Sequence[int],
        mlp_ratios: Sequence[float],
        depths: Sequence[int],
        sr_ratios: Sequence[int],
        qkv_bias: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        specs = (embed_dims, num_heads, mlp_ratios, depths, sr_ratios)
        if any(len(s) != 4 for s in specs):
            raise ValueError(f"MixVisionTransformer needs 4 stages per setting, got lengths {[len(s) for s in specs]}")
        prev = in_channels
        for i in range(4):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(prev, embed_dims[i], patch, stride))
            prev = embed_dims[i]
        for i in range(4):
            blocks = nn.ModuleList(
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], qkv_bias=qkv_bias, eps=eps)
                for _ in range(depths[i])
            )
            self.add_module(f"block{i + 1}", blocks)
            self.add_module(f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=eps))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B,Cin,H,W] -> 4 maps [B,C_i,H/s_i,W/s_i] with strides s = (4, 8, 16, 32) (ceil-rounded)."""
        outs = []
        for i in range(1, 5):
            tokens, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                tokens = blk(tokens, h, w)
            tokens = getattr(self, f"norm{i}")(tokens)
            x = rearrange(tokens, "b (h w) c -> b c h w", h=h, w=w)
            outs.append(x)
        return outs


class HeadMLP(nn.Module):
    """Per-pixel linear projection of a feature map (SegFormer head "linear_c*"). Key: `proj` ([out, in])."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H,W] (a 1x1 conv with the Linear's weights, no token transpose)."""
        return F.conv2d(x, self.proj.weight[:, :, None, None], self.proj.bias)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU, keyed `conv`/`bn` like an mmcv `ConvModule`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,Cin,H,W] -> [B,Cout,H,W]."""
        return self.act(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """SegFormer all-MLP decoder (Xie et al. 2021, §3.2) without the classifier.

    Each stage map is projected to `embed_dim` (`linear_c1..4`), resized bilinearly
    (align_corners=False) to the stage-1 size, concatenated in the order c4, c3, c2, c1 and fused by
    `linear_fuse` (1x1 conv + BN + ReLU), then Dropout2d(0.1).
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"SegFormerHead needs 4 input widths, got {tuple(in_channels)}")
        # Definition order c4..c1 matches the official state-dict order.
        for i in (4, 3, 2, 1):
            self.add_module(f"linear_c{i}", HeadMLP(in_channels[i - 1], embed_dim))
        self.linear_fuse = ConvBNReLU(4 * embed_dim, embed_dim, 1)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """feats: 4 maps [B,C_i,H_i,W_i] -> [B,embed_dim,H_1,W_1].

        Computed as sum_i resize(W_i (P_i f_i + p_i)): the fusion conv is 1x1 and without bias, so its
        slice W_i for stage i folds into that stage's projection (P_i, p_i), and a per-channel bilinear
        resize (weights summing to 1) commutes with it. Same function as resize, concatenate, fuse up to
        float rounding, without the 4*embed_dim-channel map at stage-1 size (8.6 of 9 GFLOP at the
        motion adapter's released size)."""
        size = feats[0].shape[-2:]
        conv = self.linear_fuse.conv
        width = conv.in_channels // 4
        dt = torch.promote_types(conv.weight.dtype, torch.float32)
        fused = None
        for slot, i in enumerate((4, 3, 2, 1)):  # the concatenation order
            proj = getattr(self, f"linear_c{i}").proj
            with torch.autocast(feats[0].device.type, enabled=False):  # fold in (at least) float32
                w_slot = conv.weight[:, slot * width : (slot + 1) * width, 0, 0].to(dt)  # [out, E]
                weight, bias = w_slot @ proj.weight.to(dt), w_slot @ proj.bias.to(dt)  # [out, C_i], [out]
            y = F.conv2d(feats[i - 1], weight[:, :, None, None].to(conv.weight.dtype), bias.to(conv.weight.dtype))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused.add_(y)
        return self.dropout(self.linear_fuse.act(self.linear_fuse.bn(fused)))
