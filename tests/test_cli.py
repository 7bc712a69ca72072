"""End to end through the CLI: photo + driving video -> checked output file; every bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from real3d.cli import main

N_FRAMES = 12


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A source photo and a short driving video (the astronaut animated by the mesh backend, with a tone)."""
    from skimage import data

    from real3d.backends.mesh import MeshRenderer
    from real3d.face.portrait import analyze_portrait
    from real3d.io.audio import Audio
    from real3d.io.writer import VideoWriter
    from real3d.motion.track import MotionTrack

    d = tmp_path_factory.mktemp("media") / "dossier é 写真"
    d.mkdir()
    src = d / "portrait photo.png"
    Image.fromarray(data.astronaut()).save(src)
    r = MeshRenderer(analyze_portrait(data.astronaut()))
    tr = MotionTrack.still(N_FRAMES, 25)
    tr.euler[:, 1] = np.linspace(0, 0.3, N_FRAMES)
    t = np.arange(int(16000 * N_FRAMES / 25)) / 16000
    tone = Audio((0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    drv = d / "driver clip.mp4"
    with VideoWriter(drv, fps=25, audio=tone, quiet=True) as w:
        for i in range(N_FRAMES):
            w.write(r.render(tr, i))
    return src, drv


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        n = sum(1 for _ in c.decode(video=0))
        return {
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "size": (v.codec_context.width, v.codec_context.height),
            "fps": float(v.average_rate),
            "frames": n,
            "audio": a.codec_context.name if a else None,
        }


def test_animate_video_end_to_end(media, tmp_path, capsys):
    src, drv = media
    out = tmp_path / "résultat final.mp4"
    rc = main(["animate", str(src), "--video", str(drv), "-o", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    info = _probe(out)
    assert info == {
        "codec": "h264",
        "pix_fmt": "yuv420p",
        "size": (512, 512),
        "fps": 25.0,
        "frames": N_FRAMES,
        "audio": "aac",
    }
    assert main(["verify", str(out)]) == 0  # carries the invisible watermark
    assert main(["verify", str(drv)]) == 1  # the unmarked driver does not
    assert not list(tmp_path.glob(".*part*"))  # no temp files left behind


def test_official_aliases_and_fps(media, tmp_path):
    src, drv = media
    out = tmp_path / "o.mp4"
    rc = main(
        [
            "animate",
            "--src_img",
            str(src),
            "--drv_aud",
            str(drv),
            "--drv_pose",
            "static",
            "--out_name",
            str(out),
            "--fps",
            "20",
            "-q",
            "--no-visible-watermark",
        ]
    )
    assert rc == 0
    info = _probe(out)
    assert info["fps"] == 20.0 and info["frames"] == round(N_FRAMES / 25 * 20)


@pytest.mark.parametrize(
    "make_args, code, message",
    [
        (lambda s, d, t: [str(t / "missing.jpg"), "--video", str(d)], 2, "not found"),
        (lambda s, d, t: [str(s), "--video", str(t / "missing.mp4")], 2, "not found"),
        (lambda s, d, t: [str(s)], 2, "nothing drives"),
        (lambda s, d, t: [str(s), "--video", str(d), "--audio", str(d)], 2, "either"),
        (lambda s, d, t: [str(_noise(t)), "--video", str(d)], 2, "no face"),
        (lambda s, d, t: [str(s), "--video", str(_corrupt(t))], 2, "cannot|no video"),
        (lambda s, d, t: [str(s), "--video", str(_text(t))], 2, "cannot|no video"),
    ],
)
def test_bad_input_is_a_clear_error_and_no_output(media, tmp_path, capsys, make_args, code, message):
    import re

    src, drv = media
    out = tmp_path / "out.mp4"
    rc = main(["animate", *make_args(src, drv, tmp_path), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == code
    assert re.search(message, err), err
    assert not out.exists() and not list(tmp_path.glob(".*part*"))


def test_unwritable_output_folder(media, tmp_path, capsys):
    src, drv = media
    rc = main(["animate", str(src), "--video", str(drv), "-o", str(tmp_path / "no" / "such" / "out.mp4"), "-q"])
    assert rc == 3 and "does not exist" in capsys.readouterr().err


def test_doctor_reports_the_shipped_models(capsys):
    main(["doctor"])
    out = capsys.readouterr().out
    assert "face_landmark_with_attention.tflite" in out and "libx264" in out


def _noise(d: Path) -> Path:
    p = d / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(p)
    return p


def _corrupt(d: Path) -> Path:
    p = d / "corrupt.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    return p


def _text(d: Path) -> Path:
    p = d / "notes.mp4"
    p.write_text("this is not a video")
    return p
