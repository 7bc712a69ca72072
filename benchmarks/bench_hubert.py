"""HuBERT-large feature extraction speed and memory on this machine (random weights, published config).

    python benchmarks/bench_hubert.py [--seconds 2 20] [--threads N] [--a2m]

The model is `facebook/hubert-large-ls960-ft`'s architecture (315 M parameters) initialised at random:
timing does not depend on the weights. The input is synthetic 16 kHz audio (a gliding tone plus noise).
Each length runs through `hubert_features` (official 20 s clips, 80 samples of overlap) after one warm-up
call; reported: seconds of compute per second of audio, and the process's peak resident memory (the weights
alone are 1.26 GB in float32). `--a2m` also times the official f0 and the official-size A2M sampling.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np
import torch

from real3d.config.hubert import HubertConfig
from real3d.models.hubert import Hubert, hubert_features
from real3d.precision import machine_summary

SR = 16000


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_audio(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wav = 0.3 * np.sin(2 * np.pi * (120 + 40 * np.sin(t)) * t) + 0.02 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[2.0, 20.0], help="audio lengths to time")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per length (the best is reported)")
    ap.add_argument("--a2m", action="store_true", help="also time official f0 and official-size A2M sampling")
    args = ap.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32")
    rss0 = peak_rss_mib()

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = Hubert(HubertConfig.large_ls960_ft()).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"HuBERT-large random init: {n_params / 1e6:.1f} M params, {time.perf_counter() - t0:.1f} s, "
        f"peak RSS {peak_rss_mib():.0f} MiB (start {rss0:.0f} MiB)"
    )

    hubert_features(model, synthetic_audio(1.0))  # warm-up
    for seconds in args.seconds:
        wav = synthetic_audio(seconds)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            feats = hubert_features(model, wav)
            best = min(best, time.perf_counter() - t0)
        print(
            f"  {seconds:6.1f} s audio -> {tuple(feats.shape)}: {best:7.2f} s, "
            f"{best / seconds:.3f} s per audio second, peak RSS {peak_rss_mib():.0f} MiB"
        )

    if args.a2m:
        from real3d.audio.pitch import official_f0
        from real3d.config.audio2motion import Audio2MotionConfig
        from real3d.models.audio2motion import Audio2Motion
        from real3d.motion.neural_audio import a2m_expression

        seconds = max(args.seconds)
        wav = synthetic_audio(seconds)
        feats = torch.randn(int(np.ceil((seconds * SR - 80) // 320 / 8) * 8), 1024)
        t0 = time.perf_counter()
        f0 = official_f0(wav, num_frames=feats.shape[0])
        t_f0 = time.perf_counter() - t0
        a2m = Audio2Motion(Audio2MotionConfig.official()).eval()
        a2m_expression(a2m, feats[:80], f0[:80])  # warm-up
        t0 = time.perf_counter()
        exp = a2m_expression(a2m, feats, f0)
        t_a2m = time.perf_counter() - t0
        print(f"  official f0 for {seconds:.1f} s: {t_f0:.3f} s ({t_f0 / seconds * 1000:.1f} ms per audio second)")
        print(
            f"  A2M (official size) for {seconds:.1f} s -> {tuple(exp.shape)}: {t_a2m:.3f} s "
            f"({t_a2m / seconds * 1000:.1f} ms per audio second), peak RSS {peak_rss_mib():.0f} MiB"
        )


if __name__ == "__main__":
    main()
