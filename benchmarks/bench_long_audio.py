"""Peak memory of a whole audio-driven run versus audio length (it must not grow with the length).

    python benchmarks/bench_long_audio.py --minutes 0.5 2

Each run is a separate process (so peak RSS is its own): espeak-ng speech repeated to the length,
scikit-image's astronaut, the mesh backend, the full writer. Prints minutes, frames, wall time, fps, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from real3d.precision import machine_summary

CHILD = r"""
import json, resource, sys, time
import numpy as np
from skimage import data
from real3d.io.audio import Audio, load_audio
from real3d.io.writer import VideoWriter
from real3d.pipeline import AnimateOptions, Pipeline
wav, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
res = Pipeline()(AnimateOptions(source=data.astronaut(), audio=wav, output=out, quiet=True))
print(json.dumps({"frames": res.frames, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_speech(path: Path, minutes: float) -> None:
    import wave

    import numpy as np

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("needs espeak-ng (apt-get install espeak-ng)")
    one = path.with_suffix(".one.wav")
    text = (
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        "How vexingly quick daft zebras jump!"
    )
    subprocess.run([espeak, "-v", "en-us", "-w", str(one), text], check=True)
    with wave.open(str(one)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    n = int(minutes * 60 * rate)
    reps = np.tile(np.concatenate([pcm, np.zeros(rate // 2, np.int16)]), n // len(pcm) + 2)[:n]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(reps.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[0.5, 2.0])
    args = ap.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    print(f"{'minutes':>8} {'frames':>7} {'wall s':>8} {'fps':>6} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.minutes:
            wav = Path(tmp) / f"speech_{m}.wav"
            make_speech(wav, m)
            r = subprocess.run(
                [sys.executable, "-c", CHILD, str(wav), str(Path(tmp) / "out.mp4")],
                check=True,
                capture_output=True,
                text=True,
            )
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(
                f"{m:8.2f} {d['frames']:7d} {d['seconds']:8.1f} {d['frames'] / d['seconds']:6.1f} "
                f"{d['peak_rss_mb']:12.0f}"
            )


if __name__ == "__main__":
    main()
