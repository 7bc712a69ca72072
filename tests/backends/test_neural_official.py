"""The whole neural path on CPU from tiny random-weight checkpoints in the **official** format
(config.yaml + legacy-pickle model_ckpt_steps_N.ckpt, official key names) and a synthetic BFM in the
official file layout: audio- and video-driven, with and without a background image, through the
public entries (`Pipeline`, `real3d animate --backend neural`)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from real3d.backends.neural import NeuralBackend, NeuralConfig
from real3d.errors import CheckpointError
from real3d.pipeline import AnimateOptions, Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

GREEN = (20, 200, 40)


def _tiny_official():
    """`Real3DPortraitConfig.tiny()` with MiT widths that split into the released head counts, and the
    released values of what official checkpoints do not record (heads, ASPP rates, epsilons)."""
    from real3d.config.real3d_portrait import Real3DPortraitConfig
    from real3d.weights.official_sizes import with_released_hyperparameters

    base = Real3DPortraitConfig.tiny()
    return with_released_hyperparameters(
        replace(base, motion_adapter=replace(base.motion_adapter, embed_dims=(4, 8, 20, 32)))
    )


def _lively(model):
    """Variance-preserving random weights (He-normal convs/linears, zero biases) and an opaque density.

    PyTorch's default init shrinks activations ~3x per layer, so a default-initialised tiny generator
    renders nearly the same frame whatever its PNCC, camera or keypoints (< 1 grey level apart); with
    these weights the conditioning visibly drives the picture."""
    import math

    from torch import nn

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                mod.weight.normal_(0.0, math.sqrt(2.0 / mod.weight[0].numel()))
                if mod.bias is not None:
                    mod.bias.zero_()
        model.decoder.net[2].bias[0] = 8.0  # density: softplus(7) per unit length, an opaque head
        model.secc_img2plane_backbone.to_plane_cnn[7].weight.mul_(20.0)  # PNCC planes larger than the image planes
    return model


def _transparent(model):
    """A copy of the torso model whose head and torso alpha are 0 and whose last ToRGB adds nothing,
    so every output pixel is the (upsampled) background."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        m.decoder.net[2].bias[0] = -100.0  # density -> softplus(-101) ~ 0: head alpha 0
        m.superresolution.torso_model.occlusion_2_predictor[4].bias.fill_(-100.0)  # torso alpha 0
        m.superresolution.block1.torgb.weight.zero_()
        m.superresolution.block1.torgb.bias.zero_()
    return m


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from skimage import data

    from real3d.backends.mesh import MeshRenderer
    from real3d.config.audio2motion import Audio2MotionConfig
    from real3d.config.hubert import HubertConfig
    from real3d.face.bfm_synthetic import write_synthetic_bfm
    from real3d.face.portrait import analyze_portrait
    from real3d.io.writer import VideoWriter
    from real3d.models.audio2motion import Audio2Motion
    from real3d.models.hubert import Hubert, save_hubert
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.motion.track import MotionTrack
    from real3d.weights.convert import convert_official, save_official_format

    root = tmp_path_factory.mktemp("neural_official")
    torch.manual_seed(0)
    torso = _lively(Real3DPortrait(_tiny_official()).eval())
    save_official_format(torso, root / "ckpt" / "secc2plane_torso_orig")
    save_official_format(_transparent(torso), root / "transparent" / "secc2plane_torso")
    hcfg = HubertConfig.tiny()
    save_hubert(Hubert(hcfg).eval(), root / "hubert")
    acfg = replace(Audio2MotionConfig.tiny(), audio_dim=hcfg.hidden_size, motion_dim=64)
    a2m = Audio2Motion(acfg).eval()
    with torch.no_grad():  # expression amplitudes of order 1, like the released model's (std 0.86)
        a2m.vae.decoder.out_proj.weight.mul_(8.0)
    save_official_format(a2m, root / "ckpt" / "audio2secc_vae")
    for name in ("secc2plane_torso_orig", "audio2secc_vae"):  # our format (`real3d convert-official`)
        convert_official(root / "ckpt" / name, root / "converted" / name)
    write_synthetic_bfm(root / "bfm", n_vertices=800)

    src = root / "src.png"
    Image.fromarray(data.astronaut()).save(src)
    wav = root / "speech.wav"
    subprocess.run([shutil.which("espeak-ng"), "-w", str(wav), "papa bought a map"], check=True)
    portrait = analyze_portrait(data.astronaut())
    drv = root / "driver.mp4"
    r = MeshRenderer(portrait)
    tr = MotionTrack.still(10, 25)
    tr.euler[:, 1] = np.linspace(0, 0.2, 10)
    with VideoWriter(drv, quiet=True) as w:
        for i in range(10):
            w.write(r.render(tr, i))
    bg = root / "bg.png"
    Image.fromarray(np.full((64, 80, 3), GREEN, np.uint8)).save(bg)
    return {
        "root": root,
        "src": src,
        "wav": wav,
        "drv": drv,
        "bg": bg,
        "torso": torso,
        "a2m_config": acfg,
        "own_bg_mean": portrait.background.reshape(-1, 3).mean(0),
    }


