"""The parity runner: passes on the real fixture, fails on perturbed ones, works for other inputs of the
same format, dispatches the torso format, and its CLI entry points return the right exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from real3d.errors import InputError
from real3d.weights.convert import convert_main, convert_official
from real3d.weights.parity import load_checkpoint_model, parity_main, run_parity


@pytest.fixture(autouse=True)
def _one_thread():
    """The A2M forward is small: thread hand-offs dominate on a busy 2-core machine, so use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    assert parity_main(["--checkpoint", str(a2m_ckpt_dir), "--fixture", str(a2m_npz),
                        "--output", str(tmp_path / "r.json")]) == 0
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
    model = load_checkpoint_model(a2m_ckpt_dir)
    g = torch.Generator().manual_seed(3)
    hubert = torch.randn(2, 32, 1024, generator=g) * 0.4
    f0 = torch.where(torch.rand(2, 32, generator=g) > 0.3, 100 + 100 * torch.rand(2, 32, generator=g), 0.0)
    z = torch.randn(2, 16, 4, generator=g)
    mouth_amp = torch.tensor([[0.3], [0.6]])
    with torch.no_grad():
        out = model(hubert, f0, mouth_amp=mouth_amp, temperature=0.5, noise=z)
    arrays = {"hubert": hubert, "f0": f0, "z": z, "mouth_amp": mouth_amp, "temperature": torch.tensor(0.5),
              "blink": torch.zeros(2, 32, 1, dtype=torch.long), "exp": out.exp, "cond": out.cond}
    path = _write_npz(tmp_path / "other.npz", {k: v.numpy() for k, v in arrays.items()})
    report = run_parity(a2m_ckpt_dir, path)
    assert report.passed and [t.name for t in report.tensors] == ["exp", "cond"]
    assert report.tensors[0].shape == [2, 16, 64] and report.tensors[0].max_abs == 0.0


def test_converted_checkpoint_passes_with_identical_weights(tmp_path, a2m_ckpt_dir, a2m_npz, capsys):
    assert convert_main([str(a2m_ckpt_dir), str(tmp_path / "ours")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ours")
    ours = run_parity(tmp_path / "ours", a2m_npz)
    assert ours.passed and ours.checkpoint == str(tmp_path / "ours")
    sd_official = load_checkpoint_model(a2m_ckpt_dir).state_dict()
    sd_ours = load_checkpoint_model(tmp_path / "ours").state_dict()
    assert list(sd_official) == list(sd_ours)
    assert all(torch.equal(sd_official[k], sd_ours[k]) for k in sd_ours)


def test_convert_errors(tmp_path, capsys):
    assert convert_main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 4
    assert "does not exist" in capsys.readouterr().err
    torch.save({"state_dict": {"model": {"x.weight": torch.ones(1)}}}, tmp_path / "model_ckpt_steps_1.ckpt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(Exception, match="not a known official"):
        convert_official(tmp_path, tmp_path / "out")


def test_torso_format_is_dispatched_with_a_clear_message(tmp_path, a2m_ckpt_dir, capsys):
    keys = ["img", "camera", "cond_cano", "cond_src", "cond_tgt", "image"]
    path = _write_npz(tmp_path / "torso_like.npz", {k: np.zeros((1, 3, 4, 4), np.float32) for k in keys})
    with pytest.raises(NotImplementedError, match="torso parity needs"):
        run_parity(a2m_ckpt_dir, path)
    assert parity_main(["--checkpoint", str(a2m_ckpt_dir), "--fixture", str(path)]) == 1
    assert "not supported yet" in capsys.readouterr().err
