"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV-W 2016) and the LSE-C / LSE-D
lip-sync scores of Wav2Lip (Prajwal et al., ACM MM 2020, Sec. 4.1) used by the paper's audio-driven table.

Two streams embed 0.2 s of speech and of mouth motion into a shared 1024-d space:
  * audio: 13 MFCC x 20 frames (100 Hz) -> 2-D CNN -> FC;
  * lips: 5 RGB face crops (25 fps, 224x224, BGR order, values 0..255 as the reference tool feeds them)
    -> 3-D CNN -> FC.
For every video frame the Euclidean distance to the audio embeddings at offsets -15..15 frames is computed;
averaged over frames, the smallest mean distance is LSE-D and (median - smallest) is LSE-C (confidence).

Weights (user supplied): `syncnet_v2.model` of the reference `syncnet_python` tool (keys `netcnnaud.*`,
`netfcaud.*`, `netcnnlip.*`, `netfclip.*`). The MFCC below follows the reference's feature settings (25 ms
rectangular window, 10 ms hop, 512-point FFT, 26 mel filters, pre-emphasis 0.97, lifter 22, log-energy as c0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from real3d.eval.nets.checkpoint import load_strict, read_state_dict

EXPECTED = "syncnet_v2.model from syncnet_python (netcnnaud/netfcaud/netcnnlip/netfclip)"
FPS = 25
AUDIO_RATE = 16000
WINDOW = 5
"""Video frames per SyncNet window (0.2 s at 25 fps; 20 MFCC frames)."""
VSHIFT = 15
"""Offsets searched, in video frames, each way."""


def _conv_bn(cin: int, cout: int, k, s=1, p=0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout), nn.ReLU()]


def _conv3_bn(cin: int, cout: int, k, s=1, p=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, k, s, p), nn.BatchNorm3d(cout), nn.ReLU()]


