"""The `Real3DPortraitConfig` of an official `secc2plane_torso` checkpoint, read from its tensors.

The official `config.yaml` records only a few sizes (`triplane_hid_dim`, `neural_rendering_resolution`,
`final_resolution`, `w_dim`, `torso_kp_num`, sample counts) and architecture switches; the widths and
depths of I2P, MA and HTB-SR are constants of the official code. `torso_config_from_official` reads
every size from the tensor shapes of `state_dict['model']` (so checkpoints of any size load, e.g. tiny
test models), cross-checks them with `config.yaml`, and refuses architecture switches real3d does not
implement.

A few hyper-parameters leave no trace in any tensor shape (attention head counts, ASPP dilation rates,
LayerNorm epsilons, the torso keypoint indices, ...). The official code fixes them by its architecture
switches (`img2plane_backbone_scale: standard`, `secc_segformer_scale: b0`, ...), so they are taken
as the released values (`RELEASED_UNRECORDED`); `with_released_hyperparameters(config)` gives the
config a checkpoint of `config`'s sizes is read back as (what a writer of official-format checkpoints
must build its model from).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

import torch

from real3d.config.htbsr import HTBSRConfig, TorsoWarpConfig
from real3d.config.img2plane import Img2PlaneConfig
from real3d.config.motion_adapter import MotionAdapterConfig
from real3d.config.real3d_portrait import Real3DPortraitConfig
from real3d.config.volume_renderer import VolumeRendererConfig
from real3d.errors import CheckpointError
from real3d.state_dict import count_indices

log = logging.getLogger(__name__)

RELEASED_FLAGS: dict[str, Any] = {
    "triplane_feature_type": "triplane",
    "triplane_depth": 1,
    "img2plane_backbone_mode": "composite",
    "img2plane_backbone_scale": "standard",
    "secc_segformer_scale": "b0",
    "pncc_cond_mode": "cano_src_tgt",
    "phase1_plane_fusion_mode": "add",
    "sr_type": "vanilla",
    "torso_model_version": "v2",
    "torso_inp_mode": "rgb_alpha",
    "htbsr_head_weight_fuse_mode": "v2",
    "weight_fuse": True,
    "ray_near": "auto",
    "ray_far": "auto",
}
"""config.yaml architecture switches of the released model, which real3d implements (absent = these)."""

_I2P, _MA, _SR = "cano_img2plane_backbone.", "secc_img2plane_backbone.", "superresolution."
_TORSO = _SR + "torso_model."

_OFFICIAL = Real3DPortraitConfig.official()
RELEASED_UNRECORDED: dict[str, Any] = {
    "img2plane.atrous_rates": _OFFICIAL.img2plane.atrous_rates,
    "img2plane.vit_heads": _OFFICIAL.img2plane.vit_heads,
    "img2plane.ln_eps": _OFFICIAL.img2plane.ln_eps,
    "motion_adapter.num_heads": _OFFICIAL.motion_adapter.num_heads,
    "motion_adapter.ln_eps": _OFFICIAL.motion_adapter.ln_eps,
    "renderer.decoder_lr_multiplier": _OFFICIAL.renderer.decoder_lr_multiplier,
    "htbsr.antialias": _OFFICIAL.htbsr.antialias,
    "htbsr.noise_mode": _OFFICIAL.htbsr.noise_mode,
    "htbsr.torso.keypoint_indices": _OFFICIAL.htbsr.torso.keypoint_indices,
    "htbsr.torso.kp_variance": _OFFICIAL.htbsr.torso.kp_variance,
    "htbsr.torso.mask_dilate_ksize": _OFFICIAL.htbsr.torso.mask_dilate_ksize,
    "htbsr.torso.grad_scale": _OFFICIAL.htbsr.torso.grad_scale,
}
"""Hyper-parameters that no tensor shape and no config.yaml key records: the released values
(fixed in the official code by `img2plane_backbone_scale: standard` / `secc_segformer_scale: b0`)."""


# ------------------------------------------------------------------------------------ shape reading
class _Shapes:
    """Tensor-shape lookups on one state dict, with a readable error for a missing key."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.sd = state_dict

    def dim(self, key: str, axis: int) -> int:
        t = self.sd.get(key)
        if t is None:
            raise CheckpointError(
                f"the torso state dict has no '{key}', which an official secc2plane_torso "
                "(OSAvatarSECC_Img2plane_Torso) checkpoint has; pass that model's directory "
                "(config.yaml + model_ckpt_steps_*.ckpt)"
            )
        if t.ndim <= axis:
            raise CheckpointError(f"'{key}' has shape {tuple(t.shape)}; expected at least {axis + 1} dimensions")
        return int(t.shape[axis])

    def count(self, pattern: str) -> int:
        """How many distinct indices `(\\d+)` in `pattern` (a full-key regex) occur."""
        return count_indices(self.sd, pattern)

    def has(self, key: str) -> bool:
        return key in self.sd


