"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, Fig. 5-7 / Table 1) as
the feature extractor of FID (Heusel et al., NeurIPS 2017): the 2048-d global-average "pool3" features.

FID = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) over the feature means mu and covariances S.

Two weight files are accepted (module names follow torchvision, so both load without renaming):
  * the FID reference port of the TensorFlow graph, `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid):
    fc has 1008 outputs, and its pooling differs slightly from torchvision's (average pools exclude the
    padding; the last block's pool branch is a max pool). Use this one for numbers comparable to papers.
  * torchvision's `inception_v3_google-0cc3c7bd.pth` (fc 1000 outputs; `AuxLogits.*` dropped).
The variant is recognised from the fc shape. Inputs: RGB [b,3,h,w] in [0, 1], resized to 299x299.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from real3d.errors import CheckpointError
from real3d.eval.nets.checkpoint import load_strict, read_state_dict

Variant = Literal["fid", "torchvision"]
EXPECTED = (
    "pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID Inception, fc 1008) or torchvision's "
    "inception_v3_google-0cc3c7bd.pth (fc 1000)"
)
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor, fid: bool) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=not fid)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 5x5 | double 3x3 | pool branches."""

    def __init__(self, cin: int, pool_features: int, fid: bool) -> None:
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x, self.fid))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, cin: int, c7: int, fid: bool) -> None:
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg3(x, self.fid))
        return torch.cat([a, b, c, d], 1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded (1x3 | 3x1) outputs; `pool` is the pool branch's pooling."""

    def __init__(self, cin: int, pool: Literal["avg", "avg_nopad", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        if self.pool == "max":
            p = F.max_pool2d(x, 3, 1, 1)
        else:
            p = F.avg_pool2d(x, 3, 1, 1, count_include_pad=self.pool == "avg")
        return torch.cat([a, b, c, self.branch_pool(p)], 1)


class InceptionV3(nn.Module):
    """Inception-v3 up to its 2048-d pool features (plus the classifier `fc` so checkpoints load strictly)."""

    def __init__(self, variant: Variant = "fid") -> None:
        super().__init__()
        fid = variant == "fid"
        self.variant = variant
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32, fid)
        self.Mixed_5c = InceptionA(256, 64, fid)
        self.Mixed_5d = InceptionA(288, 64, fid)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, fid)
        self.Mixed_6c = InceptionC(768, 160, fid)
        self.Mixed_6d = InceptionC(768, 160, fid)
        self.Mixed_6e = InceptionC(768, 192, fid)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg_nopad" if fid else "avg")
        self.Mixed_7c = InceptionE(2048, "max" if fid else "avg")
        self.fc = nn.Linear(2048, 1008 if fid else 1000)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[b,3,h,w] RGB in [0, 1] -> the network's input at 299x299."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        if self.variant == "fid":
            return 2 * x - 1
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b,3,h,w] RGB in [0, 1] -> [b,2048] pool3 features."""
        h = self.normalize(x)
        h = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(h)))
        h = F.max_pool2d(h, 3, 2)
        h = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(h))
        h = F.max_pool2d(h, 3, 2)  # b x 192 x 35 x 35
        for name in (
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ):
            h = getattr(self, name)(h)
        return h.mean(dim=(2, 3))  # b x 2048 x 8 x 8 -> b x 2048


def remap_torchvision(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision Inception-v3 keys -> ours: the auxiliary classifier is dropped."""
    return {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}


def load_inception(path: str | Path) -> InceptionV3:
    """Inception-v3 for FID from a user-supplied file (variant recognised from the fc layer)."""
    sd = remap_torchvision(read_state_dict(path, EXPECTED))
    fc = sd.get("fc.weight")
    if fc is None or fc.ndim != 2 or fc.shape[1] != FEATURE_DIM or fc.shape[0] not in (1000, 1008):
        raise CheckpointError(
            f"{path} is not an Inception-v3 checkpoint (no fc.weight of [1000|1008, 2048]); FID expects {EXPECTED}"
        )
    model = InceptionV3("fid" if fc.shape[0] == 1008 else "torchvision")
    return load_strict(model, sd, str(path), EXPECTED)  # type: ignore[return-value]


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(cov_a + cov_b - 2 sqrtm(cov_a cov_b)), with scipy.linalg.sqrtm."""
    from scipy import linalg

    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    with warnings.catch_warnings():  # singular products (e.g. a static video) are expected: warn nobody
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # regularise the diagonal, as the reference implementation does
            eps = 1e-6 * np.eye(len(cov_a))
            covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and sample covariance [d,d] of [n,d] features (n >= 2)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature rows [n,d], got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)
