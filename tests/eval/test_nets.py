"""Plug-in metric networks: shapes, random-init determinism, checkpoint key layouts, wrong-file refusal, known
values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from real3d.errors import CheckpointError, DependencyError
from real3d.eval import plugins
from real3d.eval.nets import inception, iresnet, lpips, syncnet

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


def _seeded(cls, *args, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return cls(*args, **kw).eval()


# -------------------------------------------------------------------------------------------- LPIPS
def _lpips_files(tmp_path, model: lpips.LPIPS):
    """Write a model's weights in the public layouts: torchvision backbone (+ classifier) and lpips heads."""
    bb = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    bb["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision files carry the classifier too
    heads = {f"lin{i}.model.1.weight": lin.weight.detach().clone() for i, lin in enumerate(model.lins)}
    torch.save(bb, tmp_path / "backbone.pth")
    torch.save(heads, tmp_path / "heads.pth")
    return tmp_path / "backbone.pth", tmp_path / "heads.pth"


@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_lpips_shapes_zero_on_identical_and_determinism(backbone):
    m1, m2 = _seeded(lpips.LPIPS, backbone), _seeded(lpips.LPIPS, backbone)
    with torch.no_grad():
        m1.lins.apply(lambda m: m.weight.abs_() if isinstance(m, torch.nn.Conv2d) else None)
        m2.lins.apply(lambda m: m.weight.abs_() if isinstance(m, torch.nn.Conv2d) else None)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        d = m1(x, y)
        assert d.shape == (2,)
        assert torch.equal(d, m2(x, y))  # same seed, same network
        np.testing.assert_allclose(m1(x, x).numpy(), 0.0, atol=1e-7)
        assert (d > 0).all()
    assert [lin.weight.shape[1] for lin in m1.lins] == (
        [64, 192, 384, 256, 256] if backbone == "alex" else [64, 128, 256, 512, 512]
    )


def test_lpips_public_key_layout_round_trip_and_refusals(tmp_path):
    src = _seeded(lpips.LPIPS, "alex", seed=3)
    bb, heads = _lpips_files(tmp_path, src)
    metric = plugins.LpipsMetric(bb, heads, "alex")
    a = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    got = metric(list(a), list(b))
    want = lpips.lpips_distance(src, torch.from_numpy(a), torch.from_numpy(b)).tolist()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # heads file given as the backbone, an AlexNet file for VGG, a missing file, a non-weight file
    with pytest.raises(CheckpointError, match="alexnet-owt"):
        lpips.load_lpips(heads, heads, "alex")
    with pytest.raises(CheckpointError, match="vgg16"):
        lpips.load_lpips(bb, heads, "vgg")
    with pytest.raises(DependencyError, match="not found.*alexnet-owt"):
        lpips.load_lpips(tmp_path / "nope.pth", heads, "alex")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        lpips.load_lpips(junk, heads, "alex")


# ---------------------------------------------------------------------------------------- Inception
def test_inception_pool_features_shape_determinism_and_checkpoint(tmp_path):
    net = _seeded(inception.InceptionV3, "fid")
    x = torch.rand(1, 3, 80, 80)
    with torch.no_grad():
        f = net(x)
        assert f.shape == (1, 2048) and torch.isfinite(f).all()
    sd = net.state_dict()
    again = _seeded(inception.InceptionV3, "fid").state_dict()  # same seed, same random init
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    assert sd["fc.weight"].shape == (1008, 2048) and "Mixed_7c.branch3x3dbl_3b.conv.weight" in sd
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, tmp_path / "fid.pth")
    loaded = inception.load_inception(tmp_path / "fid.pth")
    assert loaded.variant == "fid"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), f)
    # torchvision layout: fc 1000 + auxiliary classifier (dropped)
    tv = inception.InceptionV3("torchvision").state_dict()
    tv["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    torch.save(tv, tmp_path / "tv.pth")
    assert inception.load_inception(tmp_path / "tv.pth").variant == "torchvision"
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="pt_inception"):
        inception.load_inception(tmp_path / "wrong.pth")


def test_frechet_distance_known_values():
    # 1-D: (m1 - m2)^2 + v1 + v2 - 2 sqrt(v1 v2)
    assert inception.frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])
    ) == pytest.approx(4 + 4 + 9 - 2 * 6)
    cov = np.diag([1.0, 2.0, 3.0])
    assert inception.frechet_distance(np.zeros(3), cov, np.zeros(3), cov) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: sum of the per-axis 1-D terms
    ca, cb = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    want = 2.0 + (1 + 9 - 6) + (4 + 1 - 4)
    assert inception.frechet_distance(np.array([1.0, 0.0]), ca, np.array([0.0, 1.0]), cb) == pytest.approx(want)
    feats = np.random.default_rng(0).normal(size=(200, 4))
    assert plugins.FidMetric.distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    assert plugins.FidMetric.distance(feats, feats + 1.0) == pytest.approx(4.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ IResNet
def test_iresnet_tiny_shapes_determinism_and_depth_from_keys(tmp_path):
    cfg = iresnet.IResNetConfig.tiny()
    net = _seeded(iresnet.IResNet, cfg)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        e = net(x)
        assert e.shape == (3, 16)
        assert torch.equal(e, _seeded(iresnet.IResNet, cfg)(x))
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    loaded = iresnet.load_iresnet(tmp_path / "backbone.pth")
    assert loaded.config == cfg
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), e)
    with pytest.raises(CheckpointError, match="not r50"):
        iresnet.load_iresnet(tmp_path / "backbone.pth", arch="r50")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="arcface_torch"):
        iresnet.load_iresnet(tmp_path / "other.pth")