def _esc(prefix: str) -> str:
    return re.escape(prefix)


def _img2plane(s: _Shapes) -> Img2PlaneConfig:
    p = _I2P
    enc = p + "low_reso_encoder.encoder."
    blocks = tuple(s.count(_esc(f"{enc}layer{i}.") + r"(\d+)\.conv1\.weight") for i in range(1, 5))
    widths = tuple(s.dim(f"{enc}layer{i}.0.conv1.weight", 0) for i in range(1, 5))
    n_branches = s.count(_esc(p + "low_reso_encoder.decoder.0.convs.") + r"(\d+)\..*")
    rates = RELEASED_UNRECORDED["img2plane.atrous_rates"]
    if n_branches != len(rates) + 2:
        raise CheckpointError(
            f"the I2P ASPP has {n_branches} branches; real3d implements the released one with "
            f"{len(rates) + 2} (1x1, three dilated 3x3, image pooling)"
        )
    vit_dim = s.dim(p + "low_reso_vit.patch_embed.proj.weight", 0)
    mlp_hidden = s.dim(p + "low_reso_vit.block1.mlp.fc1.weight", 0)
    tp = p + "triplane_predictor_vit."
    sr_key = tp + "block1.attn.sr.weight"
    return Img2PlaneConfig(
        image_channels=s.dim(enc + "conv1.weight", 1) - 2,
        resnet_blocks=blocks,
        resnet_widths=widths,
        aspp_channels=s.dim(p + "low_reso_encoder.decoder.0.convs.0.0.weight", 0),
        atrous_rates=rates,
        vit_dim=vit_dim,
        vit_heads=RELEASED_UNRECORDED["img2plane.vit_heads"],
        vit_mlp_ratio=mlp_hidden / vit_dim,
        low_res_blocks=s.count(_esc(p + "low_reso_vit.block") + r"(\d+)\.norm1\.weight"),
        triplane_blocks=s.count(_esc(tp + "block") + r"(\d+)\.norm1\.weight"),
        triplane_sr_ratio=s.dim(sr_key, 2) if s.has(sr_key) else 1,
        low_res_hidden=s.dim(p + "low_reso_vit.conv_after_upsample1.weight", 0),
        feature_channels=s.dim(p + "high_reso_encoder.final.weight", 0),
        high_res_stem=s.dim(p + "high_reso_encoder.first.weight", 0),
        high_res_layers=s.count(_esc(p + "high_reso_encoder.conv_layers.") + r"(\d+)\.weight"),
        triplane_hidden=(s.dim(tp + "first_conv.weight", 0), s.dim(tp + "second_conv.weight", 0)),
        triplane_after_cat=tuple(s.dim(f"{tp}{n}_conv_after_cat.weight", 0) for n in ("first", "second", "third")),
        plane_channels=s.dim(tp + "final_conv.weight", 0) // 3,
        ln_eps=RELEASED_UNRECORDED["img2plane.ln_eps"],
    )