def _opts(a, out, **kw):
    kw.setdefault("blink", "none")
    return AnimateOptions(
        source=a["src"],
        output=out,
        backend="neural",
        checkpoints=a["root"] / "ckpt",
        bfm=a["root"] / "bfm",
        hubert=a["root"] / "hubert",
        quiet=True,
        visible_watermark=False,
        invisible_watermark=False,
        **kw,
    )


def _frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float64)


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_official_dirs_load_with_sizes_from_the_weights(assets):
    from real3d.assets import NeuralAssets

    root = assets["root"]
    assert not list((root / "ckpt").rglob("config.json"))  # nothing in our format
    backend = NeuralBackend(NeuralAssets(root / "ckpt", root / "bfm", root / "hubert", None), NeuralConfig())
    assert backend.model.config == assets["torso"].config
    assert backend.a2m.config == assets["a2m_config"]
    for k, v in assets["torso"].state_dict().items():
        assert torch.equal(backend.model.state_dict()[k], v), k
    # head image and PNCC at the size I2P / MA need: the frame size of the config (32 here, 512 released)
    assert backend.resolution == backend.pncc.image_size == 32


@pytest.fixture(scope="module")
def audio_run(assets, tmp_path_factory):
    """Frames of the audio-driven run without background, and its result."""
    out = tmp_path_factory.mktemp("audio") / "a.mp4"
    res = Pipeline()(_opts(assets, out, audio=assets["wav"], dtype="float32"))  # the reference of the bf16 test
    return _frames(out), res


def test_audio_driven(assets, audio_run):
    frames, res = audio_run
    expected = round(_wav_seconds(assets["wav"]) * 25)
    assert len(frames) == res.frames == expected > 20
    assert frames.shape[1:] == (32, 32, 3)
    # the A2M expression drives the picture (the pose is static): the frames change over time
    change = np.abs(frames - frames[0]).mean(axis=(1, 2, 3))
    assert change.max() > 1.0 and (change > 0).mean() > 0.5
    for k in ("hubert", "a2m", "fit_source", "encode_source", "pncc", "networks", "encode"):
        assert k in res.timings, k


def test_bfloat16_run_stays_close_to_float32(assets, audio_run, tmp_path, monkeypatch):
    """`--dtype bfloat16` (HTB-SR and the motion adapter's plane CNN under bf16 autocast) renders the same
    video as float32 up to small differences: same frame count, mean difference under 3 of 255 levels."""
    from real3d.models.real3d_portrait import Real3DPortrait

    frames32, _ = audio_run
    seen = []
    forward = Real3DPortrait.forward

    def spy(self, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Real3DPortrait, "forward", spy)
    res = Pipeline()(_opts(assets, tmp_path / "bf16.mp4", audio=assets["wav"], dtype="bfloat16"))
    assert seen and set(seen) == {torch.bfloat16}  # every frame batch ran under bf16 autocast
    frames16 = _frames(res.output)
    assert frames16.shape == frames32.shape
    diff = np.abs(frames16 - frames32)
    assert 0 < diff.mean() < 3.0, diff.mean()