class SyncNet(nn.Module):
    """Audio [b,1,13,20] and lip [b,3,5,224,224] streams -> [b,1024] embeddings each."""

    def __init__(self, embedding: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn(1, 64, 3, 1, 1),
            nn.MaxPool2d(1, 1),
            *_conv_bn(64, 192, 3, 1, 1),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn(192, 384, 3, 1, 1),
            *_conv_bn(384, 256, 3, 1, 1),
            *_conv_bn(256, 256, 3, 1, 1),
            nn.MaxPool2d(3, 2),
            *_conv_bn(256, 512, (5, 4), 1, 0),
        )  # b x 512 x 1 x 1
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netcnnlip = nn.Sequential(
            *_conv3_bn(3, 96, (5, 7, 7), (1, 2, 2), 0),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3_bn(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv3_bn(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv3_bn(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv3_bn(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3_bn(256, 512, (1, 6, 6), 1, 0),
        )  # b x 512 x 1 x 1 x 1
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """[b,1,13,20] MFCC windows -> [b,1024]."""
        h = self.netcnnaud(mfcc)
        return self.netfcaud(h.flatten(1))  # b x 512 x 1 x 1 -> b x 512

    def forward_lip(self, clip: torch.Tensor) -> torch.Tensor:
        """[b,3,5,224,224] face-crop windows -> [b,1024]."""
        h = self.netcnnlip(clip)
        return self.netfclip(h.flatten(1))  # b x 512 x 1 x 1 x 1 -> b x 512


def load_syncnet(path: str | Path) -> SyncNet:
    """SyncNet from a user-supplied syncnet_v2.model (strict)."""
    return load_strict(SyncNet(), read_state_dict(path, EXPECTED), str(path), EXPECTED)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ MFCC
def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int = 26, nfft: int = 512, rate: int = AUDIO_RATE) -> np.ndarray:
    """[n_filters, nfft//2+1] triangular filters, equally spaced in mel from 0 to rate/2."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / rate).astype(int)
    fb = np.zeros((n_filters, nfft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(lo, mid):
            fb[j, i] = (i - lo) / max(mid - lo, 1)
        for i in range(mid, hi):
            fb[j, i] = (hi - i) / max(hi - mid, 1)
    return fb


def mfcc(signal: np.ndarray, rate: int = AUDIO_RATE, n_ceps: int = 13) -> np.ndarray:
    """[n] mono samples -> [frames, 13] MFCC at 100 Hz (c0 replaced by the log frame energy)."""
    from scipy.fft import dct

    x = np.asarray(signal, np.float64)
    x = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    flen, step, nfft = int(round(0.025 * rate)), int(round(0.01 * rate)), 512
    n = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / step))
    x = np.pad(x, (0, max(0, (n - 1) * step + flen - len(x))))
    idx = np.arange(flen)[None, :] + step * np.arange(n)[:, None]
    frames = x[idx]  # n x flen (rectangular window)
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # n x 257
    eps = np.finfo(np.float64).eps
    energy = np.maximum(power.sum(1), eps)
    feat = np.log(np.maximum(power @ mel_filterbank(26, nfft, rate).T, eps))
    ceps = dct(feat, type=2, axis=1, norm="ortho")[:, :n_ceps]
    lift = 1 + 11.0 * np.sin(np.pi * np.arange(n_ceps) / 22.0)
    ceps = ceps * lift
    ceps[:, 0] = np.log(energy)
    return ceps


# ------------------------------------------------------------------------------------------- LSE-C/D
@dataclass
class SyncScore:
    """Lip-sync scores of one video."""

    lse_d: float
    """Mean embedding distance at the best offset (lower = better sync)."""
    lse_c: float
    """Median minus minimum of the per-offset mean distances (higher = more confident sync)."""
    offset: int
    """Best audio-video offset in frames at 25 fps (positive: audio leads)."""


def sync_scores(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = VSHIFT) -> SyncScore:
    """LSE-D / LSE-C from [t,d] lip and [t,d] audio embeddings of the same windows."""
    t = min(len(video_emb), len(audio_emb))
    v, a = video_emb[:t].double(), audio_emb[:t].double()
    padded = torch.nn.functional.pad(a, (0, 0, vshift, vshift))  # (t + 2 vshift) x d, zero rows outside
    dists = torch.stack(
        [
            torch.nn.functional.pairwise_distance(
                v[i : i + 1].expand(2 * vshift + 1, -1), padded[i : i + 2 * vshift + 1]
            )
            for i in range(t)
        ]
    )  # t x (2 vshift + 1)
    mean = dists.mean(0)
    best = int(torch.argmin(mean))
    return SyncScore(lse_d=float(mean[best]), lse_c=float(mean.median() - mean[best]), offset=vshift - best)


def embed_windows(
    model: SyncNet, crops: np.ndarray, audio: np.ndarray, batch: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """[t,224,224,3] RGB uint8 face crops at 25 fps + 16 kHz mono audio -> ([w,d] lip, [w,d] audio) embeddings."""
    cc = mfcc(audio).T.astype(np.float32)  # 13 x frames
    n = min(len(crops), cc.shape[1] // 4) - WINDOW
    if n < 1:
        raise ValueError(f"need at least {WINDOW + 1} frames (0.24 s) of video and audio for SyncNet, got {len(crops)}")
    vid = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).float()  # RGB -> BGR like the reference tool
    vid = vid.permute(3, 0, 1, 2)  # t h w c -> c t h w
    aud = torch.from_numpy(cc)
    lips, auds = [], []
    with torch.no_grad():
        for s in range(0, n, batch):
            idx = range(s, min(n, s + batch))
            lips.append(model.forward_lip(torch.stack([vid[:, i : i + WINDOW] for i in idx])))
            auds.append(model.forward_aud(torch.stack([aud[None, :, 4 * i : 4 * i + 20] for i in idx])))
    return torch.cat(lips), torch.cat(auds)


def mouth_crop_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the face crop the reference tool takes around a face box (its 0.4 context margin)."""
    x0, y0 = np.nanmin(landmarks[:, :2], axis=0)
    x1, y1 = np.nanmax(landmarks[:, :2], axis=0)
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - 1.4 * half, cy - half, cx + 1.4 * half, cy + 1.8 * half
