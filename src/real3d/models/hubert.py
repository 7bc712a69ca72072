"""HuBERT speech encoder (Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked
Prediction of Hidden Units", 2021), inference only, in plain PyTorch.

Real3D-Portrait conditions its audio-to-motion model on the last hidden state of
`facebook/hubert-large-ls960-ft` (1024-d at 50 Hz). This module rebuilds that network with the Hugging
Face module and parameter names, so a local snapshot loads with no `transformers` install:

  wav [B,N] (16 kHz, zero-mean unit-variance)
    -> feature extractor: 7 x (Conv1d -> LayerNorm|GroupNorm -> GELU), total stride 320   [B,512,T]
    -> feature projection: LayerNorm(512) -> Linear(512, H)                               [B,T,H]
    -> + GELU(weight-normed grouped Conv1d(H, H, k=128, groups=16))   (relative position)
    -> 24 pre-LN transformer layers (stable layer norm) -> final LayerNorm                [B,T,H]

`hubert_features` reproduces the official feature extraction (GeneFace++/Real3D `get_hubert_from_16k_speech`):
per-utterance normalisation, 20 s clips with 80 samples of overlap, length (N-80)//320, zero-padded to a
multiple of 8 frames. `load_hubert(dir)` reads a Hugging Face snapshot (`config.json` + `model.safetensors`
or `pytorch_model.bin`); `save_hubert` writes the same layout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from real3d.config.hubert import HF_MODEL_ID, HubertConfig, config_from_hf, config_to_hf
from real3d.errors import CheckpointError, DependencyError, InputError
from real3d.state_dict import instantiate_with_weights, load_pickle_weights_only

log = logging.getLogger(__name__)

CLIP_FRAMES = 1000
"""Frames per HuBERT clip in the official chunking (1000 x 320 samples = 20 s at 16 kHz)."""
FRAME_MULTIPLE = 8
"""The official pipeline zero-pads the 50 Hz features to a multiple of this many frames."""
NORM_EPS = 1e-7
"""Variance epsilon of the `Wav2Vec2FeatureExtractor` zero-mean unit-variance normalisation."""


# ----------------------------------------------------------------------------------------- blocks
class ConvLayer(nn.Module):
    """One feature-extractor layer: Conv1d, optional norm (LayerNorm over channels or GroupNorm with one
    group per channel), GELU. HF names: `conv`, `layer_norm`."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        elif norm == "group":
            self.layer_norm = nn.GroupNorm(out_dim, out_dim, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,C_in,N] -> [B,C_out,N']."""
        x = self.conv(x)
        if self.norm_kind == "layer":
            x = rearrange(self.layer_norm(rearrange(x, "b c t -> b t c")), "b t c -> b c t")
        elif self.norm_kind == "group":
            x = self.layer_norm(x)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """The strided conv stack from raw samples to 50 Hz features (HF `feature_extractor`)."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        layers = []
        for i, (dim, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            in_dim = 1 if i == 0 else cfg.conv_dim[i - 1]
            if cfg.feat_extract_norm == "layer":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(in_dim, dim, k, s, cfg.conv_bias, norm))
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav: [B,N] -> [B,conv_dim[-1],T]."""
        x = wav[:, None, :]  # [B,1,N]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm (optional) and Linear from the conv width to the transformer width (HF `feature_projection`)."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.use_norm = cfg.feat_proj_layer_norm
        if self.use_norm:
            self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,T,C] -> [B,T,H]."""
        return self.projection(self.layer_norm(x) if self.use_norm else x)


class PositionalConv(nn.Module):
    """Convolutional relative positional embedding: grouped Conv1d with legacy weight norm over dim 2
    (`weight = weight_g * weight_v / ||weight_v||`, the norm over output and input channels per tap),
    `same` padding (one trailing frame dropped for even kernels), GELU. HF name `pos_conv_embed.conv`."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        k, g, h = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.hidden_size
        self.kernel, self.groups = k, g
        v = torch.randn(h, h // g, k) * (1.0 / math.sqrt(h // g * k))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))  # [1,1,K]
        self.bias = nn.Parameter(torch.zeros(h))

    def weight(self) -> torch.Tensor:
        """The effective conv weight [H,H/groups,K]."""
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)  # [1,1,K]
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,H,T] -> [B,H,T]."""
        y = F.conv1d(x, self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y)


class PositionalEmbedding(nn.Module):
    """Wrapper that gives the HF key path `encoder.pos_conv_embed.conv.*`."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.conv = PositionalConv(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,T,H] -> positional term [B,T,H]."""
        return rearrange(self.conv(rearrange(x, "b t h -> b h t")), "b h t -> b t h")


