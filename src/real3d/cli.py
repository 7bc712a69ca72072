"""`real3d` command line: a thin adapter over `real3d.pipeline` and the other entry points."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from skimage import data

from real3d import batch as batch_cli
from real3d._stderr import filtered_stderr
from real3d.assets import add_asset_arguments
from real3d.cpu_memory import keep_freed_memory
from real3d.errors import DependencyError, InputError, report_errors
from real3d.eval import cli as eval_cli
from real3d.pipeline import AnimateOptions, Pipeline
from real3d.precision import EMULATED_SLOWDOWN, auto_dtype, device_capability
from real3d.provenance import VERIFY_DESCRIPTION, configure_verify
from real3d.serve import command as serve_command
from real3d.train import cli as train_cli
from real3d.weights import convert, parity

log = logging.getLogger("real3d")

DEMO_TEXT = (
    "Hello! I am a talking portrait made from a single photo. "
    "My lips follow the sounds of this speech, my eyes blink, and my head moves a little, "
    "all without downloading any model weights."
)


def _animate_parser(sub) -> None:
    p = sub.add_parser(
        "animate",
        help="photo + driving video or speech -> talking-portrait video",
        description="Animate a portrait photo with a driving video (expression + pose) or a speech recording.",
    )
    p.add_argument("source", nargs="?", help="portrait photo (jpg/png/webp/...; or a video: its first frame)")
    p.add_argument("--src_img", help=argparse.SUPPRESS)
    p.add_argument("--video", help="driving video: expression and head pose (its audio is kept)")
    p.add_argument("--audio", help="driving speech: wav/mp3/m4a/flac/ogg or a video's audio track")
    p.add_argument("--drv_aud", help="official alias: a video drives like --video, an audio file like --audio")
    p.add_argument(
        "--pose-video",
        "--drv_pose",
        dest="pose_video",
        help="take head pose from this video (ping-pong when shorter); 'static' = --still",
    )
    p.add_argument("--background", "--bg_img", dest="background", help="replace the background with this image")
    p.add_argument("--still", action="store_true", help="keep the source's head pose")
    p.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    p.add_argument("--seed", type=int, default=0, help="random seed (blinks, idle head motion)")
    p.add_argument(
        "--face", dest="face_index", type=int, default=0, help="which face of the photo to animate (0 = largest)"
    )
    p.add_argument(
        "--framing",
        choices=["auto", "crop", "full"],
        default="auto",
        help="head-and-shoulders crop, the whole photo (padded to square), or auto (default)",
    )
    p.add_argument(
        "--mouth-amp",
        "--mouth_amp",
        dest="mouth_amp",
        type=float,
        default=0.45,
        help="mouth amplitude for audio driving (official default 0.45 = neutral)",
    )
    p.add_argument(
        "--blink",
        "--blink_mode",
        dest="blink",
        default="natural",
        choices=["natural", "periodic", "period", "none"],
        help="blink schedule for audio driving",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--crf", type=int, default=18, help="x264 quality, lower = better (default 18)")
    p.add_argument(
        "--no-visible-watermark",
        dest="visible_watermark",
        action="store_false",
        help="omit the small 'AI-generated' label",
    )
    n = p.add_argument_group("neural backend (the paper's networks; weights you supply)")
    n.add_argument(
        "--backend", choices=["mesh", "neural"], default="mesh", help="mesh (default, weights-free) or neural"
    )
    add_asset_arguments(n, device_default="cpu")
    n.add_argument(
        "--generator-ckpt",
        "--torso-ckpt",
        "--torso_ckpt",
        dest="generator_ckpt",
        help="the generator checkpoint folder itself (official: secc2plane_torso_orig)",
    )
    n.add_argument("--a2m-ckpt", "--a2m_ckpt", dest="a2m_ckpt", help="the audio-to-motion checkpoint folder itself")
    n.add_argument("--temperature", type=float, default=0.2, help="A2M sampling temperature (default 0.2)")
    n.add_argument(
        "--sampling",
        choices=["deterministic", "stochastic"],
        default="deterministic",
        help="volume sampling: deterministic (no flicker, default) or the official random jitter",
    )
    n.add_argument(
        "--out-mode",
        "--out_mode",
        dest="out_mode",
        choices=["final", "debug", "concat_debug"],
        default="final",
        help="debug adds PNCC, raw render and depth panels",
    )
    n.add_argument("--batch-size", type=int, default=4, help="frames per network call")
    n.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="network precision; auto (default) = bfloat16 only where native (AVX512-BF16/AMX CPU, CUDA "
        "sm_80+), else float32; an emulated bf16/fp16 request runs ~50-100x slower with a warning "
        "(see `real3d doctor`)",
    )
    n.add_argument("--map_to_init_pose", choices=["True", "False"], default="True", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", "--out_name", dest="output", help="output video (.mp4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_animate)


def _cmd_animate(args: argparse.Namespace) -> int:
    """`real3d animate`: the parsed arguments become `AnimateOptions` (official names included); the pipeline runs."""
    values = {k: v for k, v in vars(args).items() if k not in ("func", "command", "verbose")}
    if not (values.get("source") or values.get("src_img")):
        raise InputError("no portrait given; usage: real3d animate PHOTO --video DRIVER.mp4 -o out.mp4")
    if not values.get("output"):
        raise InputError("no output given; add -o out.mp4")
    res = Pipeline()(AnimateOptions.from_official(**values))
    t = res.timings
    print(
        f"wrote {res.output} ({res.frames} frames, {res.duration:.2f} s at {res.fps:g} fps; "
        f"render {res.frames / max(t.get('render', 1e-9), 1e-9):.1f} fps)"
    )
    return 0


def _cmd_demo(args) -> int:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DependencyError("the demo's speech is made with espeak-ng; install it: sudo apt-get install espeak-ng")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(wav), DEMO_TEXT], check=True)
        res = Pipeline()(AnimateOptions(source=data.astronaut(), output=out, audio=wav, quiet=args.quiet))
    print(f"wrote {res.output} ({res.frames} frames, {res.duration:.1f} s)")
    return 0


def _cmd_doctor(args) -> int:
    import importlib.metadata as md
    import platform

    rows = [("python", platform.python_version(), True)]
    for pkg in (
        "torch",
        "mediapipe",
        "opencv-contrib-python",
        "av",
        "pocketsphinx",
        "praat-parselmouth",
        "safetensors",
        "numpy",
        "scipy",
    ):
        try:
            rows.append((pkg, md.version(pkg), True))
        except md.PackageNotFoundError:
            rows.append((pkg, "MISSING (run ./setup.sh)", False))
    try:
        import av

        codecs = av.codecs_available
        rows.append(("PyAV libx264 encoder", "yes" if "libx264" in codecs else "NO", "libx264" in codecs))
        rows.append(("PyAV aac encoder", "yes" if "aac" in codecs else "NO", "aac" in codecs))
    except ImportError:
        pass
    try:
        import mediapipe

        mp_dir = Path(mediapipe.__file__).parent / "modules"
        for name in (
            "face_landmark/face_landmark_with_attention.tflite",
            "selfie_segmentation/selfie_segmentation.tflite",
            "face_detection/face_detection_full_range_sparse.tflite",
        ):
            ok = (mp_dir / name).is_file()
            rows.append((f"mediapipe model {Path(name).name}", "shipped" if ok else "MISSING", ok))
    except ImportError:
        pass
    try:
        import pocketsphinx

        ok = (Path(pocketsphinx.get_model_path()) / "en-us" / "en-us-phone.lm.bin").is_file()
        rows.append(("pocketsphinx en-US phone model", "shipped" if ok else "MISSING", ok))
    except ImportError:
        pass
    esp = shutil.which("espeak-ng")
    rows.append(("espeak-ng (demo speech)", esp or "missing (apt-get install espeak-ng)", esp is not None))
    try:
        import torch

        rows.append(
            ("CUDA", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available (CPU)", True)
        )
        cpu = device_capability("cpu")
        rows.append(("CPU capability (torch kernels)", cpu.describe(), True))
        rows.append(("torch threads", f"{torch.get_num_threads()} (of {os.cpu_count()} logical CPUs)", True))
        rows.append(
            (
                "neural --dtype auto (CPU)",
                f"{auto_dtype('cpu')}"
                + (
                    ""
                    if cpu.native_bf16
                    else f"; an explicit --dtype bfloat16 runs {EMULATED_SLOWDOWN} slower than float32 here and warns"
                ),
                True,
            )
        )
        if torch.cuda.is_available():
            rows.append(
                ("neural --dtype auto (CUDA)", f"{auto_dtype('cuda')} ({device_capability('cuda').describe()})", True)
            )
    except ImportError:
        pass
    width = max(len(r[0]) for r in rows)
    for name, val, ok in rows:
        print(f"{'ok ' if ok else '!! '} {name:<{width}}  {val}")
    print(
        "optional weights (neural backend, supplied by you): official checkpoints, BFM, HuBERT — "
        "not needed by the mesh backend"
    )
    return 0 if all(ok for _, _, ok in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    """The `real3d` parser: one subparser per command, each with `func` set to its handler."""
    parser = argparse.ArgumentParser(
        prog="real3d", description="One photo + speech or a driving video -> talking portrait."
    )
    parser.add_argument(*VERBOSE_FLAGS, **VERBOSE_KWARGS, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _animate_parser(sub)
    d = sub.add_parser("demo", help="animate scikit-image's astronaut photo with espeak-ng speech")
    d.add_argument("-o", "--output", default="demo/astronaut_talking.mp4")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=_cmd_demo)
    sub.add_parser("doctor", help="report what is installed and what is missing").set_defaults(func=_cmd_doctor)
    configure_verify(
        sub.add_parser(
            "verify", help="does a video carry the real3d watermark? (exit 0 yes, 1 no)", description=VERIFY_DESCRIPTION
        )
    )
    eval_cli.configure(
        sub.add_parser("eval", help="the paper's protocols and metrics", description=eval_cli.DESCRIPTION)
    )
    convert.configure(
        sub.add_parser(
            "convert-official",
            help="official checkpoint dir -> model.safetensors + config.json",
            description=convert.DESCRIPTION,
        )
    )
    dev = sub.add_parser("dev", help="developer tools (dev parity: golden-tensor checks)")
    dsub = dev.add_subparsers(dest="dev_command", required=True, metavar="TOOL")
    parity.configure(dsub.add_parser("parity", help="compare our networks with official golden tensors"))
    serve_command.add_parser(sub)
    batch_cli.add_parser(sub)
    train_cli.add_prepare_parser(sub)
    train_cli.add_train_parser(sub)
    _add_global_flags(sub)
    _add_global_flags(dsub)
    return parser


VERBOSE_FLAGS = ("-v", "--verbose")
VERBOSE_KWARGS = {"action": "store_true", "help": "debug logging"}


def _add_global_flags(sub: argparse._SubParsersAction) -> None:
    """Let `-v` also follow the command (`real3d eval -v ...`); it never overrides a `-v` given before it."""
    for p in sub.choices.values():
        if "-v" not in p._option_string_actions:
            p.add_argument(*VERBOSE_FLAGS, **VERBOSE_KWARGS, default=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `real3d` command; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    keep_freed_memory()
    warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
    with filtered_stderr():
        return report_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