def _motion_adapter(s: _Shapes) -> MotionAdapterConfig:
    p = _MA
    vit = p + "mix_vit."
    dims = tuple(s.dim(f"{vit}patch_embed{i}.proj.weight", 0) for i in range(1, 5))
    depths = tuple(s.count(_esc(f"{vit}block{i}.") + r"(\d+)\.norm1\.weight") for i in range(1, 5))
    ratios = tuple(s.dim(f"{vit}block{i}.0.mlp.fc1.weight", 0) / d for i, d in zip(range(1, 5), dims))
    srs = tuple(
        s.dim(f"{vit}block{i}.0.attn.sr.weight", 2) if s.has(f"{vit}block{i}.0.attn.sr.weight") else 1
        for i in range(1, 5)
    )
    heads = RELEASED_UNRECORDED["motion_adapter.num_heads"]
    uneven = [(d, h) for d, h in zip(dims, heads) if d % h]
    if uneven:
        raise CheckpointError(
            f"the motion adapter's MiT widths {dims} do not split into the released head counts {heads} "
            "(secc_segformer_scale b0); real3d cannot rebuild its attention"
        )
    pncc_in = s.dim(p + "prenet.weight", 1)
    if pncc_in % 3:
        raise CheckpointError(
            f"the motion adapter prenet reads {pncc_in} channels; expected 3 PNCC maps (cano, src, tgt)"
        )
    cnn_out = s.count(_esc(p + "to_plane_cnn.") + r"(\d+)\.weight")
    if cnn_out != 4:
        raise CheckpointError(f"the motion adapter's to_plane_cnn has {cnn_out} convolutions; the released one has 4")
    return MotionAdapterConfig(
        pncc_channels=pncc_in // 3,
        prenet_channels=s.dim(p + "prenet.weight", 0),
        embed_dims=dims,
        num_heads=heads,
        mlp_ratios=ratios,
        depths=depths,
        sr_ratios=srs,
        ln_eps=RELEASED_UNRECORDED["motion_adapter.ln_eps"],
        head_dim=s.dim(p + "fuse_head.linear_c1.proj.weight", 0),
        cnn_channels=s.dim(p + "to_plane_cnn.0.weight", 0),
        plane_channels=s.dim(p + "to_plane_cnn.7.weight", 0) // 3,
    )


def _torso(s: _Shapes, resolution: int, kp_num: int) -> TorsoWarpConfig:
    t = _TORSO
    app, mfe, gen = t + "appearance_extractor.", t + "motion_field_estimator.", t + "deform_based_generator."
    n_app_down = s.count(_esc(app + "down.") + r"(\d+)\.layers\.0\.layers\.0\.weight")
    appearance = (s.dim(app + "in_conv.layers.0.weight", 0),) + tuple(
        s.dim(f"{app}down.{i}.layers.0.layers.0.weight", 0) for i in range(n_app_down)
    )
    channels = s.dim(mfe + "compress.weight", 1) - 2  # appearance volume + neck/clothes masks
    n_hg = s.count(_esc(mfe + "down.") + r"(\d+)\.layers\.0\.layers\.0\.weight")
    n_up = s.count(_esc(mfe + "up.") + r"(\d+)\.layers\.1\.layers\.0\.weight")
    n_gen_up = s.count(_esc(gen + "up.") + r"(\d+)\.layers\.1\.layers\.0\.weight_orig")
    generator = (s.dim(gen + "in_conv.layers.0.weight_orig", 0),) + tuple(
        s.dim(f"{gen}up.{i}.layers.1.layers.0.weight_orig", 0) for i in range(n_gen_up)
    )
    indices = RELEASED_UNRECORDED["htbsr.torso.keypoint_indices"]
    if kp_num != len(indices):
        raise CheckpointError(
            f"the torso model uses {kp_num} keypoints; real3d implements the released 4 (lm68 {list(indices)})"
        )
    try:
        return TorsoWarpConfig(
            resolution=resolution,
            in_channels=s.dim(app + "in_conv.layers.0.weight", 1),
            appearance_channels=appearance,
            feature_channels=channels,
            feature_depth=s.dim(app + "mid_conv.weight", 0) // max(channels, 1),
            appearance_res_blocks=s.count(_esc(app + "res.") + r"(\d+)\..*"),
            keypoint_indices=indices,
            kp_variance=RELEASED_UNRECORDED["htbsr.torso.kp_variance"],
            compressed_channels=s.dim(mfe + "compress.weight", 0),
            hourglass_channels=tuple(s.dim(f"{mfe}down.{i}.layers.0.layers.0.weight", 0) for i in range(n_hg)),
            hourglass_out_channels=s.dim(f"{mfe}up.{n_up - 1}.layers.1.layers.0.weight", 0),
            head_channels=s.dim(mfe + "tgt_head_encoder.0.layers.0.weight", 0),
            head_res_blocks=s.count(_esc(mfe + "tgt_head_encoder.") + r"(\d+)\..*") - 1,
            generator_channels=generator,
            generator_res_blocks=s.count(_esc(gen + "res.") + r"(\d+)\..*"),
            occlusion_hidden=s.dim(t + "occlusion_2_predictor.0.weight", 0),
            mask_dilate_ksize=RELEASED_UNRECORDED["htbsr.torso.mask_dilate_ksize"],
            grad_scale=RELEASED_UNRECORDED["htbsr.torso.grad_scale"],
        )
    except ValueError as err:
        raise CheckpointError(f"the torso model's sizes are inconsistent: {err}") from None


