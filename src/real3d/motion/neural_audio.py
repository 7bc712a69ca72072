"""Neural audio driver: HuBERT features + f0 -> 25 fps BFM expression with the Audio2Motion network.

This is step 10 of the official inference (`real3d_infer.py`, `forward(batch, train=False, temperature)`):
the batch has blink = 0 for every frame, eye_amp = 1, mouth_amp = 0.45 by default, all-ones masks, and the
prior sample is N(0, 1) * temperature (0.2) at 6.25 Hz. The expression is not smoothed.

Long audio is processed in chunks with no change to the result: the prior noise for the whole clip is drawn
once from `seed`, and each chunk of latent frames is decoded with `a2m_margin` latent frames of context on
both sides, more than the network's receptive field (the conditioning convs, the strided `g_pre_net`, the
prior-flow WaveNets and the decoder WaveNet), so the kept frames equal those of one full-length pass (up to
float rounding). Memory is then bounded by the chunk length instead of growing with the audio (figures:
`benchmarks/bench_neural_long.py`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from real3d.config.audio2motion import Audio2MotionConfig
from real3d.errors import InputError
from real3d.models.audio2motion import Audio2Motion

log = logging.getLogger(__name__)

OFFICIAL_MOUTH_AMP = 0.45
"""`--mouth_amp` default of the official inference."""
OFFICIAL_TEMPERATURE = 0.2
"""`--temperature` default of the official inference (scale of the prior sample)."""
OFFICIAL_EYE_AMP = 1.0
"""eye_amp of the official inference batch (unused by the released model, which has no eye_amp_embed)."""
MOTION_FPS = 25
"""Frame rate of the predicted expression (half the 50 Hz feature rate)."""


def a2m_margin(config: Audio2MotionConfig) -> int:
    """Latent frames of context needed on each side of a chunk for the kept frames to match a full pass.

    Receptive radius, in latent frames (stride s 25 Hz frames each): the prior flow's WaveNets
    (n_flows * flow_layers * (k-1)/2), the strided g_pre_net (2), and at 25 Hz the decoder WaveNet
    (dec_layers * (k-1)/2) plus the two k=3 convs of the condition encoders (2); one latent frame of slack.
    """
    s = config.stride
    flow = config.n_flows * config.flow_layers * (config.flow_kernel_size - 1) // 2
    frames_25 = config.dec_layers * (config.kernel_size - 1) // 2 + 2
    return flow + 2 + -(-frames_25 // s) + 1


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()


@torch.inference_mode()
def a2m_expression(
    a2m: Audio2Motion,
    hubert_feats: np.ndarray | torch.Tensor,
    f0: np.ndarray | torch.Tensor,
    *,
    mouth_amp: float = OFFICIAL_MOUTH_AMP,
    temperature: float = OFFICIAL_TEMPERATURE,
    seed: int | None = 0,
    chunk_seconds: float | None = 60.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample 25 fps expression from 50 Hz audio features: float32 [T25, motion_dim] on the CPU.

    hubert_feats: [T50, audio_dim] HuBERT last hidden state (50 Hz), f0: [T50] (or [T50,1]) pitch in Hz,
    0 = unvoiced. T50 should already be a multiple of 2 * stride (8; `hubert_features` pads to it); otherwise
    both are zero-padded to it here, so T25 = ceil(T50 / 8) * 4. `seed` fixes the prior sample (None: torch's
    global generator) unless `noise` [latent_dim, T25/stride] (standard normal, before the temperature) is
    given. `chunk_seconds` is the length of motion decoded per pass (None: one pass).
    """
    cfg = a2m.config
    hub = _as_tensor(hubert_feats)
    pitch = _as_tensor(f0)
    if pitch.ndim == 2 and pitch.shape[1] == 1:
        pitch = pitch[:, 0]
    if hub.ndim != 2 or hub.shape[1] != cfg.audio_dim or pitch.ndim != 1 or pitch.shape[0] != hub.shape[0]:
        raise InputError(
            f"A2M needs HuBERT features [T,{cfg.audio_dim}] and f0 [T] at 50 Hz with the same T; got "
            f"{tuple(hub.shape)} and {tuple(_as_tensor(f0).shape)}"
        )
    if hub.shape[0] == 0:
        raise InputError("no audio frames to animate; pass audio of at least a few tens of milliseconds")
    s = cfg.stride
    unit = 2 * s  # 50 Hz frames per latent frame
    t50 = -(-hub.shape[0] // unit) * unit
    if t50 != hub.shape[0]:
        log.debug("padding %d audio frames to %d (a multiple of %d)", hub.shape[0], t50, unit)
        hub = F.pad(hub, (0, 0, 0, t50 - hub.shape[0]))
        pitch = F.pad(pitch, (0, t50 - pitch.shape[0]))
    n_latent = t50 // unit
    if noise is None:
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        noise = torch.randn(1, cfg.latent_dim, n_latent, generator=generator)  # [1,L,T/s]
    else:
        noise = noise[None] if noise.ndim == 2 else noise  # [1,L,T/s]
        if tuple(noise.shape) != (1, cfg.latent_dim, n_latent):
            raise InputError(
                f"noise has shape {tuple(noise.shape)}, expected ({cfg.latent_dim}, {n_latent}) for {t50} audio frames"
            )
    body = n_latent if chunk_seconds is None else max(1, int(round(chunk_seconds * MOTION_FPS / s)))
    margin = a2m_margin(cfg)
    param = next(a2m.parameters())
    dev, dtype = param.device, param.dtype
    was_training = a2m.training
    a2m.eval()
    pieces: list[torch.Tensor] = []
    try:
        for start in range(0, n_latent, body):
            stop = min(n_latent, start + body)
            a, b = max(0, start - margin), min(n_latent, stop + margin)
            out = a2m(
                hub[None, a * unit : b * unit].to(dev, dtype),  # [1,T50c,C]
                pitch[None, a * unit : b * unit].to(dev, dtype),  # [1,T50c]
                mouth_amp=float(mouth_amp),
                eye_amp=OFFICIAL_EYE_AMP,
                temperature=float(temperature),
                noise=noise[:, :, a:b].to(dev, dtype),
            )
            pieces.append(out.exp[0, (start - a) * s : (stop - a) * s].float().cpu())  # [Tc,64]
    finally:
        a2m.train(was_training)
    return torch.cat(pieces, dim=0)  # [T25,64]
