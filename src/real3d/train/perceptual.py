"""VGG19 + VGG-Face perceptual loss from weight files the user supplies (nothing is downloaded).

- VGG19: torchvision's ImageNet `vgg19` state dict (`vgg19-dcbb9e9d.pth`: keys `features.{i}.weight|bias`,
  `classifier.{0,3,6}.weight|bias`), inputs ImageNet-normalised [0,1] RGB.
- VGG-Face: Oxford's `vgg_face_dag.pth` (Parkhi et al. 2015, converted by S. Albanie: keys `conv{b}_{k}`,
  `fc6`, `fc7`, `fc8`), inputs RGB in [0,255] minus its mean (129.186, 104.762, 93.594).

Both are read with `torch.load(weights_only=True)` and checked key by key: a file with other keys (a
ResNet, a VGG16 given as VGG19, a truncated file) is refused with a `CheckpointError` naming what is wrong.
`official_sizes=False` accepts narrower layers of the same layout (the tests' tiny random weights).

The loss (official `PerceptualLoss`, `lpips_mode: vgg19_v2`): sum over relu{1..5}_1 of w_l * L1(features)
with w = (1/32, 1/16, 1/8, 1/4, 1), for VGG19 at full size and at 1/2, 1/4, 1/8 (all five layers at each
scale; the official loop reuses only relu5_1 for the downscales by a loop-variable bug), plus VGG-Face at
full size. Images come in [-1,1] and are mapped to [0,1] here (the official stages 2-3 fed [-1,1]).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from real3d.errors import CheckpointError
from real3d.state_dict import load_pickle_weights_only

log = logging.getLogger(__name__)

VGG19_PLAN = (
    (64, 64),
    (128, 128),
    (256, 256, 256, 256),
    (512, 512, 512, 512),
    (512, 512, 512, 512),
)
VGG16_PLAN = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGGFACE_MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)


class VGGFeatures(nn.Module):
    """A VGG conv trunk returning the relu{b}_1 activations of its five blocks ([B,C_b,H/2^b,W/2^b])."""

    def __init__(self, plan: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.plan = tuple(tuple(b) for b in plan)
        self.convs = nn.ModuleList()
        cin = 3
        for block in self.plan:
            for cout in block:
                self.convs.append(nn.Conv2d(cin, cout, 3, padding=1))
                cin = cout
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        i = 0
        for b, block in enumerate(self.plan):
            if b > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)  # ceil: tiny crops keep a 1x1 map
            for k in range(len(block)):
                x = F.relu(self.convs[i](x))
                if k == 0:
                    feats.append(x)
                    if len(feats) == len(self.plan):  # relu5_1: the later convs feed no used layer
                        return feats
                i += 1
        return feats


def _plan_from(
    sd: Mapping[str, torch.Tensor],
    names: list[list[str]],
    path: Path,
    what: str,
    reference: Sequence[Sequence[int]],
    official_sizes: bool,
) -> tuple[tuple[int, ...], ...]:
    """Check the conv weights `names[b][k]` (+ biases) chain up; return the widths."""
    plan = []
    cin = 3
    for b, block in enumerate(names):
        widths = []
        for k, name in enumerate(block):
            w, bias = sd.get(f"{name}.weight"), sd.get(f"{name}.bias")
            if w is None or bias is None:
                raise CheckpointError(f"{path} is not {what}: it has no {name}.weight/.bias")
            if w.ndim != 4 or tuple(w.shape[1:]) != (cin, 3, 3) or tuple(bias.shape) != (w.shape[0],):
                raise CheckpointError(
                    f"{path} is not {what}: {name}.weight has shape {tuple(w.shape)}, expected (C, {cin}, 3, 3)"
                )
            if official_sizes and w.shape[0] != reference[b][k]:
                raise CheckpointError(
                    f"{path} is not {what}: {name} has {w.shape[0]} channels, "
                    f"the released network has {reference[b][k]}"
                )
            widths.append(int(w.shape[0]))
            cin = int(w.shape[0])
        plan.append(tuple(widths))
    return tuple(plan)


def _check_extra(sd: Mapping[str, torch.Tensor], expected: set[str], path: Path, what: str) -> None:
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} is not {what}: missing keys {missing[:6]}, unexpected keys {unexpected[:6]}"
            f"{' ...' if len(missing) + len(unexpected) > 12 else ''}"
        )


def _load(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"perceptual-loss weights not found: {p}")
    sd = load_pickle_weights_only(p)
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{p} is not a state dict of tensors")
    return dict(sd)


def load_vgg19(path: str | Path, official_sizes: bool = True) -> VGGFeatures:
    """torchvision's `vgg19` ImageNet weights -> the conv trunk (classifier keys checked, then dropped)."""
    what = "torchvision's vgg19 state dict (vgg19-dcbb9e9d.pth)"
    sd = _load(path)
    idx, names = 0, []
    for block in VGG19_PLAN:
        names.append([f"features.{idx + 2 * k}" for k in range(len(block))])
        idx += 2 * len(block) + 1
    plan = _plan_from(sd, names, Path(path), what, VGG19_PLAN, official_sizes)
    expected = {f"{n}.{s}" for blk in names for n in blk for s in ("weight", "bias")}
    expected |= {f"classifier.{i}.{s}" for i in (0, 3, 6) for s in ("weight", "bias")}
    _check_extra(sd, expected, Path(path), what)
    if official_sizes and tuple(sd["classifier.6.weight"].shape) != (1000, 4096):
        raise CheckpointError(f"{path} is not {what}: classifier.6 is {tuple(sd['classifier.6.weight'].shape)}")
    net = VGGFeatures(plan)
    flat = [n for blk in names for n in blk]
    net.convs.load_state_dict({f"{i}.{s}": sd[f"{n}.{s}"] for i, n in enumerate(flat) for s in ("weight", "bias")})
    return net.eval()