# ------------------------------------------------------------------------------------ config.yaml
def check_architecture_flags(hparams: Mapping[str, Any]) -> None:
    """Raise `CheckpointError` when config.yaml selects an architecture other than the released one."""
    bad = {k: hparams[k] for k, v in RELEASED_FLAGS.items() if k in hparams and hparams[k] != v}
    if hparams.get("img2plane_input_mode", "rgb") != "rgb":
        bad["img2plane_input_mode"] = hparams["img2plane_input_mode"]
    if bad:
        raise CheckpointError(
            f"config.yaml selects {bad}, which real3d does not implement (it implements the released "
            f"secc2plane_torso: {RELEASED_FLAGS}); use the released checkpoint's config.yaml"
        )


def _yaml_number(hparams: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    value = hparams.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"config.yaml has an unusable {key}: {value!r}") from None


def _agree(name: str, from_yaml: Any, from_weights: Any) -> None:
    if from_yaml != from_weights:
        raise CheckpointError(
            f"config.yaml says {name}: {from_yaml} but the weights have {from_weights}; "
            "the config.yaml and the .ckpt do not belong together"
        )


def torso_config_from_official(
    state_dict: Mapping[str, torch.Tensor], hparams: Mapping[str, Any] | None = None
) -> Real3DPortraitConfig:
    """`Real3DPortraitConfig` of an official `secc2plane_torso` state dict (official key names, i.e.
    `ckpt['state_dict']['model']` or its `remap_official_state_dict`), cross-checked with `config.yaml`.

    Sizes come from the tensor shapes; sampling (`num_samples_coarse/fine`, `box_warp`) and
    `htbsr_head_threshold` from config.yaml (released values when it is None); the hyper-parameters no
    tensor records are the released ones (`RELEASED_UNRECORDED`). For the released checkpoint this is
    `Real3DPortraitConfig.official()`. Raises `CheckpointError` for unsupported architecture switches,
    sizes that disagree with config.yaml, or a state dict of another model.
    """
    s = _Shapes(state_dict)
    hp: Mapping[str, Any] = hparams if hparams is not None else {}
    if hparams is not None:
        check_architecture_flags(hparams)
    mid = s.dim(_SR + "block0.conv0.noise_const", 0)  # the fusion resolution, 2 x rendering resolution
    res = mid // 2
    final = s.dim(_SR + "block1.conv0.noise_const", 0)
    planes = s.dim("decoder.net.0.weight", 1)
    kp_num = s.dim(_TORSO + "motion_field_estimator.mask_conv.weight", 0) - 1  # K keypoints + background
    w_dim = s.dim(_SR + "block0.conv0.affine.weight", 1)
    if hparams is not None:
        _agree("neural_rendering_resolution", _yaml_number(hp, "neural_rendering_resolution", res, int), res)
        _agree("triplane_hid_dim", _yaml_number(hp, "triplane_hid_dim", planes, int), planes)
        _agree("w_dim", _yaml_number(hp, "w_dim", w_dim, int), w_dim)
        yaml_final = _yaml_number(hp, "final_resolution", final, int)
        yaml_kp = _yaml_number(hp, "torso_kp_num", kp_num, int)
        if yaml_final != 4 * res or yaml_kp != 4:
            raise CheckpointError(
                f"config.yaml has final_resolution {yaml_final} and torso_kp_num {yaml_kp}; real3d's HTB-SR needs "
                f"final_resolution = 4 x neural_rendering_resolution ({4 * res}) and 4 torso keypoints"
            )
        _agree("torso_kp_num", yaml_kp, kp_num)
    else:
        log.warning("no config.yaml: sampling and head threshold take the released values")
    if final != 4 * res or mid % 2:
        raise CheckpointError(
            f"the super-resolution works at {mid} and {final} pixels; real3d's HTB-SR needs 2x and 4x the "
            "rendering resolution"
        )
    i2p = _img2plane(s)
    ma = _motion_adapter(s)
    renderer = VolumeRendererConfig(
        resolution=res,
        num_samples_coarse=_yaml_number(hp, "num_samples_coarse", 48, int),
        num_samples_fine=_yaml_number(hp, "num_samples_fine", 48, int),
        box_warp=_yaml_number(hp, "box_warp", 1.0, float),
        feature_dim=planes,
        decoder_hidden_dim=s.dim("decoder.net.0.weight", 0),
        decoder_lr_multiplier=RELEASED_UNRECORDED["renderer.decoder_lr_multiplier"],
    )
    try:
        htbsr = HTBSRConfig(
            input_resolution=res,
            feature_channels=s.dim(_SR + "block0.conv0.weight", 1),
            block0_channels=s.dim(_SR + "block0.conv0.weight", 0),
            block1_channels=s.dim(_SR + "block1.conv0.weight", 0),
            w_dim=w_dim,
            head_threshold=_yaml_number(hp, "htbsr_head_threshold", 0.9, float),
            antialias=RELEASED_UNRECORDED["htbsr.antialias"],
            noise_mode=RELEASED_UNRECORDED["htbsr.noise_mode"],
            bg_hidden=s.dim(_SR + "bg_encoder.0.weight", 0),
            fuse_hidden=s.dim(_SR + "fuse_fg_bg_convs.0.weight", 0),
            alpha_hidden=s.dim(_SR + "head_torso_alpha_predictor.0.weight", 0),
            torso=_torso(s, 2 * res, kp_num),
        )
        return Real3DPortraitConfig(img2plane=i2p, motion_adapter=ma, renderer=renderer, htbsr=htbsr)
    except ValueError as err:
        raise CheckpointError(f"the checkpoint's sizes are inconsistent: {err}") from None


