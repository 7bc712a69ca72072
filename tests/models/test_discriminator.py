"""EG3D dual discriminator: shapes, camera conditioning, R1, and that it learns to separate two sets."""

from __future__ import annotations

import pytest
import torch

from real3d.models.discriminator import (
    DiscriminatorConfig,
    DualDiscriminator,
    r1_penalty,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shapes_and_official_channels():
    cfg = DiscriminatorConfig.official()
    assert [cfg.channels(r) for r in (512, 256, 128, 64, 32)] == [
        64,
        128,
        256,
        512,
        512,
    ]
    torch.manual_seed(0)
    d = DualDiscriminator(DiscriminatorConfig.tiny(32))
    out = d(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 8, 8), torch.randn(3, 25))
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    assert len(d.blocks) == 3  # 32 -> 16 -> 8 -> 4
    with pytest.raises(ValueError, match="expects 32x32"):
        d(torch.randn(1, 3, 16, 16), torch.randn(1, 3, 8, 8), torch.randn(1, 25))
    with pytest.raises(ValueError, match="power of two"):
        DualDiscriminator(DiscriminatorConfig.tiny(24))


def test_camera_conditions_the_output_and_noise_only_in_training():
    torch.manual_seed(0)
    d = DualDiscriminator(DiscriminatorConfig.tiny(16)).eval()
    img, raw = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 4, 4)
    c = torch.randn(2, 25)
    a, b = d(img, raw, c), d(img, raw, c + 1.0)
    assert not torch.allclose(a, b)
    assert torch.equal(d(img, raw, c), a)  # eval: no camera noise
    d.train()
    assert not torch.equal(d(img, raw, c), d(img, raw, c))


def test_r1_penalty_matches_finite_differences():
    torch.manual_seed(0)
    d = DualDiscriminator(DiscriminatorConfig.tiny(8)).double().eval()
    img = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 25, dtype=torch.float64)
    pen = r1_penalty(d(img, raw, c), (img, raw))
    g_img, g_raw = torch.autograd.grad(d(img, raw, c).sum(), (img, raw))
    expect = 0.5 * (g_img.square().sum((1, 2, 3)).mean() + g_raw.square().sum((1, 2, 3)).mean())
    assert torch.allclose(pen, expect)
    pen.backward()  # differentiable w.r.t. D's weights (create_graph)
    assert d.blocks[0].conv0.weight.grad is not None


def test_learns_to_separate_real_from_fake():
    torch.manual_seed(0)
    d = DualDiscriminator(DiscriminatorConfig.tiny(16))
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    c = torch.zeros(8, 25)
    real = torch.linspace(-1, 1, 16).expand(8, 3, 16, 16).contiguous()
    for _ in range(40):
        fake = torch.rand(8, 3, 16, 16) * 2 - 1
        loss = (
            torch.nn.functional.softplus(d(fake, fake[..., ::4, ::4], c)).mean()
            + torch.nn.functional.softplus(-d(real, real[..., ::4, ::4], c)).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    fake = torch.rand(8, 3, 16, 16) * 2 - 1
    assert d(real, real[..., ::4, ::4], c).mean() > d(fake, fake[..., ::4, ::4], c).mean() + 1.0