def load_vgg_face(path: str | Path, official_sizes: bool = True) -> VGGFeatures:
    """Oxford's `vgg_face_dag.pth` -> the conv trunk (fc6-fc8 checked, then dropped)."""
    what = "Oxford's VGG-Face state dict (vgg_face_dag.pth)"
    sd = _load(path)
    names = [[f"conv{b + 1}_{k + 1}" for k in range(len(block))] for b, block in enumerate(VGG16_PLAN)]
    plan = _plan_from(sd, names, Path(path), what, VGG16_PLAN, official_sizes)
    expected = {f"{n}.{s}" for blk in names for n in blk for s in ("weight", "bias")}
    expected |= {f"fc{i}.{s}" for i in (6, 7, 8) for s in ("weight", "bias")}
    _check_extra(sd, expected, Path(path), what)
    if official_sizes and sd["fc8.weight"].shape[0] != 2622:
        raise CheckpointError(f"{path} is not {what}: fc8 has {sd['fc8.weight'].shape[0]} outputs, VGG-Face has 2622")
    net = VGGFeatures(plan)
    flat = [n for blk in names for n in blk]
    net.convs.load_state_dict({f"{i}.{s}": sd[f"{n}.{s}"] for i, n in enumerate(flat) for s in ("weight", "bias")})
    return net.eval()