class Attention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections (HF `attention`)."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.q_proj = nn.Linear(h, h)
        self.k_proj = nn.Linear(h, h)
        self.v_proj = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,T,H] -> [B,T,H] (no padding mask: every frame is valid)."""
        q, k, v = (
            rearrange(p(x), "b t (n d) -> b n t d", n=self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(q, k, v)  # [B,n,T,d], softmax(q k^T / sqrt(d)) v
        return self.out_proj(rearrange(y, "b n t d -> b t (n d)"))


class FeedForward(nn.Module):
    """Linear(H, 4H) -> GELU -> Linear(4H, H) (HF `feed_forward.intermediate_dense/output_dense`)."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Transformer layer; pre-LN when `stable` (x + Attn(LN(x)), then x + FF(LN(x))), else post-LN
    (LN(x + Attn(x)), then LN(x + FF(x)))."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.stable = cfg.do_stable_layer_norm
        self.attention = Attention(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,T,H] -> [B,T,H]."""
        if self.stable:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    """Positional conv + transformer layers; the LayerNorm sits after the layers when stable (large models)
    and before them otherwise (base models), as in HF `HubertEncoder(StableLayerNorm)`."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.stable = cfg.do_stable_layer_norm
        self.pos_conv_embed = PositionalEmbedding(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,T,H] projected features -> last hidden state [B,T,H]."""
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x) if self.stable else x


@dataclass
class HubertOutput:
    """Result of a HuBERT forward pass."""

    last_hidden_state: torch.Tensor
    """[B,T,hidden_size] features at 50 Hz (16 kHz input); A2M's audio condition."""
    extract_features: torch.Tensor
    """[B,T,conv_dim[-1]] output of the conv feature extractor (before the projection)."""


class Hubert(nn.Module):
    """HuBERT encoder with Hugging Face `HubertModel` parameter names (no CTC head)."""

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        self.config = config
        if config.masked_spec_embed:
            # Training-time mask vector; stored in the published checkpoints, unused at inference.
            self.masked_spec_embed = nn.Parameter(torch.rand(config.hidden_size))
        self.feature_extractor = FeatureExtractor(config)
        self.feature_projection = FeatureProjection(config)
        self.encoder = Encoder(config)

    def forward(self, wav: torch.Tensor) -> HubertOutput:
        """wav: [B,N] normalised 16 kHz samples (see `normalize_waveform`), N >= config.receptive_field."""
        if wav.ndim != 2:
            raise InputError(f"HuBERT expects a [B,N] waveform batch, got shape {tuple(wav.shape)}")
        if wav.shape[1] < self.config.receptive_field:
            raise InputError(
                f"{wav.shape[1]} samples is shorter than one HuBERT frame ({self.config.receptive_field} samples, "
                "25 ms at 16 kHz); pass longer audio"
            )
        feats = rearrange(self.feature_extractor(wav), "b c t -> b t c")  # [B,T,512]
        hidden = self.encoder(self.feature_projection(feats))  # [B,T,H]
        return HubertOutput(last_hidden_state=hidden, extract_features=feats)


