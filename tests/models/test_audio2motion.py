"""Audio2Motion: official parity (golden tensors), tiny-preset shapes, sampling determinism, flow
invertibility, the training path and the save/load round trip."""

from __future__ import annotations

import math

import pytest
import torch

from real3d.config.audio2motion import Audio2MotionConfig, official, tiny
from real3d.errors import CheckpointError, InputError
from real3d.models.audio2motion import (
    Audio2Motion,
    config_from_official,
    f0_to_coarse,
    remap_official_state_dict,
)
from real3d.state_dict import load_state_dict_strict
from real3d.weights.io import from_pretrained, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


def _tiny_model(seed: int = 0, cfg: Audio2MotionConfig | None = None) -> Audio2Motion:
    torch.manual_seed(seed)
    model = Audio2Motion(cfg or tiny())
    # the flow's last layers start at zero (identity flow); make them non-trivial for the tests
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".post." in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def _tiny_inputs(b: int = 2, t50: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    hubert = torch.randn(b, t50, tiny().audio_dim, generator=g)
    f0 = torch.rand(b, t50, generator=g) * 200 + 80
    f0[:, :3] = 0.0  # unvoiced start
    return hubert, f0


def test_official_parity_on_fixture(a2m_state_dict, a2m_fixture):
    sd = remap_official_state_dict(a2m_state_dict)
    cfg = config_from_official(sd)
    assert cfg == official()
    model = Audio2Motion(cfg)
    assert list(model.state_dict()) == list(a2m_state_dict)  # official key names, official order
    assert sum(p.numel() for p in model.parameters()) == 11_864_064
    load_state_dict_strict(model, sd, "seed-0 official A2M")
    model.eval()
    t = {k: torch.from_numpy(v) for k, v in a2m_fixture.items()}
    with torch.no_grad():
        out = model(
            t["hubert"],
            t["f0"],
            blink=t["blink"],
            mouth_amp=t["mouth_amp"],
            y_mask=t["y_mask"],
            temperature=float(t["temperature"]),
            noise=t["z"],
        )
    tolerances = {"exp": 1e-4, "cond": 2e-5, "g_sqz": 2e-5, "z_decoder_in": 2e-5}
    for name, tol in tolerances.items():
        ours = getattr(out, name)
        assert ours.shape == t[name].shape, name
        err = (ours - t[name]).abs().max().item()
        assert err <= tol, f"{name}: max abs {err:.3g} > {tol}"
    # the output is not trivially small: a real expression sequence (fixture std ~0.86)
    assert 0.5 < out.exp.std().item() < 1.5


def test_official_config_checks_the_yaml_flags(a2m_state_dict):
    sd = remap_official_state_dict(a2m_state_dict)
    assert config_from_official(sd, {"use_pitch": True, "use_mouth_amp_embed": True}) == official()
    with pytest.raises(CheckpointError, match="use_mouth_amp_embed"):
        config_from_official(sd, {"use_mouth_amp_embed": False})
    with pytest.raises(CheckpointError, match="use_pitch"):
        config_from_official(sd, {"use_pitch": False, "use_mouth_amp_embed": True})
    with pytest.raises(CheckpointError, match="mel_encoder"):
        config_from_official({k: v for k, v in sd.items() if not k.startswith("mel_encoder")})


def test_remap_strips_wrapper_prefixes():
    sd = {"_orig_mod.cond_proj.bias": torch.ones(2).t(), "module.blink_embed.weight": torch.zeros(2, 3)}
    out = remap_official_state_dict(sd)
    assert sorted(out) == ["blink_embed.weight", "cond_proj.bias"]


def test_tiny_shapes():
    cfg = tiny()
    model = _tiny_model()
    hubert, f0 = _tiny_inputs(b=2, t50=16)
    out = model(hubert, f0, mouth_amp=0.45, generator=torch.Generator().manual_seed(0))
    assert out.exp.shape == (2, 8, cfg.motion_dim)
    assert out.cond.shape == (2, 8, cfg.cond_dim)
    assert out.g_sqz.shape == (2, cfg.cond_dim, 2)
    assert out.z_decoder_in.shape == (2, cfg.latent_dim, 2)
    assert torch.isfinite(out.exp).all()


def test_odd_audio_length_takes_even_frames_and_bad_lengths_raise():
    model = _tiny_model()
    hubert, f0 = _tiny_inputs(b=1, t50=17)  # nearest x0.5 -> 8 frames (0, 2, ..., 14)
    out = model(hubert, f0, generator=torch.Generator().manual_seed(0))
    assert out.exp.shape[1] == 8
    ref = model.condition(hubert[:, :16], f0[:, :16])
    torch.testing.assert_close(out.cond, ref, rtol=0, atol=0)
    with pytest.raises(InputError, match="multiple of 4"):
        model(*_tiny_inputs(b=1, t50=12))  # 6 frames at 25 Hz
    with pytest.raises(InputError, match="same T"):
        model(hubert[:, :16], f0[:, :14])


def test_noise_determinism_and_temperature():
    model = _tiny_model()
    hubert, f0 = _tiny_inputs()
    with torch.no_grad():
        a = model(hubert, f0, temperature=0.7, generator=torch.Generator().manual_seed(5))
        b = model(hubert, f0, temperature=0.7, generator=torch.Generator().manual_seed(5))
        c = model(hubert, f0, temperature=0.7, generator=torch.Generator().manual_seed(6))
        noise = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(5))
        d = model(hubert, f0, temperature=0.7, noise=noise)
        z0 = model(hubert, f0, temperature=0.0, noise=noise)
        z1 = model(hubert, f0, temperature=0.0, noise=torch.randn(2, 4, 2))
    assert torch.equal(a.exp, b.exp)
    assert not torch.allclose(a.exp, c.exp)
    assert torch.equal(a.exp, d.exp)  # the generator draws exactly the passed-in noise
    assert torch.equal(z0.exp, z1.exp)  # temperature 0: the noise is irrelevant
    with pytest.raises(InputError, match="noise has shape"):
        model(hubert, f0, noise=torch.zeros(2, 4, 3))


