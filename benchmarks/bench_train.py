"""Training throughput: samples/s of each image stage and records/s of the loader.

    python benchmarks/bench_train.py --records RECORDS --bfm BFM [--steps 20] [--batch 4] [--threads 1]
                                     [--official] [--device cuda] [--workers 0,2]

Prints the CPU (capability, threads) and the load average, then per stage: samples/s of full training steps
(generator loss + backward + Adam; discriminator step with R1 included, switched on from step 0) on a fixed batch,
i.e. without data loading; then the loader's pairs/s and frame records/s (each pair decodes 2 frames: ~12 record
members) for each worker count, single process, so it can be compared with the steps' samples/s.
`--official` adds one official-size step per stage (512^2, 148 M-parameter generator,
full-size discriminator): seconds and the process's peak RSS so far (run one stage per process,
`--stages stage3`, to separate them; peak CUDA memory on a GPU). Records: any `real3d prepare`
output (images are resized to the model's size). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import torch

from real3d.precision import machine_summary
from real3d.train.config import apply_overrides, preset
from real3d.train.data import PairDataset
from real3d.train.engine import _collate, build_stage
from real3d.train.records import RecordIndex


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_stage(
    stage_name: str, model: str, records: str, bfm: str, steps: int, batch: int, device: str, first_step: int = 0
) -> dict:
    cfg = preset(stage_name, "tiny" if model == "tiny" else "official")
    cfg = apply_overrides(
        cfg,
        [
            f"data.records={records}",
            f"bfm={bfm}",
            f"batch_size={batch}",
            f"device={device}",
            "schedule.d_start=0",
            "schedule.start_adv=0",
            "data.min_gap=5",
        ],
    )
    dev = torch.device(device)
    t0 = time.perf_counter()
    stage, gen, disc = build_stage(cfg, dev)
    build_s = time.perf_counter() - t0
    groups = stage.groups()
    params = [p for ps in groups.values() for p in ps]
    opt = torch.optim.Adam(params, lr=1e-5, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-5) if disc is not None else None
    ds = PairDataset(RecordIndex(records), cfg.data, stage.size)
    b = _collate([ds[i % len(ds)] for i in range(batch)])
    times = []
    for step in range(first_step, first_step + steps + 1):  # the first one warms up (step 0: every periodic term)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = stage.generator_loss(b, step)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if opt_d is not None:
            d_loss, _ = stage.discriminator_loss(b, out.fake, step)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    steady = times[1:] if len(times) > 1 else times
    mean = sum(steady) / len(steady)
    res = {
        "stage": stage_name,
        "model": model,
        "batch": batch,
        "build_s": build_s,
        "first_step_s": times[0],
        "step_s": mean,
        "samples_per_s": batch / mean,
        "peak_rss_gib": _rss_gib(),
        "params": sum(p.numel() for p in gen.parameters()),
        "trainable": sum(p.numel() for p in params),
    }
    if device.startswith("cuda"):
        res["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def bench_loader(records: str, size: int, n: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    cfg = apply_overrides(preset("stage2", "tiny"), [f"data.records={records}", "data.min_gap=5"])
    ds = PairDataset(RecordIndex(records), cfg.data, size)
    loader = DataLoader(
        ds,
        batch_size=4,
        shuffle=True,
        num_workers=workers,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(0),
    )
    t = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += len(batch["index"])
        if seen >= n:
            break
    return seen / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--official", action="store_true", help="also one official-size step per stage")
    ap.add_argument("--official-only", action="store_true")
    ap.add_argument("--stages", default="stage2,stage3", help="stages of the official-size steps")
    ap.add_argument(
        "--official-step",
        type=int,
        default=1,
        help="step index of the official-size step: 0 runs every periodic term (regularisers, density, "
        "src->src, R1) at once, 1 (default) the plain target step + discriminator",
    )
    ap.add_argument("--workers", default="0,2", help="loader worker counts to measure")
    ap.add_argument("--loader-pairs", type=int, default=200)
    args = ap.parse_args()
    print(machine_summary(), flush=True)  # the CPU capability each figure below comes from
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.backends.cpu.get_cpu_capability()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"device {args.device}, CPU capability {cpu}, torch threads {torch.get_num_threads()}, "
        f"load average {load:.1f} on {os.cpu_count()} logical CPUs (above the CPU count = under load)"
    )
    if not args.official_only:
        for stage in ("stage2", "stage3"):
            r = bench_stage(stage, "tiny", args.records, args.bfm, args.steps, args.batch, args.device)
            print(
                f"{stage} tiny  batch {r['batch']}: {r['samples_per_s']:.1f} samples/s "
                f"({r['step_s'] * 1000:.0f} ms/step, "
                f"first step {r['first_step_s']:.2f} s), {r['trainable']:,} of {r['params']:,} params trained"
            )
        for w in (int(x) for x in args.workers.split(",")):
            rate = bench_loader(args.records, 32, args.loader_pairs, w)
            print(f"loader (32 px, {w} workers): {rate:.1f} pairs/s = {2 * rate:.1f} frame records/s")
        rate = bench_loader(args.records, 512, max(20, args.loader_pairs // 4), 0)
        print(f"loader (512 px, 0 workers): {rate:.1f} pairs/s = {2 * rate:.1f} frame records/s")
    if args.official or args.official_only:
        for stage in args.stages.split(","):
            r = bench_stage(stage, "official", args.records, args.bfm, 0, 1, args.device, args.official_step)
            extra = f", peak CUDA {r['peak_cuda_gib']:.1f} GiB" if "peak_cuda_gib" in r else ""
            kind = "every periodic term + R1" if args.official_step == 0 else f"the terms of step {args.official_step}"
            print(
                f"{stage} official batch 1: build {r['build_s']:.1f} s, step {r['first_step_s']:.1f} s ({kind}), "
                f"process peak RSS so far {r['peak_rss_gib']:.1f} GiB{extra}, "
                f"{r['trainable']:,} of {r['params']:,} params trained"
            )


if __name__ == "__main__":
    main()
