"""`real3d eval`: run the evaluation protocols and write JSON per case + a markdown summary.

    real3d eval --clips DIR [--sources DIR] [--audios DIR] [--manifest cases.csv] -o OUT
                [--protocols same,cross,audio] [--methods mesh,static,gt,envelope] [--max-frames N] [--workers N]
                [--lpips alex BACKBONE.pth HEADS.pth] [--fid INCEPTION.pth] [--arcface BACKBONE.pth] [--syncnet FILE]

Outputs: OUT/cases/<protocol>/<case>__<method>.json, OUT/summary.md (mean [95% interval] per metric),
OUT/summary.json, OUT/cases.md (every case), OUT/cache/*.mp4
(generated videos, reused by later runs with the same inputs and options).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from real3d.errors import InputError, report_errors
from real3d.eval import protocols as P

log = logging.getLogger(__name__)


DESCRIPTION = __doc__.split("\n\n")[0]


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `real3d eval`'s arguments to `p` and make `run_command` its handler."""
    p.set_defaults(func=run_command)
    p.add_argument("--clips", type=Path, help="folder of real videos (same-identity clips, drivers, speech videos)")
    p.add_argument("--sources", type=Path, help="folder of portrait photos (cross-identity and audio sources)")
    p.add_argument("--audios", type=Path, help="folder of speech files (audio-driven, no reference video)")
    p.add_argument("--manifest", type=Path, help="CSV/JSON of cases: protocol,source,driver,audio,reference[,name]")
    p.add_argument("-o", "--out", type=Path, default=Path("eval_out"), help="output folder (default eval_out)")
    p.add_argument("--cache", type=Path, default=None, help="generated-video cache (default OUT/cache)")
    p.add_argument("--protocols", default="same,cross,audio", help="comma list of same, cross, audio")
    p.add_argument(
        "--methods",
        default="mesh,static,gt,envelope",
        help="comma list of mesh, static, gt, envelope (audio cases with a reference clip)",
    )
    p.add_argument("--max-frames", type=int, default=None, help="frames per case (default: whole clips)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--id-every", type=int, default=5, help="identity metrics on every n-th frame (default 5)")
    p.add_argument("--audio-fps", type=float, default=25.0, help="fps of audio-driven outputs without reference")
    p.add_argument("--framing", choices=["auto", "crop", "full"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--visible-watermark",
        action="store_true",
        help="keep the visible label in generated videos (off by default: it counts as pixel error)",
    )
    p.add_argument(
        "--lpips",
        nargs=3,
        metavar=("alex|vgg", "BACKBONE", "HEADS"),
        help="enable LPIPS: torchvision backbone weights + lpips v0.1 head weights",
    )
    p.add_argument("--fid", metavar="INCEPTION", help="enable FID: pt_inception-2015-12-05 or torchvision weights")
    p.add_argument("--arcface", metavar="BACKBONE", help="enable ArcFace CSIM: insightface IResNet-50/100 backbone.pth")
    p.add_argument("--syncnet", metavar="FILE", help="enable LSE-C/LSE-D: syncnet_v2.model")
    p.add_argument("--bfm", metavar="DIR", help="enable AED/APD (3DMM fits): the BFM folder of the official release")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild OUT/summary.md, summary.json and cases.md from OUT/cases/*/*.json",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _split(value: str, allowed: tuple[str, ...], what: str) -> tuple:
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise InputError(f"--{what} {value!r}: choose from {', '.join(allowed)}")
    return items


_WORKER_PLUGINS = None
"""The metric networks of a worker process (set by the pool initializer; the only way to give each process its own)."""


def _init_worker(cfg: P.EvalConfig) -> None:
    global _WORKER_PLUGINS  # one set of plug-in networks per worker process
    logging.basicConfig(level=logging.WARNING)
    _WORKER_PLUGINS = P.MetricModels(cfg)


def _run_one(case: P.Case, method: str, cfg: P.EvalConfig):
    return P.evaluate_case(case, method, cfg, _WORKER_PLUGINS)  # type: ignore[arg-type]


def run(
    cases: list[P.Case], cfg: P.EvalConfig, workers: int = 1, quiet: bool = False, models: P.MetricModels | None = None
) -> list[P.CaseResult]:
    """Evaluate every case with every method; writes the per-case JSONs and the summary into cfg.out_dir.

    `models` (already loaded metric networks) is reused when running in this process (workers <= 1).
    """
    from tqdm import tqdm

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        (c, m)
        for c in cases
        for m in cfg.methods
        if not (m in ("gt", "envelope") and c.reference is None) and not (m == "envelope" and c.protocol != "audio")
    ]
    # render-heavy tasks first so parallel workers do not wait on the cache at the end
    tasks.sort(key=lambda t: t[1] != "mesh")
    results: list[P.CaseResult] = []
    bar = tqdm(total=len(tasks), desc="eval", unit="case", disable=quiet)

    def done(res: P.CaseResult | None) -> None:
        bar.update(1)
        if res is None:
            return
        results.append(res)
        path = out / "cases" / res.protocol / f"{res.case}__{res.method}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res.to_json(), indent=1))
        bar.set_postfix_str(f"{res.protocol}/{res.case}/{res.method}")

    if workers <= 1:
        models = models or P.MetricModels(cfg)
        for c, m in tasks:
            done(P.evaluate_case(c, m, cfg, models))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(cfg,)
        ) as pool:
            futures = [pool.submit(_run_one, c, m, cfg) for c, m in tasks]
            for f in as_completed(futures):
                done(f.result())
    bar.close()
    order = {(c.protocol, c.name): i for i, c in enumerate(cases)}
    results.sort(key=lambda r: (order.get((r.protocol, r.case), 0), P.METHODS.index(r.method)))
    write_reports(results, out, with_fid=cfg.fid is not None)
    return results


def write_reports(results: list[P.CaseResult], out: Path, with_fid: bool = False) -> None:
    """summary.md (mean [95% interval] per metric), summary.json and cases.md (every case) in `out`."""
    fid = P.fid_by_group(results, out) if with_fid else {}
    table, data = P.summarize(results, fid)
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    (out / "cases.md").write_text(P.case_tables(results) + "\n")


def load_results(out: Path) -> list[P.CaseResult]:
    """The per-case results a previous run wrote under out/cases."""
    files = sorted((Path(out) / "cases").glob("*/*.json"))
    if not files:
        raise InputError(f"no case results under {Path(out) / 'cases'}; run the evaluation first")
    res = [P.CaseResult(**json.loads(f.read_text())) for f in files]
    res.sort(key=lambda r: (P.PROTOCOLS.index(r.protocol), r.case, P.METHODS.index(r.method)))
    return res


def run_command(args: argparse.Namespace) -> int:
    """Handler of `real3d eval` (parsed arguments); raises `Real3DError` on bad input."""
    if args.report_only:
        write_reports(load_results(args.out), args.out, with_fid=(args.out / "features").is_dir())
        print((Path(args.out) / "summary.md").read_text())
        return 0
    protocols = _split(args.protocols, P.PROTOCOLS, "protocols")
    methods = _split(args.methods, P.METHODS, "methods")
    if args.lpips and args.lpips[0] not in ("alex", "vgg"):
        raise InputError(f"--lpips backbone must be alex or vgg, got {args.lpips[0]!r}")
    if args.max_frames is not None and args.max_frames < 3:
        raise InputError("--max-frames must be at least 3")
    if args.manifest:
        cases = [c for c in P.cases_from_manifest(args.manifest) if c.protocol in protocols]
    else:
        if not (args.clips or args.sources or args.audios):
            raise InputError("nothing to evaluate: give --clips/--sources/--audios folders or --manifest FILE")
        cases = P.cases_from_folders(args.clips, args.sources, args.audios, protocols)
    if not cases:
        raise InputError("no cases found for the chosen protocols (check the folders / manifest)")
    cfg = P.EvalConfig(
        out_dir=args.out,
        cache_dir=args.cache,
        methods=methods,
        max_frames=args.max_frames,
        audio_fps=args.audio_fps,
        framing=args.framing,
        seed=args.seed,
        id_every=args.id_every,
        visible_watermark=args.visible_watermark,
        lpips=tuple(args.lpips) if args.lpips else None,
        fid=args.fid,
        arcface=args.arcface,
        syncnet=args.syncnet,
        bfm=args.bfm,
    )
    models = P.MetricModels(cfg)  # fail fast on a wrong weight file, before any rendering
    run(cases, cfg, workers=args.workers, quiet=args.quiet, models=models)
    print((Path(args.out) / "summary.md").read_text())
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """`real3d eval` as a function (argv without the subcommand); returns the exit status."""
    args = configure(argparse.ArgumentParser(prog="real3d eval", description=DESCRIPTION)).parse_args(argv)
    return report_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(eval_main())
