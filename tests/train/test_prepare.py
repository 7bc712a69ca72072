"""`real3d prepare`: synthetic clips -> WebDataset-style shards + index; bad clips skipped with reasons;
resume; sharding; the static-background rule; the CLI."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from real3d.errors import InputError
from real3d.train import records as rec
from real3d.train.prepare import (
    PrepareConfig,
    clip_names,
    parse_shard,
    prepare,
    static_background,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_good_clips_written_bad_clips_skipped_with_reason(records_dir):
    index = rec.RecordIndex(records_dir)
    assert sorted(c.name for c in index.clips) == ["talk0", "talk1"]
    failed = {f["name"]: f["reason"] for f in index.failed}
    assert set(failed) == {"noface", "short"}
    assert "no face" in failed["noface"]
    assert "too short" in failed["short"] and "4 frames" in failed["short"]
    summary = json.loads((records_dir / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 2}
    assert summary["frames_written"] == 72


def test_records_round_trip(records_dir):
    index = rec.RecordIndex(records_dir)
    clip = index.clip("talk0")
    assert clip.num_frames == 36 and clip.meta["size"] == 64
    assert np.array(clip.meta["framing_matrix"]).shape == (2, 3)
    gt = index.image(clip, "000003", "gt.jpg")
    com = index.image(clip, "000003", "com.jpg")
    seg = index.image(clip, "000003", "seg.png", gray=True)
    assert gt.shape == com.shape == (64, 64, 3) and seg.shape == (64, 64)
    assert set(np.unique(seg)) <= set(range(6)) and (seg == 0).any() and (seg == 3).any()  # background, face skin
    # the composited target equals the frame on the person and the static background elsewhere
    person = seg > 0
    assert np.abs(com[person].astype(int) - gt[person].astype(int)).mean() < 4
    lms = index.array(clip, "000003", "lms")
    coeff = index.array(clip, "000003", "coeff")
    cam = index.array(clip, "000003", "cam")
    assert lms.shape == (478, 3) and lms.dtype == np.float32 and 10 < lms[:, :2].mean() < 54
    assert coeff.shape == (70,) and cam.shape == (25,)
    ident = index.array(clip, "clip", "id")
    assert ident.shape == (80,)
    # the head turns in the clip: the fitted yaw follows it
    yaws = np.array([index.array(clip, rec.frame_key(i), "coeff")[65] for i in range(36)])
    assert np.ptp(yaws) > 0.05


def test_shards_stream_as_webdataset_samples(records_dir):
    path = records_dir / "shards" / "talk1.tar"
    with tarfile.open(path) as t:
        names = t.getnames()
    assert names[0].startswith("talk1/clip.") and all(n.startswith("talk1/") for n in names)
    samples = list(rec.iter_samples(path))
    assert samples[0]["__key__"] == "talk1/clip" and {
        "meta.json",
        "bg.jpg",
        "id.npy",
    } <= set(samples[0])
    frames = samples[1:]
    assert len(frames) == 36 and frames[5]["__key__"] == "talk1/000005"
    assert set(frames[5]) == {
        "__key__",
        "gt.jpg",
        "com.jpg",
        "torso.jpg",
        "seg.png",
        "lms.npy",
        "coeff.npy",
        "cam.npy",
    }
    assert rec.decode_npy(frames[5]["lms.npy"]).shape == (478, 3)


def test_resume_skips_finished_and_failed_clips(records_dir, clips_dir, bfm_dir):
    before = (records_dir / "shards" / "talk0.tar").stat().st_mtime_ns
    s = prepare([clips_dir], records_dir, PrepareConfig(bfm=bfm_dir, size=64, min_frames=16))
    assert s.counts() == {"resumed": 2, "failed-before": 2}
    assert (records_dir / "shards" / "talk0.tar").stat().st_mtime_ns == before


def test_shard_splits_the_clips(clips_dir, bfm_dir, tmp_path):
    cfg = PrepareConfig(bfm=bfm_dir, size=32, min_frames=16, max_frames=16, shard=(1, 2))
    s = prepare([clips_dir / "talk0.mp4", clips_dir / "talk1.mp4"], tmp_path, cfg)
    assert [c.name for c in s.clips] == ["talk1"] and s.clips[0].status == "done"
    assert (tmp_path / "summary-1-of-2.json").is_file()
    assert [c.name for c in rec.RecordIndex(tmp_path).clips] == ["talk1"]
    assert rec.RecordIndex(tmp_path).clips[0].num_frames == 16


def test_static_background_official_rule():
    """A square walks across a gradient: pixels it ever leaves by > margin get the true background."""
    h = w = 40
    bg = np.stack(np.meshgrid(np.arange(w) * 6, np.arange(h) * 6), -1)
    bg = np.concatenate([bg, np.full((h, w, 1), 100)], -1).astype(np.uint8)
    frames, labels = [], []
    for x in (2, 14, 26):
        lab = np.zeros((h, w), np.uint8)
        lab[10:30, x : x + 12] = 3
        img = bg.copy()
        img[lab > 0] = 255
        frames.append(img)
        labels.append(lab)
    out = static_background(frames, labels, margin=3)
    assert np.array_equal(out, bg)


def test_names_and_shard_parsing(tmp_path):
    a, b = tmp_path / "x" / "clip 1.mp4", tmp_path / "y" / "clip 1.mp4"
    names = clip_names([a, b, tmp_path / "z.mp4"])
    assert names[2] == "z" and names[0] != names[1] and names[0].startswith("clip_1_")
    assert parse_shard("2/8") == (2, 8)
    with pytest.raises(InputError, match="I/N"):
        parse_shard("8/8")


def test_missing_inputs_are_clear_errors(tmp_path, bfm_dir):
    with pytest.raises(InputError, match="no videos found"):
        prepare([tmp_path], tmp_path / "out", PrepareConfig(bfm=bfm_dir))
    with pytest.raises(InputError, match="neither a video"):
        prepare([tmp_path / "missing.mp4"], tmp_path / "out", PrepareConfig(bfm=bfm_dir))


def test_hubert_and_f0_of_the_clip_audio(tmp_path, bfm_dir):
    """With --hubert (a local snapshot; tiny random weights here) and --f0 the clip sample carries both tracks."""
    from skimage import data

    from real3d.config.hubert import HubertConfig
    from real3d.io.audio import Audio
    from real3d.io.writer import VideoWriter
    from real3d.models.hubert import Hubert, save_hubert

    from .conftest import _moving

    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 150 * t) * (t < 0.5)).astype(np.float32)  # 0.5 s voiced, 0.5 s silence
    clip = tmp_path / "voiced.mp4"
    with VideoWriter(clip, audio=Audio(tone, 16000), quiet=True) as w:
        for f in _moving(data.astronaut(), 25, 6.0, 4.0):
            w.write(f)
    save_hubert(Hubert(HubertConfig.tiny()).eval(), tmp_path / "hubert")
    out = tmp_path / "rec"
    s = prepare([clip], out, PrepareConfig(bfm=bfm_dir, size=32, min_frames=16, hubert=tmp_path / "hubert", f0=True))
    assert s.counts() == {"done": 1}
    samples = list(rec.iter_samples(out / "shards" / "voiced.tar"))
    hub = rec.decode_npy(samples[0]["hubert.npy"])
    f0 = rec.decode_npy(samples[0]["f0.npy"])
    assert hub.shape[1] == HubertConfig.tiny().hidden_size and 48 <= hub.shape[0] <= 56  # 50 Hz, padded to x8
    assert f0.shape == (hub.shape[0],)
    assert 130 < np.median(f0[5:20]) < 170 and np.all(f0[35:45] == 0)  # the tone, then silence
    assert json.loads(samples[0]["meta.json"])["audio"] == "hubert+f0"


def test_frames_without_a_face_take_the_nearest_tracked_frame(clips_dir, bfm_dir, tmp_path):
    """Two noise frames (10 and 11 of 36, under the 10 % limit) get the landmarks and classes of the nearest
    tracked frame (9 and 12); their own pixels are kept."""
    import av
    from skimage import data

    from .conftest import _moving, _write_clip

    frames = _moving(data.astronaut(), 36, 12.0, 10.0)
    rng = np.random.default_rng(1)
    for i in (10, 11):
        frames[i] = rng.integers(0, 255, frames[i].shape, dtype=np.uint8)
    _write_clip(tmp_path / "gaps.mp4", frames)
    assert len(list(av.open(str(tmp_path / "gaps.mp4")).decode(video=0))) == 36
    s = prepare([tmp_path / "gaps.mp4"], tmp_path / "rec", PrepareConfig(bfm=bfm_dir, size=64, min_frames=16))
    assert s.counts() == {"done": 1}
    index = rec.RecordIndex(tmp_path / "rec")
    clip = index.clip("gaps")
    assert clip.meta["lost_frames"] == 2
    for lost, near in ((10, 9), (11, 12)):
        a, b = rec.frame_key(lost), rec.frame_key(near)
        assert np.array_equal(index.array(clip, a, "lms"), index.array(clip, b, "lms"))
        assert np.array_equal(index.image(clip, a, "seg.png", gray=True), index.image(clip, b, "seg.png", gray=True))
        assert np.abs(index.image(clip, a, "gt.jpg").astype(int) - index.image(clip, b, "gt.jpg")).mean() > 30


def test_a_truncated_clip_is_skipped_with_its_reason(clips_dir, bfm_dir, tmp_path):
    """An mp4 cut short (its index lost) is skipped with the reader's reason; nothing is written for it."""
    data = (clips_dir / "talk0.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    s = prepare([tmp_path / "cut.mp4"], tmp_path / "rec", PrepareConfig(bfm=bfm_dir, size=64, min_frames=16))
    assert s.counts() == {"skipped": 1}
    assert not (tmp_path / "rec" / "shards" / "cut.tar").exists()
    reason = rec.RecordIndex(tmp_path / "rec").failed[0]["reason"]
    assert reason.startswith("cannot read ") and "cut.mp4 as a video" in reason and "pass a playable video" in reason
