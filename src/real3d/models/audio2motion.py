"""Audio2Motion: audio (HuBERT + pitch) -> 25 fps 3DMM expression with a flow-enhanced VAE.

Real3D-Portrait (Ye et al., ICLR 2024), method section "Generic Audio-to-Motion Model": a VAE whose
prior is a normalising flow (VITS-style mean-only residual couplings), conditioned on HuBERT features,
the pitch contour, a blink token and a mouth-amplitude scalar. Checkpoint-compatible with the released
`audio2secc_vae` (`PitchContourVAEModel`): the state-dict keys here are the official ones.

Data flow at inference (T50 = audio frames at 50 Hz, T = T50 // 2 frames at 25 Hz, s = stride 4):
  hubert [B,T50,1024] -> nearest x0.5 -> mel_encoder        -> [B,T,C]
  f0 [B,T50] Hz       -> nearest x0.5 -> coarse bins 1..255 -> pitch_embed -> pitch_encoder -> [B,T,C]
  blink [B,T50] 0/1   -> blink_embed  -> nearest x0.5                                      -> [B,T,C]
  mouth_amp [B]       -> mouth_amp * mouth_amp_embed                                       -> [B,T,C]
  cond = cond_proj(cat(...))  [B,T,C];  g_sqz = g_pre_net(cond) [B,C,T/s]
  z ~ N(0,1)*temperature [B,L,T/s] -> reverse prior flow (g_sqz) -> decoder (cond at 25 Hz) -> exp [B,T,64]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from real3d.config.audio2motion import Audio2MotionConfig
from real3d.errors import CheckpointError, InputError
from real3d.state_dict import count_indices

# Coarse pitch quantiser: mel-scaled bins 1..255 over 50-1100 Hz; unvoiced (f0 = 0) -> bin 1.
F0_BINS = 256
F0_MIN_HZ = 50.0
F0_MAX_HZ = 1100.0
_F0_MEL_MIN = 1127.0 * math.log(1.0 + F0_MIN_HZ / 700.0)
_F0_MEL_MAX = 1127.0 * math.log(1.0 + F0_MAX_HZ / 700.0)


def f0_to_coarse(f0: torch.Tensor) -> torch.Tensor:
    """Quantise pitch in Hz (any shape, 0 = unvoiced) to integer bins in [1, 255] (mel scale)."""
    mel = 1127.0 * torch.log(1.0 + f0 / 700.0)
    scaled = (mel - _F0_MEL_MIN) * (F0_BINS - 2) / (_F0_MEL_MAX - _F0_MEL_MIN) + 1.0
    mel = torch.where(mel > 0, scaled, mel)
    mel = torch.clamp(mel, 1.0, F0_BINS - 1.0)  # <= 1 -> 1 (also unvoiced), > 255 -> 255
    return (mel + 0.5).long()


def downsample_half(x: torch.Tensor) -> torch.Tensor:
    """50 Hz -> 25 Hz by nearest down-sampling (keeps frames 0, 2, 4, ...). x: [B,T50,C] -> [B,T50//2,C]."""
    y = F.interpolate(rearrange(x, "b t c -> b c t"), scale_factor=0.5, mode="nearest")
    return rearrange(y, "b c t -> b t c")


def _normal_log_prob(x: torch.Tensor, mean: torch.Tensor | float, log_std: torch.Tensor | float) -> torch.Tensor:
    """Element-wise log N(x; mean, exp(log_std)^2)."""
    log_std = torch.as_tensor(log_std, dtype=x.dtype, device=x.device)
    var = torch.exp(2.0 * log_std)
    return -((x - mean) ** 2) / (2.0 * var) - log_std - 0.5 * math.log(2.0 * math.pi)


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation in the legacy layout: `weight = weight_g * weight_v / ||weight_v||`
    (norm over all axes but the output channel). Parameters `bias`, `weight_g` [O,1,1], `weight_v` [O,I,K]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.padding = dilation * (kernel_size - 1) // 2
        self.dilation = dilation
        self.bias = nn.Parameter(torch.zeros(out_channels))
        v = torch.randn(out_channels, in_channels, kernel_size) * (1.0 / math.sqrt(in_channels * kernel_size))
        self.weight_g = nn.Parameter(v.flatten(1).norm(dim=1).reshape(out_channels, 1, 1))
        self.weight_v = nn.Parameter(v)

    def weight(self) -> torch.Tensor:
        norm = self.weight_v.norm(dim=(1, 2), keepdim=True)  # [O,1,1]
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, dilation=self.dilation)


