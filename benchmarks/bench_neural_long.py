"""Peak memory of an audio-driven **neural** run versus audio length (it must not grow with the length).

    python benchmarks/bench_neural_long.py --minutes 0.5 2 5

The official code runs out of memory at about 1 min 40 s of audio; here HuBERT and A2M run in chunks and the
frames are streamed to the writer. To measure that bookkeeping rather than the compute, the networks are tiny
random ones (32x32 frames, a 800-vertex synthetic BFM, a tiny HuBERT): the memory that depends on the length
is the same as at the official sizes. Each length runs in its own process (peak RSS is its own).
Prints minutes, frames, wall time, fps and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_long_audio import make_speech  # noqa: E402
from real3d.precision import machine_summary  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
from skimage import data
from real3d.pipeline import AnimateOptions, Pipeline
torch.set_num_threads(1)
work, wav, out = map(Path, sys.argv[1:4])
t = time.perf_counter()
res = Pipeline()(AnimateOptions(source=data.astronaut(), audio=wav, output=out, backend="neural",
                                checkpoints=work / "ckpt", bfm=work / "bfm", hubert=work / "hubert",
                                blink="none", batch_size=8, quiet=True))
print(json.dumps({"frames": res.frames, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def prepare(work: Path) -> None:
    """Tiny random torso + A2M checkpoints (real3d format), a tiny HuBERT and a small synthetic BFM."""
    import torch

    from real3d.config.audio2motion import Audio2MotionConfig
    from real3d.config.hubert import HubertConfig
    from real3d.config.real3d_portrait import Real3DPortraitConfig
    from real3d.face.bfm_synthetic import write_synthetic_bfm
    from real3d.models.audio2motion import Audio2Motion
    from real3d.models.hubert import Hubert, save_hubert
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.weights.io import save_pretrained

    torch.manual_seed(0)
    torso = Real3DPortrait(Real3DPortraitConfig.tiny()).eval()
    save_pretrained(torso, torso.config, work / "ckpt" / "secc2plane_torso")
    hcfg = HubertConfig.tiny()
    save_hubert(Hubert(hcfg).eval(), work / "hubert")
    acfg = replace(Audio2MotionConfig.tiny(), audio_dim=hcfg.hidden_size, motion_dim=64)
    a2m = Audio2Motion(acfg).eval()
    save_pretrained(a2m, acfg, work / "ckpt" / "audio2secc_vae")
    write_synthetic_bfm(work / "bfm", n_vertices=800)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[0.5, 2.0])
    args = ap.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work)
        print(f"{'minutes':>8} {'frames':>7} {'wall s':>8} {'fps':>6} {'peak RSS MB':>12}")
        for m in args.minutes:
            wav = work / f"speech_{m}.wav"
            make_speech(wav, m)
            r = subprocess.run(
                [sys.executable, "-c", CHILD, str(work), str(wav), str(work / "out.mp4")],
                check=True,
                capture_output=True,
                text=True,
            )
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(
                f"{m:8.2f} {d['frames']:7d} {d['seconds']:8.1f} {d['frames'] / d['seconds']:6.1f} "
                f"{d['peak_rss_mb']:12.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
