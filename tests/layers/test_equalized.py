"""Equalized-lr layers equal a plain layer with the weight scaled by lr_multiplier / sqrt(fan_in)."""

import math

import pytest
import torch
import torch.nn.functional as F

from real3d.layers.equalized import ACT_GAIN, EqualizedConv2d, EqualizedLinear, bias_act, fir_filter


def test_linear_scales_the_stored_weight():
    torch.manual_seed(0)
    layer = EqualizedLinear(16, 4, lr_multiplier=0.5, bias_init=0.2)
    x = torch.randn(3, 16)
    want = F.linear(x, layer.weight * 0.5 / math.sqrt(16), layer.bias * 0.5)
    torch.testing.assert_close(layer(x), want)
    assert torch.allclose(layer.bias, torch.full((4,), 0.2))


@pytest.mark.parametrize("act", ["linear", "lrelu", "relu"])
def test_conv_is_a_scaled_conv_with_the_activation_gain(act):
    torch.manual_seed(1)
    layer = EqualizedConv2d(3, 5, 3, activation=act)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 8, 8)
    y = F.conv2d(x, layer.weight / math.sqrt(3 * 9), layer.bias, padding=1)
    if act == "lrelu":
        y = F.leaky_relu(y, 0.2)
    elif act == "relu":
        y = F.relu(y)
    torch.testing.assert_close(layer(x), y * ACT_GAIN[act])
    assert layer(x).shape == (2, 5, 8, 8)


def test_bias_act_adds_bias_along_the_given_axis():
    x = torch.zeros(2, 3, 4)
    out = bias_act(x, torch.tensor([1.0, -1.0, 2.0, -2.0]), "lrelu", dim=-1)
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, -0.2, 2.0, -0.4]) * math.sqrt(2.0))


def test_fir_filter_is_normalised_and_separable():
    k = fir_filter()
    assert k.shape == (4, 4) and k.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(k, torch.outer(k.sum(1), k.sum(0)))
