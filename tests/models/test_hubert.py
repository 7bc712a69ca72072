"""HuBERT: every block against a hand-written float64 reference (both layer-norm variants), the published
configuration and its parameter count, the official length/chunking rules, input normalisation, and the
Hugging Face snapshot layout (save/load round trips, prefixes, parametrised weight-norm keys, errors)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from real3d.config.hubert import HF_MODEL_ID, HubertConfig, config_from_hf, config_to_hf
from real3d.errors import CheckpointError, DependencyError, InputError
from real3d.models.hubert import (
    Hubert,
    hubert_features,
    load_hubert,
    normalize_waveform,
    official_num_frames,
    remap_hf_state_dict,
    save_hubert,
)

# The published facebook/hubert-large-ls960-ft config.json (architecture keys, as on the model card's repo).
PUBLISHED_LARGE_FT = {
    "architectures": ["HubertForCTC"],
    "model_type": "hubert",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "conv_bias": True,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_feat_extract_layers": 7,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": True,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "vocab_size": 32,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "feat_proj_dropout": 0.1,
    "layerdrop": 0.1,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: thread hand-offs dominate


def _randomize(model: Hubert, seed: int = 0) -> Hubert:
    """Random values everywhere (norm gains/biases and weight-norm g included), so a wrong axis shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or name.endswith("weight_g"):
                p.copy_(
                    1.0 + 0.3 * torch.randn(p.shape, generator=g)
                    if name.endswith(("weight", "weight_g"))
                    else 0.2 * torch.randn(p.shape, generator=g)
                )
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return model.eval()


def _tiny(seed: int = 0, **changes) -> Hubert:
    torch.manual_seed(seed)
    return _randomize(Hubert(dataclasses.replace(HubertConfig.tiny(), **changes)), seed)


# ----------------------------------------------------------------------------- hand-written reference
def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _layer_norm(x, w, b, eps):  # over the last axis
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _conv1d(x, w, b, stride=1, padding=0, groups=1):
    """x [C,N], w [O,C/g,K] -> [O,T] by explicit windows."""
    x = torch.nn.functional.pad(x, (padding, padding))
    k = w.shape[2]
    win = x.unfold(1, k, stride)  # [C,T,K]
    cin, cout = x.shape[0] // groups, w.shape[0] // groups
    outs = []
    for gi in range(groups):
        xs = win[gi * cin : (gi + 1) * cin]  # [cin,T,K]
        ws = w[gi * cout : (gi + 1) * cout]  # [cout,cin,K]
        outs.append(torch.einsum("ctk,ock->ot", xs, ws))
    y = torch.cat(outs, 0)
    return y if b is None else y + b[:, None]


def _reference(sd: dict, cfg: HubertConfig, wav: torch.Tensor) -> torch.Tensor:
    """Float64 HuBERT forward for one waveform [N] -> [T,H], written from the paper/HF description."""
    sd = {k: v.double() for k, v in sd.items()}
    eps = cfg.layer_norm_eps
    x = wav.double()[None]  # [1,N]
    for i in range(len(cfg.conv_dim)):
        p = f"feature_extractor.conv_layers.{i}."
        x = _conv1d(x, sd[p + "conv.weight"], sd.get(p + "conv.bias"), stride=cfg.conv_stride[i])
        if cfg.feat_extract_norm == "layer":
            x = _layer_norm(x.T, sd[p + "layer_norm.weight"], sd[p + "layer_norm.bias"], 1e-5).T
        elif i == 0:  # GroupNorm with one channel per group: normalise each channel over time
            mu, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
            gain, shift = sd[p + "layer_norm.weight"][:, None], sd[p + "layer_norm.bias"][:, None]
            x = (x - mu) / torch.sqrt(var + 1e-5) * gain + shift
        x = _gelu(x)
    h = x.T  # [T,512]
    if cfg.feat_proj_layer_norm:
        h = _layer_norm(h, sd["feature_projection.layer_norm.weight"], sd["feature_projection.layer_norm.bias"], eps)
    h = h @ sd["feature_projection.projection.weight"].T + sd["feature_projection.projection.bias"]
    # positional conv: weight norm per kernel tap, same padding, drop the last frame for even kernels
    v, gain = sd["encoder.pos_conv_embed.conv.weight_v"], sd["encoder.pos_conv_embed.conv.weight_g"]
    w = torch.stack([gain.flatten()[k] * v[:, :, k] / v[:, :, k].pow(2).sum().sqrt() for k in range(v.shape[2])], 2)
    k = cfg.num_conv_pos_embeddings
    pos = _conv1d(
        h.T, w, sd["encoder.pos_conv_embed.conv.bias"], padding=k // 2, groups=cfg.num_conv_pos_embedding_groups
    )
    pos = pos[:, : h.shape[0]]
    h = h + _gelu(pos).T
    ln = lambda t, name: _layer_norm(t, sd[name + ".weight"], sd[name + ".bias"], eps)  # noqa: E731
    lin = lambda t, name: t @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731

    def attention(t, p):
        nh, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        q, kk, vv = lin(t, p + "q_proj"), lin(t, p + "k_proj"), lin(t, p + "v_proj")
        heads = []
        for i in range(nh):
            s = q[:, i * d : (i + 1) * d] @ kk[:, i * d : (i + 1) * d].T / math.sqrt(d)
            a = torch.exp(s - s.max(1, keepdim=True).values)
            heads.append((a / a.sum(1, keepdim=True)) @ vv[:, i * d : (i + 1) * d])
        return lin(torch.cat(heads, 1), p + "out_proj")

    def ff(t, p):
        return lin(_gelu(lin(t, p + "feed_forward.intermediate_dense")), p + "feed_forward.output_dense")

    if not cfg.do_stable_layer_norm:
        h = ln(h, "encoder.layer_norm")
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layers.{i}."
        if cfg.do_stable_layer_norm:
            h = h + attention(ln(h, p + "layer_norm"), p + "attention.")
            h = h + ff(ln(h, p + "final_layer_norm"), p)
        else:
            h = ln(h + attention(h, p + "attention."), p + "layer_norm")
            h = ln(h + ff(h, p), p + "final_layer_norm")
    return ln(h, "encoder.layer_norm") if cfg.do_stable_layer_norm else h


