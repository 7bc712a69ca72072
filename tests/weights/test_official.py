"""Reading official checkpoints: malicious pickles are refused (and their payload never runs), the
highest step wins, both state-dict layouts, config.yaml via safe_load."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from real3d.errors import CheckpointError
from real3d.weights.official import load_official_checkpoint, resolve_checkpoint_file


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _save_legacy(obj, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)  # the official (pre-zip) format
    return path


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-pickle", "zip"])
def test_malicious_pickle_is_refused_and_payload_never_runs(tmp_path, legacy):
    marker = tmp_path / "payload_ran"
    ckpt = {"state_dict": {"model": {"w": torch.ones(2)}}, "checkpoint_callback_best": _Payload(marker)}
    path = tmp_path / "model_ckpt_steps_10.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(tmp_path)
    msg = str(info.value)
    assert "refusing to load" in msg and "system" in msg  # says what was refused
    assert "official release" in msg  # and what to do
    assert not marker.exists()
    # control: the file really is malicious, an unsafe load runs the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_resolution_picks_the_highest_step_numerically(tmp_path):
    for step in (1000, 99999, 400000):  # "99999" sorts after "400000" as text
        _save_legacy(
            {"global_step": step, "state_dict": {"model": {"w": torch.full((1,), float(step))}}},
            tmp_path / f"model_ckpt_steps_{step}.ckpt",
        )
    (tmp_path / "other.ckpt").write_bytes(b"ignored")
    (tmp_path / "config.yaml").write_text("use_pitch: true\nhidden_size: 256\n")
    assert resolve_checkpoint_file(tmp_path).name == "model_ckpt_steps_400000.ckpt"
    ck = load_official_checkpoint(tmp_path)
    assert ck.global_step == 400000 and ck.state_dict["w"].item() == 400000.0
    assert ck.hparams == {"use_pitch": True, "hidden_size": 256}
    # a single file works too; its directory's config.yaml is read
    one = load_official_checkpoint(tmp_path / "model_ckpt_steps_1000.ckpt")
    assert one.state_dict["w"].item() == 1000.0 and one.hparams is not None


def test_nested_layout_ignores_other_modules(tmp_path):
    _save_legacy(
        {"state_dict": {"model": {"a.weight": torch.ones(3)}, "syncnet": {"b": torch.zeros(1)}}},
        tmp_path / "model_ckpt_steps_5.ckpt",
    )
    ck = load_official_checkpoint(tmp_path)
    assert list(ck.state_dict) == ["a.weight"] and ck.other_entries == ["syncnet"] and ck.hparams is None


def test_flat_layout(tmp_path):
    sd = {"model.vae.w": torch.ones(2), "model.b": torch.zeros(1), "disc.x": torch.ones(1), "modelx.y": torch.ones(1)}
    _save_legacy({"state_dict": sd}, tmp_path / "model_ckpt_steps_7.ckpt")
    ck = load_official_checkpoint(tmp_path)
    assert sorted(ck.state_dict) == ["b", "vae.w"]
    assert torch.equal(ck.state_dict["vae.w"], torch.ones(2))
    assert "disc" in ck.other_entries


def test_numpy_scalars_in_metadata_are_allowed(tmp_path):
    _save_legacy(
        {"checkpoint_callback_best": np.float64(0.25), "global_step": 3, "state_dict": {"model": {"w": torch.ones(1)}}},
        tmp_path / "model_ckpt_steps_3.ckpt",
    )
    assert load_official_checkpoint(tmp_path).global_step == 3


def test_unsafe_yaml_is_refused(tmp_path):
    marker = tmp_path / "yaml_ran"
    _save_legacy({"state_dict": {"model": {"w": torch.ones(1)}}}, tmp_path / "model_ckpt_steps_1.ckpt")
    (tmp_path / "config.yaml").write_text(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CheckpointError, match="plain YAML"):
        load_official_checkpoint(tmp_path)
    assert not marker.exists()


def test_readable_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no model_ckpt_steps"):
        load_official_checkpoint(tmp_path)
    (tmp_path / "model_ckpt_steps_1.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read") as info:
        load_official_checkpoint(tmp_path)
    assert "refusing" not in str(info.value)
    _save_legacy({"weights": {}}, tmp_path / "model_ckpt_steps_2.ckpt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_official_checkpoint(tmp_path)
    _save_legacy({"state_dict": {"disc": {"w": torch.ones(1)}}}, tmp_path / "model_ckpt_steps_3.ckpt")
    with pytest.raises(CheckpointError, match=r"no state_dict\['model'\] \(entries: disc\)"):
        load_official_checkpoint(tmp_path)


def test_official_a2m_checkpoint_reads(a2m_ckpt_dir):
    ck = load_official_checkpoint(a2m_ckpt_dir)
    assert ck.path.name == "model_ckpt_steps_400000.ckpt" and ck.global_step == 400000
    assert len(ck.state_dict) == 231
    assert ck.hparams["use_mouth_amp_embed"] is True and ck.hparams["use_eye_amp_embed"] is False
