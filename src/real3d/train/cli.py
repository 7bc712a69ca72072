"""`real3d prepare` and `real3d train` (argparse subcommands; registered by `real3d.cli.build_parser`)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from real3d.assets import resolve
from real3d.errors import InputError
from real3d.train import records
from real3d.train.config import apply_overrides, load_config
from real3d.train.engine import train
from real3d.train.export import export_official, export_run
from real3d.train.prepare import PrepareConfig, parse_shard, prepare
from real3d.weights.io import from_pretrained

PREPARE_DESCRIPTION = """Talking-face videos -> training records (WebDataset-style tar shards + index.json).

Inputs: folders (searched recursively), video files, .txt lists (one path per line) or .jsonl manifests
({"path": ...} per line). Each clip is resampled to 25 fps, framed to SIZE x SIZE like inference frames a
photo, and gets landmarks, 6-class parsing, inpainted torso, the clip's static background, composited
targets, a 3DMM fit and cameras (+ HuBERT / f0 with --hubert / --f0). Clips without exactly one clear face,
too short or unreadable are skipped with their reason (failed/<clip>.json). Re-running skips finished clips.
Split a large set across machines with --shard I/N (e.g. a Slurm array: --shard $SLURM_ARRAY_TASK_ID/N)."""

TRAIN_DESCRIPTION = """Train an image stage: stage2 (motion adapter + I2P) or stage3 (HTB-SR).

CONFIG is STAGE[:PRESET] (presets: official, tiny, finetune, finetune_tiny) or a config.json written by a run;
overrides are key=value pairs of the dataclass config, e.g. `optim.lr_g=5e-5 batch_size=8 data.num_workers=4`.
Several processes / GPUs / nodes: launch with torchrun, e.g.
  torchrun --nproc_per_node 8 -m real3d.cli train stage2 --records R --bfm BFM --out runs/s2
Re-running with the same --out resumes from its newest checkpoint. At the end the generator is exported to
OUT/export/generator (`real3d animate --backend neural --torso-ckpt OUT/export/generator`)."""


def add_prepare_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="talking-face videos -> training records",
        description=PREPARE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="video files, folders, .txt lists or .jsonl manifests")
    p.add_argument("-o", "--out", required=True, help="records folder (created; re-runs resume)")
    p.add_argument("--bfm", help="BFM 2009 folder (deep_3drecon/BFM of the release) [$REAL3D_BFM]")
    p.add_argument("--size", type=int, default=512, help="framed frame side (default 512)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    p.add_argument("--min-frames", type=int, default=32, help="skip shorter clips (default 32)")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per clip")
    p.add_argument("--framing", choices=["auto", "crop", "full"], default="crop", help="framing mode (default crop)")
    p.add_argument("--segmenter-model", help="selfie_multiclass_256x256.tflite (else the shipped approximation)")
    p.add_argument("--hubert", help="local hubert-large-ls960-ft snapshot: store HuBERT features + f0")
    p.add_argument("--f0", action="store_true", help="store the f0 track")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--shard", default="0/1", help="I/N: prepare only clips k with k %% N == I (default 0/1)")
    p.add_argument("--retry-failed", action="store_true", help="retry clips a previous run skipped")
    p.add_argument("--index-only", action="store_true", help="only rebuild index.json from the shards")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args) -> int:

    logging.getLogger("real3d.train").setLevel(logging.INFO)
    _ensure_handler()
    if args.index_only:
        index = records.build_index(args.out)
        sys.stdout.write(
            f"{len(index['clips'])} clips, {len(index['failed'])} skipped -> {Path(args.out) / records.INDEX_NAME}\n"
        )
        return 0
    cfg = PrepareConfig(
        bfm=resolve("bfm", args.bfm),
        size=args.size,
        fps=args.fps,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        framing=args.framing,
        segmenter_model=Path(args.segmenter_model) if args.segmenter_model else None,
        hubert=Path(args.hubert) if args.hubert else None,
        f0=args.f0,
        workers=args.workers,
        shard=parse_shard(args.shard),
        retry_failed=args.retry_failed,
    )
    s = prepare(args.inputs, args.out, cfg)
    c = s.counts()
    sys.stdout.write(
        f"done {c.get('done', 0)}, resumed {c.get('resumed', 0)}, skipped {c.get('skipped', 0)}, "
        f"skipped before {c.get('failed-before', 0)} in {s.seconds:.1f} s\n"
    )
    for clip in s.clips:
        if clip.status in ("skipped", "failed-before"):
            sys.stdout.write(f"  skipped {clip.name}: {clip.reason}\n")
    return 0


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train stage 2 / stage 3 (torchrun for several GPUs or nodes)",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", help="stage2, stage3, STAGE:PRESET (official, tiny, finetune, finetune_tiny) or a config.json"
    )
    p.add_argument(
        "overrides", nargs="*", help="key=value config overrides (e.g. optim.lr_g=5e-5), anywhere on the line"
    )
    p.add_argument("--records", help="records folder (= data.records)")
    p.add_argument("--bfm", help="BFM 2009 folder (= bfm) [$REAL3D_BFM]")
    p.add_argument("--out", help="run folder (= out)")
    p.add_argument(
        "--init-from",
        dest="init_from",
        help="start from these weights: a folder of ours, a run, or an official checkpoint (read safely)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter groups, then exit")
    p.add_argument(
        "--export-official", metavar="DIR", help="also export the final generator in the official .ckpt layout"
    )
    p.set_defaults(func=_cmd_train)
    _allow_intermixed_overrides(p)


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _allow_intermixed_overrides(p: argparse.ArgumentParser) -> None:
    """Let `key=value` overrides follow options too (`train stage2 --out R max_steps=10`): argparse takes
    positionals only before the first option, so they are pulled out before parsing."""
    takes_value = {s for a in p._actions if a.nargs != 0 for s in a.option_strings}
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        overrides, rest = [], []
        for i, a in enumerate(args):
            after_option = i > 0 and args[i - 1] in takes_value
            (overrides if OVERRIDE.match(a) and not after_option else rest).append(a)
        ns, extra = parse(rest, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + overrides
        return ns, extra

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _cmd_train(args) -> int:

    logging.getLogger("real3d.train").setLevel(logging.INFO)
    _ensure_handler()
    cfg = load_config(args.config)
    extra = []
    for key, value in (("data.records", args.records), ("out", args.out), ("init_from", args.init_from)):
        if value is not None:
            extra.append(f"{key}={value}")
    cfg = apply_overrides(cfg, extra + list(args.overrides))
    if not cfg.bfm or args.bfm:
        bfm = resolve("bfm", args.bfm, required=not args.dry_run)
        if bfm is not None:
            cfg = apply_overrides(cfg, [f"bfm={bfm}"])
    if cfg.stage == "stage3" and not cfg.init_from and cfg.model == "official" and not args.dry_run:
        raise InputError("stage 3 trains HTB-SR on a trained head: pass --init-from a stage-2 run or the release")
    result = train(cfg, dry_run=args.dry_run)
    if isinstance(result, str):
        sys.stdout.write(result + "\n")
        return 0
    if args.export_official:
        if result.export is not None:
            export_official(from_pretrained(result.export), args.export_official, result.step)
        else:
            export_run(result.out, args.export_official, official=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if result.export is not None:
        sys.stdout.write(f"trained {result.step} steps; generator exported to {result.export}\n")
    else:
        sys.stdout.write(f"stopped at step {result.step}; checkpoint {result.checkpoint}\n")
    return 0


def _ensure_handler() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for h in root.handlers:
        if h.level > logging.INFO:
            h.setLevel(logging.INFO)