@pytest.mark.parametrize(
    "changes",
    [
        {},  # large-model layout: layer-norm conv stack, pre-LN (stable) transformer, final LN
        {"feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False},  # base layout
        {"feat_proj_layer_norm": False, "num_conv_pos_embeddings": 7},  # odd kernel: nothing dropped
    ],
)
def test_forward_matches_hand_written_reference(changes):
    model = _tiny(**changes).double()
    wav = torch.randn(1, 2400, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = model(wav)
    ref = _reference(model.state_dict(), model.config, wav[0])
    assert out.last_hidden_state.shape == (1, 7, 16) == (1, *ref.shape)
    assert out.extract_features.shape == (1, 7, 8)
    assert torch.allclose(out.last_hidden_state[0], ref, atol=1e-10, rtol=1e-9)
    assert ref.std() > 0.1  # a real signal, not a collapsed one


def test_each_block_against_reference():
    model = _tiny(1).double()
    sd = {k: v.double() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    # conv layer (conv -> LayerNorm over channels -> GELU)
    x = torch.randn(1, 8, 40, generator=g, dtype=torch.float64)
    p = "feature_extractor.conv_layers.3."
    ref = _gelu(
        _layer_norm(
            _conv1d(x[0], sd[p + "conv.weight"], sd[p + "conv.bias"], stride=2).T,
            sd[p + "layer_norm.weight"],
            sd[p + "layer_norm.bias"],
            1e-5,
        )
    ).T
    assert torch.allclose(model.feature_extractor.conv_layers[3](x)[0], ref, atol=1e-12)
    # positional conv with weight norm (g differs from ||v||, so the norm axis matters)
    pc = model.encoder.pos_conv_embed.conv
    assert pc.weight_g.shape == (1, 1, 8) and pc.weight_v.shape == (16, 4, 8)
    w = pc.weight()
    assert torch.allclose(w[:, :, 2].norm(), pc.weight_g[0, 0, 2].abs(), atol=1e-12)
    h = torch.randn(1, 10, 16, generator=g, dtype=torch.float64)
    pos = model.encoder.pos_conv_embed(h)
    ref_pos = _gelu(_conv1d(h[0].T, w, pc.bias, padding=4, groups=4)[:, :10]).T
    assert torch.allclose(pos[0], ref_pos, atol=1e-12)
    # attention: softmax(q k^T / sqrt(d)) v per head
    att = model.encoder.layers[0].attention
    q, k, v = att.q_proj(h[0]), att.k_proj(h[0]), att.v_proj(h[0])
    sl = [slice(i * 8, (i + 1) * 8) for i in range(2)]
    heads = [torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(8), -1) @ v[:, s] for s in sl]
    assert torch.allclose(att(h)[0], att.out_proj(torch.cat(heads, 1)), atol=1e-12)


def test_published_config_and_parameter_count():
    cfg = config_from_hf(PUBLISHED_LARGE_FT)
    assert cfg == HubertConfig.large_ls960_ft()
    assert (cfg.total_stride, cfg.receptive_field) == (320, 400)
    with torch.device("meta"):
        model = Hubert(cfg)
    conv = 512 * 10 + 512 + 1024 + 4 * (512 * 512 * 3 + 512 + 1024) + 2 * (512 * 512 * 2 + 512 + 1024)
    proj = 1024 + 512 * 1024 + 1024
    pos = 1024 * 64 * 128 + 128 + 1024
    layer = 4 * (1024 * 1024 + 1024) + 2 * 2048 + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)
    assert sum(p.numel() for p in model.parameters()) == conv + proj + pos + 24 * layer + 2048 + 1024 == 315_438_720
    keys = set(model.state_dict())
    assert "encoder.pos_conv_embed.conv.weight_g" in keys and "masked_spec_embed" in keys
    assert "encoder.layers.23.feed_forward.output_dense.weight" in keys and len(keys) == 422


def test_config_from_hf_defaults_and_rejections():
    base = config_from_hf({"model_type": "hubert"})  # HF defaults = hubert-base
    assert (
        base.hidden_size,
        base.num_hidden_layers,
        base.feat_extract_norm,
        base.do_stable_layer_norm,
        base.conv_bias,
    ) == (768, 12, "group", False, False)
    assert config_from_hf(config_to_hf(HubertConfig.tiny())) == HubertConfig.tiny()
    assert not config_from_hf({**PUBLISHED_LARGE_FT, "mask_time_prob": 0.0}).masked_spec_embed
    with pytest.raises(CheckpointError, match="wav2vec2"):
        config_from_hf({"model_type": "wav2vec2"})
    with pytest.raises(CheckpointError, match="hidden_act"):
        config_from_hf({**PUBLISHED_LARGE_FT, "hidden_act": "relu"})
    with pytest.raises(CheckpointError, match="conv_pos_batch_norm"):
        config_from_hf({**PUBLISHED_LARGE_FT, "conv_pos_batch_norm": True})


# ----------------------------------------------------------------------------- lengths and chunking
@pytest.mark.parametrize("n", [400, 719, 720, 16000, 16080, 16079, 48000])
def test_frame_counts(n):
    cfg = HubertConfig.tiny()
    assert cfg.num_frames(n) == (n - 400) // 320 + 1
    assert official_num_frames(n) == (n - 80) // 320


def test_hubert_features_lengths_padding_and_chunks():
    model = _tiny(2)
    g = torch.Generator().manual_seed(7)
    wav = torch.randn(10_000, generator=g).numpy() * 0.1
    # one clip: identical to the model on the normalised waveform, cut to (N-80)//320 and padded to 8
    feats = hubert_features(model, wav)
    t = (10_000 - 80) // 320
    assert feats.shape == (32, 16) and t == 31
    direct = model(normalize_waveform(wav)[None]).last_hidden_state[0]
    assert torch.allclose(feats[:t], direct[:t], atol=1e-6)
    assert torch.count_nonzero(feats[t:]) == 0
    # clips of 10 frames (3200 samples + 80 overlap): each clip is an independent forward pass
    x = normalize_waveform(wav)
    chunked = hubert_features(model, wav, clip_frames=10)
    assert chunked.shape == (32, 16)
    for i in range(3):
        clip = model(x[None, 3200 * i : 3200 * i + 3280]).last_hidden_state[0]
        assert clip.shape[0] == 10
        assert torch.allclose(chunked[10 * i : 10 * i + 10], clip, atol=1e-6)
    tail = model(x[None, 9600:]).last_hidden_state[0]  # 400 samples: one frame
    assert torch.allclose(chunked[30:31], tail, atol=1e-6)
    assert not torch.allclose(chunked[5:15], feats[5:15], atol=1e-3)  # context really is per clip
    # batching full clips gives the same numbers
    assert torch.allclose(hubert_features(model, wav, clip_frames=10, batch_size=3), chunked, atol=1e-6)
    # a tail shorter than 400 samples is dropped and its frame zero-filled, as in the official code
    short_tail = hubert_features(model, wav[:6_700], clip_frames=10)  # 2 clips + 300 samples
    assert official_num_frames(6_700) == 20 and short_tail.shape == (24, 16)
    assert torch.count_nonzero(short_tail[20:]) == 0


def test_normalisation_matches_processor_and_is_gain_invariant():
    wav = np.sin(np.linspace(0, 300, 5000)).astype(np.float32) * 0.3 + 0.05
    x = normalize_waveform(wav)
    ref = (wav.astype(np.float64) - wav.mean(dtype=np.float64)) / np.sqrt(wav.var(dtype=np.float64) + 1e-7)
    assert np.allclose(x.numpy(), ref, atol=1e-6)
    model = _tiny(3)
    assert torch.allclose(hubert_features(model, wav), hubert_features(model, 4.0 * wav - 0.2), atol=1e-4)
    with pytest.raises(InputError, match="shorter than one HuBERT frame"):
        hubert_features(model, wav[:399])
    with pytest.raises(InputError, match="no samples"):
        normalize_waveform(np.zeros(0, np.float32))


# ----------------------------------------------------------------------------- snapshots
def test_save_load_round_trip_hf_layout(tmp_path):
    model = _tiny(4)
    wav = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1))
    save_hubert(model, tmp_path / "snap")
    data = json.loads((tmp_path / "snap" / "config.json").read_text())
    assert data["model_type"] == "hubert" and data["do_stable_layer_norm"] is True
    loaded = load_hubert(tmp_path / "snap")
    assert not loaded.training and loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(loaded(wav).last_hidden_state, model(wav).last_hidden_state)


