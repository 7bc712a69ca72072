"""Configuration of HuBERT (Hsu et al., 2021), the speech encoder whose last hidden state conditions A2M.

`large_ls960_ft()` holds the published values of `facebook/hubert-large-ls960-ft` (the checkpoint the
official Real3D-Portrait inference uses); `tiny()` keeps the same convolution strides and kernels (so the
length rules are the real ones) with a few channels, for unit tests. `config_from_hf` reads a Hugging Face
`config.json` (a dict) and rejects options this implementation does not have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from real3d.errors import CheckpointError

HF_MODEL_ID = "facebook/hubert-large-ls960-ft"
"""The Hugging Face model id used by the official Real3D-Portrait inference."""


@dataclass(frozen=True)
class HubertConfig:
    """Sizes and layer-norm placement of a HuBERT encoder (field names follow the HF `HubertConfig`)."""

    hidden_size: int = 1024
    """Width of the transformer (and of the returned features)."""
    num_hidden_layers: int = 24
    """Transformer layers."""
    num_attention_heads: int = 16
    """Attention heads per layer (hidden_size must be divisible by it)."""
    intermediate_size: int = 4096
    """Hidden width of the feed-forward block."""
    hidden_act: Literal["gelu"] = "gelu"
    """Activation of the feed-forward block (exact erf GELU)."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm."""
    feat_extract_norm: Literal["group", "layer"] = "layer"
    """'layer': LayerNorm after every conv of the feature extractor; 'group': GroupNorm after the first only."""
    feat_extract_activation: Literal["gelu"] = "gelu"
    """Activation after each feature-extractor conv."""
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    """Output channels of the feature-extractor convs."""
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    """Strides of the feature-extractor convs (product 320 = 20 ms at 16 kHz)."""
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    """Kernel sizes of the feature-extractor convs (receptive field 400 samples)."""
    conv_bias: bool = True
    """Whether the feature-extractor convs have a bias."""
    num_conv_pos_embeddings: int = 128
    """Kernel size of the convolutional relative positional embedding."""
    num_conv_pos_embedding_groups: int = 16
    """Groups of the positional convolution."""
    do_stable_layer_norm: bool = True
    """True: pre-LN transformer layers plus a final LayerNorm (large); False: post-LN layers (base)."""
    feat_proj_layer_norm: bool = True
    """LayerNorm on the conv features before the feature projection."""
    masked_spec_embed: bool = True
    """Keep the training-time mask embedding parameter (present in checkpoints trained with masking)."""

    def __post_init__(self) -> None:
        if not (len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel)) or not self.conv_dim:
            raise ValueError(
                f"conv_dim, conv_stride and conv_kernel need the same non-zero length, got "
                f"{len(self.conv_dim)}, {len(self.conv_stride)}, {len(self.conv_kernel)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by {self.num_conv_pos_embedding_groups} groups"
            )

    @property
    def total_stride(self) -> int:
        """Input samples per output frame (320 for the published models: 50 Hz at 16 kHz)."""
        return math.prod(self.conv_stride)

    @property
    def receptive_field(self) -> int:
        """Input samples seen by one output frame of the feature extractor (400 for the published models)."""
        field, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            field += (k - 1) * jump
            jump *= s
        return field

    def num_frames(self, num_samples: int) -> int:
        """Output frames of the feature extractor for `num_samples` input samples (0 when too short)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
            if n <= 0:
                return 0
        return n

    @classmethod
    def large_ls960_ft(cls) -> HubertConfig:
        """The published `facebook/hubert-large-ls960-ft` configuration (315 M encoder parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> HubertConfig:
        """A few-thousand-parameter model with the real strides/kernels (same length rules), for tests."""
        return cls(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            conv_dim=(8, 8, 8, 8, 8, 8, 8),
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4,
        )


# HF HubertConfig defaults (the base model) for keys a config.json may omit.
_HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": (512, 512, 512, 512, 512, 512, 512),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
}


def config_from_hf(data: Mapping[str, Any]) -> HubertConfig:
    """A `HubertConfig` from the dict of a Hugging Face HuBERT `config.json` (HF defaults for absent keys).

    Raises `CheckpointError` for another model type or an option this implementation does not support.
    """
    model_type = data.get("model_type", "hubert")
    if model_type != "hubert":
        raise CheckpointError(
            f"config.json is for model_type '{model_type}', not 'hubert'; pass a {HF_MODEL_ID} snapshot"
        )
    d = {**_HF_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
    for key, allowed in (
        ("hidden_act", ("gelu",)),
        ("feat_extract_activation", ("gelu",)),
        ("feat_extract_norm", ("group", "layer")),
    ):
        if d[key] not in allowed:
            raise CheckpointError(f"config.json has {key}={d[key]!r}; real3d's HuBERT supports {allowed}")
    for flag in ("conv_pos_batch_norm", "add_adapter", "use_weighted_layer_sum"):
        if data.get(flag):
            raise CheckpointError(f"config.json sets {flag}, which real3d's HuBERT does not implement")
    if data.get("num_feat_extract_layers", len(d["conv_dim"])) != len(d["conv_dim"]):
        raise CheckpointError(
            f"config.json: num_feat_extract_layers={data['num_feat_extract_layers']} but conv_dim has "
            f"{len(d['conv_dim'])} entries"
        )
    try:
        return HubertConfig(
            hidden_size=int(d["hidden_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=int(d["num_attention_heads"]),
            intermediate_size=int(d["intermediate_size"]),
            hidden_act=d["hidden_act"],
            layer_norm_eps=float(d["layer_norm_eps"]),
            feat_extract_norm=d["feat_extract_norm"],
            feat_extract_activation=d["feat_extract_activation"],
            conv_dim=tuple(int(v) for v in d["conv_dim"]),
            conv_stride=tuple(int(v) for v in d["conv_stride"]),
            conv_kernel=tuple(int(v) for v in d["conv_kernel"]),
            conv_bias=bool(d["conv_bias"]),
            num_conv_pos_embeddings=int(d["num_conv_pos_embeddings"]),
            num_conv_pos_embedding_groups=int(d["num_conv_pos_embedding_groups"]),
            do_stable_layer_norm=bool(d["do_stable_layer_norm"]),
            feat_proj_layer_norm=bool(d["feat_proj_layer_norm"]),
            masked_spec_embed=float(d["mask_time_prob"]) > 0.0 or float(d["mask_feature_prob"]) > 0.0,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"config.json is not a valid HuBERT configuration: {err}") from None


def config_to_hf(config: HubertConfig) -> dict[str, Any]:
    """The `config.json` dict of a Hugging Face `HubertModel` with this configuration (inverse of
    `config_from_hf`)."""
    return {
        "model_type": "hubert",
        "architectures": ["HubertModel"],
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "layer_norm_eps": config.layer_norm_eps,
        "feat_extract_norm": config.feat_extract_norm,
        "feat_extract_activation": config.feat_extract_activation,
        "conv_dim": list(config.conv_dim),
        "conv_stride": list(config.conv_stride),
        "conv_kernel": list(config.conv_kernel),
        "conv_bias": config.conv_bias,
        "num_feat_extract_layers": len(config.conv_dim),
        "num_conv_pos_embeddings": config.num_conv_pos_embeddings,
        "num_conv_pos_embedding_groups": config.num_conv_pos_embedding_groups,
        "do_stable_layer_norm": config.do_stable_layer_norm,
        "feat_proj_layer_norm": config.feat_proj_layer_norm,
        "mask_time_prob": 0.05 if config.masked_spec_embed else 0.0,
        "mask_feature_prob": 0.0,
    }
