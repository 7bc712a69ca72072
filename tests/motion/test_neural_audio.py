"""Neural audio driver: the official A2M batch (golden tensors), exact chunking, seeds and temperature,
padding, errors, and the whole chain wav -> HuBERT -> f0 -> A2M on tiny random models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import real3d.motion.neural_audio as na
from real3d.audio.pitch import official_f0
from real3d.config.audio2motion import Audio2MotionConfig
from real3d.config.hubert import HubertConfig
from real3d.errors import InputError
from real3d.models.audio2motion import Audio2Motion, remap_official_state_dict
from real3d.models.hubert import Hubert, hubert_features
from real3d.motion.neural_audio import a2m_expression, a2m_margin
from real3d.state_dict import load_state_dict_strict

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


def _a2m(cfg: Audio2MotionConfig | None = None, seed: int = 0) -> Audio2Motion:
    torch.manual_seed(seed)
    model = Audio2Motion(cfg or Audio2MotionConfig.tiny())
    with torch.no_grad():  # non-trivial flow and batch-norm statistics
        for name, p in model.named_parameters():
            if ".post." in name:
                p.normal_(0.0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(t50: int, dim: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    hub = torch.randn(t50, dim, generator=g)
    f0 = torch.rand(t50, generator=g) * 200 + 80
    f0[10:30] = 0.0
    return hub, f0


def test_official_batch_on_golden_tensors(a2m_state_dict, a2m_fixture):
    """Seed-0 official A2M: a2m_expression (chunked) with the fixture's noise reproduces the official exp."""
    sd = remap_official_state_dict(a2m_state_dict)
    model = Audio2Motion(Audio2MotionConfig.official())
    load_state_dict_strict(model, sd, "seed-0 official A2M")
    t = {k: torch.from_numpy(v) for k, v in a2m_fixture.items()}
    assert float(t["mouth_amp"]) == pytest.approx(na.OFFICIAL_MOUTH_AMP)
    assert float(t["temperature"]) == pytest.approx(na.OFFICIAL_TEMPERATURE)
    for chunk in (None, 0.64):  # one pass, and 16-frame chunks with context
        exp = a2m_expression(model, t["hubert"][0], t["f0"][0], noise=t["z"][0], chunk_seconds=chunk)
        assert exp.shape == (100, 64)
        err = (exp - t["exp"][0]).abs().max().item()
        assert err <= 1e-4, f"chunk {chunk}: max abs {err:.3g}"


def test_matches_a_direct_model_call_with_the_documented_batch():
    model = _a2m()
    hub, f0 = _inputs(64, 12)
    exp = a2m_expression(model, hub, f0, seed=3, chunk_seconds=None)
    noise = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(
            hub[None],
            f0[None],
            blink=torch.zeros(1, 64, 1, dtype=torch.long),
            mouth_amp=0.45,
            temperature=0.2,
            noise=noise,
            y_mask=torch.ones(1, 32),
        )
    assert exp.shape == (32, 6)
    assert torch.allclose(exp, out.exp[0], atol=1e-6)


@pytest.mark.parametrize("cfg_name", ["tiny", "official"])
def test_chunking_is_exact(cfg_name):
    cfg = getattr(Audio2MotionConfig, cfg_name)()
    model = _a2m(cfg)
    t50 = 8 * 60 if cfg_name == "official" else 8 * 40
    hub, f0 = _inputs(t50, cfg.audio_dim)
    full = a2m_expression(model, hub, f0, seed=0, chunk_seconds=None)
    for chunk in (0.16, 0.96, 2.4):
        part = a2m_expression(model, hub, f0, seed=0, chunk_seconds=chunk)
        assert part.shape == full.shape == (t50 // 2, cfg.motion_dim)
        assert torch.allclose(part, full, atol=2e-5), chunk


def test_chunk_context_is_needed(monkeypatch):
    """Without the margin the chunk borders change the result, so the exactness test above can fail."""
    model = _a2m()
    hub, f0 = _inputs(8 * 40, 12)
    full = a2m_expression(model, hub, f0, chunk_seconds=None)
    assert a2m_margin(model.config) == 8
    monkeypatch.setattr(na, "a2m_margin", lambda cfg: 1)
    part = a2m_expression(model, hub, f0, chunk_seconds=0.96)
    assert (part - full).abs().max() > 1e-3


def test_seed_temperature_mouth_amp():
    model = _a2m()
    hub, f0 = _inputs(64, 12)
    a = a2m_expression(model, hub, f0, seed=0)
    assert torch.equal(a, a2m_expression(model, hub, f0, seed=0))
    assert not torch.allclose(a, a2m_expression(model, hub, f0, seed=1), atol=1e-4)
    cold = a2m_expression(model, hub, f0, seed=0, temperature=0.0)
    assert torch.allclose(cold, a2m_expression(model, hub, f0, seed=5, temperature=0.0), atol=1e-6)
    assert not torch.allclose(a, a2m_expression(model, hub, f0, seed=0, mouth_amp=0.9), atol=1e-4)


def test_padding_to_the_latent_grid_and_mode_restore():
    model = _a2m().train()
    hub, f0 = _inputs(61, 12)
    exp = a2m_expression(model, hub, f0, seed=2)
    assert exp.shape == (32, 6) and model.training
    padded = a2m_expression(model, torch.cat([hub, torch.zeros(3, 12)]), torch.cat([f0, torch.zeros(3)]), seed=2)
    assert torch.allclose(exp, padded, atol=1e-6)
    assert torch.allclose(a2m_expression(model, hub.numpy(), f0.numpy()[:, None], seed=2), exp, atol=1e-6)


def test_bad_inputs():
    model = _a2m()
    hub, f0 = _inputs(64, 12)
    with pytest.raises(InputError, match="same T"):
        a2m_expression(model, hub, f0[:60])
    with pytest.raises(InputError, match="same T"):
        a2m_expression(model, hub[:, :10], f0)
    with pytest.raises(InputError, match="noise"):
        a2m_expression(model, hub, f0, noise=torch.zeros(4, 9))
    with pytest.raises(InputError, match="no audio frames"):
        a2m_expression(model, hub[:0], f0[:0])


def test_wav_to_expression_chain():
    """Synthetic speech-like audio through tiny random HuBERT, official f0 and tiny A2M."""
    torch.manual_seed(0)
    hubert = Hubert(HubertConfig.tiny()).eval()
    a2m = _a2m(dataclasses.replace(Audio2MotionConfig.tiny(), audio_dim=16))
    sr, n = 16000, 27_000
    t = np.arange(n) / sr
    wav = (0.4 * np.sin(2 * np.pi * (140 + 30 * t) * t) * (t < 1.0)).astype(np.float32)
    feats = hubert_features(hubert, wav)
    assert feats.shape == (88, 16)  # (27000-80)//320 = 84 frames, padded to 88
    f0 = official_f0(wav, num_frames=feats.shape[0])
    assert f0.shape == (88,) and 130 < np.median(f0[5:45]) < 180 and np.all(f0[55:] == 0)
    exp = a2m_expression(a2m, feats, f0, seed=0)
    assert exp.shape == (44, 6) and torch.isfinite(exp).all() and exp.std() > 1e-3
