"""Shared pytest fixtures: paths to the official-parity material and checkpoints made from it.

The official fixtures live in `<repo>/../shared/fixtures/official/` (CI has them beside the clone).
Checkpoints in the official format are written by that folder's `make_official_ckpt.py` into a
session temp dir (or taken from $REAL3D_OFFICIAL_CKPT_CACHE/<model> when that holds one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "fixtures" / "official"
STEPS = {"secc2plane_torso": 100000, "audio2secc_vae": 400000}


def _official_dir() -> Path:
    if not (OFFICIAL / "make_official_ckpt.py").is_file():
        pytest.skip(f"official parity fixtures not found at {OFFICIAL} (they sit beside the clone in CI)")
    return OFFICIAL


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The shared official-fixture folder (skips when absent)."""
    return _official_dir()


def _make_ckpt(model: str, tmp_factory) -> Path:
    official = _official_dir()
    cache = os.environ.get("REAL3D_OFFICIAL_CKPT_CACHE")
    if cache:
        cached = Path(cache) / model
        if (cached / f"model_ckpt_steps_{STEPS[model]}.ckpt").is_file():
            return cached
    out = tmp_factory.mktemp(model)
    subprocess.run(
        [sys.executable, str(official / "make_official_ckpt.py"), "--model", model, "--seed", "0", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def torso_ckpt_dir(tmp_path_factory) -> Path:
    """Official-format `secc2plane_torso` checkpoint directory with the seed-0 weights."""
    return _make_ckpt("secc2plane_torso", tmp_path_factory)


@pytest.fixture(scope="session")
def a2m_ckpt_dir(tmp_path_factory) -> Path:
    """Official-format `audio2secc_vae` checkpoint directory with the seed-0 weights."""
    return _make_ckpt("audio2secc_vae", tmp_path_factory)


def _load_sd(ckpt_dir: Path, model: str) -> dict:
    import torch

    path = ckpt_dir / f"model_ckpt_steps_{STEPS[model]}.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]["model"]


@pytest.fixture(scope="session")
def torso_state_dict(torso_ckpt_dir) -> dict:
    """The seed-0 official torso-model state dict (official key names)."""
    return _load_sd(torso_ckpt_dir, "secc2plane_torso")


@pytest.fixture(scope="session")
def a2m_state_dict(a2m_ckpt_dir) -> dict:
    """The seed-0 official A2M state dict (official key names)."""
    return _load_sd(a2m_ckpt_dir, "audio2secc_vae")


@pytest.fixture(scope="session")
def torso_fixture(official_dir) -> dict:
    """Golden tensors of the torso model (`torso_seed0.npz`) as numpy arrays."""
    with np.load(official_dir / "torso_seed0.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def a2m_fixture(official_dir) -> dict:
    """Golden tensors of the A2M model (`a2m_seed0.npz`) as numpy arrays."""
    with np.load(official_dir / "a2m_seed0.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny convs are dominated by thread hand-off on a shared 2-core
    machine (measured ~50x faster); results do not depend on it. Use with `pytest.mark.usefixtures`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def astronaut_canonical() -> np.ndarray:
    """[478,3] canonical landmarks of scikit-image's astronaut (the neutral face of many tests)."""
    from skimage import data

    from real3d.face.canonical import head_frame
    from real3d.face.landmarks import FaceAnalyzer

    with FaceAnalyzer() as fa:
        lm = fa.detect(data.astronaut())[0].landmarks.astype(np.float64)
    return head_frame(lm).to_canonical(lm)
