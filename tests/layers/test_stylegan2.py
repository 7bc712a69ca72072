"""StyleGAN2 synthesis layers: FIR resampling, modulated convolution, equalized-lr gains, blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from real3d.layers.equalized import EqualizedConv2d, EqualizedLinear, fir_filter
from real3d.layers.stylegan2 import (
    SynthesisBlock,
    SynthesisLayer,
    ToRGBLayer,
    conv2d_resample,
    effective_weights,
    modulated_conv2d,
    upfirdn2d,
    upsample2d,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_equalized_gain_matches_plain_layers_with_scaled_weight() -> None:
    torch.manual_seed(0)
    conv = EqualizedConv2d(5, 7, 3)
    conv.bias.data.normal_()
    x = torch.randn(2, 5, 6, 6)
    ref = F.conv2d(x, conv.weight / math.sqrt(5 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-6)

    fc = EqualizedLinear(8, 4, bias_init=1.0)
    w = torch.randn(3, 8)
    torch.testing.assert_close(fc(w), F.linear(w, fc.weight / math.sqrt(8), fc.bias), rtol=1e-5, atol=1e-6)


def test_torgb_is_conv_with_style_scaled_weight_over_sqrt_fan_in() -> None:
    torch.manual_seed(1)
    layer = ToRGBLayer(6, 3, w_dim=4)
    layer.bias.data.normal_()
    x, w = torch.randn(2, 6, 5, 5), torch.randn(2, 4)
    styles = F.linear(w, layer.affine.weight / math.sqrt(4), layer.affine.bias)  # affine bias starts at 1
    assert torch.allclose(layer.affine.bias, torch.ones(6))
    for b in range(2):
        wb = layer.weight * styles[b].reshape(1, 6, 1, 1) / math.sqrt(6)
        ref = F.conv2d(x[b : b + 1], wb, layer.bias)
        for fused in (True, False):
            torch.testing.assert_close(layer(x, w, fused=fused)[b : b + 1], ref, rtol=1e-5, atol=1e-6)


def test_upfirdn2d_impulse_response_is_the_filter() -> None:
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(upfirdn2d(x, f)[0, 0], f)  # true convolution
    assert torch.equal(upfirdn2d(x, f, flip_filter=True)[0, 0], f.flip([0, 1]))
    assert torch.equal(upfirdn2d(x, f, gain=2.0)[0, 0], 2 * f)
    # down=2 keeps every other output of the padded convolution
    full = upfirdn2d(x, f, padding=(1, 1, 1, 1))
    assert torch.equal(upfirdn2d(x, f, down=2, padding=(1, 1, 1, 1)), full[:, :, ::2, ::2])
    # negative padding crops
    assert torch.equal(upfirdn2d(x, torch.ones(1, 1), padding=(-1, 0, 0, -1)), x[:, :, :2, 1:])


def test_upsample2d_hand_computed() -> None:
    # 1-D: [a, b] -> [.75a, .75a+.25b, .25a+.75b, .75b] for the [1,3,3,1] filter with gain 2 per axis
    up = torch.tensor([[0.75, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 0.75]])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expected = up @ x @ up.T
    got = upsample2d(x[None, None], fir_filter())[0, 0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # a constant image stays constant away from the border
    const = upsample2d(torch.ones(1, 2, 4, 4), fir_filter())
    assert const.shape == (1, 2, 8, 8)
    torch.testing.assert_close(const[:, :, 1:-1, 1:-1], torch.ones(1, 2, 6, 6))


def test_demodulated_effective_weights_have_unit_norm() -> None:
    torch.manual_seed(2)
    weight, styles = torch.randn(8, 5, 3, 3), torch.randn(3, 5) * 4
    eff = effective_weights(weight, styles)  # [B,Cout,Cin,kh,kw]
    norms = eff.square().sum(dim=[2, 3, 4]).sqrt()
    torch.testing.assert_close(norms, torch.ones(3, 8), rtol=1e-5, atol=1e-5)
    x = torch.randn(3, 5, 7, 7)
    for fused in (True, False):
        y = modulated_conv2d(x, weight, styles, demodulate=True, padding=1, fused=fused)
        for b in range(3):
            ref = F.conv2d(x[b : b + 1], eff[b], padding=1)
            torch.testing.assert_close(y[b : b + 1], ref, rtol=1e-4, atol=1e-5)


def test_upsampling_conv_equals_fir_upsample_then_true_convolution() -> None:
    torch.manual_seed(3)
    x, w, f = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3), fir_filter()
    # flip_weight=False (what SynthesisLayer uses when upsampling) is a true convolution, True a correlation
    for flip_weight, w_ref in ((False, w.flip([2, 3])), (True, w)):
        y = conv2d_resample(x, w, f, up=2, padding=1, flip_weight=flip_weight)
        assert y.shape == (2, 5, 12, 12)
        ref = F.conv2d(upsample2d(x, f), w_ref, padding=1)
        # identical away from the one-pixel border where the zero padding of the two orders differs
        torch.testing.assert_close(y[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], rtol=1e-4, atol=1e-5)
    # grouped (fused) path equals per-sample calls
    styles = torch.randn(2, 4)
    fused = modulated_conv2d(x, w, styles, up=2, padding=1, resample_filter=f, flip_weight=False, fused=True)
    unfused = modulated_conv2d(x, w, styles, up=2, padding=1, resample_filter=f, flip_weight=False, fused=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("upsample", [True, False])
def test_synthesis_block_shapes_and_skip_rgb(upsample: bool) -> None:
    torch.manual_seed(4)
    block = SynthesisBlock(6, 8, w_dim=4, resolution=16, upsample=upsample).eval()
    r = 8 if upsample else 16
    x, img, ws = torch.randn(2, 6, r, r), torch.randn(2, 3, r, r), torch.ones(2, 3, 4)
    y, rgb = block(x, img, ws)
    assert y.shape == (2, 8, 16, 16) and rgb.shape == (2, 3, 16, 16)
    skip = upsample2d(img, block.resample_filter) if upsample else img
    torch.testing.assert_close(rgb, skip + block.torgb(y, ws[:, 2]))
    with pytest.raises(ValueError, match="expects x"):
        block(torch.randn(2, 5, r, r), img, ws)


def test_noise_mode_none_ignores_noise_parameters() -> None:
    torch.manual_seed(5)
    layer = SynthesisLayer(4, 4, w_dim=4, resolution=8).eval()
    x, w = torch.randn(1, 4, 8, 8), torch.randn(1, 4)
    base = layer(x, w)
    layer.noise_strength.data.fill_(3.0)
    assert torch.equal(layer(x, w, noise_mode="none"), base)
    assert not torch.allclose(layer(x, w, noise_mode="const"), base)
