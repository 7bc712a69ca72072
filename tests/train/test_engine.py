"""The image stages on tiny models from the synthetic records: overfitting a fixed batch, kill-and-resume,
two-process torchrun (gloo), export -> `real3d animate --backend neural`, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from real3d.train.config import apply_overrides, preset
from real3d.train.engine import build_stage, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(stage: str, records, bfm, out, *extra):
    cfg = preset(stage, "tiny")
    return apply_overrides(
        cfg,
        [
            f"data.records={records}",
            f"bfm={bfm}",
            f"out={out}",
            "data.min_gap=5",
            "data.holdout_tail=0.25",
            "batch_size=2",
            "log_every=1",
            "val_every=0",
            "ckpt_every=0",
            "sample_every=0",
            *extra,
        ],
    )


def _batch(stage, cfg, n=2):
    from real3d.train.data import PairDataset
    from real3d.train.engine import _collate
    from real3d.train.records import RecordIndex

    ds = PairDataset(RecordIndex(cfg.data.records), cfg.data, stage.size)
    return _collate([ds[i] for i in (3, 30)[:n]])


def _overfit(stage_name, records_dir, bfm_dir, tmp_path, steps=40, stage=None):
    torch.manual_seed(0)
    cfg = _cfg(stage_name, records_dir, bfm_dir, tmp_path, "losses.self_every=0")
    if stage is None:
        stage, _, _ = build_stage(cfg, torch.device("cpu"))
    batch = _batch(stage, cfg)
    groups = stage.groups()
    opt = torch.optim.Adam([p for ps in groups.values() for p in ps], lr=3e-3, betas=(0.0, 0.99))
    l1 = []
    for step in range(steps):
        out = stage.generator_loss(batch, step + 1)  # step 0 would add the regularisers every time
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for ps in groups.values() for p in ps], 1.0)
        opt.step()
        l1.append(out.logs["l1"])
    return np.array(l1), stage, batch


def test_stage2_loss_falls_on_a_fixed_batch(records_dir, bfm_dir, tmp_path):
    l1, stage, batch = _overfit("stage2", records_dir, bfm_dir, tmp_path)
    assert l1[-5:].mean() < 0.6 * l1[:5].mean(), l1
    # the groups of stage 2, and its torso branch frozen
    assert set(stage.groups()) == {"i2p", "motion_adapter", "decoder", "superresolution"}
    assert not any(p.requires_grad for p in stage.generator.superresolution.torso_model.parameters())
    assert batch["src_head"].shape == (2, 3, 32, 32)


def test_stage3_trains_only_htbsr_and_its_loss_falls(records_dir, bfm_dir, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg("stage3", records_dir, bfm_dir, tmp_path)
    stage, gen, _ = build_stage(cfg, torch.device("cpu"))
    frozen = {k: v.clone() for k, v in gen.state_dict().items() if not k.startswith("superresolution.")}
    l1, stage, _ = _overfit("stage3", records_dir, bfm_dir, tmp_path, stage=stage)
    assert l1[-5:].mean() < 0.6 * l1[:5].mean(), l1
    assert set(stage.groups()) == {"superresolution"}
    # nothing outside HTB-SR has a gradient or changes (batch-norm statistics included: frozen parts run in eval)
    sd = stage.generator.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in frozen.items())
    assert all(p.grad is None for n, p in stage.generator.named_parameters() if not n.startswith("superresolution."))
    assert not stage.generator.cano_img2plane_backbone.training and stage.generator.superresolution.training


def test_validation_scores_frames_clips_and_the_ema(records_dir, bfm_dir, tmp_path):
    """Validation reports held-out frames (same identities) and held-out clips separately, for the live weights
    and the EMA, on the same pairs every time; the EMA's strip is written too."""
    extra = ("max_steps=4", "val_every=2", "val_batches=10", "ema=0.5", "data.val_clips=talk1", "discriminator=none")
    res = train(_cfg("stage2", records_dir, bfm_dir, tmp_path, *extra, "data.strip_clips=talk1"))
    assert [v["step"] for v in res.validation] == [2, 4]
    v0, v1 = res.validation
    for key in ("frames/psnr", "clips/psnr", "ema/frames/l1", "ema/clips/psnr", "ema/psnr", "ssim", "clips/ssim"):
        assert np.isfinite(v0[key]) and np.isfinite(v1[key]), key
    # the frozen-source baseline does not depend on the weights: same pairs early and late
    for key in ("baseline_l1", "frames/baseline_psnr", "clips/baseline_ssim", "ema/baseline_l1"):
        assert v0[key] == v1[key]
    assert v0["ema/l1"] != v0["l1"]
    # per clip held out entirely or shown in the strip: talk1 is both and the only one held out entirely
    assert [k for k in v1 if k.startswith("clip/")] == [
        f"clip/talk1/{k}" for k in ("l1", "psnr", "ssim", "baseline_l1", "baseline_psnr", "baseline_ssim")
    ]
    assert v1["clip/talk1/psnr"] == v1["clips/psnr"] and v1["ema/clip/talk1/l1"] == v1["ema/clips/l1"]
    # the strips show only the pairs of data.strip_clips: talk1's 4 of the 8 pairs (rows of source|target|pred)
    for name in ("val_00000004.png", "val_00000004_ema.png"):
        h, w = np.asarray(Image.open(tmp_path / "samples" / name)).shape[:2]
        assert h == 4 * (w // 3), name


def test_two_phase_switch_trains_only_the_sr_without_the_full_image_terms(records_dir, bfm_dir, tmp_path):
    cfg = _cfg("stage2", records_dir, bfm_dir, tmp_path, "schedule.two_phase=true", "schedule.start_adv=3")
    stage, _, _ = build_stage(cfg, torch.device("cpu"))
    stage.groups()
    assert all(stage.lr(g, 2) > 0 for g in ("i2p", "motion_adapter", "decoder", "superresolution"))
    assert [stage.lr(g, 3) for g in ("i2p", "motion_adapter", "decoder")] == [0.0, 0.0, 0.0]
    assert stage.lr("superresolution", 3) > 0
    batch = _batch(stage, cfg)
    before, after = stage.generator_loss(batch, 1).logs, stage.generator_loss(batch, 5).logs
    assert "l1" in before and "l1" not in after and "lip_l1" in after and "raw_l1" in after
    assert preset("stage2", "official").schedule.two_phase and not preset("stage2", "tiny").schedule.two_phase


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "logs" / "train-rank0.jsonl").read_text().splitlines()]
    return {r["step"]: r["g_loss"] for r in rows if "g_loss" in r}