class WaveNet(nn.Module):
    """Non-causal WaveNet (WN of WaveGlow/VITS): gated tanh*sigmoid layers with a global condition."""

    def __init__(self, hidden: int, kernel_size: int, n_layers: int, cond_dim: int) -> None:
        super().__init__()
        if kernel_size % 2 != 1 or hidden % 2 != 0:
            raise ValueError(f"WaveNet needs an odd kernel and even width, got kernel {kernel_size}, width {hidden}")
        self.hidden = hidden
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList(WeightNormConv1d(hidden, 2 * hidden, kernel_size) for _ in range(n_layers))
        self.res_skip_layers = nn.ModuleList(
            WeightNormConv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden) for i in range(n_layers)
        )
        self.cond_layer = WeightNormConv1d(cond_dim, 2 * hidden * n_layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
        """x: [B,H,T]; mask: [B,1,T] or None (all valid); g: [B,cond_dim,T] -> [B,H,T]."""
        h = self.hidden
        g = self.cond_layer(g)  # [B,2H*n_layers,T]
        out = torch.zeros_like(x)
        for i in range(self.n_layers):
            a = self.in_layers[i](x) + g[:, 2 * h * i : 2 * h * (i + 1)]  # [B,2H,T]
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            rs = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = x + rs[:, :h]
                x = x * mask if mask is not None else x
                out = out + rs[:, h:]
            else:
                out = out + rs
        return out * mask if mask is not None else out


class Flip(nn.Module):
    """Reverse the channel order (its own inverse; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class MeanOnlyCoupling(nn.Module):
    """Residual coupling with a shift only (volume preserving): x1 <- x1 + m(x0, g)."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, n_layers: int, cond_dim: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WaveNet(hidden, kernel_size, n_layers, cond_dim)
        self.post = nn.Conv1d(hidden, self.half, 1)
        nn.init.zeros_(self.post.weight)  # identity at initialisation
        nn.init.zeros_(self.post.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, g: torch.Tensor, reverse: bool) -> torch.Tensor:
        """x: [B,L,T] -> [B,L,T]."""
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        h = self.pre(x0)
        h = h * mask if mask is not None else h
        m = self.post(self.enc(h, mask, g))
        m = m * mask if mask is not None else m
        x1 = x1 - m if reverse else m + x1
        x1 = x1 * mask if mask is not None else x1
        return torch.cat([x0, x1], dim=1)


class PriorFlow(nn.Module):
    """Stack of (mean-only coupling, flip) pairs mapping posterior latents to N(0, I)."""

    def __init__(self, cfg: Audio2MotionConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(cfg.n_flows):
            layers.append(
                MeanOnlyCoupling(
                    cfg.latent_dim, cfg.flow_hidden_dim, cfg.flow_kernel_size, cfg.flow_layers, cfg.cond_dim
                )
            )
            layers.append(Flip())
        self.flows = nn.ModuleList(layers)

    def forward(
        self, z: torch.Tensor, mask: torch.Tensor | None, g: torch.Tensor, reverse: bool = False
    ) -> torch.Tensor:
        """z: [B,L,T'] (posterior side when reverse=False), g: [B,C,T'] -> [B,L,T']."""
        for flow in reversed(self.flows) if reverse else self.flows:
            z = flow(z) if isinstance(flow, Flip) else flow(z, mask, g, reverse)
        return z


class PosteriorEncoder(nn.Module):
    """q(z | motion, g_sqz): strided conv to the latent rate, WaveNet, projection to mean and log-std."""

    def __init__(self, cfg: Audio2MotionConfig) -> None:
        super().__init__()
        s = cfg.stride
        self.pre_net = nn.Sequential(nn.Conv1d(cfg.motion_dim, cfg.hidden_dim, 2 * s, stride=s, padding=s // 2))
        self.wn = WaveNet(cfg.hidden_dim, cfg.kernel_size, cfg.enc_layers, cfg.cond_dim)
        self.out_proj = nn.Conv1d(cfg.hidden_dim, 2 * cfg.latent_dim, 1)
        self.stride = s
        self.latent_dim = cfg.latent_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g_sqz: torch.Tensor):
        """x: [B,64,T], mask: [B,1,T], g_sqz: [B,C,T/s] -> (mean, log_std) [B,L,T/s] and the latent mask."""
        h = self.pre_net(x)
        mask_sqz = mask[:, :, :: self.stride][:, :, : h.shape[-1]]  # [B,1,T/s]
        h = self.wn(h * mask_sqz, mask_sqz, g_sqz) * mask_sqz
        mean, log_std = torch.split(self.out_proj(h), [self.latent_dim, self.latent_dim], dim=1)
        return mean, log_std, mask_sqz


class Decoder(nn.Module):
    """p(motion | z, g): transposed conv back to 25 Hz, WaveNet conditioned on g at 25 Hz, projection."""

    def __init__(self, cfg: Audio2MotionConfig) -> None:
        super().__init__()
        s = cfg.stride
        self.pre_net = nn.Sequential(nn.ConvTranspose1d(cfg.latent_dim, cfg.hidden_dim, s, stride=s))
        self.wn = WaveNet(cfg.hidden_dim, cfg.kernel_size, cfg.dec_layers, cfg.cond_dim)
        self.out_proj = nn.Conv1d(cfg.hidden_dim, cfg.motion_dim, 1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor:
        """z: [B,L,T/s], mask: [B,1,T] or None, g: [B,C,T] -> [B,64,T]."""
        h = self.pre_net(z)
        h = h * mask if mask is not None else h
        h = self.wn(h, mask, g)
        h = h * mask if mask is not None else h
        return self.out_proj(h)


class FlowVAE(nn.Module):
    """The VAE part (official `FVAE` with `use_prior_glow=True`, `sqz_prior=False`)."""

    def __init__(self, cfg: Audio2MotionConfig) -> None:
        super().__init__()
        s = cfg.stride
        self.g_pre_net = nn.Sequential(nn.Conv1d(cfg.cond_dim, cfg.cond_dim, 2 * s, stride=s, padding=s // 2))
        self.encoder = PosteriorEncoder(cfg)
        self.prior_flow = PriorFlow(cfg)
        self.decoder = Decoder(cfg)


@dataclass
class Audio2MotionOutput:
    """Result of sampling motion from audio."""

    exp: torch.Tensor
    """[B,T,motion_dim] expression coefficients at 25 fps (zero where y_mask is 0)."""
    cond: torch.Tensor
    """[B,T,C] projected condition at 25 Hz."""
    g_sqz: torch.Tensor
    """[B,C,T/s] condition at the latent rate (conditions the prior flow)."""
    z_decoder_in: torch.Tensor
    """[B,L,T/s] latent after the reverse prior flow, i.e. the decoder input."""


@dataclass
class Audio2MotionTrainOutput:
    """Result of the posterior (training) path."""

    recon: torch.Tensor
    """[B,T,motion_dim] reconstruction of the target motion (masked)."""
    kl: torch.Tensor
    """Scalar KL estimate through the flow: mean over valid latent frames and channels of log q(z) - log N(f(z))."""
    z_q: torch.Tensor
    """[B,L,T/s] posterior sample."""
    mean_q: torch.Tensor
    """[B,L,T/s] posterior mean."""
    log_std_q: torch.Tensor
    """[B,L,T/s] posterior log standard deviation."""
    z_p: torch.Tensor
    """[B,L,T/s] posterior sample mapped through the prior flow (should look like N(0, I))."""


class Audio2Motion(nn.Module):
    """Flow-enhanced VAE from audio features, pitch, blink and mouth amplitude to 3DMM expression."""

    model_type: ClassVar[str] = "audio2motion"

    def __init__(self, config: Audio2MotionConfig) -> None:
        super().__init__()
        self.config = config
        c = config.cond_dim
        if config.use_mouth_amp_embed:
            self.mouth_amp_embed = nn.Parameter(torch.randn(c))
        if config.use_eye_amp_embed:
            self.eye_amp_embed = nn.Parameter(torch.randn(c))
        self.blink_embed = nn.Embedding(2, c)
        self.mel_encoder = nn.Sequential(
            nn.Conv1d(config.audio_dim, c, 3, padding=1, bias=False),
            nn.BatchNorm1d(c),
            nn.GELU(),
            nn.Conv1d(c, c, 3, padding=1, bias=False),
        )
        self.pitch_embed = nn.Embedding(config.pitch_bins, c)
        nn.init.normal_(self.pitch_embed.weight, std=c**-0.5)
        self.pitch_encoder = nn.Sequential(
            nn.Conv1d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm1d(c),
            nn.GELU(),
            nn.Conv1d(c, c, 3, padding=1, bias=False),
        )
        n_cond = 3 + int(config.use_mouth_amp_embed) + int(config.use_eye_amp_embed)
        self.cond_proj = nn.Linear(n_cond * c, c)
        self.vae = FlowVAE(config)

    # ----------------------------------------------------------------------------------- condition
    def condition(
        self,
        hubert: torch.Tensor,
        f0: torch.Tensor,
        blink: torch.Tensor | None = None,
        mouth_amp: torch.Tensor | float | None = None,
        eye_amp: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The 25 Hz condition `g`.

        hubert: [B,T50,audio_dim] features at 50 Hz; f0: [B,T50] pitch in Hz (0 = unvoiced);
        blink: [B,T50] or [B,T50,1] integer 0/1 (default all 0 = open); mouth_amp / eye_amp: [B], [B,1]
        or a float (default `config.default_*_amp`). Returns [B,T50//2,C].
        """
        cfg = self.config
        b, t50 = f0.shape
        if hubert.ndim != 3 or hubert.shape[:2] != (b, t50) or hubert.shape[2] != cfg.audio_dim:
            raise InputError(
                f"audio features have shape {tuple(hubert.shape)} but pitch has {tuple(f0.shape)}; expected "
                f"[B,T,{cfg.audio_dim}] and [B,T] with the same T (both at 50 Hz)"
            )
        if blink is None:
            blink = torch.zeros(b, t50, dtype=torch.long, device=f0.device)
        if blink.ndim == 3:
            blink = blink[..., 0]
        blink_feat = downsample_half(self.blink_embed(blink.long()))  # [B,T,C]
        audio = downsample_half(hubert)  # [B,T,audio_dim]
        f0 = downsample_half(f0[..., None])[..., 0]  # [B,T]
        pitch = self.pitch_embed(f0_to_coarse(f0))  # [B,T,C]
        audio_feat = rearrange(self.mel_encoder(rearrange(audio, "b t c -> b c t")), "b c t -> b t c")
        pitch_feat = rearrange(self.pitch_encoder(rearrange(pitch, "b t c -> b c t")), "b c t -> b t c")
        feats = [audio_feat, pitch_feat, blink_feat]
        t = audio_feat.shape[1]
        if cfg.use_mouth_amp_embed:
            amp = self._amp(mouth_amp, cfg.default_mouth_amp, b, audio_feat)
            feats.append((amp[:, None, None] * self.mouth_amp_embed).expand(b, t, -1))  # [B,T,C]
        if cfg.use_eye_amp_embed:
            amp = self._amp(eye_amp, cfg.default_eye_amp, b, audio_feat)
            feats.append((amp[:, None, None] * self.eye_amp_embed).expand(b, t, -1))  # [B,T,C]
        return self.cond_proj(torch.cat(feats, dim=-1))

    @staticmethod
    def _amp(value: torch.Tensor | float | None, default: float, b: int, like: torch.Tensor) -> torch.Tensor:
        """An amplitude condition as a [B] tensor."""
        if value is None:
            value = default
        amp = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
        return amp.expand(b) if amp.numel() == 1 else amp.reshape(b)

    def _check_length(self, t: int) -> None:
        if t % self.config.stride != 0:
            raise InputError(
                f"{t} motion frames at 25 Hz is not a multiple of {self.config.stride}; pad the 50 Hz audio "
                f"features to a multiple of {2 * self.config.stride} frames"
            )

    # ----------------------------------------------------------------------------------- inference
    def forward(
        self,
        hubert: torch.Tensor,
        f0: torch.Tensor,
        *,
        blink: torch.Tensor | None = None,
        mouth_amp: torch.Tensor | float | None = None,
        eye_amp: torch.Tensor | float | None = None,
        y_mask: torch.Tensor | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Audio2MotionOutput:
        """Sample 25 fps expressions for 50 Hz audio features (see `condition` for the inputs).

        noise: [B,latent_dim,T/stride] standard-normal prior sample (multiplied by `temperature`); when
        None it is drawn with `generator`. y_mask: [B,T] (1 = valid frame), default all ones.
        """
        cond = self.condition(hubert, f0, blink, mouth_amp, eye_amp)  # [B,T,C]
        return self.sample(cond, temperature=temperature, noise=noise, generator=generator, y_mask=y_mask)

    def sample(
        self,
        cond: torch.Tensor,
        *,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        y_mask: torch.Tensor | None = None,
    ) -> Audio2MotionOutput:
        """Decode a prior sample given the 25 Hz condition cond: [B,T,C]."""
        b, t, _ = cond.shape
        self._check_length(t)
        g = rearrange(cond, "b t c -> b c t")
        g_sqz = self.vae.g_pre_net(g)  # [B,C,T/s]
        shape = (b, self.config.latent_dim, g_sqz.shape[2])
        if noise is None:
            noise = torch.randn(shape, generator=generator, dtype=g.dtype, device=g.device)
        elif tuple(noise.shape) != shape:
            raise InputError(f"noise has shape {tuple(noise.shape)}, expected {shape} for {t} frames")
        z = self.vae.prior_flow(noise.to(g) * temperature, None, g_sqz, reverse=True)  # [B,L,T/s]
        exp = rearrange(self.vae.decoder(z, None, g), "b c t -> b t c")  # [B,T,64]
        if y_mask is not None:
            exp = exp * y_mask[..., None].to(exp)
        return Audio2MotionOutput(exp=exp, cond=cond, g_sqz=g_sqz, z_decoder_in=z)

    # ----------------------------------------------------------------------------------- training
    def posterior(
        self,
        exp: torch.Tensor,
        cond: torch.Tensor,
        *,
        y_mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Audio2MotionTrainOutput:
        """Encode target motion exp: [B,T,64] given cond: [B,T,C], reconstruct it and return the KL
        through the prior flow (official FVAE training path). noise: [B,L,T/s] for the reparameterisation."""
        b, t, _ = exp.shape
        self._check_length(t)
        mask = torch.ones(b, t, dtype=exp.dtype, device=exp.device) if y_mask is None else y_mask.to(exp)
        mask = mask[:, None, :]  # [B,1,T]
        g = rearrange(cond, "b t c -> b c t")
        g_sqz = self.vae.g_pre_net(g)
        mean, log_std, mask_sqz = self.vae.encoder(rearrange(exp, "b t c -> b c t"), mask, g_sqz)
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z_q = mean + noise * torch.exp(log_std)
        recon = self.vae.decoder(z_q, mask, g) * mask  # [B,64,T]
        log_q = _normal_log_prob(z_q, mean, log_std)
        z_p = self.vae.prior_flow(z_q, mask_sqz, g_sqz)  # mean-only flow: log|det| = 0
        log_p = _normal_log_prob(z_p, 0.0, 0.0)
        kl = ((log_q - log_p) * mask_sqz).sum() / mask_sqz.sum() / log_q.shape[1]
        return Audio2MotionTrainOutput(
            recon=rearrange(recon, "b c t -> b t c"), kl=kl, z_q=z_q, mean_q=mean, log_std_q=log_std, z_p=z_p
        )


# --------------------------------------------------------------------------------- official weights
_STRIP_PREFIXES = ("_orig_mod.", "module.")


def remap_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `PitchContourVAEModel` state dict -> `Audio2Motion` state dict.

    Our module tree reproduces the official one, so the mapping is the identity on key names; it only
    strips wrapper prefixes (`_orig_mod.` from torch.compile, `module.` from DataParallel) and makes
    every tensor contiguous. Validation against the model (missing/unexpected keys, shapes) happens
    at load time.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for prefix in _STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value.contiguous()
    return out


def config_from_official(
    state_dict: Mapping[str, torch.Tensor], hparams: Mapping[str, Any] | None = None
) -> Audio2MotionConfig:
    """Read the sizes of an official A2M checkpoint from its (remapped) tensor shapes, cross-checked with
    the flags of its `config.yaml` (`hparams`) when given."""
    sd = state_dict
    try:
        cfg = Audio2MotionConfig(
            audio_dim=sd["mel_encoder.0.weight"].shape[1],
            motion_dim=sd["vae.decoder.out_proj.weight"].shape[0],
            cond_dim=sd["cond_proj.weight"].shape[0],
            pitch_bins=sd["pitch_embed.weight"].shape[0],
            use_mouth_amp_embed="mouth_amp_embed" in sd,
            use_eye_amp_embed="eye_amp_embed" in sd,
            hidden_dim=sd["vae.encoder.pre_net.0.weight"].shape[0],
            latent_dim=sd["vae.decoder.pre_net.0.weight"].shape[0],
            kernel_size=sd["vae.encoder.wn.in_layers.0.weight_v"].shape[2],
            enc_layers=count_indices(sd, r"vae\.encoder\.wn\.in_layers\.(\d+)\.weight_v"),
            dec_layers=count_indices(sd, r"vae\.decoder\.wn\.in_layers\.(\d+)\.weight_v"),
            stride=sd["vae.g_pre_net.0.weight"].shape[2] // 2,
            flow_hidden_dim=sd["vae.prior_flow.flows.0.pre.weight"].shape[0],
            flow_kernel_size=sd["vae.prior_flow.flows.0.enc.in_layers.0.weight_v"].shape[2],
            flow_layers=count_indices(sd, r"vae\.prior_flow\.flows\.0\.enc\.in_layers\.(\d+)\.weight_v"),
            n_flows=count_indices(sd, r"vae\.prior_flow\.flows\.(\d+)\.pre\.weight"),
        )
    except KeyError as err:
        raise CheckpointError(
            f"this does not look like an official audio2secc_vae (PitchContourVAEModel) state dict: key {err} "
            "is missing; pass the A2M checkpoint directory (config.yaml + model_ckpt_steps_*.ckpt)"
        ) from None
    if hparams is not None:
        if hparams.get("use_pitch", True) is False:
            raise CheckpointError(
                "config.yaml has use_pitch: false (the official VAEModel without pitch), which real3d does not "
                "support; use the released audio2secc_vae checkpoint"
            )
        for flag in ("use_mouth_amp_embed", "use_eye_amp_embed"):
            if bool(hparams.get(flag, False)) != getattr(cfg, flag):
                raise CheckpointError(
                    f"config.yaml says {flag}: {hparams.get(flag, False)} but the weights "
                    f"{'lack' if not getattr(cfg, flag) else 'contain'} {flag.removeprefix('use_')}; "
                    "the config and the .ckpt do not belong together"
                )
    return cfg
