"""Job store (recovery after a restart, queue limit, cancel), upload sniffing and client options, in process."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict

import pytest

from real3d.errors import InputError
from real3d.serve.jobs import Job, JobNotFound, JobStore, JobStoreConfig, QueueFull
from real3d.serve.media import MediaTooLong, NotMedia, place_upload
from real3d.serve.options import OPTION_TYPES, build_animate_options, parse_options
from real3d.serve.server import ServeConfig, is_loopback, resolve_token


def _job(root, job_id, state, attempts=0, result=None, output=False, temp=False):
    d = root / job_id
    (d / "inputs").mkdir(parents=True)
    job = Job(id=job_id, state=state, options={"seed": 1}, inputs={}, created=time.time(), attempts=attempts)
    (d / "job.json").write_text(json.dumps(asdict(job)))
    if result is not None:
        (d / "result.json").write_text(json.dumps(result))
    if output:
        (d / "output.mp4").write_bytes(b"mp4")
    if temp:
        (d / ".output.abc.part.mp4").write_bytes(b"half")
    return d


def test_recovery_after_a_restart(tmp_path):
    ids = [f"{i:032x}" for i in range(6)]
    _job(tmp_path, ids[0], "queued")
    _job(tmp_path, ids[1], "running", attempts=1, temp=True)  # cut once: re-run
    _job(tmp_path, ids[2], "running", attempts=2, temp=True)  # cut on its last attempt: failed with the reason
    _job(
        tmp_path, ids[3], "running", attempts=1, result={"state": "done", "frames": 7}, output=True
    )  # ended just before
    _job(tmp_path, ids[4], "done", attempts=1, output=True)
    (tmp_path / ids[5] / "inputs").mkdir(parents=True)  # an upload that never became a job
    store = JobStore(JobStoreConfig(root=tmp_path, max_attempts=2))
    store._recover()
    states = {j.id: j for j in store.jobs()}
    assert states[ids[0]].state == "queued" and states[ids[1]].state == "queued"
    assert "interrupted by a server restart" in states[ids[1]].note
    assert not (tmp_path / ids[1] / ".output.abc.part.mp4").exists()
    assert states[ids[2]].state == "failed"
    assert states[ids[2]].error == "interrupted by a server restart (after 2 attempts); submit it again"
    assert states[ids[3]].state == "done" and states[ids[3]].frames == 7
    assert states[ids[4]].state == "done"
    assert ids[5] not in states and not (tmp_path / ids[5]).exists()
    assert store._queue == [ids[0], ids[1]]
    on_disk = json.loads((tmp_path / ids[2] / "job.json").read_text())
    assert on_disk["state"] == "failed" and "server restart" in on_disk["error"]
    assert store.output_path(ids[4]) == tmp_path / ids[4] / "output.mp4"
    assert store.output_path(ids[1]) is None  # nothing is served before a job is done


def test_queue_limit_cancel_and_ids(tmp_path):
    store = JobStore(JobStoreConfig(root=tmp_path, max_queued=2))
    store.root.mkdir(exist_ok=True)  # no start(): nothing runs, the queue only fills
    made = []
    for _ in range(2):
        job_id, inputs = store.new_upload()
        (inputs / "source.png").write_bytes(b"x")
        made.append(store.submit(job_id, {}, {"source": "source.png"}).id)
    with pytest.raises(QueueFull, match="queue is full"):
        store.new_upload()
    assert store.status(made[1])["queue_position"] == 1
    assert store.cancel(made[0]).state == "cancelled"
    assert store.status(made[1])["queue_position"] == 0
    job_id, inputs = store.new_upload()  # room again
    store.discard(job_id)
    assert not (tmp_path / job_id).exists()
    for bad in ("../etc", "0" * 31, "A" * 32, "0" * 32):
        with pytest.raises(JobNotFound):
            store.get(bad)


def test_place_upload_sniffs_content(media, tmp_path):
    def up(name, role, **kw):
        dst = tmp_path / f"{role}.upload"
        shutil.copyfile(media / name, dst)
        return place_upload(dst, role, "client name.bin", **kw)

    info = up("astronaut.png", "source")
    assert info.path.name == "source.png" and info.kind == "image"
    info = up("hello.wav", "audio", max_seconds=60)
    assert info.path.name == "audio.wav" and info.kind == "audio" and 0.3 < info.seconds < 3
    with pytest.raises(NotMedia, match=r"the portrait photo \(client name.bin\) is not an image"):
        up("hello.wav", "source")
    with pytest.raises(NotMedia, match="the speech audio .* is not an audio or video file"):
        up("notes.txt", "audio")
    with pytest.raises(NotMedia, match="has no video frames"):
        up("hello.wav", "video")
    with pytest.raises(MediaTooLong, match="at most 0.05 min"):
        up("long.wav", "audio", max_seconds=3)


def test_options_map_to_animate_options(tmp_path):
    opts = parse_options('{"still": true, "seed": 7, "mouth_amp": 0.6, "blink": "none", "max_seconds": null}')
    assert opts == {"still": True, "seed": 7, "mouth_amp": 0.6, "blink": "none", "max_seconds": None}
    a = build_animate_options(
        opts,
        {"source": tmp_path / "s.png", "audio": tmp_path / "a.wav"},
        tmp_path / "o.mp4",
        {"checkpoints": "/srv/ckpt"},
    )
    assert (a.still, a.seed, a.mouth_amp, a.blink, a.quiet) == (True, 7, 0.6, "none", True)
    assert a.source == tmp_path / "s.png" and a.output == tmp_path / "o.mp4" and a.checkpoints == "/srv/ckpt"
    assert parse_options({"seed": "3", "still": "yes", "fps": "12.5"}, from_text=True) == {
        "seed": 3,
        "still": True,
        "fps": 12.5,
    }
    for bad, message in [
        ({"seed": True}, "'seed' must be a whole number"),
        ({"seed": 1.5}, "whole number"),
        ({"still": "yes"}, "true or false"),
        ({"crf": 99}, "between 0 and 51"),
        ({"output": "/tmp/x"}, "unknown option 'output'"),
        ({"device": "cuda"}, "unknown option"),
        ({"source": "x.png"}, "is a file, not an option"),
        ([1], "must be a JSON object"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_options(bad)
    assert {"still", "seed", "mouth_amp", "blink", "framing", "face_index", "visible_watermark", "backend"} <= set(
        OPTION_TYPES
    )
    assert not {"output", "checkpoints", "bfm", "hubert", "device", "invisible_watermark", "quiet"} & set(OPTION_TYPES)


def test_token_rules(monkeypatch):
    monkeypatch.delenv("REAL3D_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert resolve_token(ServeConfig(host="127.0.0.1")) is None
    with pytest.raises(InputError, match="give an access token"):
        resolve_token(ServeConfig(host="0.0.0.0"))
    with pytest.raises(InputError, match="too short"):
        resolve_token(ServeConfig(host="0.0.0.0", token="abc"))
    monkeypatch.setenv("REAL3D_TOKEN", "from-the-environment")
    assert resolve_token(ServeConfig(host="0.0.0.0")) == "from-the-environment"


def test_a_crashed_worker_fails_only_its_job(media, tmp_path):
    import os
    import signal

    store = JobStore(JobStoreConfig(root=tmp_path / "jobs", workers=1))
    store.start()
    try:

        def submit(audio: str, options: dict) -> str:
            job_id, inputs = store.new_upload()
            shutil.copyfile(media / "astronaut.png", inputs / "source.upload")
            shutil.copyfile(media / audio, inputs / "audio.upload")
            names = {r: place_upload(inputs / f"{r}.upload", r).path.name for r in ("source", "audio")}
            return store.submit(job_id, options, names).id

        doomed = submit("long.wav", {"fps": 10})
        deadline = time.monotonic() + 120
        while store.status(doomed)["stage"] != "render" and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(store.get(doomed).pid, signal.SIGKILL)  # a native crash, as far as the server can tell
        job = store.wait(doomed, timeout=60)
        assert job.state == "failed" and job.error.startswith("the worker process ended unexpectedly (exit code -9)")
        assert store.output_path(doomed) is None and not list((tmp_path / "jobs" / doomed).glob("*output*"))
        after = store.wait(submit("hello.wav", {"max_seconds": 0.2, "fps": 10}), timeout=120)
        assert after.state == "done" and after.frames == 2  # the slot lives on
    finally:
        store.stop()
