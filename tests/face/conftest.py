from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_landmarks(astronaut) -> np.ndarray:
    from real3d.face.landmarks import FaceAnalyzer

    with FaceAnalyzer() as fa:
        faces = fa.detect(astronaut)
    assert len(faces) == 1
    return faces[0].landmarks.astype(np.float64)
