"""The parity runner: passes on the real fixture, fails on perturbed ones, works for other inputs of the
same format (A2M and the torso model), and its CLI entry points return the right exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from real3d.errors import CheckpointError, InputError
from real3d.weights.convert import convert_main, convert_official, load_checkpoint
from real3d.weights.parity import OFFICIAL_OUTPUT_NAMES, parity_main, run_parity

OURS = {official: ours for ours, official in OFFICIAL_OUTPUT_NAMES.items()}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


@pytest.fixture(scope="module")
def a2m_npz(official_dir):
    return official_dir / "a2m_seed0.npz"


@pytest.fixture(scope="module")
def official_report(a2m_ckpt_dir, a2m_npz):
    return run_parity(a2m_ckpt_dir, a2m_npz)


def _write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def test_passes_on_the_real_fixture(official_report):
    report = official_report
    assert report.passed and report.model == "audio2secc_vae"
    by_name = {t.name: t for t in report.tensors}
    assert sorted(by_name) == ["cond", "exp", "g_sqz", "z_decoder_in"]
    assert by_name["exp"].tolerance == 1e-4 and by_name["cond"].tolerance == 2e-5
    assert by_name["exp"].max_abs <= 1e-4 and by_name["exp"].shape == [1, 100, 64]
    data = json.loads(report.to_json())
    assert data["passed"] is True and set(data["tensors"]) == set(by_name)


@pytest.mark.parametrize(("key", "delta"), [("exp", 1e-3), ("z_decoder_in", 5e-5)])
def test_fails_on_a_perturbed_fixture(tmp_path, a2m_ckpt_dir, a2m_fixture, key, delta):
    arrays = dict(a2m_fixture)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[17] += delta
    report = run_parity(a2m_ckpt_dir, _write_npz(tmp_path / "bad.npz", arrays))
    failed = [t.name for t in report.tensors if not t.passed]
    assert failed == [key] and not report.passed
    assert abs(next(t for t in report.tensors if t.name == key).max_abs - delta) < 1e-5


def test_exit_codes(tmp_path, a2m_ckpt_dir, a2m_npz, a2m_fixture, capsys):
    assert (
        parity_main(
            ["--checkpoint", str(a2m_ckpt_dir), "--fixture", str(a2m_npz), "--output", str(tmp_path / "r.json")]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["passed"] is True
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    arrays = dict(a2m_fixture)
    arrays["exp"] = arrays["exp"] + 1e-3
    bad = _write_npz(tmp_path / "bad.npz", arrays)
    assert parity_main(["--checkpoint", str(a2m_ckpt_dir), "--fixture", str(bad)]) == 1
    assert json.loads(capsys.readouterr().out)["tensors"]["exp"]["passed"] is False
    unknown = _write_npz(tmp_path / "unknown.npz", {"foo": np.zeros(2)})
    assert parity_main(["--checkpoint", str(a2m_ckpt_dir), "--fixture", str(unknown)]) == InputError.exit_code
    assert "not a known parity fixture" in capsys.readouterr().err
    # the CLI's argparse REMAINDER may hand over a leading "--"
    assert parity_main(["--", "--checkpoint", str(a2m_ckpt_dir), "--fixture", str(unknown)]) == InputError.exit_code


def test_other_inputs_of_the_same_format(tmp_path, a2m_ckpt_dir):
    """A fixture with another length, batch, temperature and mouth amplitude (golden values from our
    model): it passes only if the runner takes every shape and setting from the npz (the seed-0 fixture
    has temperature 0.2, the runner's default is 1.0, this file has 0.5)."""
    model = load_checkpoint(a2m_ckpt_dir)
    g = torch.Generator().manual_seed(3)
    hubert = torch.randn(2, 32, 1024, generator=g) * 0.4
    f0 = torch.where(torch.rand(2, 32, generator=g) > 0.3, 100 + 100 * torch.rand(2, 32, generator=g), 0.0)
    z = torch.randn(2, 16, 4, generator=g)
    mouth_amp = torch.tensor([[0.3], [0.6]])
    with torch.no_grad():
        out = model(hubert, f0, mouth_amp=mouth_amp, temperature=0.5, noise=z)
    arrays = {
        "hubert": hubert,
        "f0": f0,
        "z": z,
        "mouth_amp": mouth_amp,
        "temperature": torch.tensor(0.5),
        "blink": torch.zeros(2, 32, 1, dtype=torch.long),
        "exp": out.exp,
        "cond": out.cond,
    }
    path = _write_npz(tmp_path / "other.npz", {k: v.numpy() for k, v in arrays.items()})
    report = run_parity(a2m_ckpt_dir, path)
    assert report.passed and [t.name for t in report.tensors] == ["exp", "cond"]
    assert report.tensors[0].shape == [2, 16, 64] and report.tensors[0].max_abs == 0.0


def test_converted_checkpoint_passes_with_identical_weights(tmp_path, a2m_ckpt_dir, a2m_npz, capsys):
    assert convert_main([str(a2m_ckpt_dir), str(tmp_path / "ours")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ours")
    ours = run_parity(tmp_path / "ours", a2m_npz)
    assert ours.passed and ours.checkpoint == str(tmp_path / "ours")
    sd_official = load_checkpoint(a2m_ckpt_dir).state_dict()
    sd_ours = load_checkpoint(tmp_path / "ours").state_dict()
    assert list(sd_official) == list(sd_ours)
    assert all(torch.equal(sd_official[k], sd_ours[k]) for k in sd_ours)


def test_convert_errors(tmp_path, capsys):
    assert convert_main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 4
    assert "does not exist" in capsys.readouterr().err
    torch.save(
        {"state_dict": {"model": {"x.weight": torch.ones(1)}}},
        tmp_path / "model_ckpt_steps_1.ckpt",
        _use_new_zipfile_serialization=False,
    )
    with pytest.raises(Exception, match="not a known official"):
        convert_official(tmp_path, tmp_path / "out")


def test_torso_fixture_against_another_model_kind(tmp_path, a2m_ckpt_dir, capsys):
    keys = ["img", "camera", "cond_cano", "cond_src", "cond_tgt", "image"]
    path = _write_npz(tmp_path / "torso_like.npz", {k: np.zeros((1, 3, 4, 4), np.float32) for k in keys})
    with pytest.raises(CheckpointError, match="secc2plane_torso fixture but the checkpoint holds a Audio2Motion"):
        run_parity(a2m_ckpt_dir, path)
    assert parity_main(["--checkpoint", str(a2m_ckpt_dir), "--fixture", str(path)]) == CheckpointError.exit_code


# --------------------------------------------------------------------------------------------- torso
TORSO_GOLDEN = [
    "image",
    "image_raw",
    "feature_image",
    "weights_img",
    "image_depth",
    "occlusion_2",
    "occlusion",
    "torso_occlusion_2_pre",
    "sr_block0_rgb",
    "sr_head_torso_block_rgb",
    "sr_block1_in_rgb",
    "torso_rgb",
    "torso_deformation",
    "debug_depths_coarse",
    "debug_depths_fine",
    "cano_planes",
    "secc_planes",
    "torso_appearance_feats",
    "deformed_torso_hid",
]
FLOAT16_GOLDEN = {"cano_planes", "secc_planes", "torso_appearance_feats", "deformed_torso_hid"}


def test_torso_parity_on_the_real_fixture(torso_ckpt_dir, official_dir):
    """The full official-size model from the official-format seed-0 checkpoint against every golden tensor
    of torso_seed0.npz (~30-80 s on a busy 2-core CPU; CI must prove parity, so it is in the default suite)."""
    torch.set_num_threads(2)
    report = run_parity(torso_ckpt_dir, official_dir / "torso_seed0.npz")
    by_name = {t.name: t for t in report.tensors}
    assert sorted(by_name) == sorted(TORSO_GOLDEN), "every golden tensor of the fixture is compared"
    failed = {t.name: (t.max_abs, t.worst_ratio, t.note) for t in report.tensors if not t.passed}
    assert report.passed and report.model == "secc2plane_torso", failed
    image = by_name["image"]
    assert image.tolerance == 2e-3 and image.mean_tolerance == 1e-4 and image.mean_abs <= 1e-4
    assert by_name["occlusion_2"].tolerance == 1e-4 and by_name["debug_depths_fine"].tolerance == 2e-4
    assert {t.name for t in report.tensors if t.rel_tolerance == 1e-3} == FLOAT16_GOLDEN
    assert by_name["debug_depths_coarse"].shape == [256, 48]
    # a semantic mistake is orders of magnitude away; ours is far inside every bound
    assert all(t.worst_ratio < 0.5 for t in report.tensors), {t.name: t.worst_ratio for t in report.tensors}


def _tiny_torso_fixture(tmp_path):
    """A tiny Real3DPortrait checkpoint and a 2-frame, 2-source fixture of the torso format whose golden
    values come from that model (float16 storage for the plane/volume intermediates, as in the release)."""
    from real3d.config.real3d_portrait import Real3DPortraitConfig
    from real3d.geometry import camera_from_pose
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.weights.io import save_pretrained

    torch.manual_seed(1)
    model = Real3DPortrait(Real3DPortraitConfig.tiny()).eval()
    ckpt = save_pretrained(model, None, tmp_path / "tiny")
    g = torch.Generator().manual_seed(7)
    s, b = model.config.image_resolution, 2

    def img():
        return torch.rand(b, 3, s, s, generator=g) * 2 - 1

    seg = torch.zeros(b, 6, s, s, dtype=torch.uint8)
    seg[:, 4, s // 2 :] = 1
    seg[:, 0, : s // 2] = 1
    kp_s = torch.rand(b, 68, 3, generator=g) * 1.6 - 0.8
    kp_s[..., 2] = 0
    kp_d = kp_s + 0.05
    kp_d[..., 2] = 0
    camera = camera_from_pose(torch.tensor([[0.05, -0.1, 0.02], [-0.05, 0.2, 0.0]]), torch.zeros(b, 3))
    inputs = {
        "img": img(),
        "ref_torso_img": img(),
        "bg_img": img(),
        "segmap": seg,
        "cond_cano": img(),
        "cond_src": img(),
        "cond_tgt": img(),
        "camera": camera,
        "kp_s": kp_s,
        "kp_d": kp_d,
    }
    with torch.no_grad():
        cache = model.encode_source(inputs["img"], inputs["ref_torso_img"], inputs["bg_img"], seg.float())
        out = model(
            cache,
            *(inputs[k] for k in ("cond_cano", "cond_src", "cond_tgt", "camera", "kp_s", "kp_d")),
            return_intermediates=True,
        )
    rays = torch.arange(0, out.depths_coarse.shape[1], 5)
    arrays = {k: v.numpy() for k, v in inputs.items()}
    arrays["debug_ray_index"] = rays.numpy()
    arrays["debug_depths_coarse"] = out.depths_coarse[:, rays].numpy()
    arrays["debug_depths_fine"] = out.depths_fine[:, rays].numpy()
    for name in TORSO_GOLDEN:
        if not name.startswith("debug_"):
            value = getattr(out, OURS.get(name, name)).numpy()
            arrays[name] = value.astype(np.float16) if name in FLOAT16_GOLDEN else value
    return ckpt, arrays


def test_torso_runner_takes_everything_from_the_file(tmp_path):
    """Another model size, batch 2, other rays: it passes only if every shape and index comes from the npz."""
    ckpt, arrays = _tiny_torso_fixture(tmp_path)
    report = run_parity(ckpt, _write_npz(tmp_path / "tiny.npz", arrays))
    assert report.passed, [(t.name, t.max_abs, t.note) for t in report.tensors if not t.passed]
    by_name = {t.name: t for t in report.tensors}
    assert sorted(by_name) == sorted(TORSO_GOLDEN)
    assert by_name["image"].max_abs < 1e-5 and by_name["image"].shape[0] == 2
    assert by_name["debug_depths_fine"].shape == list(arrays["debug_depths_fine"].shape)
    assert by_name["cano_planes"].max_abs > 0  # float16 storage rounding, accepted by the relative rule

    def fails(name, change, **extra):
        bad = {**arrays, **extra}
        bad[name] = change(arrays[name].copy())
        rep = run_parity(ckpt, _write_npz(tmp_path / f"bad_{name}.npz", bad))
        return sorted(t.name for t in rep.tensors if not t.passed)

    def shift_one(x, by=3e-3):
        x.flat[11] += by
        return x

    assert fails("image", lambda x: x + 2e-4) == ["image"]  # max within 2e-3 but the mean is not
    assert fails("occlusion_2", shift_one) == ["occlusion_2"]
    # float16 rule: |a - ref| <= 2e-3 + 1e-3 |ref|
    assert fails("secc_planes", lambda x: shift_one(x, np.float16(3e-3 + 2e-3 * abs(float(x.flat[11]))))) == [
        "secc_planes"
    ]
    assert fails("debug_depths_coarse", lambda x: x[:, :-1]) == ["debug_depths_coarse"]  # shape
    assert fails("image", lambda x: x, extra_golden=np.zeros(3, np.float32)) == ["extra_golden"]


def test_convert_official_torso(tmp_path, torso_ckpt_dir, capsys):
    """`real3d convert-official` on the torso checkpoint: model.safetensors + config.json that rebuild the
    exact official-layout module (state dict bit-identical to the official file)."""
    from real3d.config.real3d_portrait import Real3DPortraitConfig
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.weights.io import from_pretrained, read_config
    from real3d.weights.official import load_official_checkpoint

    assert convert_main([str(torso_ckpt_dir), str(tmp_path / "ours")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ours")
    assert read_config(tmp_path / "ours") == ("real3d_portrait", Real3DPortraitConfig.official())
    model = from_pretrained(tmp_path / "ours")
    assert isinstance(model, Real3DPortrait) and not model.training
    official = load_official_checkpoint(torso_ckpt_dir).state_dict
    ours = model.state_dict()
    assert list(ours) == list(official) and len(ours) == 1030
    assert all(torch.equal(ours[k], official[k]) for k in ours)


@pytest.mark.slow
def test_converted_torso_checkpoint_passes_parity(tmp_path, torso_ckpt_dir, official_dir):
    assert convert_main([str(torso_ckpt_dir), str(tmp_path / "ours")]) == 0
    report = run_parity(tmp_path / "ours", official_dir / "torso_seed0.npz")
    assert report.passed, [(t.name, t.max_abs) for t in report.tensors if not t.passed]
