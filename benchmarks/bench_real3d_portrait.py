"""Speed, FLOPs and memory of the whole Real3D-Portrait generator at the official sizes (512x512).

Measures, on one device:
- this machine's float32 (and bfloat16) matmul peak (4096^3 matmuls), the yardstick for achieved FLOP/s;
- the one-off per-source work (`encode_source`: Img2Plane + HTB-SR torso/background features);
- the per-frame work (`forward` with a cached source) and its breakdown: motion adapter, volume
  rendering (deterministic sampling), HTB-SR;
- FLOPs per source and per frame (`torch.utils.flop_counter.FlopCounterMode`: convs, matmuls, attention;
  grid_sample and elementwise ops are not counted) and the achieved GFLOP/s;
- peak memory (process RSS on CPU, allocator peak on CUDA);
- a bfloat16 autocast run (weights stay float32; by the model's default `autocast_scope` HTB-SR's
  per-frame part and the motion adapter's plane CNN run in bf16) with its per-stage times and achieved
  FLOP/s against the bf16 matmul peak, and its error on `image` against float32 (max / mean / p99.9 abs
  on [-1,1], PSNR, share of values off by more than one 8-bit level), also for the other scopes.

Timings on a shared machine: run with OMP_NUM_THREADS set to the thread count, and compare versions back
to back; the best of --repeats runs is reported (other processes only ever add time).

The bf16 figures (its matmul peak and the autocast run) are measured only where the device computes bf16
natively (AVX512-BF16 / AMX CPUs, CUDA sm_80+; the first line printed says which): where it is emulated a
single 4096^3 bf16 matmul takes minutes, so they are skipped with the reason. `--no-bf16` skips them
everywhere; `--emulated-bf16` measures them anyway. To stand in for an AVX2-only CPU on an AVX-512 one, cap both
torch's own kernels and oneDNN's: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` (fp32 convs then run oneDNN's
jit:avx2 kernels; bf16 convs leave oneDNN for ATen's reference path, ~100x slower, hence the skip).

    python benchmarks/bench_real3d_portrait.py                          # random weights, synthetic inputs
    python benchmarks/bench_real3d_portrait.py --checkpoint CKPT_DIR --fixture torso_seed0.npz

CKPT_DIR is an official-format directory (e.g. from make_official_ckpt.py) or a real3d one.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from real3d.config.real3d_portrait import AUTOCAST_SCOPES, Real3DPortraitConfig
from real3d.cpu_memory import keep_freed_memory
from real3d.geometry import camera_from_pose
from real3d.models.real3d_portrait import Real3DPortrait, SourceCache
from real3d.precision import device_capability, machine_summary

SOURCE_KEYS = ("img", "ref_torso_img", "bg_img", "segmap")
FRAME_KEYS = ("cond_cano", "cond_src", "cond_tgt", "camera", "kp_s", "kp_d")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Best wall time of `fn` over `repeats` runs after `warmup` runs, and its last result. The best, not
    the median: on a shared machine other processes only ever add time."""
    result = None
    for _ in range(warmup):
        result = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times), result


