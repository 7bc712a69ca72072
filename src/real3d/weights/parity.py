"""Golden-tensor parity against the official implementation (`real3d dev parity`).

`run_parity(checkpoint, fixture.npz)` loads a checkpoint (an official directory/.ckpt, converted on the
fly, or a real3d directory), runs the fixture's inputs through our model and compares every output and
intermediate the fixture holds with the tolerances of the fixture README (§6). Everything (shapes,
lengths, temperature, noise) is taken from the npz, so any fixture file of a supported format works.

Fixture formats are entries of `FIXTURE_FORMATS` (detected by their keys): A2M (`Audio2Motion`) and the
torso model (`Real3DPortrait`, deterministic volume sampling). Every key of the file that is not an input
is compared; a golden key without a rule or without a model output fails, so nothing is silently skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from real3d.errors import CheckpointError, InputError, report_errors
from real3d.models.audio2motion import Audio2Motion
from real3d.models.real3d_portrait import Real3DPortrait
from real3d.weights.convert import load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TensorParity:
    """Comparison of one tensor with its golden value."""

    name: str
    shape: list[int]
    max_abs: float | None
    """Largest absolute difference (None when the output has non-finite values or the wrong shape)."""
    mean_abs: float | None
    tolerance: float | None
    """Allowed max abs difference (None: the key has no rule)."""
    passed: bool
    mean_tolerance: float | None = None
    """Allowed mean abs difference, where the README sets one."""
    note: str = ""
    rel_tolerance: float | None = None
    """Where set, element i passes when |a_i - ref_i| <= tolerance + rel_tolerance * |ref_i| (float16 goldens)."""
    worst_ratio: float | None = None
    """max_i |a_i - ref_i| / allowed_i: below 1 passes the element-wise rule."""


@dataclass
class ParityReport:
    """Per-tensor parity of one model on one fixture file."""

    model: str
    fixture: str
    checkpoint: str
    device: str
    seconds: float
    """Wall time of the model call."""
    tensors: list[TensorParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.tensors) and all(t.passed for t in self.tensors)

    def to_json(self) -> str:
        data = asdict(self)
        data["passed"] = self.passed
        data["tensors"] = {t.pop("name"): t for t in data["tensors"]}
        return json.dumps(data, indent=2)


def compare(
    name: str,
    ours: torch.Tensor,
    ref: np.ndarray,
    tolerance: float,
    mean_tolerance: float | None = None,
    rel_tolerance: float | None = None,
) -> TensorParity:
    """Max/mean absolute difference of `ours` against the golden array `ref` (float64 arithmetic).

    Passes when every |a - ref| <= tolerance (+ rel_tolerance * |ref| where given) and, with a
    `mean_tolerance`, the mean abs difference is within it.
    """
    a = ours.detach().to("cpu", torch.float64).numpy()
    b = np.asarray(ref, dtype=np.float64)
    fail = dict(tolerance=tolerance, passed=False, mean_tolerance=mean_tolerance, rel_tolerance=rel_tolerance)
    if a.shape != b.shape:
        return TensorParity(name, list(b.shape), None, None, note=f"shape {list(a.shape)} != {list(b.shape)}", **fail)
    diff = np.abs(a - b)
    if not np.all(np.isfinite(diff)):
        return TensorParity(name, list(b.shape), None, None, note="non-finite values", **fail)
    allowed = tolerance + (rel_tolerance or 0.0) * np.abs(b)
    worst = float((diff / allowed).max(initial=0.0))
    max_abs = float(diff.max(initial=0.0))
    mean_abs = float(diff.mean()) if diff.size else 0.0
    ok = worst <= 1.0 and (mean_tolerance is None or mean_abs <= mean_tolerance)
    return TensorParity(name, list(b.shape), max_abs, mean_abs, tolerance, ok, mean_tolerance, "", rel_tolerance, worst)


# ----------------------------------------------------------------------------------------------- A2M
A2M_TOLERANCES = {"exp": 1e-4, "cond": 2e-5, "g_sqz": 2e-5, "z_decoder_in": 2e-5}
"""Fixture README §6: `exp` <= 1e-4; `cond`, `g_sqz`, `z_decoder_in` <= 2e-5 (max abs)."""


def _run_a2m(model: nn.Module, arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:

    if not isinstance(model, Audio2Motion):
        raise CheckpointError(f"the fixture is an A2M fixture but the checkpoint holds a {type(model).__name__}")

    def t(key: str) -> torch.Tensor | None:
        return torch.from_numpy(np.ascontiguousarray(arrays[key])).to(device) if key in arrays else None

    temperature = float(arrays["temperature"]) if "temperature" in arrays else 1.0
    with torch.no_grad():
        out = model(
            t("hubert"),
            t("f0"),
            blink=t("blink"),
            mouth_amp=t("mouth_amp"),
            eye_amp=t("eye_amp"),
            y_mask=t("y_mask"),
            temperature=temperature,
            noise=t("z"),
        )
    return {"exp": out.exp, "cond": out.cond, "g_sqz": out.g_sqz, "z_decoder_in": out.z_decoder_in}


# --------------------------------------------------------------------------------------------- torso
TORSO_TOLERANCES = {
    "image": 2e-3,
    "image_raw": 2e-3,
    "feature_image": 3e-3,
    "weights_img": 1e-3,
    "image_depth": 1e-3,
    "occlusion_2": 1e-4,
    "occlusion": 1e-4,
    "torso_occlusion_2_pre": 1e-4,
    "sr_block0_rgb": 2e-3,
    "sr_head_torso_block_rgb": 2e-3,
    "sr_block1_in_rgb": 2e-3,
    "torso_rgb": 5e-4,
    "torso_deformation": 5e-4,
    "debug_depths_coarse": 2e-4,
    "debug_depths_fine": 2e-4,
    "cano_planes": 2e-3,
    "secc_planes": 2e-3,
    "torso_appearance_feats": 2e-3,
    "deformed_torso_hid": 2e-3,
}
"""Fixture README §6 (max abs; `torso_occlusion_2_pre`, not listed there, gets the occlusion bound)."""
TORSO_MEAN_TOLERANCES = {"image": 1e-4}
"""Fixture README §6: `image` also needs mean abs <= 1e-4."""
FLOAT16_REL_TOLERANCE = 1e-3
"""Fixture README §6: a golden tensor stored as float16 passes when |a - ref| <= tol + 1e-3 |ref|."""
TORSO_INPUTS = frozenset(
    {
        "img",
        "cond_cano",
        "cond_src",
        "cond_tgt",
        "ref_torso_img",
        "bg_img",
        "segmap",
        "kp_s",
        "kp_d",
        "camera",
        "euler",
        "trans",
        "seed",
        "debug_ray_index",
    }
)
"""Keys of a torso fixture that are inputs or metadata, not golden tensors."""


OFFICIAL_OUTPUT_NAMES = {"opacity": "weights_img", "motion_planes": "secc_planes"}
"""`Real3DPortraitOutput` fields whose golden tensors carry another (the official) name."""


def _run_torso(model: nn.Module, arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """The official first-frame call (fixture README §4) through `Real3DPortrait` in deterministic mode."""

    if not isinstance(model, Real3DPortrait):
        raise CheckpointError(
            f"the fixture is a secc2plane_torso fixture but the checkpoint holds a {type(model).__name__}"
        )
    missing = sorted({"ref_torso_img", "bg_img", "segmap", "kp_s", "kp_d"} - arrays.keys())
    if missing:
        raise InputError(f"the torso fixture lacks the inputs {missing}")

    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arrays[key])).to(device)

    with torch.no_grad():
        cache = model.encode_source(t("img"), t("ref_torso_img"), t("bg_img"), t("segmap").float())
        out = model(
            cache,
            t("cond_cano"),
            t("cond_src"),
            t("cond_tgt"),
            t("camera"),
            t("kp_s"),
            t("kp_d"),
            mode="deterministic",
            return_intermediates=True,
        )
    outputs = {
        OFFICIAL_OUTPUT_NAMES.get(f.name, f.name): getattr(out, f.name)
        for f in fields(out)
        if getattr(out, f.name) is not None
    }
    rays = t("debug_ray_index") if "debug_ray_index" in arrays else None
    for name, depths in (("debug_depths_coarse", out.depths_coarse), ("debug_depths_fine", out.depths_fine)):
        if rays is not None and depths is not None and name in arrays:
            picked = depths[:, rays]  # BxNxS
            outputs[name] = picked.reshape(arrays[name].shape) if picked.numel() == arrays[name].size else picked
    return outputs


@dataclass(frozen=True)
class FixtureFormat:
    """A kind of golden-tensor file: required keys, input keys, model runner, tolerances."""

    name: str
    required: frozenset[str]
    run: Callable[[nn.Module, dict[str, np.ndarray], torch.device], dict[str, torch.Tensor]]
    tolerances: dict[str, float]
    mean_tolerances: dict[str, float] = field(default_factory=dict)
    inputs: frozenset[str] = frozenset()
    """Keys that are inputs/metadata; every other key of the file is a golden tensor and is compared."""


A2M_INPUTS = frozenset(
    {"hubert", "f0", "blink", "x_mask", "y_mask", "mouth_amp", "eye_amp", "temperature", "z", "seed"}
)
"""Keys of an A2M fixture that are inputs (the prior noise `z` included) or metadata."""

FIXTURE_FORMATS: dict[str, FixtureFormat] = {
    "audio2secc_vae": FixtureFormat(
        "audio2secc_vae", frozenset({"hubert", "f0", "z", "exp"}), _run_a2m, A2M_TOLERANCES, inputs=A2M_INPUTS
    ),
    "secc2plane_torso": FixtureFormat(
        "secc2plane_torso",
        frozenset({"img", "camera", "cond_cano", "cond_src", "cond_tgt", "image"}),
        _run_torso,
        TORSO_TOLERANCES,
        TORSO_MEAN_TOLERANCES,
        TORSO_INPUTS,
    ),
}


def detect_fixture(arrays: dict[str, np.ndarray], path: Path) -> FixtureFormat:
    for fmt in FIXTURE_FORMATS.values():
        if fmt.required <= arrays.keys():
            return fmt
    raise InputError(
        f"{path} is not a known parity fixture (keys: {', '.join(sorted(arrays))}); expected one of: "
        + "; ".join(f"{f.name} with {', '.join(sorted(f.required))}" for f in FIXTURE_FORMATS.values())
    )


def run_parity(checkpoint_dir: str | Path, fixture_npz: str | Path, device: str = "cpu") -> ParityReport:
    """Run the fixture's inputs through the checkpoint's model and compare with its golden tensors."""
    fixture_npz = Path(fixture_npz)
    try:
        with np.load(fixture_npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the fixture {fixture_npz} ({err}); pass a .npz golden-tensor file") from None
    fmt = detect_fixture(arrays, fixture_npz)
    dev = torch.device(device)
    model = load_checkpoint(checkpoint_dir).to(dev).eval()
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # parity needs full fp32
    try:
        start = time.perf_counter()
        outputs = fmt.run(model, arrays, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    report = ParityReport(fmt.name, str(fixture_npz), str(checkpoint_dir), str(dev), seconds)
    golden = [k for k in arrays if k not in fmt.inputs]
    for name in sorted(
        golden, key=lambda k: (k not in fmt.tolerances, list(fmt.tolerances).index(k) if k in fmt.tolerances else 0, k)
    ):
        ref = arrays[name]
        if name not in fmt.tolerances or name not in outputs:
            why = "no tolerance rule for this key" if name not in fmt.tolerances else "the model does not produce it"
            report.tensors.append(TensorParity(name, list(ref.shape), None, None, None, False, note=why))
            continue
        rel = FLOAT16_REL_TOLERANCE if ref.dtype == np.float16 else None
        report.tensors.append(
            compare(name, outputs[name], ref, fmt.tolerances[name], fmt.mean_tolerances.get(name), rel)
        )
    log.info("parity %s on %s: %s", fmt.name, fixture_npz, "pass" if report.passed else "FAIL")
    return report


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `real3d dev parity`'s arguments to `parser` and make `run_command` its handler."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="official checkpoint directory/.ckpt (made with the fixture's seed) or a real3d directory",
    )
    parser.add_argument("--fixture", required=True, type=Path, help="golden-tensor .npz (e.g. a2m_seed0.npz)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (TF32 is disabled)")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Handler of `real3d dev parity`: print the JSON report; exit 0 iff every tensor passes."""
    report = run_parity(args.checkpoint, args.fixture, args.device)
    text = report.to_json()
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if report.passed else 1


def parity_main(argv: Sequence[str] | None = None) -> int:
    """`real3d dev parity --checkpoint DIR --fixture F.npz` as a function; returns the exit code."""
    parser = configure(
        argparse.ArgumentParser(
            prog="real3d dev parity",
            description="Compare our models with golden tensors of the official implementation.",
        )
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `real3d dev parity -- --checkpoint ...`
        argv = argv[1:]
    args = parser.parse_args(argv)
    return report_errors(args.func, args)
