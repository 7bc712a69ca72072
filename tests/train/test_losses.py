"""Loss terms, the perceptual networks' loading (and refusal of wrong files), and the config overrides."""

from __future__ import annotations

import pytest
import torch

from real3d.errors import CheckpointError, InputError
from real3d.train import losses as L
from real3d.train.config import apply_overrides, from_dict, load_config, preset, to_dict
from real3d.train.perceptual import PerceptualLoss, load_vgg19, load_vgg_face, save_random_vgg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_masked_l1_weights_and_outlier_clamp():
    target = torch.zeros(1, 3, 4, 4)
    pred = torch.zeros(1, 3, 4, 4)
    pred[..., 0, 0] = 1.0  # one pixel off by 3 (summed over channels)
    w = torch.ones(1, 1, 4, 4)
    # 16 pixels, 0.8-quantile 0 -> clamp bound max(0.5, 0) = 0.5
    assert torch.isclose(L.masked_l1(pred, target, w), torch.tensor(0.5 / 16))
    pred = torch.full((1, 3, 4, 4), 0.5)
    half = L.head_weight(torch.zeros(1, 1, 4, 4).index_fill_(3, torch.tensor([0, 1]), 1.0), 1.0, 0.2)
    # errors 1.5 inside (8 px), 0.3 outside (8 px); quantile 1.5 -> no clamp
    assert torch.isclose(L.masked_l1(pred, target, half), torch.tensor((8 * 1.5 + 8 * 0.3) / 16))


def test_head_weight_is_bool_not_bitwise_not():
    """The official `.long()` mask made ~mask -1/-2 (weights 0.6 / -0.2); ours gives 1 / 0.2."""
    m = torch.tensor([[[[1, 0]]]], dtype=torch.long)
    assert torch.allclose(L.head_weight(m, 1.0, 0.2), torch.tensor([[[[1.0, 0.2]]]]))


def test_crop_boxes_and_opacity_terms():
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    assert torch.allclose(L.crop_boxes(img, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 8), img)
    crop = L.crop_boxes(img, torch.tensor([[4.0, 0.0, 8.0, 4.0]]), 4)
    assert torch.allclose(crop, img[..., 0:4, 4:8])
    a = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    m = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert torch.isclose(L.opacity_fit(a, m), torch.tensor((0.25 + 0.25) / 2), atol=1e-4)
    assert torch.isclose(L.binary_entropy(torch.full((1, 1, 2, 2), 0.5)), torch.tensor(1.0))
    assert L.binary_entropy(torch.ones(1, 1, 2, 2)) < 1e-3


def test_density_smoothness_small_for_smooth_planes():
    from real3d.models.volume_renderer import TriplaneDecoder

    torch.manual_seed(0)
    dec = TriplaneDecoder(8, 16)
    flat = L.density_smoothness(dec, torch.ones(2, 3, 8, 16, 16) * 0.3, num_points=512, offset_std=0.05)
    wavy = torch.randn(2, 3, 8, 16, 16)
    loss = L.density_smoothness(dec, wavy.requires_grad_(), num_points=512, offset_std=0.05)
    assert loss > 10 * flat  # constant planes differ only at the box border (zero padding outside)
    loss.backward()
    assert wavy.grad is not None and wavy.grad.abs().sum() > 0


def test_adaptive_lambda():
    assert L.adapt_lambda(0.1, 1.0, 0.1, 2.0) == pytest.approx(0.11)  # loss 10x the target: +0.01
    assert L.adapt_lambda(0.0, 0.01, 0.1, 2.0) == 0.0  # clamped at 0
    assert L.adapt_lambda(1.99, 1e6, 0.1, 2.0) == 2.0  # clamped at the max
    assert L.adapt_lambda(0.5, 1.0, 0.0, 2.0) == 0.0  # target 0: off


def test_perceptual_loads_tiny_weights_and_measures_difference(tmp_path):
    v19 = load_vgg19(save_random_vgg(tmp_path / "vgg19.pth", "vgg19"), official_sizes=False)
    vf = load_vgg_face(save_random_vgg(tmp_path / "vgg_face_dag.pth", "vgg_face"), official_sizes=False)
    assert [c.out_channels for c in v19.convs][:3] == [4, 4, 8]
    loss = PerceptualLoss(v19, vf)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(x, x) == 0
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_()
    value = loss(y, x)
    assert value > 0
    value.backward()
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in v19.parameters())


def test_perceptual_refuses_wrong_files(tmp_path):
    vf = save_random_vgg(tmp_path / "vgg_face_dag.pth", "vgg_face")
    v19 = save_random_vgg(tmp_path / "vgg19.pth", "vgg19")
    with pytest.raises(CheckpointError, match="not torchvision's vgg19.*no features.0.weight"):
        load_vgg19(vf, official_sizes=False)
    with pytest.raises(CheckpointError, match="not Oxford's VGG-Face"):
        load_vgg_face(v19, official_sizes=False)
    with pytest.raises(CheckpointError, match="channels, the released network has 64"):
        load_vgg19(v19)  # tiny widths are refused unless official_sizes=False
    sd = torch.load(v19, weights_only=True)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['extra.weight'\]"):
        load_vgg19(tmp_path / "extra.pth", official_sizes=False)
    import pickle

    (tmp_path / "evil.pth").write_bytes(pickle.dumps(InputError("x")))
    with pytest.raises(CheckpointError):
        load_vgg19(tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_vgg_face(tmp_path / "missing.pth")


def test_presets_and_overrides():
    s2, s3 = preset("stage2"), preset("stage3")
    assert (s2.optim.lr_g, s2.optim.warmup, s2.losses.outside_weight, s2.losses.self_every) == (1e-4, 4000, 0.2, 16)
    assert (s3.optim.lr_g, s3.losses.outside_weight, s3.losses.lip_l1, s3.losses.self_every) == (1e-5, 0.5, 0.2, 4)
    assert s3.schedule.start_adv == 40_000 and s3.losses.adversarial == 0.003
    cfg = apply_overrides(
        load_config("stage2:tiny"),
        ["optim.lr_g=2e-4", "data.val_clips=a,b", "init_from=none", "trainable=motion_adapter", "precision=bf16"],
    )
    assert cfg.optim.lr_g == 2e-4 and cfg.data.val_clips == ("a", "b") and cfg.init_from is None
    assert cfg.trainable == ("motion_adapter",)
    assert from_dict(to_dict(cfg)) == cfg
    with pytest.raises(InputError, match="unknown config key 'optim.lr'"):
        apply_overrides(cfg, ["optim.lr=1"])
    with pytest.raises(InputError, match="must be one of"):
        apply_overrides(cfg, ["precision=fp8"])
    with pytest.raises(InputError, match="not a valid int"):
        apply_overrides(cfg, ["batch_size=two"])
    with pytest.raises(InputError, match="unknown stage"):
        load_config("stage5")


def test_generator_ema_follows_its_formula_and_copies_the_rest():
    from real3d.train.ema import GeneratorEMA

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    net[0].bias.requires_grad_(False)
    ema = GeneratorEMA(net, 0.9)
    assert ema.rate(0) == pytest.approx(0.1) and ema.rate(10**6) == 0.9
    old = ema.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[0].bias.add_(2.0)
    net(torch.randn(4, 3))  # moves the batch-norm statistics
    ema.update(net, 100)
    d = ema.rate(100)
    assert torch.allclose(ema.module[0].weight, d * old + (1 - d) * net[0].weight)
    assert torch.equal(ema.module[0].bias, net[0].bias)  # frozen: copied
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    with pytest.raises(ValueError):
        GeneratorEMA(net, 1.0)
