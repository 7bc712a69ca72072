"""IResNet-50/100 face-recognition backbone of ArcFace (Deng et al., CVPR 2019; Duta et al., "Improved Residual
Networks", 2020), used for the paper's CSIM: cosine similarity of 512-d embeddings of the source and each frame.

Pre-activation blocks BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN (+ shortcut); stages of 64/128/256/512
channels, each starting with stride 2; head BN -> flatten (512x7x7) -> FC 512 -> BN1d. Input: 112x112 RGB face
crops aligned to ArcFace's 5-point template, scaled to [-1, 1]. Weights (user supplied): insightface
`arcface_torch` checkpoints `backbone.pth` for r50 / r100 (keys `conv1.weight`, `layer1.0.bn1.weight`, ...,
`fc.weight`, `features.weight`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from einops import rearrange
from torch import nn

from real3d.errors import CheckpointError
from real3d.eval.nets.checkpoint import load_strict, read_state_dict

EXPECTED = "an insightface arcface_torch IResNet backbone.pth (r50: layers 3-4-14-3, r100: 3-13-30-3; 512-d output)"
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
"""Where the 5 points (right eye, left eye, nose tip, right and left mouth corner; image left to right) go in the
112x112 crop."""


@dataclass
class IResNetConfig:
    """Size of an IResNet."""

    layers: tuple[int, int, int, int] = (3, 4, 14, 3)
    """Blocks per stage (r50: 3-4-14-3, r100: 3-13-30-3)."""
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    """Channels per stage."""
    embedding: int = 512
    """Output dimension."""
    input_size: int = 112
    """Square input side (the head's FC expects input_size / 16 squared positions)."""

    @classmethod
    def r50(cls) -> IResNetConfig:
        return cls(layers=(3, 4, 14, 3))

    @classmethod
    def r100(cls) -> IResNetConfig:
        return cls(layers=(3, 13, 30, 3))

    @classmethod
    def tiny(cls) -> IResNetConfig:
        """For tests: one block per stage, 8-64 channels, 32x32 input."""
        return cls(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), embedding=16, input_size=32)


class IBasicBlock(nn.Module):
    """Improved residual block (pre-activation BN, PReLU between the convolutions, BN at the end)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return h + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """[b,3,s,s] aligned faces in [-1, 1] -> [b,embedding]."""

    def __init__(self, config: IResNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or IResNetConfig()
        self.config = cfg
        w0 = cfg.widths[0]
        self.conv1 = nn.Conv2d(3, w0, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w0, eps=1e-5)
        self.prelu = nn.PReLU(w0)
        cin = w0
        for i, (n, w) in enumerate(zip(cfg.layers, cfg.widths)):
            blocks = [IBasicBlock(cin, w, 2)] + [IBasicBlock(w, w, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        side = cfg.input_size // 16
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(cin * side * side, cfg.embedding)
        self.features = nn.BatchNorm1d(cfg.embedding, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.prelu(self.bn1(self.conv1(x)))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))  # b x 512 x s/16 x s/16
        h = rearrange(self.dropout(self.bn2(h)), "b c h w -> b (c h w)")
        return self.features(self.fc(h))


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> IResNetConfig:
    """The IResNet size a checkpoint was trained with (blocks per stage counted from its keys)."""
    counts = []
    for stage in range(1, 5):
        idx = {int(k.split(".")[1]) for k in sd if k.startswith(f"layer{stage}.") and k.split(".")[1].isdigit()}
        counts.append(max(idx) + 1 if idx else 0)
    if 0 in counts or "fc.weight" not in sd or "conv1.weight" not in sd:
        raise CheckpointError(f"not an IResNet checkpoint (stages found: {counts}); ArcFace CSIM expects {EXPECTED}")
    widths = tuple(int(sd[f"layer{s}.0.conv1.weight"].shape[0]) for s in range(1, 5))
    emb, flat = sd["fc.weight"].shape
    side = int(round(np.sqrt(flat / widths[-1])))
    return IResNetConfig(layers=tuple(counts), widths=widths, embedding=int(emb), input_size=side * 16)  # type: ignore[arg-type]


def load_iresnet(path: str | Path, arch: Literal["r50", "r100", "any"] = "any") -> IResNet:
    """ArcFace IResNet from a user-supplied backbone.pth; `arch` refuses a checkpoint of another depth."""
    sd = read_state_dict(path, EXPECTED)
    cfg = config_from_state_dict(sd)
    want = {"r50": IResNetConfig.r50().layers, "r100": IResNetConfig.r100().layers}.get(arch)
    if want is not None and cfg.layers != want:
        raise CheckpointError(f"{path} is an IResNet with stages {cfg.layers}, not {arch} {want}; pass the {arch} file")
    with torch.device("meta"):
        model = IResNet(cfg)
    model = model.to_empty(device="cpu")
    return load_strict(model, sd, str(path), EXPECTED)  # type: ignore[return-value]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[2,3] least-squares similarity (Umeyama) mapping 2-D points src -> dst."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float((sig * np.diag(d)).sum() / ((a**2).sum() / len(src)))
    t = md - scale * rot @ ms
    return np.hstack([scale * rot, t[:, None]])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """[5,2] ArcFace points from MediaPipe landmarks: eye centres (irises), nose tip, mouth corners,
    ordered as they appear left to right in the image (subject's right eye first)."""
    lm = np.asarray(landmarks, np.float64)
    right_eye, left_eye = lm[468, :2], lm[473, :2]
    return np.stack([right_eye, left_eye, lm[1, :2], lm[61, :2], lm[291, :2]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """RGB uint8 image + MediaPipe landmarks -> [size,size,3] ArcFace-aligned crop."""
    import cv2

    m = similarity_transform(five_points(landmarks), ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def embed(model: IResNet, crops: np.ndarray) -> torch.Tensor:
    """[b,s,s,3] uint8 aligned crops -> [b,embedding] L2-normalised embeddings."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float()
    x = rearrange(x, "b h w c -> b c h w") / 127.5 - 1.0
    with torch.no_grad():
        e = model(x)
    return torch.nn.functional.normalize(e, dim=1)