def test_kill_and_resume_continues_with_the_same_losses(records_dir, bfm_dir, tmp_path):
    # D, R1, adv and the generator's EMA covered
    extra = ("max_steps=6", "schedule.d_start=2", "schedule.start_adv=3", "optim.r1_every=2", "ema=0.9")
    full = train(_cfg("stage2", records_dir, bfm_dir, tmp_path / "a", *extra))
    assert full.step == 6 and full.export is not None
    part = train(_cfg("stage2", records_dir, bfm_dir, tmp_path / "b", *extra), stop_after=3)
    assert part.step == 3 and part.export is None and part.checkpoint.name == "step_00000003"
    rest = train(_cfg("stage2", records_dir, bfm_dir, tmp_path / "b", *extra))
    assert rest.step == 6
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == [1, 2, 3, 4, 5, 6]  # continued at step 4
    for s in range(1, 7):
        assert b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-6), (s, a, b)
    _sigkill_and_resume(records_dir, bfm_dir, tmp_path / "c", extra, a)
    ck = json.loads((tmp_path / "b" / "checkpoints" / "latest.json").read_text())
    assert ck["step"] == 6
    files = {p.name for p in (tmp_path / "b" / "checkpoints" / ck["name"]).iterdir()}
    # the EMA continues the same average after the resume, and it is what the run exports
    from safetensors.torch import load_file

    ema_a, ema_b = (
        load_file(str(r / "checkpoints" / "step_00000006" / "generator_ema" / "model.safetensors"))
        for r in (tmp_path / "a", tmp_path / "b")
    )
    live_a = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000006" / "generator" / "model.safetensors"))
    exported = load_file(str(full.export / "model.safetensors"))
    for k, v in ema_a.items():
        assert torch.allclose(ema_b[k], v, rtol=1e-5, atol=1e-6), k
        assert torch.equal(exported[k], v), k
    assert any(not torch.equal(live_a[k], v) for k, v in ema_a.items())
    assert {
        "generator",
        "generator_ema",
        "discriminator.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "rng-rank0.json",
        "trainer.json",
    } <= files
    # the exported generator renders through `real3d animate --backend neural`
    _animate_with(full.export, bfm_dir, records_dir, tmp_path)