def test_load_ctc_snapshot_with_prefix_head_and_bin(tmp_path):
    """A HubertForCTC-style pytorch_model.bin: `hubert.` prefix, an lm_head, and the weight-norm keys as
    recent transformers write them (parametrizations.weight.original0/1)."""
    model = _tiny(5)
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("conv.weight_g", "conv.parametrizations.weight.original0")
        k = k.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        sd["hubert." + k] = v.clone()
    sd["lm_head.weight"], sd["lm_head.bias"] = torch.randn(32, 16), torch.zeros(32)
    d = tmp_path / "ctc"
    d.mkdir()
    torch.save(sd, d / "pytorch_model.bin")
    (d / "config.json").write_text(json.dumps({**config_to_hf(model.config), "architectures": ["HubertForCTC"]}))
    loaded = load_hubert(d)
    wav = torch.randn(1, 1000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded(wav).last_hidden_state, model(wav).last_hidden_state)
    assert set(remap_hf_state_dict(sd)) == set(model.state_dict())
    # hub-cache layout: models--facebook--.../snapshots/<hash>/
    cache = tmp_path / "models--facebook--hubert-large-ls960-ft"
    save_hubert(model, cache / "snapshots" / "abc123", prefix="hubert.")
    assert torch.equal(load_hubert(cache)(wav).last_hidden_state, model(wav).last_hidden_state)