def flops_of(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` n^3 matmuls (measured before and after the model runs; the larger
    figure is the yardstick, since a busy neighbour only ever lowers it)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = min(timed(lambda: a @ b, device, 1)[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def synthetic_inputs(batch: int, size: int = 512, seed: int = 0) -> dict[str, torch.Tensor]:
    """Smooth random images, a torso/background segmentation, a slightly turned camera."""
    g = torch.Generator().manual_seed(seed)

    def smooth(b: int, c: int = 3) -> torch.Tensor:
        low = torch.rand(b, c, 16, 16, generator=g) * 2 - 1
        return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)

    seg = torch.zeros(1, 6, size, size)
    seg[:, 3, size // 8 : size // 2, size // 4 : 3 * size // 4] = 1
    seg[:, 2, size // 2 : 5 * size // 8, 3 * size // 8 : 5 * size // 8] = 1
    seg[:, 4, 5 * size // 8 :, size // 8 : 7 * size // 8] = 1
    seg[:, 0] = (seg[:, 1:].sum(1) == 0).float()
    kp = torch.rand(batch, 68, 3, generator=g) * 1.2 - 0.6
    kp[..., 2] = 0
    euler = torch.tensor([[0.05, -0.1, 0.02]]).expand(batch, 3) * torch.linspace(0.5, 1.5, batch)[:, None]
    return {
        "img": smooth(1),
        "ref_torso_img": smooth(1),
        "bg_img": smooth(1),
        "segmap": seg,
        "cond_cano": smooth(batch),
        "cond_src": smooth(batch),
        "cond_tgt": smooth(batch),
        "camera": camera_from_pose(euler.contiguous(), torch.zeros(batch, 3)),
        "kp_s": kp,
        "kp_d": kp + 0.02,
    }


def fixture_inputs(path: Path, batch: int) -> dict[str, torch.Tensor]:
    """The fixture's source and frame, the frame repeated `batch` times."""
    with np.load(path) as z:
        t = {k: torch.from_numpy(z[k]) for k in SOURCE_KEYS + FRAME_KEYS}
    t["segmap"] = t["segmap"].float()
    for k in FRAME_KEYS:
        t[k] = t[k].expand(batch, *t[k].shape[1:]).contiguous()
    return t


def load_model(checkpoint: Path | None) -> Real3DPortrait:
    if checkpoint is None:
        torch.manual_seed(0)
        return Real3DPortrait(Real3DPortraitConfig.official()).eval()
    from real3d.weights.convert import load_checkpoint

    model = load_checkpoint(checkpoint)
    if not isinstance(model, Real3DPortrait):
        raise SystemExit(f"{checkpoint} holds a {type(model).__name__}, not the torso model")
    return model.eval()


def stage_fns(model: Real3DPortrait, cache: SourceCache, f: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
    """The three per-frame stages as separate calls (the composition of `Real3DPortrait.forward`)."""

    def ma():
        return model.motion_planes(f["cond_cano"], f["cond_src"], f["cond_tgt"])

    secc = ma()

    def render():
        return model.render(cache.cano_planes, secc, f["camera"], "deterministic")

    rendered = render()
    feat = rendered.feature_image
    return {
        "motion adapter": ma,
        "volume rendering": render,
        "HTB-SR": lambda: model.superresolution(
            feat[:, :3], feat, rendered.opacity, f["kp_s"], f["kp_d"], cache=cache.htbsr
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="official-format or real3d checkpoint dir (default: random weights)"
    )
    parser.add_argument("--fixture", type=Path, help="torso fixture .npz for the inputs (default: synthetic)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="frames per forward call (sharing one source)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="skip every bfloat16 measurement (the bf16 matmul peak and the autocast run)",
    )
    parser.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="measure bf16 even where the device only emulates it (each bf16 step ~100x slower)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds alone (the neural backend raises them; see real3d.cpu_memory)",
    )
    args = parser.parse_args(argv)
    print(machine_summary(), flush=True)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    allocator = "glibc default" if args.default_malloc else ("keep freed memory" if keep_freed_memory() else "default")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # parity mode
    b, reps = args.batch, args.repeats
    bf16_native = device_capability(dev).native_bf16
    run_bf16 = not args.no_bf16 and (bf16_native or args.emulated_bf16)
    if not args.no_bf16 and not run_bf16:
        print(
            f"bf16 measurements skipped: bf16 is emulated on this {dev.type} ({device_capability(dev).describe()}),"
            " where they would take tens of minutes; --emulated-bf16 runs them anyway",
            flush=True,
        )
    res: dict[str, object] = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "batch": b,
        "torch": torch.__version__,
        "cpu_allocator": allocator,
    }

    with torch.inference_mode():
        res["matmul_peak_fp32_gflops"] = matmul_peak(dev, torch.float32)
        if run_bf16:
            res["matmul_peak_bf16_gflops"] = matmul_peak(dev, torch.bfloat16)
        model = load_model(args.checkpoint).to(dev)
        inp = fixture_inputs(args.fixture, b) if args.fixture else synthetic_inputs(b)
        inp = {k: v.to(dev) for k, v in inp.items()}
        src = [inp[k] for k in SOURCE_KEYS]
        frame = {k: inp[k] for k in FRAME_KEYS}

        def encode() -> SourceCache:
            return model.encode_source(*src)

        def run_frame(cache: SourceCache):
            return model(cache, *frame.values(), mode="deterministic")

        # ---------------------------------------------------------------- float32
        res["source_s"], cache = timed(encode, dev, reps)
        res["source_i2p_s"], _ = timed(lambda: model.cano_img2plane_backbone(inp["img"]), dev, reps, warmup=0)
        res["source_htbsr_s"], _ = timed(
            lambda: model.superresolution.encode_source(inp["ref_torso_img"], inp["bg_img"], inp["segmap"]),
            dev,
            reps,
            warmup=0,
        )
        res["frame_call_s"], out32 = timed(lambda: run_frame(cache), dev, reps)
        res["frame_s"] = res["frame_call_s"] / b
        print(
            f"fp32: per source {res['source_s']:.2f} s, per frame {res['frame_s']:.2f} s; now stages and FLOPs",
            flush=True,
        )  # progress: the whole run takes minutes
        stages = stage_fns(model, cache, frame)
        res["stages_s"] = {name: timed(fn, dev, reps, warmup=0)[0] / b for name, fn in stages.items()}
        res["source_gflop"] = flops_of(encode) / 1e9
        res["frame_gflop"] = flops_of(lambda: run_frame(cache)) / 1e9 / b
        res["stages_gflop"] = {name: flops_of(fn) / 1e9 / b for name, fn in stages.items()}
        res["source_gflops_achieved"] = res["source_gflop"] / res["source_s"]
        res["frame_gflops_achieved"] = res["frame_gflop"] / res["frame_s"]
        res["stages_gflops_achieved"] = {n: res["stages_gflop"][n] / max(res["stages_s"][n], 1e-9) for n in stages}
        res["peak_memory_gb_fp32"] = peak_memory_gb(dev)

        # ---------------------------------------------------------------- bfloat16 autocast
        if run_bf16:
            amp = torch.autocast(dev.type, dtype=torch.bfloat16)
            with amp:
                res["bf16_source_s"], cache16 = timed(encode, dev, reps)
                res["bf16_frame_call_s"], out16 = timed(lambda: run_frame(cache16), dev, reps)
                stages16 = stage_fns(model, cache16, frame)
                res["bf16_stages_s"] = {n: timed(fn, dev, reps, warmup=0)[0] / b for n, fn in stages16.items()}
            res["bf16_frame_s"] = res["bf16_frame_call_s"] / b
            res["bf16_frame_gflops_achieved"] = res["frame_gflop"] / res["bf16_frame_s"]
            res["bf16_stages_gflops_achieved"] = {
                n: res["stages_gflop"][n] / max(res["bf16_stages_s"][n], 1e-9) for n in stages16
            }
            default_scope = model.autocast_scope
            res["bf16_scopes"] = {}
            for scope in AUTOCAST_SCOPES:
                model.autocast_scope = scope
                with amp:
                    out = run_frame(encode()) if scope != default_scope else out16
                res["bf16_scopes"][scope] = image_error(out.image, out32.image)
            model.autocast_scope = default_scope
            res["bf16_scope"] = default_scope
            res.update({f"bf16_image_{k}": v for k, v in res["bf16_scopes"][default_scope].items()})
            ref8, low8 = to_uint8(out32.image[0]), to_uint8(out16.image[0])
            res["bf16_uint8_psnr_db"] = psnr_uint8(ref8, low8)
            res["h264_crf18_psnr_db"] = {
                "float32": psnr_uint8(ref8, h264_round_trip(ref8)),
                "bfloat16": psnr_uint8(ref8, h264_round_trip(low8)),
            }
            res["peak_memory_gb"] = peak_memory_gb(dev)

    with torch.inference_mode():  # the yardstick again: a busy moment at the start must not inflate the percentages
        for key, dtype in (("matmul_peak_fp32_gflops", torch.float32), ("matmul_peak_bf16_gflops", torch.bfloat16)):
            if key in res:
                res[key] = max(res[key], matmul_peak(dev, dtype))
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


def image_error(low: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Error of a reduced-precision image against float32 (both on [-1,1])."""
    diff = (low.float() - ref).abs()
    mse = (diff**2).mean().item()
    return {
        "max_abs": diff.max().item(),
        "mean_abs": diff.mean().item(),
        "p999_abs": torch.quantile(diff.flatten()[:: max(1, diff.numel() // 2_000_000)], 0.999).item(),
        "psnr_db": 10 * np.log10(4.0 / mse) if mse > 0 else float("inf"),  # range [-1,1]
        "pixels_over_1_level": (diff > 2 / 255).float().mean().item(),  # one 8-bit level
    }


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [-1,1] -> HxWx3 uint8 (as the video writer quantises frames)."""
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")


def h264_round_trip(frame: np.ndarray, crf: int = 18) -> np.ndarray:
    """`frame` encoded as the video writer does by default (libx264, yuv420p, crf 18) and decoded back."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frame.shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": str(crf), "preset": "medium"}
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def print_table(r: dict) -> None:
    peak, peak16 = r["matmul_peak_fp32_gflops"], r.get("matmul_peak_bf16_gflops")
    rows = [
        (
            "device / threads / frames per call",
            f"{r['device']} / {r['threads']} / {r['batch']}",
            f"CPU allocator: {r['cpu_allocator']}",
        ),
        ("matmul peak 4096^3 fp32 / bf16", f"{peak:.0f} / " + (f"{peak16:.0f} GFLOP/s" if peak16 else "(skipped)"), ""),
        (
            "per source (encode_source)",
            f"{r['source_s']:.2f} s",
            f"{r['source_gflop']:.0f} GFLOP, "
            f"{r['source_gflops_achieved']:.0f} GFLOP/s ({100 * r['source_gflops_achieved'] / peak:.0f}% of peak)",
        ),
        ("  of which I2P / torso+bg", f"{r['source_i2p_s']:.2f} / {r['source_htbsr_s']:.2f} s", ""),
        (
            "per frame (cached source)",
            f"{r['frame_s']:.2f} s",
            f"{r['frame_gflop']:.0f} GFLOP, "
            f"{r['frame_gflops_achieved']:.0f} GFLOP/s ({100 * r['frame_gflops_achieved'] / peak:.0f}% of peak)",
        ),
    ]
    for name, sec in r["stages_s"].items():
        gf = r["stages_gflop"][name]
        ach = r["stages_gflops_achieved"][name]
        rows.append(
            (f"  {name}", f"{sec:.2f} s", f"{gf:.1f} GFLOP, {ach:.0f} GFLOP/s ({100 * ach / peak:.0f}% of peak)")
        )
    rows.append(("first frame (source + frame)", f"{r['source_s'] + r['frame_s']:.2f} s", ""))
    rows.append(
        (
            "peak memory after fp32",
            f"{r['peak_memory_gb_fp32']:.2f} GiB",
            "process RSS" if r["device"] == "cpu" else "allocator",
        )
    )
    if "bf16_frame_s" in r:
        rows += [
            ("bf16 autocast: per source", f"{r['bf16_source_s']:.2f} s", "float32 by the model's autocast_scope"),
            (
                "bf16 autocast: per frame",
                f"{r['bf16_frame_s']:.2f} s",
                f"{r['bf16_frame_gflops_achieved']:.0f} GFLOP/s ({100 * r['bf16_frame_gflops_achieved'] / peak16:.0f}% "
                "of the bf16 peak)",
            ),
        ]
        for name, sec in r["bf16_stages_s"].items():
            ach = r["bf16_stages_gflops_achieved"][name]
            rows.append(
                (f"  {name}", f"{sec:.2f} s", f"{ach:.0f} GFLOP/s ({100 * ach / peak16:.0f}% of the bf16 peak)")
            )
        rows += [
            (
                "bf16 vs fp32 image: max / mean abs",
                f"{r['bf16_image_max_abs']:.2e} / {r['bf16_image_mean_abs']:.2e}",
                f"p99.9 {r['bf16_image_p999_abs']:.2e}, PSNR {r['bf16_image_psnr_db']:.1f} dB, "
                f"{100 * r['bf16_image_pixels_over_1_level']:.3f}% of values > one 8-bit level",
            ),
        ]
        for scope, e in r["bf16_scopes"].items():
            rows.append(
                (
                    f"  autocast_scope={scope}" + (" (default)" if scope == r["bf16_scope"] else ""),
                    f"max {e['max_abs']:.2e}",
                    f"PSNR {e['psnr_db']:.1f} dB, {100 * e['pixels_over_1_level']:.3f}% of values > one 8-bit level",
                )
            )
        h = r["h264_crf18_psnr_db"]
        rows.append(
            (
                "bf16 vs fp32, 8-bit frames",
                f"PSNR {r['bf16_uint8_psnr_db']:.1f} dB",
                f"for scale: H.264 crf 18 (the writer's default) costs {h['float32']:.1f} dB on the fp32 frame, "
                f"{h['bfloat16']:.1f} dB from fp32 on the bf16 frame",
            )
        )
        rows.append(("peak memory", f"{r['peak_memory_gb']:.2f} GiB", ""))
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<22}  {c}")


if __name__ == "__main__":
    sys.exit(main())
