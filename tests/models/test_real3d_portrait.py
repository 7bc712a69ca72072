"""Real3DPortrait (the whole official torso generator): official key layout, per-source cache, batching,
sampling modes, config from the official yaml, save/load round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from real3d.config.real3d_portrait import Real3DPortraitConfig
from real3d.errors import CheckpointError, InputError
from real3d.geometry import camera_from_pose
from real3d.models.real3d_portrait import (
    Real3DPortrait,
    Real3DPortraitOutput,
    remap_official_state_dict,
)
from real3d.weights.io import from_pretrained, read_config, save_pretrained

SOURCE_KEYS = ("img", "ref_torso_img", "bg_img", "segmap")
FRAME_KEYS = ("cond_cano", "cond_src", "cond_tgt", "camera", "kp_s", "kp_d")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


def tiny_inputs(cfg: Real3DPortraitConfig, frames: int = 2, sources: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic source (batch `sources`) and driving inputs (batch `frames`) at the tiny image size."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_resolution

    def img(b: int) -> torch.Tensor:
        return torch.rand(b, 3, s, s, generator=g) * 2 - 1

    seg = torch.zeros(sources, 6, s, s)
    seg[:, 4, s // 2 :] = 1
    seg[:, 2, s // 4 : s // 2, s // 4 : 3 * s // 4] = 1
    seg[:, 0] = 1 - seg[:, 2] - seg[:, 4]
    euler = (torch.rand(frames, 3, generator=g) - 0.5) * 0.4
    trans = (torch.rand(frames, 3, generator=g) - 0.5) * 0.1
    kp_s = torch.rand(frames, 68, 3, generator=g) * 1.6 - 0.8
    kp_s[..., 2] = 0
    kp_d = kp_s + 0.05 * torch.randn(frames, 68, 3, generator=g)
    kp_d[..., 2] = 0
    return {
        "img": img(sources),
        "ref_torso_img": img(sources),
        "bg_img": img(sources),
        "segmap": seg.to(torch.uint8),
        "cond_cano": img(frames),
        "cond_src": img(frames),
        "cond_tgt": img(frames),
        "camera": camera_from_pose(euler, trans),
        "kp_s": kp_s,
        "kp_d": kp_d,
    }


def _generate(model: Real3DPortrait, *args: torch.Tensor, **kwargs) -> Real3DPortraitOutput:
    """Source and frame in one call, without caching (what the official forward does every frame)."""
    if not args:
        args = tuple(kwargs.pop(k) for k in SOURCE_KEYS + FRAME_KEYS)
    return model(model.encode_source(*args[: len(SOURCE_KEYS)]), *args[len(SOURCE_KEYS) :], **kwargs)


def _outputs(out: Real3DPortraitOutput) -> dict[str, torch.Tensor]:
    return {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if getattr(out, f.name) is not None}


@pytest.fixture(scope="module")
def tiny_model() -> Real3DPortrait:
    torch.manual_seed(0)
    return Real3DPortrait(Real3DPortraitConfig.tiny()).eval()


def test_state_dict_equals_the_official_layout(official_dir) -> None:
    """Every official key, in the official order, with the official shapes; 148,019,272 parameters."""
    rows = [line.split("\t") for line in (official_dir / "manifest_secc2plane_torso.tsv").read_text().splitlines()[1:]]
    with torch.device("meta"):
        model = Real3DPortrait(Real3DPortraitConfig.official())
    sd = model.state_dict()
    assert list(sd) == [r[0] for r in rows]
    shapes = {r[0]: [] if r[1] == "scalar" else [int(d) for d in r[1].split("x")] for r in rows}
    assert all(list(sd[k].shape) == shapes[k] for k in sd)
    assert sum(p.numel() for p in model.parameters()) == 148_019_272
    assert not model.lambda_pertube_secc.requires_grad


def test_tiny_shapes_with_a_shared_source(tiny_model: Real3DPortrait) -> None:
    cfg = tiny_model.config
    inp = tiny_inputs(cfg, frames=3)
    with torch.no_grad():
        cache = tiny_model.encode_source(*(inp[k] for k in SOURCE_KEYS))
        out = tiny_model(cache, *(inp[k] for k in FRAME_KEYS), return_intermediates=True)
    s, r, p = cfg.image_resolution, cfg.renderer.resolution, cfg.img2plane.plane_channels
    assert cache.cano_planes.shape == (1, 3, p, s // 2, s // 2)
    assert out.image.shape == (3, 3, s, s) and out.image.abs().max() <= 1
    assert out.image_raw.shape == (3, 3, r, r) and out.image_raw.abs().max() <= 1
    assert out.image_depth.shape == out.opacity.shape == (3, 1, r, r)
    assert out.occlusion_2.shape == (3, 1, 2 * r, 2 * r)
    assert out.motion_planes.shape == out.cano_planes.shape == (3, 3, p, s // 2, s // 2)
    assert out.depths_coarse.shape == (3, r * r, cfg.renderer.num_samples_coarse)
    assert torch.equal(out.image_raw, out.feature_image[:, :3].clamp(-1, 1))
    assert ((out.opacity > 0) & (out.opacity < 1)).all()
    # without intermediates only the six outputs are set
    with torch.no_grad():
        plain = tiny_model(cache, *(inp[k] for k in FRAME_KEYS))
    assert sorted(_outputs(plain)) == sorted(
        ["image", "image_raw", "image_depth", "opacity", "occlusion", "occlusion_2"]
    )
    assert torch.equal(plain.image, out.image)


def test_cached_source_equals_the_uncached_call(tiny_model: Real3DPortrait) -> None:
    """encode_source once + forward == the official-style call that recomputes the source every frame,
    and a batch-1 cache broadcast over B frames == each frame on its own."""
    inp = tiny_inputs(tiny_model.config, frames=2, sources=1, seed=1)
    per_frame = {k: inp[k].expand(2, *inp[k].shape[1:]) for k in SOURCE_KEYS}
    with torch.no_grad():
        uncached = _generate(tiny_model, **per_frame, **{k: inp[k] for k in FRAME_KEYS}, return_intermediates=True)
        cache2 = tiny_model.encode_source(*(per_frame[k] for k in SOURCE_KEYS))
        cached2 = tiny_model(cache2, *(inp[k] for k in FRAME_KEYS), return_intermediates=True)
        cache1 = tiny_model.encode_source(*(inp[k] for k in SOURCE_KEYS))
        shared = tiny_model(cache1, *(inp[k] for k in FRAME_KEYS))
        second = tiny_model(cache1, *(inp[k][1:] for k in FRAME_KEYS))
    for name, value in _outputs(uncached).items():
        assert torch.equal(value, getattr(cached2, name)), name
    torch.testing.assert_close(shared.image, uncached.image, rtol=0, atol=1e-5)
    torch.testing.assert_close(second.image, shared.image[1:], rtol=0, atol=1e-5)
    assert not torch.allclose(shared.image[0], shared.image[1])  # the frames do differ


def test_sampling_modes(tiny_model: Real3DPortrait) -> None:
    inp = tiny_inputs(tiny_model.config, frames=1, seed=2)
    frame = [inp[k] for k in FRAME_KEYS]
    with torch.no_grad():
        cache = tiny_model.encode_source(*(inp[k] for k in SOURCE_KEYS))
        det = [tiny_model(cache, *frame, mode="deterministic", return_intermediates=True) for _ in range(2)]
        default = tiny_model(cache, *frame)
        sto = [
            tiny_model(cache, *frame, mode="stochastic", generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)
        ]
    assert torch.equal(det[0].image, det[1].image) and torch.equal(det[0].image, default.image)
    # deterministic strata are midpoints: constant spacing along each ray
    steps = det[0].depths_coarse.diff(dim=-1)
    torch.testing.assert_close(steps, steps[..., :1].expand_as(steps), rtol=1e-5, atol=1e-6)
    assert torch.equal(sto[0].image, sto[1].image)
    assert not torch.equal(sto[0].image_raw, sto[2].image_raw)
    assert not torch.equal(sto[0].image_raw, det[0].image_raw)
    with pytest.raises(InputError, match="mode"):
        tiny_model(cache, *frame, mode="random")


def test_batch_mismatches_raise(tiny_model: Real3DPortrait) -> None:
    inp = tiny_inputs(tiny_model.config, frames=3, sources=2, seed=3)
    with torch.no_grad():
        cache = tiny_model.encode_source(*(inp[k] for k in SOURCE_KEYS))
        with pytest.raises(InputError, match="source cache has batch 2"):
            tiny_model(cache, *(inp[k] for k in FRAME_KEYS))
        one = tiny_model.encode_source(*(inp[k][:1] for k in SOURCE_KEYS))
        frames = {k: inp[k] for k in FRAME_KEYS}
        frames["camera"] = inp["camera"][:2]
        with pytest.raises(InputError, match="camera has batch 2"):
            tiny_model(one, *frames.values())
        with pytest.raises(InputError, match="bg_img has batch 1"):
            tiny_model.encode_source(inp["img"], inp["ref_torso_img"], inp["bg_img"][:1], inp["segmap"])


def test_save_load_round_trip(tiny_model: Real3DPortrait, tmp_path) -> None:
    save_pretrained(tiny_model, None, tmp_path / "ckpt")
    model_type, config = read_config(tmp_path / "ckpt")
    assert model_type == "real3d_portrait" and config == tiny_model.config
    clone = from_pretrained(tmp_path / "ckpt")
    assert isinstance(clone, Real3DPortrait) and not clone.training
    inp = tiny_inputs(tiny_model.config, frames=2, seed=4)
    with torch.no_grad():
        a = _generate(tiny_model, *(inp[k] for k in SOURCE_KEYS + FRAME_KEYS))
        b = _generate(clone, *(inp[k] for k in SOURCE_KEYS + FRAME_KEYS))
    sd_a, sd_b = tiny_model.state_dict(), clone.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # identical weights; the outputs may differ in the last bit (the kernels see other memory alignments)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.image_depth, b.image_depth, rtol=0, atol=1e-6)
    # the renderer uses the loaded decoder, not a private copy
    assert clone._renderers["deterministic"].decoder is clone.decoder
    assert np.isfinite(a.image.numpy()).all()


def test_config_and_remap_errors() -> None:
    tiny = Real3DPortraitConfig.tiny()
    with pytest.raises(ValueError, match="channels"):
        dataclasses.replace(tiny, renderer=dataclasses.replace(tiny.renderer, feature_dim=4))
    with pytest.raises(ValueError, match="input_resolution"):
        dataclasses.replace(tiny, renderer=dataclasses.replace(tiny.renderer, resolution=16))
    with pytest.raises(CheckpointError, match="superresolution"):
        remap_official_state_dict({"decoder.net.0.weight": torch.zeros(1), "lambda_pertube_secc": torch.zeros(1)})


def _with_scope(model: Real3DPortrait, scope: str) -> Real3DPortrait:
    other = Real3DPortrait(model.config, autocast_scope=scope).eval()
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("scope", ["sr", "frame_convs", "all"])
def test_bfloat16_autocast_scopes(tiny_model: Real3DPortrait, scope: str) -> None:
    """Under CPU bf16 autocast (float32 weights) the model runs end to end and stays close to float32.
    `sr`: only HTB-SR's frame part is bf16; `frame_convs` (default): also the motion adapter's plane CNN;
    `all`: also its SegFormer and the source encoders. Rendering is float32 in every scope."""
    model = _with_scope(tiny_model, scope)
    inp = tiny_inputs(model.config, frames=2, seed=5)
    args = [inp[k] for k in SOURCE_KEYS + FRAME_KEYS]
    with torch.no_grad():
        ref = _generate(model, *args, return_intermediates=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cache = model.encode_source(*(inp[k] for k in SOURCE_KEYS))
            low = model(cache, *(inp[k] for k in FRAME_KEYS), return_intermediates=True)
    assert low.deformed_torso_hid.dtype == torch.bfloat16  # HTB-SR did run in bf16
    low_source = torch.bfloat16 if scope == "all" else torch.float32
    assert cache.cano_planes.dtype == cache.htbsr.bg_fused.dtype == low_source
    assert low.motion_planes.dtype == (torch.float32 if scope == "sr" else torch.bfloat16)
    exact = {
        "sr": ("cano_planes", "motion_planes", "feature_image", "opacity", "depths_fine"),
        "frame_convs": ("cano_planes",),
        "all": (),
    }[scope]
    for name in exact:
        torch.testing.assert_close(getattr(low, name), getattr(ref, name), rtol=0, atol=1e-5, msg=name)
    for name in ("feature_image", "opacity"):
        assert getattr(low, name).dtype == torch.float32  # the renderer's outputs
    err = (low.image.float() - ref.image).abs()
    assert torch.isfinite(err).all() and 0 < err.max() < 0.1 and err.mean() < 1e-2
    if scope == "sr":
        assert err.max() < 0.05 and err.mean() < 5e-3


def test_run_time_settings_are_not_saved_and_old_configs_still_load() -> None:
    """The precision scope, sampling mode and ray chunk are run-time settings: not in config.json; configs saved
    when they were (`autocast_sr_only`, `autocast_scope`, renderer `mode` / `chunk_rays`) load to the same
    architecture; unknown scopes are refused."""
    from real3d.weights.io import config_from_dict, config_to_dict

    config = Real3DPortraitConfig.tiny()
    data = config_to_dict(config)
    assert not {"autocast_scope", "autocast_sr_only"} & set(data) and not {"mode", "chunk_rays"} & set(data["renderer"])
    old = {
        **data,
        "autocast_sr_only": True,
        "autocast_scope": "sr",
        "renderer": {**data["renderer"], "mode": "stochastic", "chunk_rays": 32},
    }
    assert config_from_dict(Real3DPortraitConfig, old) == config
    with pytest.raises(ValueError, match="autocast_scope"):
        Real3DPortrait(config, autocast_scope="half")