def test_mask_embedding_follows_the_file(tmp_path):
    model = _tiny(7)  # has masked_spec_embed (mask_time_prob 0.05 in its config.json)
    save_hubert(model, tmp_path / "s")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tmp_path / "s" / "model.safetensors"))
    del sd["masked_spec_embed"]
    save_file(sd, str(tmp_path / "s" / "model.safetensors"))
    loaded = load_hubert(tmp_path / "s")
    assert not loaded.config.masked_spec_embed and not hasattr(loaded, "masked_spec_embed")
    wav = torch.randn(1, 800, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(wav).last_hidden_state, model(wav).last_hidden_state)


@pytest.mark.slow
def test_large_random_init_forward():
    """The published architecture end to end (315 M random weights, ~1.3 GB): 1 s -> 49 frames of 1024."""
    torch.manual_seed(0)
    model = Hubert(HubertConfig.large_ls960_ft()).eval()
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with torch.no_grad():
        out = model(normalize_waveform(wav)[None])
    assert out.last_hidden_state.shape == (1, 49, 1024) and torch.isfinite(out.last_hidden_state).all()
    ln = out.last_hidden_state[0]  # final LayerNorm (gain 1, bias 0 at init): zero mean, unit variance
    assert torch.allclose(ln.mean(-1), torch.zeros(49), atol=1e-4)
    feats = hubert_features(model, wav)
    assert feats.shape == (56, 1024) and torch.allclose(feats[:49], ln, atol=1e-4)
    assert torch.count_nonzero(feats[49:]) == 0


def test_missing_and_mismatched_snapshots(tmp_path):
    with pytest.raises(DependencyError, match=HF_MODEL_ID) as err:
        load_hubert(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DependencyError, match="config.json"):
        load_hubert(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(config_to_hf(HubertConfig.tiny())))
    with pytest.raises(DependencyError, match="model.safetensors"):
        load_hubert(tmp_path / "empty")
    model = _tiny(6)
    save_hubert(model, tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    (tmp_path / "other" / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_hubert(tmp_path / "other")
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["encoder.extra.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "other" / "model.safetensors"))
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_hubert(tmp_path / "other")


@pytest.mark.parametrize("stable", [True, False])
def test_matches_transformers_when_it_is_installed(tmp_path, stable):
    """Cross-check with Hugging Face's own implementation (not a dependency: skipped without it). Measured
    with transformers 4.57.1: max difference 4.5e-6 at the published large config, 1e-6 on these tiny ones."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=32,
        feat_extract_norm="layer" if stable else "group",
        do_stable_layer_norm=stable,
        conv_bias=stable,
    )
    hf = transformers.HubertForCTC(cfg).eval()
    with torch.no_grad():  # non-default norms and biases, so that every parameter matters
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "layer_norm.weight" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    x = normalize_waveform(torch.randn(16000))[None]
    with torch.no_grad():
        ref = hf.hubert(x).last_hidden_state
        got = load_hubert(tmp_path)(x).last_hidden_state
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