def test_video_driven_debug_panels(assets, tmp_path):
    out = tmp_path / "v.mp4"
    res = Pipeline()(_opts(assets, out, video=assets["drv"], out_mode="debug", batch_size=3))
    frames = _frames(out)
    assert len(frames) == res.frames == 10
    assert frames.shape[1:] == (32, 128, 3)  # PNCC | raw | depth | result, each at the 32-px input size
    pncc = frames[:, :, :32]
    assert (pncc < 10).mean() > 0.3 and (pncc > 60).any(axis=-1).mean() > 0.05  # background -1, a face
    assert "fit_driver" in res.timings


def test_background_shows_where_alpha_is_zero_audio(assets, tmp_path):
    """A transparent person (head and torso alpha 0): the frame is the --background image."""
    transparent = assets["root"] / "transparent" / "secc2plane_torso"
    res = Pipeline()(
        _opts(
            assets,
            tmp_path / "bg.mp4",
            audio=assets["wav"],
            background=assets["bg"],
            generator_ckpt=transparent,
            max_seconds=0.4,
        )
    )
    frames = _frames(res.output)
    assert frames.shape == (10, 32, 32, 3)
    inner = frames[:, 2:-2, 2:-2]  # the FIR upsampling pads the border with 0 (grey)
    assert np.abs(inner - np.array(GREEN)).max() < 12


def test_own_background_shows_where_alpha_is_zero_video(assets, tmp_path):
    """A transparent person without --background: the frame is the source's own inpainted background."""
    transparent = assets["root"] / "transparent" / "secc2plane_torso"
    res = Pipeline()(
        _opts(assets, tmp_path / "own.mp4", video=assets["drv"], generator_ckpt=transparent, max_seconds=0.2)
    )
    frames = _frames(res.output)
    assert frames.shape == (5, 32, 32, 3)
    mean = frames[:, 2:-2, 2:-2].reshape(-1, 3).mean(0)
    assert np.abs(mean - assets["own_bg_mean"]).max() < 15
    assert np.abs(mean - np.array(GREEN)).max() > 60