@pytest.mark.parametrize("arch,blocks", [("r50", 24), ("r100", 49)])
def test_iresnet_full_sizes_have_the_public_key_layout(arch, blocks):
    cfg = getattr(iresnet.IResNetConfig, arch)()
    with torch.device("meta"):
        net = iresnet.IResNet(cfg)
    sd = net.state_dict()
    assert sum(1 for k in sd if k.endswith(".conv1.weight") and k.startswith("layer")) == blocks
    assert sd["fc.weight"].shape == (512, 512 * 7 * 7) and sd["features.weight"].shape == (512,)
    assert sd["layer1.0.downsample.0.weight"].shape == (64, 64, 1, 1) and "prelu.weight" in sd
    assert iresnet.config_from_state_dict(sd) == cfg


def test_arcface_alignment_maps_five_points_to_template():
    rng = np.random.default_rng(0)
    lm = rng.normal(200, 30, (478, 3))
    pts = iresnet.ARCFACE_TEMPLATE * 2.0 + [50, 60]  # the template, scaled and moved
    lm[[468, 473, 1, 61, 291], :2] = pts
    m = iresnet.similarity_transform(iresnet.five_points(lm), iresnet.ARCFACE_TEMPLATE)
    mapped = pts @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, iresnet.ARCFACE_TEMPLATE, atol=1e-9)
    img = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    assert iresnet.align_face(img, lm).shape == (112, 112, 3)


def test_arcface_metric_identical_face_has_csim_one():
    net = _seeded(iresnet.IResNet, iresnet.IResNetConfig.tiny())
    metric = plugins.ArcFaceMetric(model=net)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    lm = rng.normal(100, 5, (478, 3))
    lm[[468, 473, 1, 61, 291], :2] = iresnet.ARCFACE_TEMPLATE * 1.2 + 30
    assert metric(img, lm, [img, img], [lm, None]) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------ SyncNet
def test_syncnet_shapes_determinism_and_checkpoint(tmp_path):
    net = _seeded(syncnet.SyncNet)
    aud = torch.randn(2, 1, 13, 20)
    lip = torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        a, v = net.forward_aud(aud), net.forward_lip(lip)
        assert a.shape == (2, 1024) and v.shape == (2, 1024)
        assert torch.equal(a, _seeded(syncnet.SyncNet).forward_aud(aud))
    sd = net.state_dict()
    assert sd["netcnnaud.0.weight"].shape == (64, 1, 3, 3) and sd["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert sd["netfclip.3.weight"].shape == (1024, 512)
    torch.save(sd, tmp_path / "syncnet_v2.model")
    with torch.no_grad():
        torch.testing.assert_close(syncnet.load_syncnet(tmp_path / "syncnet_v2.model").forward_aud(aud), a)
    torch.save({k: v for k, v in sd.items() if not k.startswith("netfclip")}, tmp_path / "partial.model")
    with pytest.raises(CheckpointError, match="missing.*syncnet_v2"):
        syncnet.load_syncnet(tmp_path / "partial.model")


def test_sync_scores_find_a_known_offset():
    rng = np.random.default_rng(0)
    emb = torch.from_numpy(rng.normal(size=(40, 8)))
    audio = torch.roll(emb, 3, dims=0)  # audio[t] = video[t - 3]
    s = syncnet.sync_scores(emb, audio, vshift=5)
    assert s.offset == -3
    assert s.lse_c > 0.5
    aligned = syncnet.sync_scores(emb, emb, vshift=5)
    assert aligned.offset == 0 and aligned.lse_d == pytest.approx(1e-6 * np.sqrt(8), abs=1e-6)


def test_mfcc_frames_and_energy():
    rate = 16000
    t = np.arange(rate) / rate  # 1 s
    loud = np.sin(2 * np.pi * 440 * t)
    feats = syncnet.mfcc(loud)
    assert feats.shape == (1 + int(np.ceil((rate - 400) / 160)), 13)  # 100 Hz frames
    quiet = syncnet.mfcc(0.1 * loud)
    # c0 is the log frame energy: 20 dB quieter = log(100) lower; other coefficients are scale-free
    np.testing.assert_allclose(feats[5:-5, 0] - quiet[5:-5, 0], np.log(100.0), rtol=1e-6)
    np.testing.assert_allclose(feats[5:-5, 1:], quiet[5:-5, 1:], atol=1e-6)
    fb = syncnet.mel_filterbank()
    assert fb.shape == (26, 257) and fb.max() == pytest.approx(1.0)
