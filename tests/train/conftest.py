"""Synthetic talking clips (the astronaut photo animated by the mesh backend), a no-face clip, a too-short
clip, a synthetic BFM, and records prepared from them, shared by the training tests."""

from __future__ import annotations

import numpy as np
import pytest


def _write_clip(path, frames, fps=25):
    from real3d.io.writer import VideoWriter

    with VideoWriter(
        path, fps=fps, visible_watermark=False, invisible_watermark=False, quiet=True
    ) as w:
        for f in frames:
            w.write(f)


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory):
    from skimage import data

    from real3d.backends.mesh import MeshRenderer
    from real3d.face.portrait import analyze_portrait
    from real3d.motion.track import MotionTrack

    root = tmp_path_factory.mktemp("clips")
    portrait = analyze_portrait(data.astronaut())
    r = MeshRenderer(portrait)
    n = 36
    for k, (yaw, mouth) in enumerate(((0.25, 0.8), (-0.2, 0.5))):
        tr = MotionTrack.still(n, 25)
        tr.rotation[:, 1] = yaw * np.sin(np.linspace(0, 2 * np.pi, n))
        if hasattr(tr, "mouth_open"):
            tr.mouth_open[:] = mouth * (
                0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, n))
            )
        _write_clip(root / f"talk{k}.mp4", [r.render(tr, i) for i in range(n)])
    rng = np.random.default_rng(0)
    _write_clip(
        root / "noface.mp4",
        [rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) for _ in range(n)],
    )
    _write_clip(
        root / "short.mp4", [r.render(MotionTrack.still(4, 25), i) for i in range(4)]
    )
    return root


@pytest.fixture(scope="session")
def bfm_dir(tmp_path_factory):
    from real3d.face.bfm_synthetic import write_synthetic_bfm

    return write_synthetic_bfm(tmp_path_factory.mktemp("bfm"), n_vertices=800)


@pytest.fixture(scope="session")
def records_dir(clips_dir, bfm_dir, tmp_path_factory):
    """Records of the synthetic clips at 64 px (two good clips, two skipped)."""
    from real3d.train.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("records")
    prepare([clips_dir], out, PrepareConfig(bfm=bfm_dir, size=64, min_frames=16))
    return out
