"""Synthetic clips (the astronaut photo moving in the frame), a no-face clip, a too-short
clip, a synthetic BFM, and records prepared from them, shared by the training tests."""

from __future__ import annotations

import numpy as np
import pytest


def _write_clip(path, frames, fps=25):
    from real3d.io.writer import VideoWriter

    with VideoWriter(path, fps=fps, quiet=True) as w:
        for f in frames:
            w.write(f)


def _moving(photo: np.ndarray, n: int, angle: float, shift: float) -> list[np.ndarray]:
    """The photo rotated (roll, up to `angle` degrees) and shifted over n frames: a head moving in the frame."""
    import cv2

    h, w = photo.shape[:2]
    out = []
    for t in np.sin(np.linspace(0, 2 * np.pi, n)):
        m = cv2.getRotationMatrix2D((w * 0.55, h * 0.3), angle * t, 1.0)
        m[0, 2] += shift * t
        out.append(cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return out


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory):
    """Two 36-frame clips of the astronaut photo moving (its face detectable by MediaPipe), a noise clip without a
    face and a 4-frame clip."""
    from skimage import data

    root = tmp_path_factory.mktemp("clips")
    photo = data.astronaut()
    n = 36
    _write_clip(root / "talk0.mp4", _moving(photo, n, 12.0, 10.0))
    _write_clip(root / "talk1.mp4", _moving(photo[:, ::-1].copy(), n, -8.0, -14.0))
    rng = np.random.default_rng(0)
    _write_clip(root / "noface.mp4", [rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) for _ in range(n)])
    _write_clip(root / "short.mp4", _moving(photo, 4, 5.0, 0.0))
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
