"""The whole neural path end to end on CPU with tiny random-weight models and a synthetic BFM."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from real3d.errors import DependencyError
from real3d.pipeline import AnimateOptions, Pipeline


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from skimage import data

    from real3d.backends.mesh import MeshRenderer
    from real3d.config.audio2motion import Audio2MotionConfig
    from real3d.config.hubert import HubertConfig
    from real3d.config.real3d_portrait import Real3DPortraitConfig
    from real3d.face.bfm_synthetic import write_synthetic_bfm
    from real3d.face.portrait import analyze_portrait
    from real3d.io.writer import VideoWriter
    from real3d.models.audio2motion import Audio2Motion
    from real3d.models.hubert import Hubert, save_hubert
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.motion.track import MotionTrack
    from real3d.weights.io import save_pretrained

    root = tmp_path_factory.mktemp("neural")
    torch.manual_seed(0)
    pcfg = Real3DPortraitConfig.tiny()
    save_pretrained(Real3DPortrait(pcfg).eval(), pcfg, root / "ckpt" / "secc2plane_torso")
    hcfg = HubertConfig.tiny()
    save_hubert(Hubert(hcfg).eval(), root / "hubert")
    acfg = replace(Audio2MotionConfig.tiny(), audio_dim=hcfg.hidden_size, motion_dim=64)
    save_pretrained(Audio2Motion(acfg).eval(), acfg, root / "ckpt" / "audio2secc_vae")
    write_synthetic_bfm(root / "bfm", n_vertices=800)

    src = root / "src.png"
    Image.fromarray(data.astronaut()).save(src)
    wav = root / "speech.wav"
    subprocess.run([shutil.which("espeak-ng"), "-w", str(wav), "papa bought a map"], check=True)
    drv = root / "driver.mp4"
    r = MeshRenderer(analyze_portrait(data.astronaut()))
    tr = MotionTrack.still(10, 25)
    tr.rotation[:, 1] = np.linspace(0, 0.2, 10)
    with VideoWriter(drv, visible_watermark=False, invisible_watermark=False, quiet=True) as w:
        for i in range(10):
            w.write(r.render(tr, i))
    bg = root / "bg.png"
    Image.fromarray(np.full((64, 80, 3), (20, 200, 40), np.uint8)).save(bg)
    return {"root": root, "src": src, "wav": wav, "drv": drv, "bg": bg}


def _opts(a, out, **kw):
    return AnimateOptions(source=a["src"], output=out, backend="neural", checkpoints=a["root"] / "ckpt",
                          bfm=a["root"] / "bfm", hubert=a["root"] / "hubert", quiet=True, **kw)


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_audio_driven(assets, tmp_path):
    out = tmp_path / "a.mp4"
    res = Pipeline()(_opts(assets, out, audio=assets["wav"]))
    frames = _frames(out)
    assert len(frames) == res.frames > 10 and frames[0].shape == (32, 32, 3)
    for k in ("hubert", "a2m", "fit_source", "encode_source", "pncc", "networks", "encode"):
        assert k in res.timings, k


def test_video_driven_with_background_and_debug(assets, tmp_path):
    from real3d.backends.neural import NeuralConfig

    out = tmp_path / "v.mp4"
    res = Pipeline()(_opts(assets, out, video=assets["drv"], background=assets["bg"],
                           neural=NeuralConfig(out_mode="debug", batch_size=3)))
    frames = _frames(out)
    assert len(frames) == res.frames == 10
    assert frames[0].shape == (32, 128, 3)  # PNCC | raw | depth | result
    assert "fit_driver" in res.timings


def test_video_driven_still_without_hubert(assets, tmp_path, monkeypatch):
    monkeypatch.delenv("REAL3D_HUBERT", raising=False)
    out = tmp_path / "s.mp4"
    opts = _opts(assets, out, video=assets["drv"], still=True)
    opts.hubert = None  # video driving does not need HuBERT
    assert Pipeline()(opts).frames == 10


def test_missing_bfm_is_a_clear_error(assets, tmp_path, monkeypatch):
    monkeypatch.delenv("REAL3D_BFM", raising=False)
    monkeypatch.setenv("REAL3D_CONFIG", str(tmp_path / "none.toml"))
    opts = _opts(assets, tmp_path / "x.mp4", audio=assets["wav"])
    opts.bfm = None
    with pytest.raises(DependencyError, match="--bfm"):
        Pipeline()(opts)
    assert not (tmp_path / "x.mp4").exists()
