"""Audio-driven motion: analysis time per minute of speech, and memory of AudioDriver.chunks on long input.

    python benchmarks/bench_audio.py [--minutes 10]

Speech is made with Debian's espeak-ng (one minute, tiled for the long input); the face is scikit-image's
astronaut through MediaPipe. Memory is measured with tracemalloc (Python allocations, numpy included) and, for
what Praat (formants, voicing) and pocketsphinx allocate outside Python, as the process's peak RSS: run once with
`--minutes 1` and once with `--minutes 10` and compare.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from real3d.io.audio import load_audio
from real3d.motion.from_audio import AudioDriver
from real3d.precision import machine_summary

TEXT = (
    "The quick brown fox jumps over the lazy dog. Papa bought a map of the old city, and we walked "
    "along the river until the sun went down. Every morning the baker opens his shop at six, and the "
    "smell of fresh bread fills the street. She asked whether the museum would be open on Monday, but "
    "nobody knew the answer. We will meet again next week to talk about the plans for the summer. "
)


def make_speech(seconds: float, tmp: Path) -> np.ndarray:
    """About `seconds` of 16 kHz espeak-ng speech (the text repeated, then cut)."""
    wav = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), TEXT * 3], check=True)
    x = load_audio(wav, 16000).samples
    reps = int(np.ceil(seconds * 16000 / len(x)))
    return np.tile(x, reps)[: int(seconds * 16000)].astype(np.float32)


def astronaut_neutral() -> np.ndarray:
    import mediapipe as mp
    from skimage import data

    from real3d.face.canonical import head_frame

    img = data.astronaut()
    h, w = img.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        res = fm.process(img)
    lm = np.array([[p.x * w, p.y * h, p.z * w] for p in res.multi_face_landmarks[0].landmark])
    return head_frame(lm).to_canonical(lm)


def chunk_peak(samples: np.ndarray, neutral: np.ndarray) -> tuple[float, float, float]:
    """(analysis seconds, peak MiB during analysis, peak MiB while iterating chunks) above the input."""
    d = AudioDriver(samples, neutral)
    tracemalloc.start()
    t0 = time.perf_counter()
    d.analysis()
    t_an = time.perf_counter() - t0
    _, peak_an = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    n = 0
    for tr in d.chunks(250):
        n += len(tr)
        del tr
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == len(d)
    return t_an, peak_an / 2**20, (peak - base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the long input")
    args = ap.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    logging.basicConfig(level=logging.WARNING)
    neutral = astronaut_neutral()
    with tempfile.TemporaryDirectory() as tmp:
        minute = make_speech(60.0, Path(tmp))
    d = AudioDriver(minute, neutral)
    t0, c0 = time.perf_counter(), time.process_time()
    d.analysis()
    t_min, c_min = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"analysis (phones + features + visemes + blink + pose) per minute of speech: "
        f"{t_min:.2f} s wall, {c_min:.2f} s CPU"
    )
    t0 = time.perf_counter()
    for _ in d.chunks(250):
        pass
    print(f"expression materialization: {(time.perf_counter() - t0) / len(d) * 1e3:.3f} ms per frame")
    for minutes in (1.0, args.minutes):
        x = np.tile(minute, int(np.ceil(minutes)))[: int(minutes * 60 * 16000)]
        t_an, peak_an, peak_chunks = chunk_peak(x, neutral)
        print(
            f"{minutes:5.1f} min input: analysis {t_an:6.1f} s, analysis peak {peak_an:7.1f} MiB, "
            f"chunks(250) peak {peak_chunks:6.1f} MiB above the analysed driver"
        )
    print(
        f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
        f"(inputs of up to {args.minutes:g} min included)"
    )


if __name__ == "__main__":
    main()
