"""The neural backend end to end at the official sizes on this machine, with per-stage times.

    python benchmarks/bench_neural.py [--seconds 2] [--work DIR]

Needs ../shared/fixtures/official/make_official_ckpt.py (writes official-format checkpoints with
seed-0 random weights: the pictures are meaningless, the compute is the real one). The BFM is
synthetic at the real size (35,709 vertices) and HuBERT-large is randomly initialised from its
published configuration. Prints the stage table (HuBERT, A2M, fitting, PNCC, networks, encoding).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "fixtures" / "official"


def prepare(work: Path) -> None:
    import torch

    from real3d.config.hubert import HubertConfig
    from real3d.face.bfm_synthetic import write_synthetic_bfm
    from real3d.models.hubert import Hubert, save_hubert

    for model in ("secc2plane_torso", "audio2secc_vae"):
        out = work / "ckpt" / model
        if not any(out.glob("model_ckpt_steps_*.ckpt")):
            subprocess.run(
                [
                    sys.executable,
                    str(OFFICIAL / "make_official_ckpt.py"),
                    "--model",
                    model,
                    "--seed",
                    "0",
                    "--out",
                    str(out),
                ],
                check=True,
            )
    if not (work / "bfm" / "BFM_model_front.mat").is_file():
        write_synthetic_bfm(work / "bfm", n_vertices=35709)
    if not (work / "hubert" / "config.json").is_file():
        torch.manual_seed(0)
        save_hubert(Hubert(HubertConfig.large_ls960_ft()).eval(), work / "hubert")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--work", help="keep the generated checkpoints/BFM/HuBERT here (default: a temp dir)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["auto", "float32", "bfloat16"],
        help="network precision (auto = bfloat16 where native, else float32)",
    )
    ap.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="run --dtype bfloat16 even where bf16 is emulated (hours at the official sizes)",
    )
    args = ap.parse_args()
    from real3d.precision import device_capability, machine_summary

    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    if args.dtype == "bfloat16" and not device_capability("cpu").native_bf16 and not args.emulated_bf16:
        sys.exit(
            "--dtype bfloat16 skipped: bf16 is emulated on this CPU (~100x slower than float32, hours for this "
            "benchmark); use --dtype float32 or auto, or --emulated-bf16 to run it anyway"
        )
    if not (OFFICIAL / "make_official_ckpt.py").is_file():
        sys.exit(f"needs {OFFICIAL}/make_official_ckpt.py")
    import numpy as np
    import torch
    from skimage import data

    from real3d.pipeline import AnimateOptions, Pipeline

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="real3d-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    prepare(work)
    print(f"prepared assets in {time.perf_counter() - t:.1f} s ({work})")
    wav = work / "speech.wav"
    espeak = shutil.which("espeak-ng")
    if espeak:
        subprocess.run([espeak, "-w", str(wav), "Hello there, this is a test of the neural backend."], check=True)
    else:
        import wave

        x = (0.1 * np.sin(np.linspace(0, 2 * np.pi * 200 * args.seconds, int(16000 * args.seconds)))).astype(np.float32)
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((x * 32767).astype(np.int16).tobytes())
    out = work / "out.mp4"
    t = time.perf_counter()
    res = Pipeline()(
        AnimateOptions(
            source=data.astronaut(),
            audio=wav,
            output=out,
            backend="neural",
            checkpoints=work / "ckpt",
            bfm=work / "bfm",
            hubert=work / "hubert",
            max_seconds=args.seconds,
            quiet=True,
            batch_size=args.batch_size,
            dtype=args.dtype,
        )
    )
    total = time.perf_counter() - t
    print(
        f"threads {torch.get_num_threads()}, {res.frames} frames of 512x512 in {total:.1f} s "
        f"({total / res.frames:.2f} s/frame overall)"
    )
    order = [
        "load_models",
        "source_analysis",
        "parsing",
        "fit_source",
        "encode_source",
        "hubert",
        "a2m",
        "pncc",
        "networks",
        "encode",
    ]
    for k in order + sorted(set(res.timings) - set(order) - {"render"}):
        if k in res.timings:
            v = res.timings[k]
            per = f"{v / res.frames:7.3f} s/frame" if k in ("pncc", "networks", "encode") else ""
            print(f"  {k:<16} {v:8.2f} s  {per}")
    print(json.dumps({k: round(v, 3) for k, v in res.timings.items()}))


if __name__ == "__main__":
    main()
