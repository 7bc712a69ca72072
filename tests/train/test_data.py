"""Pair datasets over the records: the official target rule, held-out frames, determinism, the resumable
sampler, the lip box; and `real3d prepare` through the CLI."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from real3d.errors import InputError
from real3d.train.data import DataConfig, PairDataset, ResumableSampler, ValidationPairs, draw_target, lip_box
from real3d.train.records import RecordIndex

pytestmark = pytest.mark.usefixtures("one_thread")


def test_target_rule_keeps_the_official_gap():
    rng = random.Random(0)
    for _ in range(300):
        n, src = 200, rng.randrange(200)
        tgt = draw_target(rng, n, src, 50)
        assert abs(tgt - src) >= min(50, max((n - 1 - tgt) // 2, tgt // 2))
    assert draw_target(rng, 1, 0, 50) == 0


def test_pairs_are_deterministic_held_out_and_sized(records_dir):
    index = RecordIndex(records_dir)
    cfg = DataConfig(records=str(records_dir), holdout_tail=0.25, min_gap=5)
    ds = PairDataset(index, cfg, 32)
    assert len(ds) == 2 * 27  # 36 frames per clip, the last 9 held out
    a, b = ds[7], ds[7]
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["tgt_com"], b["tgt_com"])
    assert a["src_head"].shape == (3, 32, 32) and a["src_seg"].shape == (32, 32) and a["id"].shape == (80,)
    assert a["src_head"].min() >= -1 and a["src_head"].max() <= 1
    # the head image is -1 exactly outside the head classes
    outside = a["src_head_mask"][0] == 0
    assert torch.all(a["src_head"][:, outside] == -1)
    targets = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[7]
        src, tgt = item["index"][1:].tolist()
        assert src == 7 and tgt < 27 and abs(tgt - src) >= 5
        targets.add(tgt)
    assert len(targets) > 1  # a new target each epoch
    val = ValidationPairs(index, cfg, 32)
    assert len(val) == 2 * 4
    assert all(27 <= val[i]["index"][2] < 36 and val[i]["index"][1] == 0 for i in range(len(val)))


def test_val_clips_are_excluded_from_training(records_dir):
    cfg = DataConfig(records=str(records_dir), val_clips=("talk1",), holdout_tail=0.0)
    ds = PairDataset(RecordIndex(records_dir), cfg, 32)
    assert len(ds) == 36 and {c.name for c, _ in ds.train} == {"talk0"}
    val = ValidationPairs(RecordIndex(records_dir), cfg, 32)
    assert len(val) == 4 and all(bool(val[i]["unseen"]) for i in range(4))
    # a whole held-out clip keeps the training gap from its source frame 0 (never the pair 0 -> 0)
    assert all(val[i]["index"][2] >= min(cfg.min_gap, 35 // 2) for i in range(4))


def test_strip_clips_must_name_clips_with_held_out_frames(records_dir):
    cfg = DataConfig(records=str(records_dir), strip_clips=("talk1", "nobody"))
    with pytest.raises(InputError, match="data.strip_clips: nobody not among .*talk0, talk1"):
        ValidationPairs(RecordIndex(records_dir), cfg, 32)
    val = ValidationPairs(RecordIndex(records_dir), DataConfig(records=str(records_dir), strip_clips=("talk1",)), 32)
    assert [val.clip_name(i) for i in range(len(val))] == ["talk0"] * 4 + ["talk1"] * 4


def test_resumable_sampler_shards_and_restarts_mid_epoch():
    data = list(range(20))
    s0, s1 = (ResumableSampler(data, 2, r, seed=3, batch_size=2) for r in (0, 1))
    for s in (s0, s1):
        s.set_epoch(1)
    i0, i1 = list(s0), list(s1)
    assert not set(i0) & set(i1) and len(i0) == len(i1) == 10
    s0.start_batch = 3
    assert list(s0) == i0[6:]
    assert s0.batches_per_epoch() == 5


def test_lip_box_is_a_square_inside_the_image():
    from real3d.face import topology as topo

    lms = np.zeros((478, 3), np.float32)
    lms[list(topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER), :2] = [[100, 200]]
    lms[61, :2], lms[291, :2] = [80, 200], [120, 200]  # mouth corners
    box = lip_box(lms, 64, 64 / 256)
    x0, y0, x1, y1 = box
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(2 * 1.2 * 5.0)
    assert (x0 + x1) / 2 == pytest.approx(25.0) and (y0 + y1) / 2 == pytest.approx(50.0)
    lms[list(topo.OUTER_LIP_UPPER + topo.OUTER_LIP_LOWER), :2] = [[250, 250]]
    x0, y0, x1, y1 = lip_box(lms, 64, 64 / 256)
    assert x1 <= 64 and y1 <= 64 and x0 >= 0


def test_prepare_cli_reports_and_rebuilds_the_index(clips_dir, bfm_dir, tmp_path, capsys):
    from real3d.cli import main

    out = tmp_path / "rec"
    lst = tmp_path / "list.txt"
    lst.write_text(f"{clips_dir / 'talk0.mp4'}\n{clips_dir / 'noface.mp4'}\n")
    assert (
        main(
            [
                "prepare",
                str(lst),
                "-o",
                str(out),
                "--bfm",
                str(bfm_dir),
                "--size",
                "32",
                "--min-frames",
                "16",
                "--max-frames",
                "16",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "done 1" in text and "skipped noface: no face" in text
    (out / "index.json").unlink()
    assert main(["prepare", str(lst), "-o", str(out), "--index-only"]) == 0
    assert "1 clips, 1 skipped" in capsys.readouterr().out
    assert [c.name for c in RecordIndex(out).clips] == ["talk0"]