# ----------------------------------------------------------------------------------------- features
def normalize_waveform(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Zero-mean unit-variance normalisation of one utterance, as `Wav2Vec2Processor` (do_normalize=True):
    (x - mean) / sqrt(var + 1e-7). wav: [N] -> float32 [N]. Statistics in float64."""
    x = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav).to(torch.float64).reshape(-1)
    if x.numel() == 0:
        raise InputError("the audio has no samples; pass a recording that is not empty")
    mean = x.mean()
    var = ((x - mean) ** 2).mean()  # population variance, like numpy's var
    return ((x - mean) / torch.sqrt(var + NORM_EPS)).to(torch.float32)


def official_num_frames(num_samples: int, config: HubertConfig | None = None) -> int:
    """Frames the official pipeline keeps for `num_samples` samples: (N - (400 - 320)) // 320 (before the
    multiple-of-8 padding)."""
    cfg = config or HubertConfig()
    return max(0, (num_samples - (cfg.receptive_field - cfg.total_stride)) // cfg.total_stride)


def padded_length(num_frames: int, multiple: int = FRAME_MULTIPLE) -> int:
    """`num_frames` rounded up to a multiple of `multiple`."""
    return -(-num_frames // multiple) * multiple


@torch.inference_mode()
def hubert_features(
    model: Hubert,
    wav16k: np.ndarray | torch.Tensor,
    *,
    clip_frames: int = CLIP_FRAMES,
    pad_multiple: int = FRAME_MULTIPLE,
    batch_size: int = 1,
) -> torch.Tensor:
    """Official HuBERT features of a 16 kHz mono utterance: float32 [T50, hidden] on the CPU.

    The whole utterance is normalised once, then cut into clips of `clip_frames * 320` samples, each
    extended by 80 samples (400 - 320) so it yields exactly `clip_frames` frames; the remainder is one more
    clip when it has at least 400 samples. Clips are independent (attention stays inside a clip, as in the
    official code). The result is cut or zero-padded to (N - 80) // 320 frames and then zero-padded to a
    multiple of `pad_multiple` (8: A2M needs T25 divisible by 4). `batch_size` full clips run together
    (same numbers, more memory).
    """
    cfg = model.config
    wav = normalize_waveform(wav16k)  # [N]
    n = wav.numel()
    kernel, stride = cfg.receptive_field, cfg.total_stride
    if n < kernel:
        raise InputError(
            f"the audio has {n} samples, shorter than one HuBERT frame ({kernel} samples = "
            f"{1000 * kernel / 16000:.0f} ms at 16 kHz); pass longer audio"
        )
    param = next(model.parameters())
    clip = stride * clip_frames
    n_full = n // clip
    spans = [(clip * i, clip * i + clip - stride + kernel) for i in range(n_full)]
    tail_start = clip * n_full
    if n - tail_start >= kernel:
        spans.append((tail_start, n))
    was_training = model.training
    model.eval()
    segments = [wav[a:b] for a, b in spans]  # b may run past n for the last full clip: it is cut, as official
    outs: list[torch.Tensor] = []
    try:
        i = 0
        while i < len(segments):
            j = i + 1
            while j < len(segments) and j - i < batch_size and segments[j].numel() == segments[i].numel():
                j += 1
            batch = torch.stack(segments[i:j]).to(device=param.device, dtype=param.dtype)  # [b,n]
            outs.extend(model(batch).last_hidden_state.float().cpu().unbind(0))  # b x [T,H]
            i = j
    finally:
        model.train(was_training)
    feats = torch.cat(outs, dim=0)  # [T,H]
    expected = official_num_frames(n, cfg)
    if abs(feats.shape[0] - expected) > 1:
        log.warning("HuBERT gave %d frames for %d samples, expected %d", feats.shape[0], n, expected)
    feats = feats[:expected] if feats.shape[0] >= expected else F.pad(feats, (0, 0, 0, expected - feats.shape[0]))
    target = padded_length(expected, pad_multiple)
    return F.pad(feats, (0, 0, 0, target - expected))  # [T50,H]


# ----------------------------------------------------------------------------------------- checkpoints
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_IGNORED_PREFIXES = ("lm_head.", "dropout.", "projector.", "classifier.")


def remap_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face HuBERT state dict -> `Hubert` state dict.

    Strips the `hubert.` prefix of task models (`HubertForCTC`), drops their heads (`lm_head.*`), and renames
    the weight-norm parametrisation keys that recent `transformers` versions write
    (`parametrizations.weight.original0/1`) to the legacy `weight_g`/`weight_v`. Everything else keeps its
    name; the strict load afterwards reports anything unexpected.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.").removeprefix("hubert.")
        if key.startswith(_IGNORED_PREFIXES):
            continue
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value.contiguous()
    return out


def _missing(path: Path, what: str) -> DependencyError:
    return DependencyError(
        f"{what}: {path} not found. real3d never downloads HuBERT; get the {HF_MODEL_ID} snapshot yourself "
        f"(e.g. `huggingface-cli download {HF_MODEL_ID} config.json model.safetensors --local-dir DIR` on a "
        "machine with internet access) and pass that folder"
    )


def _resolve_snapshot(directory: Path) -> Path:
    """The folder holding config.json: `directory` itself, or the single snapshot of a hub-cache repo folder."""
    if (directory / "config.json").is_file():
        return directory
    snaps = sorted(p for p in (directory / "snapshots").glob("*") if (p / "config.json").is_file())
    if len(snaps) == 1:
        return snaps[0]
    if len(snaps) > 1:
        raise DependencyError(
            f"{directory} holds several HuBERT snapshots ({', '.join(p.name for p in snaps)}); pass one of "
            f"{directory / 'snapshots'}/<hash> directly"
        )
    return directory


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot read {path} ({err}); the file is corrupt or truncated") from None

    sd = load_pickle_weights_only(path)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a flat state dict of tensors; it is not a HuBERT checkpoint")
    return sd


def load_hubert(
    directory: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Hubert:
    """A `Hubert` in eval mode from a local Hugging Face snapshot folder (`config.json` plus
    `model.safetensors` or `pytorch_model.bin`; a hub-cache `models--facebook--...` folder also works).

    Loading is strict apart from the ignored task heads (see `remap_hf_state_dict`) and the training-only
    `masked_spec_embed`, kept only when the file has it. A missing folder or file
    raises `DependencyError` naming it and the model id to download.
    """

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise _missing(directory, "HuBERT snapshot folder")
    directory = _resolve_snapshot(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise _missing(config_path, "HuBERT config")
    weights = next((directory / name for name in _WEIGHT_FILES if (directory / name).is_file()), None)
    if weights is None:
        raise _missing(directory / _WEIGHT_FILES[0], f"HuBERT weights ({' or '.join(_WEIGHT_FILES)})")
    try:
        hf_config: Any = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {config_path} as JSON ({err})") from None
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{config_path} is not a JSON object; it is not a Hugging Face config")
    config = config_from_hf(hf_config)
    state_dict = remap_hf_state_dict(_read_weights(weights))
    # The training-only mask vector follows the file, not the config's mask probabilities: it never
    # affects inference, so a snapshot saved with or without it loads either way.
    if config.masked_spec_embed != ("masked_spec_embed" in state_dict):
        config = dataclasses.replace(config, masked_spec_embed="masked_spec_embed" in state_dict)
    model = instantiate_with_weights(Hubert, config, state_dict, str(weights))
    log.info("loaded HuBERT (%d layers, width %d) from %s", config.num_hidden_layers, config.hidden_size, weights)
    return model.to(device=device, dtype=dtype)


def save_hubert(model: Hubert, directory: str | Path, *, prefix: str = "") -> Path:
    """Write `config.json` + `model.safetensors` in the Hugging Face `HubertModel` layout (keys optionally
    prefixed, e.g. `hubert.` as in `HubertForCTC`). Returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {prefix + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n", encoding="utf-8")
    return directory
