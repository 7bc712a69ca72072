"""Mix-Transformer (SegFormer) pieces: attention maths, stage geometry, sizes of MiT-B0 and its head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from real3d.layers.segformer import (
    Block,
    DWConv,
    EfficientSelfAttention,
    HeadMLP,
    MixVisionTransformer,
    OverlapPatchEmbed,
    SegFormerHead,
)

B0 = dict(embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8), mlp_ratios=(4, 4, 4, 4), depths=(2, 2, 2, 2))


def _reference_attention(attn: EfficientSelfAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Naive SegFormer attention written out with explicit loops over heads."""
    b, n, c = x.shape
    m = attn.num_heads
    d = c // m
    q = attn.q(x)
    if attn.sr_ratio > 1:
        grid = x.transpose(1, 2).reshape(b, c, h, w)
        kv_in = attn.norm(attn.sr(grid).flatten(2).transpose(1, 2))
    else:
        kv_in = x
    kv = attn.kv(kv_in)
    k, v = kv[..., :c], kv[..., c:]
    heads = []
    for i in range(m):
        sl = slice(i * d, (i + 1) * d)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d)
        heads.append(logits.softmax(-1) @ v[..., sl])
    return attn.proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("sr_ratio", [1, 2, 4])
def test_attention_matches_naive_reference(sr_ratio: int) -> None:
    torch.manual_seed(0)
    attn = EfficientSelfAttention(dim=12, num_heads=3, sr_ratio=sr_ratio).eval()
    h, w = 8, 4
    x = torch.randn(2, h * w, 12)
    with torch.no_grad():
        got = attn(x, h, w)
        want = _reference_attention(attn, x, h, w)
    assert got.shape == (2, h * w, 12)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert hasattr(attn, "sr") == (sr_ratio > 1)


def test_attention_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        EfficientSelfAttention(dim=10, num_heads=3)


def test_dwconv_is_depthwise_and_keeps_token_order() -> None:
    conv = DWConv(3)
    with torch.no_grad():
        conv.dwconv.weight.zero_()
        conv.dwconv.weight[:, 0, 1, 2] = torch.tensor([1.0, 2.0, 3.0])  # pick the right neighbour, scaled per channel
        conv.dwconv.bias.zero_()
    h, w = 3, 4
    grid = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).repeat(1, 3, 1, 1)
    tokens = rearrange(grid, "b c h w -> b (h w) c")
    out = rearrange(conv(tokens, h, w), "b (h w) c -> b c h w", h=h, w=w)
    shifted = torch.zeros_like(grid)
    shifted[..., :-1] = grid[..., 1:]
    torch.testing.assert_close(out, shifted * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))


def test_block_is_identity_when_residual_branches_are_zero() -> None:
    torch.manual_seed(0)
    blk = Block(dim=8, num_heads=2, mlp_ratio=2, sr_ratio=2)
    with torch.no_grad():
        for lin in (blk.attn.proj, blk.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    x = torch.randn(1, 16, 8)
    torch.testing.assert_close(blk(x, 4, 4), x)


def test_overlap_patch_embed_geometry() -> None:
    pe = OverlapPatchEmbed(3, 8, patch_size=7, stride=4)
    tokens, h, w = pe(torch.randn(2, 3, 30, 17))
    assert (h, w) == (8, 5)  # ceil(30/4), ceil(17/4)
    assert tokens.shape == (2, 40, 8)
    # LayerNorm over channels: zero mean, unit variance per token before the affine part
    with torch.no_grad():
        pe.norm.weight.fill_(1.0)
        pe.norm.bias.zero_()
        tokens, _, _ = pe(torch.randn(1, 3, 16, 16))
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(1, 16), atol=1e-5, rtol=0)


def test_mit_stage_shapes_and_b0_size() -> None:
    mit = MixVisionTransformer(3, (4, 8, 12, 16), (1, 2, 2, 4), (2, 2, 2, 2), (1, 1, 1, 1), (8, 4, 2, 1))
    feats = mit(torch.randn(2, 3, 64, 48))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 16, 12), (2, 8, 8, 6), (2, 12, 4, 3), (2, 16, 2, 2)]
    b0 = MixVisionTransformer(3, sr_ratios=(8, 4, 2, 1), eps=1e-6, **B0)
    assert sum(p.numel() for p in b0.parameters()) == 3_319_392  # official mix_vit size
    assert b0.block1[0].norm1.eps == 1e-6 and b0.norm4.eps == 1e-6
    assert b0.patch_embed1.norm.eps == 1e-5 and b0.block1[0].attn.norm.eps == 1e-5
    with pytest.raises(ValueError, match="4 stages"):
        MixVisionTransformer(3, (4, 8, 12), (1, 2, 2), (2, 2, 2), (1, 1, 1), (8, 4, 2))


def test_head_mlp_equals_linear_on_tokens() -> None:
    torch.manual_seed(0)
    head = HeadMLP(6, 5)
    x = torch.randn(2, 6, 3, 4)
    want = rearrange(head.proj(rearrange(x, "b c h w -> b (h w) c")), "b (h w) c -> b c h w", h=3)
    torch.testing.assert_close(head(x), want, rtol=1e-5, atol=1e-6)


def test_segformer_head_equals_resize_concat_fuse() -> None:
    """The folded head computes the released formula: project each stage, resize to stage 1, concatenate
    (c4, c3, c2, c1), 1x1 conv, BatchNorm (eval statistics), ReLU."""
    torch.manual_seed(1)
    dims, e = (4, 8, 12, 16), 6
    head = SegFormerHead(dims, embed_dim=e).eval()
    with torch.no_grad():
        bn = head.linear_fuse.bn
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    feats = [torch.randn(2, c, s, s + 1) for c, s in zip(dims, (15, 8, 4, 2))]
    with torch.no_grad():
        parts = []
        for i in (4, 3, 2, 1):
            y = torch.einsum("bchw,oc->bohw", feats[i - 1], getattr(head, f"linear_c{i}").proj.weight)
            y = y + getattr(head, f"linear_c{i}").proj.bias[:, None, None]
            parts.append(F.interpolate(y, size=(15, 16), mode="bilinear", align_corners=False))
        want = torch.relu(bn(F.conv2d(torch.cat(parts, 1), head.linear_fuse.conv.weight)))
        torch.testing.assert_close(head(feats), want, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        low = head(feats)
    torch.testing.assert_close(low.float(), want, rtol=0.05, atol=0.05)


def test_segformer_head_fuses_to_stage1_resolution() -> None:
    torch.manual_seed(0)
    head = SegFormerHead((4, 8, 12, 16), embed_dim=6).eval()
    feats = [torch.randn(1, c, s, s) for c, s in zip((4, 8, 12, 16), (16, 8, 4, 2))]
    out = head(feats)
    assert out.shape == (1, 6, 16, 16)
    assert (out >= 0).all()  # ends in ReLU
    # Only c1 contributes when the other projections are zero: the fused map then depends on c1 alone
    with torch.no_grad():
        for i in (2, 3, 4):
            getattr(head, f"linear_c{i}").proj.weight.zero_()
        a = head(feats)
        feats2 = [feats[0]] + [torch.randn_like(f) for f in feats[1:]]
        torch.testing.assert_close(head(feats2), a)
    b0_head = SegFormerHead((32, 64, 160, 256), 256)
    assert sum(p.numel() for p in b0_head.parameters()) == 394_752  # official fuse_head size
    assert list(b0_head.state_dict())[:2] == ["linear_c4.proj.weight", "linear_c4.proj.bias"]