# ------------------------------------------------------------------------------------ the other way
def _replace_path(config: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: _replace_path(getattr(config, head), rest, value)})


def _get_path(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def unrecorded_differences(config: Real3DPortraitConfig) -> list[str]:
    """The hyper-parameters of `config` that an official checkpoint cannot record and that differ from
    the released values ("name: ours vs released"); a checkpoint written from such a model reads back
    as another model."""
    return [f"{k}: {_get_path(config, k)} vs {v}" for k, v in RELEASED_UNRECORDED.items() if _get_path(config, k) != v]


def with_released_hyperparameters(config: Real3DPortraitConfig) -> Real3DPortraitConfig:
    """`config` with every hyper-parameter that an official checkpoint does not record set to its
    released value: the config `torso_config_from_official` reads back from a checkpoint written from a
    model of this config. Raises `ValueError` when `config`'s sizes cannot take the released values
    (e.g. MiT widths not divisible by the released head counts 1, 2, 5, 8)."""
    out = config
    for path, value in RELEASED_UNRECORDED.items():
        out = _replace_path(out, path, value)
    uneven = [(d, h) for d, h in zip(out.motion_adapter.embed_dims, out.motion_adapter.num_heads) if d % h]
    uneven += (
        [(out.img2plane.vit_dim, out.img2plane.vit_heads)] if out.img2plane.vit_dim % out.img2plane.vit_heads else []
    )
    if uneven:
        raise ValueError(f"(width, heads) pairs {uneven} do not split evenly; choose widths divisible by the heads")
    return out


def official_torso_hparams(config: Real3DPortraitConfig) -> dict[str, Any]:
    """The config.yaml entries an official `secc2plane_torso` checkpoint of `config`'s sizes carries
    (the released architecture switches plus the sizes config.yaml records)."""
    r, h = config.renderer, config.htbsr
    return {
        **RELEASED_FLAGS,
        "task_cls": "tasks.os_avatar.secc_img2plane_torso_task.SECC_Img2PlaneEG3D_TorsoTask",
        "triplane_hid_dim": r.feature_dim,
        "neural_rendering_resolution": r.resolution,
        "final_resolution": config.image_resolution,
        "num_samples_coarse": r.num_samples_coarse,
        "num_samples_fine": r.num_samples_fine,
        "box_warp": r.box_warp,
        "w_dim": h.w_dim,
        "htbsr_head_threshold": h.head_threshold,
        "torso_kp_num": h.torso.num_keypoints,
    }
