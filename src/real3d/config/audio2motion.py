"""Configuration of the Audio2Motion network (flow-enhanced VAE, paper Sec. 3.4).

`official()` reproduces the released `audio2secc_vae` checkpoint (PitchContourVAEModel, 11.86 M
parameters); `tiny()` is a few-thousand-parameter version for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Audio2MotionConfig:
    """Sizes of the conditioning encoders, the VAE and its prior flow."""

    audio_dim: int = 1024
    """Channels of the audio features (HuBERT-large last hidden state)."""
    motion_dim: int = 64
    """Channels of the predicted motion (BFM expression coefficients)."""
    cond_dim: int = 128
    """Width of every condition embedding and of the projected condition `g`."""
    pitch_bins: int = 300
    """Rows of the pitch embedding table (only 1..255 are produced by the quantiser)."""
    use_mouth_amp_embed: bool = True
    """Add a learned vector scaled by the mouth-amplitude scalar to the condition."""
    use_eye_amp_embed: bool = False
    """Add a learned vector scaled by the eye-amplitude scalar to the condition."""
    default_mouth_amp: float = 0.4
    """Mouth amplitude used when the caller gives none (the official training fallback)."""
    default_eye_amp: float = 0.4
    """Eye amplitude used when the caller gives none."""
    hidden_dim: int = 256
    """Channels of the WaveNet encoder and decoder."""
    latent_dim: int = 16
    """Channels of the latent z (must be even: the coupling layers split it in halves)."""
    kernel_size: int = 5
    """Kernel size of the encoder/decoder WaveNet convolutions (odd)."""
    enc_layers: int = 8
    """WaveNet layers of the posterior encoder."""
    dec_layers: int = 4
    """WaveNet layers of the decoder."""
    stride: int = 4
    """Temporal down-sampling of the latent relative to the 25 Hz motion (one strided conv)."""
    flow_hidden_dim: int = 64
    """Channels of the WaveNet inside each prior-flow coupling layer."""
    flow_kernel_size: int = 3
    """Kernel size of the prior-flow WaveNet convolutions (odd)."""
    flow_layers: int = 4
    """WaveNet layers per coupling layer."""
    n_flows: int = 4
    """Number of mean-only coupling layers (each followed by a channel flip)."""

    @classmethod
    def official(cls) -> Audio2MotionConfig:
        """The released `audio2secc_vae` sizes (checkpoint-compatible)."""
        return cls()

    @classmethod
    def tiny(cls) -> Audio2MotionConfig:
        """A very small model for fast unit tests (same structure, 4-8 channels)."""
        return cls(
            audio_dim=12,
            motion_dim=6,
            cond_dim=8,
            hidden_dim=8,
            latent_dim=4,
            kernel_size=3,
            enc_layers=2,
            dec_layers=2,
            flow_hidden_dim=4,
            flow_kernel_size=3,
            flow_layers=2,
            n_flows=2,
        )


def official() -> Audio2MotionConfig:
    """The released `audio2secc_vae` sizes (same as `Audio2MotionConfig.official()`)."""
    return Audio2MotionConfig.official()


def tiny() -> Audio2MotionConfig:
    """Unit-test sizes (same as `Audio2MotionConfig.tiny()`)."""
    return Audio2MotionConfig.tiny()