def _sigkill_and_resume(records_dir, bfm_dir, out: Path, extra, reference: dict[int, float]) -> None:
    """A real kill: SIGKILL the training process once its step-2 checkpoint exists; the next run resumes from the
    newest checkpoint and logs the reference run's losses from there on."""
    import signal
    import time

    cfg_args = [f"{k}={v}" for k, v in (("max_steps", 40), ("ckpt_every", 2), ("keep_ckpts", 50))]
    base = [a for a in _cfg_args(records_dir, bfm_dir, out, *extra) if not a.startswith("max_steps=")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "real3d.cli", "train", "stage2:tiny", *base, *cfg_args, "threads=1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = out / "checkpoints" / "step_00000002" / "trainer.json"
    deadline = time.time() + 300
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.is_file() and proc.returncode == -signal.SIGKILL
    killed_at = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert 2 <= killed_at < 6
    res = train(_cfg("stage2", records_dir, bfm_dir, out, *extra))
    assert res.step == 6
    rows = [json.loads(x) for x in (out / "logs" / "train-rank0.jsonl").read_text().splitlines()]
    resumed = [r for r in rows if r["step"] > killed_at][-(6 - killed_at) :]  # the lines of the resumed run
    assert [r["step"] for r in resumed] == list(range(killed_at + 1, 7))
    for r in resumed:
        assert r["g_loss"] == pytest.approx(reference[r["step"]], rel=1e-5, abs=1e-6), (r, reference)


def _cfg_args(records, bfm, out, *extra):
    return [
        f"data.records={records}",
        f"bfm={bfm}",
        f"out={out}",
        "data.min_gap=5",
        "data.holdout_tail=0.25",
        "batch_size=2",
        "log_every=1",
        "val_every=0",
        "sample_every=0",
        *extra,
    ]


def _animate_with(export: Path, bfm_dir, records_dir, tmp_path):
    import av
    from PIL import Image
    from skimage import data

    from real3d.cli import main

    src = tmp_path / "src.png"
    Image.fromarray(data.astronaut()).save(src)
    out = tmp_path / "out.mp4"
    clips = Path(json.loads((records_dir / "index.json").read_text())["clips"][0]["meta"]["source"])
    code = main(
        [
            "animate",
            str(src),
            "--video",
            str(clips),
            "--backend",
            "neural",
            "--torso-ckpt",
            str(export),
            "--bfm",
            str(bfm_dir),
            "--max-seconds",
            "0.4",
            "--no-visible-watermark",
            "-q",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (32, 32, 3)


def test_two_process_torchrun_keeps_replicas_identical(records_dir, bfm_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "real3d.cli",
        "train",
        "stage2:tiny",
        "--records",
        str(records_dir),
        "--bfm",
        str(bfm_dir),
        "--out",
        str(out),
        "max_steps=4",
        "batch_size=2",
        "log_every=1",
        "val_every=0",
        "ckpt_every=0",
        "data.min_gap=5",
        "threads=1",
        "schedule.d_start=0",
        "schedule.start_adv=2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    final = [json.loads((out / "logs" / f"final-rank{r}.json").read_text()) for r in (0, 1)]
    assert final[0]["step"] == final[1]["step"] == 4
    assert final[0]["generator_sha256"] == final[1]["generator_sha256"]
    assert final[0]["discriminator_sha256"] == final[1]["discriminator_sha256"]
    seen = []
    for r in (0, 1):
        rows = [json.loads(x) for x in (out / "logs" / f"train-rank{r}.jsonl").read_text().splitlines()]
        seen.append({i for row in rows for i in row["seen"]})
        assert len(rows) == 4
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # the ranks saw different samples
    ck = out / "checkpoints" / json.loads((out / "checkpoints" / "latest.json").read_text())["name"]
    assert (ck / "rng-rank0.json").is_file() and (ck / "rng-rank1.json").is_file()
    r0, r1 = (json.loads((ck / f"rng-rank{r}.json").read_text())["torch"] for r in (0, 1))
    assert r0 != r1


def test_cli_dry_run_and_finetune_from_a_checkpoint(records_dir, bfm_dir, tmp_path, capsys):
    from real3d.cli import main
    from real3d.weights.io import from_pretrained

    assert main(["train", "stage2:tiny", "--dry-run", "trainable=motion_adapter,superresolution"]) == 0
    text = capsys.readouterr().out
    assert '"stage": "stage2"' in text and "motion_adapter" in text and "\ni2p " not in text
    first = tmp_path / "first"
    assert (
        main(
            [
                "train",
                "stage2:finetune_tiny",
                "--records",
                str(records_dir),
                "--bfm",
                str(bfm_dir),
                "--out",
                str(first),
                "max_steps=2",
                "val_every=0",
                "ckpt_every=0",
                "data.min_gap=5",
            ]
        )
        == 0
    )
    base = from_pretrained(first / "export" / "generator")
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                "stage2:finetune_tiny",
                "--records",
                str(records_dir),
                "--bfm",
                str(bfm_dir),
                "--out",
                str(ft),
                "--init-from",
                str(first),
                "max_steps=3",
                "val_every=0",
                "ckpt_every=0",
                "data.min_gap=5",
                "--export-official",
                str(tmp_path / "official"),
            ]
        )
        == 0
    )
    tuned = from_pretrained(ft / "export" / "generator")
    sd0, sd1 = base.state_dict(), tuned.state_dict()
    # finetune trains the motion adapter, decoder and SR from the given weights; I2P stays as loaded
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0 if k.startswith("cano_img2plane_backbone."))
    assert any(not torch.equal(sd0[k], sd1[k]) for k in sd0 if k.startswith("secc_img2plane_backbone."))
    assert list((tmp_path / "official").glob("model_ckpt_steps_3.ckpt"))
    # the official layout loads back as the same generator
    from real3d.weights.convert import load_official_model

    back = load_official_model(tmp_path / "official")[0]
    assert all(torch.equal(back.state_dict()[k], v) for k, v in sd1.items())
    # and stage 3 fine-tunes from that official checkpoint folder (config.yaml + model_ckpt_steps_3.ckpt)
    s3 = tmp_path / "s3"
    assert (
        main(
            [
                "train",
                "stage3:finetune_tiny",
                "--records",
                str(records_dir),
                "--bfm",
                str(bfm_dir),
                "--out",
                str(s3),
                "--init-from",
                str(tmp_path / "official"),
                "max_steps=1",
                "val_every=0",
                "ckpt_every=0",
                "data.min_gap=5",
            ]
        )
        == 0
    )
    after = from_pretrained(s3 / "export" / "generator").state_dict()
    assert all(torch.equal(after[k], v) for k, v in sd1.items() if not k.startswith("superresolution."))
    assert any(not torch.equal(after[k], v) for k, v in sd1.items() if k.startswith("superresolution."))


def test_bf16_step_runs_under_autocast(records_dir, bfm_dir, tmp_path, monkeypatch):
    from real3d.models.real3d_portrait import Real3DPortrait
    from real3d.train.engine import bf16_native

    if not bf16_native(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16 (the engine would train in fp32)")
    cfg = _cfg("stage2", records_dir, bfm_dir, tmp_path, "precision=bf16")
    stage, _, _ = build_stage(cfg, torch.device("cpu"))
    seen = []
    forward = Real3DPortrait.forward

    def spy(self, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Real3DPortrait, "forward", spy)
    stage.groups()
    out = stage.generator_loss(_batch(stage, cfg), 1)
    out.loss.backward()
    assert seen == [torch.bfloat16] and torch.isfinite(out.loss)
    assert all(p.dtype == torch.float32 for p in stage.generator.parameters())  # weights stay fp32
    assert stage.generator.secc_img2plane_backbone.to_plane_cnn[0].weight.grad is not None
