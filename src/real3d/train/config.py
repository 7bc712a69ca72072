"""Training configuration: dataclasses and named presets (Python objects, no YAML chains).

`preset("stage2", "official")` etc. give the official values (shared/docs/official-training.md §3-4) with the
bug fixes written down in docs/training.md; `tiny` presets train the tiny generator on CPU in tests; the
`finetune` presets adapt released (or our) weights to one person's footage. `apply_overrides` takes
`a.b=value` strings (`real3d train stage2:tiny optim.lr_g=1e-3 batch_size=8`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from real3d.errors import InputError
from real3d.train.data import DataConfig
from real3d.weights.io import config_from_dict

StageName = Literal["stage2", "stage3"]
PRESETS = ("official", "tiny", "finetune", "finetune_tiny")


@dataclass
class OptimConfig:
    """Adam optimizers of the generator groups and the discriminator, and their schedules."""

    lr_g: float = 1e-4
    """Generator learning rate (every group's base rate)."""
    lr_d: float = 2e-4
    """Discriminator learning rate before the lazy-R1 scaling (x reg_every/(reg_every+1), official 16/17)."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam betas of the generator (the discriminator's beta2 gets the lazy-R1 exponent)."""
    warmup: int = 4000
    """Linear warmup steps of every learning rate."""
    decay: float = 0.95
    """Step decay factor ..."""
    decay_every: int = 5000
    """... applied every this many steps."""
    lr_floor: float = 5e-6
    """Smallest learning rate after decay (official floor)."""
    grad_clip: float = 1.0
    """Max global grad norm (over all trainable generator parameters; the discriminator separately)."""
    r1_every: int = 16
    """Lazy R1: the penalty runs every this many steps with weight gamma * r1_every."""
    r1_gamma: float = 1.0
    """R1 weight (official lambda_gradient_penalty)."""


@dataclass
class LossConfig:
    """Loss weights (official defaults of the stage) and the perceptual networks' files."""

    vgg19: str | None = None
    """torchvision's vgg19 ImageNet .pth (perceptual loss); None with vgg_face None = perceptual terms off."""
    vgg_face: str | None = None
    """Oxford's vgg_face_dag.pth (perceptual loss)."""
    perceptual_official_sizes: bool = True
    """Require the released VGG widths (False accepts narrower test weights of the same layout)."""
    l1: float = 1.0
    """Masked L1 at the output size."""
    l1_raw: float = 1.0
    """Masked L1 of the raw 128 rendering vs the downsampled head (stage 2)."""
    perceptual: float = 0.1
    """Perceptual loss at the output size."""
    perceptual_raw: float = 0.1
    """Perceptual loss of the raw rendering (stage 2)."""
    lip_l1: float = 0.5
    """L1 in the lip box."""
    lip_perceptual: float = 0.05
    """Perceptual loss in the lip box."""
    inside_weight: float = 1.0
    """Masked-L1 weight inside the (dilated) region: head in stage 2, torso in stage 3."""
    outside_weight: float = 0.2
    """Masked-L1 weight elsewhere (official 0.2 in stage 2, 0.5 in stage 3)."""
    mask_dilation: float = 41 / 512
    """Dilation kernel of the masks as a fraction of the image side (official 41 px at 512)."""
    opacity: float = 0.1
    """Opacity fit to the undilated head mask (stage 2)."""
    opacity_entropy: float = 0.01
    """Binary entropy of the head opacity (stage 2)."""
    occlusion_entropy: float = 0.001
    """Binary entropy of the torso alpha `occlusion_2` (stage 3)."""
    adversarial: float = 0.002
    """Non-saturating adversarial weight once step >= schedule.start_adv (stage 3 official: 0.003)."""
    density: float = 0.25
    """Density smoothness (x density_every, as official: 0.25 * 4 = 1.0 every 4th step; stage 2)."""
    density_every: int = 4
    """Steps between density-smoothness terms."""
    reg_every: int = 4
    """Steps between the PNCC-perturbation and blink regularisers (weighted lambda * reg_every)."""
    blink_target: float = 0.15
    """Target of the blink regulariser's adaptive weight (secc_img2plane_orig.yaml); 0 = off."""
    blink_max: float = 2.0
    """Largest adaptive blink weight."""
    pncc_target: float = 0.5
    """Target of the PNCC-perturbation regulariser's adaptive weight (orig yaml); 0 = off."""
    pncc_max: float = 0.2
    """Largest adaptive PNCC-perturbation weight."""
    pncc_noise: float = 0.01
    """Std of the Gaussian noise added to id and exp (official `randn` mode)."""
    ref_prob: float = 0.25
    """Probability that a regulariser perturbs the source PNCC instead of the target one."""
    self_every: int = 16
    """Steps between the src->src reconstruction terms (official 16 in stage 2, 4 in stage 3)."""


@dataclass
class ScheduleConfig:
    """When parts switch on (steps)."""

    start_adv: int = 200_000
    """Adversarial generator loss from this step."""
    d_start: int = 190_000
    """Discriminator training from this step (official start_adv - 10000 in stage 2)."""
    decoder_start: int = 6000
    """Stage 2: the tri-plane decoder's lr is 0 up to this step."""
    sr_start: int = 30_000
    """Stage 2: the super-resolution's lr is 0 up to this step."""
    i2p_ramp: int = 220_000
    """Stage 2: the I2P lr ramps as min(1, step / i2p_ramp) (official start_adv + 20000)."""
    i2p_stop: int | None = None
    """Stage 2: freeze the I2P from this step (official non-orig 70000; None = never)."""
    two_phase: bool = False
    """Stage 2: from start_adv only the super-resolution trains and the target's output-size L1 and perceptual
    terms are off (official `two_stage_training` + `disable_highreso_at_stage1`; on in stage2:official)."""


@dataclass
class TrainConfig:
    """One training run of an image stage."""

    stage: StageName = "stage2"
    """stage2 (motion adapter + I2P fine-tune) or stage3 (HTB-SR)."""
    model: Literal["official", "tiny"] = "official"
    """Generator size when not initialised from a checkpoint."""
    discriminator: Literal["official", "tiny", "none"] = "official"
    """Discriminator size; `none` trains without the adversarial terms."""
    bfm: str = ""
    """BFM 2009 folder (renders the PNCC maps and keypoints from the records' 3DMM coefficients)."""
    out: str = "runs/real3d"
    """Run folder: checkpoints, logs, exports."""
    init_from: str | None = None
    """Initial weights: a folder of ours (model.safetensors + config.json, or a run/checkpoint folder) or an
    official checkpoint folder/.ckpt (read with weights_only=True). Required by stage 3."""
    data: DataConfig = field(default_factory=DataConfig)
    """Records and pair sampling."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizers and schedules."""
    losses: LossConfig = field(default_factory=LossConfig)
    """Loss weights."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Switch-on steps."""
    trainable: tuple[str, ...] = ()
    """Restrict training to these generator groups (empty = the stage's groups). Stage-2 groups: i2p,
    motion_adapter, decoder, superresolution; stage 3: superresolution."""
    ema: float = 0.0
    """Decay of an exponential moving average of the generator's weights (0 = off, e.g. 0.999; the official
    training has none). When on, validation scores the average too (`val/ema/...`), checkpoints carry it
    (`generator_ema/`) and the export is the average."""
    max_steps: int = 250_000
    """Optimizer steps of the run."""
    batch_size: int = 4
    """Pairs per rank per step (the official code used 1)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: the networks run under bf16 autocast (where the device supports it natively), weights stay fp32."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda:LOCAL_RANK when available)."""
    seed: int = 0
    """Seed of the weights' initialisation and of every rank's RNG (rank r uses seed + r)."""
    log_every: int = 50
    """Steps between scalar logs."""
    sample_every: int = 1000
    """Steps between sample-image logs (0 = never)."""
    val_every: int = 2000
    """Steps between validations (0 = never)."""
    val_batches: int = 25
    """Validation batches (held-out pairs)."""
    ckpt_every: int = 2000
    """Steps between checkpoints (one is also written at exit)."""
    keep_ckpts: int = 2
    """Newest checkpoints kept."""
    max_minutes: float | None = None
    """Stop (with a checkpoint) after this wall time."""
    threads: int | None = None
    """torch intra-op threads per rank (None = torch's default)."""


def _stage2(name: str) -> TrainConfig:
    if name == "official":
        return TrainConfig(stage="stage2", schedule=ScheduleConfig(two_phase=True))
    if name == "tiny":
        return TrainConfig(
            stage="stage2",
            model="tiny",
            discriminator="tiny",
            max_steps=6000,
            batch_size=4,
            optim=OptimConfig(lr_g=1e-3, lr_d=1e-3, betas=(0.9, 0.99), warmup=20, decay_every=1000, lr_floor=1e-4),
            schedule=ScheduleConfig(start_adv=4800, d_start=4600, decoder_start=0, sr_start=0, i2p_ramp=1),
            losses=LossConfig(perceptual_official_sizes=False, density_every=4, self_every=16),
            log_every=10,
            sample_every=200,
            val_every=200,
            val_batches=25,
            ckpt_every=200,
        )
    if name == "finetune":
        return TrainConfig(
            stage="stage2",
            max_steps=3000,
            optim=OptimConfig(lr_g=2e-5, lr_d=4e-5, warmup=100, lr_floor=1e-6),
            schedule=ScheduleConfig(start_adv=10**9, d_start=10**9, decoder_start=0, sr_start=0, i2p_ramp=1),
            trainable=("motion_adapter", "decoder", "superresolution"),
            val_every=500,
            ckpt_every=500,
        )
    if name == "finetune_tiny":
        return replace(
            _stage2("finetune"),
            model="tiny",
            discriminator="none",
            max_steps=50,
            losses=LossConfig(perceptual_official_sizes=False),
            batch_size=2,
            log_every=5,
        )
    raise InputError(f"unknown preset {name!r}; choose one of {PRESETS}")


def _stage3(name: str) -> TrainConfig:
    base = TrainConfig(
        stage="stage3",
        max_steps=100_000,
        optim=OptimConfig(
            lr_g=1e-5,
            lr_d=2e-4,
            warmup=4000,
            decay=0.5,
            decay_every=50_000,
            lr_floor=1e-6,
        ),
        losses=LossConfig(
            l1_raw=0.0,
            perceptual_raw=0.0,
            lip_l1=0.2,
            lip_perceptual=0.02,
            outside_weight=0.5,
            opacity=0.0,
            opacity_entropy=0.0,
            adversarial=0.003,
            density=0.0,
            blink_target=0.0,
            pncc_target=0.0,
            self_every=4,
        ),
        schedule=ScheduleConfig(start_adv=40_000, d_start=30_000),
    )
    if name == "official":
        return base
    if name == "tiny":
        return replace(
            base,
            model="tiny",
            discriminator="tiny",
            max_steps=8000,
            batch_size=4,
            optim=replace(
                base.optim,
                lr_g=1e-3,
                lr_d=1e-3,
                betas=(0.9, 0.99),
                warmup=20,
                decay_every=2000,
                lr_floor=1e-4,
            ),
            schedule=ScheduleConfig(start_adv=3200, d_start=2400),
            losses=replace(base.losses, perceptual_official_sizes=False),
            log_every=10,
            sample_every=200,
            val_every=200,
            val_batches=25,
            ckpt_every=200,
        )
    if name == "finetune":
        return replace(
            base,
            max_steps=2000,
            optim=replace(base.optim, warmup=100),
            schedule=ScheduleConfig(start_adv=10**9, d_start=10**9),
            val_every=500,
            ckpt_every=500,
        )
    if name == "finetune_tiny":
        return replace(
            _stage3("tiny"),
            max_steps=50,
            discriminator="none",
            batch_size=2,
            log_every=5,
        )
    raise InputError(f"unknown preset {name!r}; choose one of {PRESETS}")


def preset(stage: str, name: str = "official") -> TrainConfig:
    """A named preset of a stage."""
    if stage == "stage2":
        return _stage2(name)
    if stage == "stage3":
        return _stage3(name)
    raise InputError(f"unknown stage {stage!r}; this release trains stage2 and stage3 (stages 1 and 4 follow)")


# --------------------------------------------------------------------------------------------- overrides
def _convert(text: str, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        if text.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(text, inner[0], key)
    if origin is tuple or hint is tuple:
        items = [t for t in text.split(",") if t != ""]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(t, args[0], key) for t in items)
        if args and len(args) != len(items):
            raise InputError(f"{key} needs {len(args)} comma-separated values, got {text!r}")
        return tuple(_convert(t, a, key) for t, a in zip(items, args or [str] * len(items)))
    if origin is Literal:
        if text not in args:
            raise InputError(f"{key} must be one of {args}, got {text!r}")
        return text
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if hint is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise InputError(f"{key}={text!r} is not a valid {hint.__name__}") from None
    return text


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """`key.sub=value` strings applied to a (nested) config dataclass; unknown keys are errors."""
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} is not key=value (e.g. optim.lr_g=1e-4)")
        key, text = item.split("=", 1)
        cfg = _set(cfg, key.strip().split("."), text.strip(), key.strip())
    return cfg


def _set(obj: Any, path: list[str], text: str, full: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise InputError(f"unknown config key {full!r}; {type(obj).__name__} has {sorted(names)}")
    hints = typing.get_type_hints(type(obj), globalns=vars(sys.modules[type(obj).__module__]))
    if len(path) == 1:
        value = _convert(text, hints[path[0]], full)
    else:
        value = _set(getattr(obj, path[0]), path[1:], text, full)
    return replace(obj, **{path[0]: value})


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: dict[str, Any]) -> TrainConfig:
    return config_from_dict(TrainConfig, data)


def load_config(spec: str) -> TrainConfig:
    """`stage2`, `stage2:tiny`, `stage3:finetune`, ... or a JSON file written by a run (config.json)."""
    from pathlib import Path

    p = Path(spec)
    if p.suffix == ".json" and p.is_file():
        try:
            data = json.loads(p.read_text())
        except ValueError as e:
            raise InputError(f"{p} is not valid JSON: {e}") from e
        return from_dict(data.get("train_config", data))
    stage, _, name = spec.partition(":")
    return preset(stage, name or "official")