def test_conditions_change_the_output():
    model = _tiny_model()
    hubert, f0 = _tiny_inputs()
    noise = torch.randn(2, 4, 2)
    with torch.no_grad():
        base = model(hubert, f0, mouth_amp=0.45, noise=noise).exp
        amp = model(hubert, f0, mouth_amp=torch.tensor([[0.9], [0.9]]), noise=noise).exp
        blink = model(hubert, f0, mouth_amp=0.45, blink=torch.ones(2, 16, 1, dtype=torch.long), noise=noise).exp
        default = model(hubert, f0, noise=noise).exp
        explicit = model(hubert, f0, mouth_amp=tiny().default_mouth_amp, noise=noise).exp
    assert not torch.allclose(base, amp)
    assert not torch.allclose(base, blink)
    assert torch.equal(default, explicit)


def test_y_mask_zeroes_frames():
    model = _tiny_model()
    hubert, f0 = _tiny_inputs()
    mask = torch.ones(2, 8)
    mask[1, 5:] = 0
    out = model(hubert, f0, y_mask=mask, noise=torch.randn(2, 4, 2))
    assert out.exp[1, 5:].abs().max() == 0
    assert out.exp[1, :5].abs().max() > 0


def test_f0_to_coarse_bins():
    f0 = torch.tensor([0.0, 50.0, 100.0, 200.0, 1100.0, 5000.0])
    coarse = f0_to_coarse(f0)
    assert coarse[0] == 1 and coarse[1] == 1  # unvoiced and the lowest pitch share bin 1
    assert coarse[4] == 255 and coarse[5] == 255
    # 200 Hz on the mel scale: 1 + 254 * (mel(200) - mel(50)) / (mel(1100) - mel(50)), rounded half up
    mel = lambda hz: 1127 * math.log(1 + hz / 700)  # noqa: E731
    assert coarse[3] == int(1 + 254 * (mel(200) - mel(50)) / (mel(1100) - mel(50)) + 0.5)
    assert torch.all(coarse[1:].diff() >= 0)


def test_prior_flow_is_invertible():
    model = _tiny_model()
    g = torch.randn(2, tiny().cond_dim, 5)
    z = torch.randn(2, tiny().latent_dim, 5)
    with torch.no_grad():
        fwd = model.vae.prior_flow(z, None, g)
        back = model.vae.prior_flow(fwd, None, g, reverse=True)
    assert not torch.allclose(fwd, z)
    torch.testing.assert_close(back, z, rtol=0, atol=1e-6)


def test_posterior_kl_matches_closed_form_for_identity_flow():
    torch.manual_seed(0)
    model = Audio2Motion(tiny()).eval()  # fresh init: the coupling outputs are zero, so the flow is identity
    hubert, f0 = _tiny_inputs()
    cond = model.condition(hubert, f0)
    exp = torch.randn(2, 8, tiny().motion_dim)
    noise = torch.randn(2, tiny().latent_dim, 2)
    out = model.posterior(exp, cond, noise=noise)
    assert out.recon.shape == exp.shape
    torch.testing.assert_close(out.z_p, out.z_q)
    # log N(z; m, s) - log N(z; 0, 1) with z = m + s*eps
    expected = (-0.5 * noise**2 - out.log_std_q + 0.5 * out.z_q**2).mean()
    torch.testing.assert_close(out.kl, expected, rtol=1e-5, atol=1e-6)


def test_training_step_reduces_loss():
    model = _tiny_model().train()
    hubert, f0 = _tiny_inputs()
    target = torch.randn(2, 8, tiny().motion_dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(20):
        out = model.posterior(target, model.condition(hubert, f0), generator=gen)
        loss = (out.recon - target).pow(2).mean() + 0.02 * out.kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_posterior_mask_zeroes_padded_frames():
    model = _tiny_model()
    hubert, f0 = _tiny_inputs()
    mask = torch.ones(2, 8)
    mask[0, 4:] = 0
    out = model.posterior(torch.randn(2, 8, 6), model.condition(hubert, f0), y_mask=mask, noise=torch.randn(2, 4, 2))
    assert out.recon[0, 4:].abs().max() == 0
    assert torch.isfinite(out.kl)


def test_save_load_round_trip(tmp_path):
    model = _tiny_model()
    save_pretrained(model, model.config, tmp_path / "a2m")
    loaded = from_pretrained(tmp_path / "a2m")
    assert isinstance(loaded, Audio2Motion) and loaded.config == model.config and not loaded.training
    hubert, f0 = _tiny_inputs()
    noise = torch.randn(2, 4, 2)
    with torch.no_grad():
        assert torch.equal(model(hubert, f0, noise=noise).exp, loaded(hubert, f0, noise=noise).exp)