class PerceptualLoss(nn.Module):
    """L(pred, target) for images in [-1,1] [B,3,H,W]; the target is detached. Either network may be None."""

    def __init__(
        self,
        vgg19: VGGFeatures | None,
        vgg_face: VGGFeatures | None,
        layer_weights: Sequence[float] = LAYER_WEIGHTS,
        vgg19_scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        resize_to: int | None = None,
    ) -> None:
        super().__init__()
        if vgg19 is None and vgg_face is None:
            raise CheckpointError("the perceptual loss needs at least one of the VGG19 / VGG-Face weight files")
        self.vgg19, self.vgg_face = vgg19, vgg_face
        self.layer_weights = tuple(layer_weights)
        self.scales = tuple(vgg19_scales)
        self.resize_to = resize_to
        self.register_buffer("in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("face_mean", torch.tensor(VGGFACE_MEAN).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:  # the VGGs stay in eval mode
        return super().train(False)

    def _distance(self, net: VGGFeatures, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = net(a), net(b)
        return sum(w * (x - y.detach()).abs().mean() for w, x, y in zip(self.layer_weights, fa, fb))  # type: ignore[return-value]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(pred.device.type, enabled=False):
            x, y = (
                (pred.float() + 1) / 2,
                (target.detach().float() + 1) / 2,
            )  # [-1,1] -> [0,1]
            if self.resize_to is not None and x.shape[-1] != self.resize_to:
                x = F.interpolate(
                    x,
                    size=self.resize_to,
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
                y = F.interpolate(
                    y,
                    size=self.resize_to,
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
            total = x.new_zeros(())
            if self.vgg19 is not None:
                xn, yn = (
                    (x - self.in_mean) / self.in_std,
                    (y - self.in_mean) / self.in_std,
                )
                for s in self.scales:
                    if s != 1.0:
                        size = max(8, round(xn.shape[-1] * s))
                        xs = F.interpolate(
                            xn,
                            size=size,
                            mode="bilinear",
                            antialias=True,
                            align_corners=False,
                        )
                        ys = F.interpolate(
                            yn,
                            size=size,
                            mode="bilinear",
                            antialias=True,
                            align_corners=False,
                        )
                    else:
                        xs, ys = xn, yn
                    total = total + self._distance(self.vgg19, xs, ys)
            if self.vgg_face is not None:
                total = total + self._distance(self.vgg_face, x * 255 - self.face_mean, y * 255 - self.face_mean)
        return total


def build_perceptual(
    vgg19: str | Path | None,
    vgg_face: str | Path | None,
    official_sizes: bool = True,
    resize_to: int | None = None,
) -> PerceptualLoss | None:
    """The loss from the user's files; None (and a warning) when neither is given."""
    if vgg19 is None and vgg_face is None:
        log.warning(
            "perceptual loss off: pass the VGG19 (torchvision vgg19 .pth) and VGG-Face (vgg_face_dag.pth) "
            "weights (losses.vgg19=PATH losses.vgg_face=PATH) to train with it as the paper does"
        )
        return None
    return PerceptualLoss(
        load_vgg19(vgg19, official_sizes) if vgg19 else None,
        load_vgg_face(vgg_face, official_sizes) if vgg_face else None,
        resize_to=resize_to,
    )


def save_random_vgg(path: str | Path, kind: str, width_divisor: int = 16, seed: int = 0) -> Path:
    """Random weights in the exact key layout of torchvision's vgg19 (`kind="vgg19"`) or vgg_face_dag
    (`kind="vgg_face"`), with every width divided by `width_divisor` (for tests; load with
    official_sizes=False unless width_divisor == 1)."""
    g = torch.Generator().manual_seed(seed)
    plan = VGG19_PLAN if kind == "vgg19" else VGG16_PLAN
    sd: dict[str, torch.Tensor] = {}
    cin, idx = 3, 0
    for b, block in enumerate(plan):
        for k, c in enumerate(block):
            c = max(1, c // width_divisor)
            name = f"features.{idx + 2 * k}" if kind == "vgg19" else f"conv{b + 1}_{k + 1}"
            sd[f"{name}.weight"] = torch.randn(c, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5
            sd[f"{name}.bias"] = torch.zeros(c)
            cin = c
        idx += 2 * len(block) + 1
    h = max(1, 4096 // width_divisor)
    heads = ((0, 3, 6), (1000,)) if kind == "vgg19" else ((6, 7, 8), (2622,))
    dims = [(h, cin * 49), (h, h), (heads[1][0], h)]
    for i, (o, n) in zip(heads[0], dims):
        key = f"classifier.{i}" if kind == "vgg19" else f"fc{i}"
        sd[f"{key}.weight"] = torch.randn(o, n, generator=g) * 0.01
        sd[f"{key}.bias"] = torch.zeros(o)
    torch.save(sd, path)
    return Path(path)