def test_cli_audio_with_background(assets, audio_run, tmp_path):
    """`real3d animate --backend neural --background`: where the person alpha is below 1 (the rendered
    head covers only part of the frame) the green background tints the frames of the same run."""
    from real3d.cli import main

    out = tmp_path / "cli.mp4"
    root = assets["root"]
    code = main(
        [
            "animate",
            str(assets["src"]),
            "--audio",
            str(assets["wav"]),
            "--backend",
            "neural",
            "--checkpoints",
            str(root / "ckpt"),
            "--bfm",
            str(root / "bfm"),
            "--hubert",
            str(root / "hubert"),
            "--background",
            str(assets["bg"]),
            "--blink",
            "none",
            "--max-seconds",
            "0.4",
            "--no-visible-watermark",
            "-q",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    frames = _frames(out)
    assert frames.shape == (10, 32, 32, 3)
    plain = audio_run[0][:10]

    def greenness(x):
        return float((x[..., 1] - (x[..., 0] + x[..., 2]) / 2).mean())

    assert greenness(frames) > greenness(plain) + 8.0


def test_expression_drives_the_frames(assets):
    """Same pose, same expression -> identical frames; opening the jaw changes the lower-face PNCC
    and the output frame; the converted checkpoint renders the very same frames."""
    from skimage import data

    from real3d.assets import NeuralAssets
    from real3d.face.portrait import analyze_portrait
    from real3d.motion.bfm_track import BFMTrack
    from real3d.motion.cameras import driving_pose

    root = assets["root"]
    portrait = analyze_portrait(data.astronaut())
    exp = torch.zeros(4, 64)
    exp[2:, 0] = 3.0  # synthetic BFM: basis 0 opens the jaw

    def render(checkpoints):
        backend = NeuralBackend(
            NeuralAssets(checkpoints, root / "bfm", None, None),
            NeuralConfig(out_mode="debug", batch_size=4),
            need_audio=False,
        )
        src = backend.prepare(portrait)
        motion = BFMTrack(exp, driving_pose(src.euler, src.trans, 4, None), np.full(4, np.nan))
        return np.stack(list(backend.frames(src, motion))).astype(np.float64)  # [4,32,128,3]

    frames = render(root / "ckpt")
    assert np.array_equal(frames, render(root / "converted"))
    pncc, result = frames[:, :, :32], frames[:, :, 96:]
    assert np.array_equal(result[0], result[1]) and np.array_equal(result[2], result[3])
    assert np.abs(result[2] - result[0]).max() > 8 and np.abs(result[2] - result[0]).mean() > 1.5
    face_rows = np.nonzero((pncc[0] > 10).any(axis=(1, 2)))[0]
    changed = np.abs(pncc[2] - pncc[0]).max(axis=(1, 2)) > 0
    mid = (face_rows.min() + face_rows.max()) / 2
    rows = np.nonzero(changed)[0]
    assert len(rows) and rows.mean() > mid  # the jaw, below the middle of the face


def test_video_driven_still_without_hubert(assets, tmp_path, monkeypatch):
    monkeypatch.delenv("REAL3D_HUBERT", raising=False)
    opts = _opts(assets, tmp_path / "s.mp4", video=assets["drv"], still=True, max_seconds=0.2)
    opts.hubert = None  # video driving needs neither HuBERT nor the A2M
    opts.checkpoints = None
    opts.generator_ckpt = assets["root"] / "ckpt" / "secc2plane_torso_orig"
    assert Pipeline()(opts).frames == 5


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape"])
def test_broken_official_checkpoint_fails_cleanly(assets, tmp_path, damage):
    broken = tmp_path / "secc2plane_torso"
    shutil.copytree(assets["root"] / "ckpt" / "secc2plane_torso_orig", broken)
    ckpt = broken / "model_ckpt_steps_100000.ckpt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
        pattern = r"model_ckpt_steps_100000\.ckpt.*truncated"
    else:
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
        raw["state_dict"]["model"]["superresolution.fuse_fg_bg_convs.2.weight"] = torch.zeros(16, 8, 5, 5)
        torch.save(raw, ckpt, _use_new_zipfile_serialization=False)
        pattern = r"shape mismatches \(1\): superresolution\.fuse_fg_bg_convs\.2\.weight: checkpoint \(16, 8, 5, 5\)"
    out = tmp_path / "x.mp4"
    with pytest.raises(CheckpointError, match=pattern):
        Pipeline()(_opts(assets, out, audio=assets["wav"], generator_ckpt=broken))
    assert not out.exists() and not list(tmp_path.glob("*.mp4*"))


@pytest.mark.parametrize(("blink", "painted"), [("none", False), ("periodic", True), ("natural", None)])
def test_blink_option_reaches_the_neural_backend(assets, tmp_path, monkeypatch, blink, painted):
    """`AnimateOptions(backend="neural", blink=...)` decides the PNCC blink painting (no separate neural setting)."""
    from real3d.face import blink as blink_module

    calls = []
    close = blink_module.close_eyes
    monkeypatch.setattr(blink_module, "close_eyes", lambda pncc, f: calls.append(f) or close(pncc, f))
    Pipeline()(_opts(assets, tmp_path / "b.mp4", video=assets["drv"], blink=blink, max_seconds=0.4))
    if painted is None:  # natural blinks are random: whatever was painted is a partial-to-full closure
        assert all(0 < f <= 1 for f in calls)
    else:
        assert bool(calls) == painted
        assert not painted or calls[0] == 0.0 and max(calls) > 0.5  # the official schedule: a blink from frame 0


def test_pose_video_moves_the_head_of_an_audio_driven_run(assets, audio_run, tmp_path):
    """Speech drives the expression, the pose video (the astronaut turning its head) the camera."""
    frames_audio, _ = audio_run
    res = Pipeline()(_opts(assets, tmp_path / "p.mp4", audio=assets["wav"], pose_video=assets["drv"]))
    frames = _frames(res.output)
    assert frames.shape == frames_audio.shape and "fit_driver" in res.timings
    assert np.abs(frames - frames_audio).mean() > 1.0  # another head pose, same speech
