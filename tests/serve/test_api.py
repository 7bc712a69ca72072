"""REST API end to end against a real `real3d serve` process: jobs, limits, bad requests, restarts, token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("media")


@pytest.fixture(scope="module")
def api(tmp_path_factory, media, tools):
    """One API-only server with small limits: 1 MB per file, 3 s of media."""
    jobs = tmp_path_factory.mktemp("api") / "jobs"
    server = tools.start_server(jobs, "--no-page", "--max-upload-mb", "1", "--max-media-minutes", "0.05")
    yield server
    server.stop()
    assert server.proc.returncode == 0, server.log.read_text()[-2000:]


def test_job_end_to_end(tools, api, media):
    r = tools.submit(api.url, media, {"max_seconds": 1.0, "fps": 10, "seed": 3})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["state"] == "queued"
    early = httpx.get(f"{api.url}/v1/jobs/{job['id']}/video")
    if early.status_code != 200:  # not done yet: never a partial file
        assert early.status_code == 409
        assert (
            early.json()["error"].startswith(f"job {job['id']} is ")
            and "served once it is done" in early.json()["error"]
        )
    st = tools.wait_final(api.url, [job["id"]])[job["id"]]
    assert st["state"] == "done", st
    assert st["progress"] == 1.0 and st["frames"] == 10 and st["has_video"] and st["attempts"] == 1
    assert st["options"] == {"max_seconds": 1.0, "fps": 10, "seed": 3}
    video = httpx.get(f"{api.url}/v1/jobs/{job['id']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert tools.video_frames(video.content) == (10, True)
    preview = httpx.get(f"{api.url}/v1/jobs/{job['id']}/preview")
    assert preview.status_code == 200 and preview.content[:3] == b"\xff\xd8\xff"  # a JPEG
    listed = httpx.get(f"{api.url}/v1/jobs").json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    # a finished job is deleted with its files
    assert httpx.delete(f"{api.url}/v1/jobs/{job['id']}").json() == {"id": job["id"], "deleted": True}
    assert httpx.get(f"{api.url}/v1/jobs/{job['id']}").status_code == 404
    assert not (api.jobs / job["id"]).exists()


def _files(media, source=("astronaut.png", "image/png"), audio=("hello.wav", "audio/wav"), **extra):
    files = {}
    for field, spec in (("source", source), ("audio", audio), *extra.items()):
        if spec is not None:
            name, ctype = spec[:2]
            content = spec[2] if len(spec) > 2 else (media / name).read_bytes()
            files[field] = (name, content, ctype)
    return files


@pytest.mark.parametrize(
    "case,status,message",
    [
        ("missing source", 400, "no portrait photo: upload it as the file field 'source'"),
        ("missing driver", 400, "nothing drives the portrait"),
        ("audio and video", 400, "either 'audio' or 'video', not both"),
        ("wrong type", 415, "the portrait photo (hello.wav) is not an image; use a JPEG, PNG or WebP photo"),
        ("non-media", 415, "the speech audio (notes.txt) is not an audio or video file that can be read"),
        ("empty", 415, "the portrait photo (astronaut.png) is an empty file"),
        ("over the size limit", 413, "source (big.bin) is larger than this server's limit of 1 MB per file"),
        ("too long", 422, "the speech audio (long.wav) is 0.1 min long; this server accepts at most 0.05 min"),
        ("unknown option", 400, "unknown option 'colour'; valid options: backend,"),
        ("path option", 400, "'audio' is a file, not an option"),
        ("bad value", 400, "option 'blink' must be one of natural, periodic, none, not 'often'"),
        ("out of range", 400, "option 'fps' = 500.0 is out of range; use a value between 1 and 120"),
        ("bad json", 400, "options are not valid JSON"),
        ("unknown field", 400, "unknown form field 'script'"),
        ("not multipart", 415, "send the job as multipart/form-data"),
        ("neural not configured", 400, "the neural backend is not available on this server"),
    ],
)
def test_bad_requests_get_4xx(tools, api, media, case, status, message):
    data = {}
    files = _files(media)
    if case == "missing source":
        files = _files(media, source=None)
    elif case == "missing driver":
        files = _files(media, audio=None)
    elif case == "audio and video":
        files["video"] = ("hello.wav", (media / "hello.wav").read_bytes(), "video/mp4")
    elif case == "wrong type":
        files = _files(media, source=("hello.wav", "image/png"))
    elif case == "non-media":
        files = _files(media, audio=("notes.txt", "audio/wav"))
    elif case == "empty":
        files = _files(media, source=("astronaut.png", "image/png", b""))
    elif case == "over the size limit":
        files = _files(media, source=("big.bin", "image/png"))
    elif case == "too long":
        files = _files(media, audio=("long.wav", "audio/wav"))
    elif case == "unknown option":
        data = {"options": json.dumps({"colour": "red"})}
    elif case == "path option":
        data = {"options": json.dumps({"audio": "/etc/passwd"})}
    elif case == "bad value":
        data = {"options": json.dumps({"blink": "often"})}
    elif case == "out of range":
        data = {"options": json.dumps({"fps": 500})}
    elif case == "bad json":
        data = {"options": "{seed: 1"}
    elif case == "unknown field":
        files["script"] = ("x.sh", b"rm -rf /", "text/plain")
    elif case == "neural not configured":
        data = {"options": json.dumps({"backend": "neural"})}
    before = sorted(p.name for p in api.jobs.iterdir() if not p.name.startswith("."))
    if case == "not multipart":
        r = httpx.post(f"{api.url}/v1/jobs", json={"source": "/etc/passwd"})
    else:
        r = httpx.post(f"{api.url}/v1/jobs", files=files, data=data, timeout=60)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    after = sorted(p.name for p in api.jobs.iterdir() if not p.name.startswith("."))
    assert after == before  # a refused upload leaves nothing behind
    assert httpx.get(f"{api.url}/v1/health").json()["ok"] is True  # and the server keeps serving


def test_client_file_names_are_never_paths(tools, api, media, tmp_path):
    files = _files(
        media,
        source=("../../etc/passwd", "image/png", (media / "astronaut.png").read_bytes()),
        audio=("../../../../tmp/evil.sh", "audio/wav", (media / "hello.wav").read_bytes()),
    )
    r = httpx.post(f"{api.url}/v1/jobs", files=files, data={"options": json.dumps({"max_seconds": 0.2})})
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    assert sorted(p.name for p in (api.jobs / jid / "inputs").iterdir()) == ["audio.wav", "source.png"]
    assert not (api.jobs.parent / "etc").exists() and not os.path.exists("/tmp/evil.sh")
    for bad in ("../../etc/passwd", "..%2F..%2Fetc", "0" * 31 + "g"):
        assert httpx.get(f"{api.url}/v1/jobs/{bad}").status_code == 404
    httpx.delete(f"{api.url}/v1/jobs/{jid}")


def test_health_reports_a_warm_worker(tools, api):
    deadline = time.monotonic() + 180
    while (health := httpx.get(f"{api.url}/v1/health").json())["workers_ready"] < 1:
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health == {"ok": True, "queued": 0, "workers": 1, "workers_ready": 1}


def test_options_and_docs_are_served_locally(tools, api):
    opts = httpx.get(f"{api.url}/v1/options").json()
    assert opts["options"]["mouth_amp"]["default"] == 0.45
    assert opts["options"]["blink"]["type"] == "one of natural, periodic, none"
    assert "output" not in opts["options"] and "checkpoints" not in opts["options"]
    assert opts["backends"]["mesh"]["available"] and not opts["backends"]["neural"]["available"]
    assert opts["limits"]["max_upload_mb"] == 1
    spec = httpx.get(f"{api.url}/v1/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/video"} <= set(spec["paths"])
    assert (
        "source"
        in spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    )
    docs = httpx.get(f"{api.url}/v1/docs").text
    assert (
        "/v1/jobs" in docs
        and "<script" not in docs
        and "http" not in docs.split("<body")[-1].replace("/v1/openapi.json", "")
    )


@pytest.mark.parametrize("n_jobs", [6, pytest.param(20, marks=pytest.mark.slow)])
def test_many_jobs_two_workers(tools, tmp_path, media, n_jobs):
    """Jobs submitted at once all complete with valid videos, none lost. The 20-job run is marked slow: every job
    starts a fresh worker process (~4 s of CPU importing the pipeline), ~4 min on the loaded 2-core dev machine."""
    server = tools.start_server(tmp_path / "jobs", "--no-page", "--workers", "2")
    try:
        ids: list[str] = []
        errors: list[str] = []

        def one(i: int) -> None:
            r = tools.submit(server.url, media, {"max_seconds": 0.2, "fps": 10, "seed": i})
            (ids.append(r.json()["id"]) if r.status_code == 202 else errors.append(r.text))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n_jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(set(ids)) == n_jobs
        final = tools.wait_final(server.url, ids, timeout=600)
        assert {st["state"] for st in final.values()} == {"done"}, [st["error"] for st in final.values()]
        for jid in ids:
            assert tools.video_frames(httpx.get(f"{server.url}/v1/jobs/{jid}/video").content) == (2, True)
        assert {j["id"] for j in httpx.get(f"{server.url}/v1/jobs").json()["jobs"]} == set(ids)
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_mid_job_and_restart(tools, tmp_path, media):
    jobs = tmp_path / "jobs"
    server = tools.start_server(jobs, "--no-page", "--max-queued", "3")
    accepted: list[str] = []
    refused = 0
    try:
        long_first = {  # the first job renders 5 s at 25 fps: long enough to be caught mid-render on a fast machine
            "source": ("astronaut.png", (media / "astronaut.png").read_bytes(), "image/png"),
            "audio": ("long.wav", (media / "long.wav").read_bytes(), "audio/wav"),
        }
        for i in range(6):
            r = tools.submit(
                server.url,
                media,
                {"max_seconds": 1.0, "fps": 10, "seed": i} if i else {},
                files=None if i else long_first,
            )
            if r.status_code == 202:
                accepted.append(r.json()["id"])
            else:
                assert r.status_code == 429 and "queue is full (3 jobs waiting)" in r.json()["error"]
                refused += 1
        assert refused >= 2 and len(accepted) in (3, 4)
        cancelled = accepted.pop()  # a queued job cancelled before the kill stays cancelled after the restart
        r = httpx.delete(f"{server.url}/v1/jobs/{cancelled}")
        assert r.status_code == 202 and r.json()["state"] == "cancelled"
        # wait for the first job to be rendering, then kill the server without warning
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = httpx.get(f"{server.url}/v1/jobs/{accepted[0]}").json()
            if st["state"] == "running" and st["stage"] == "render":
                break
            time.sleep(0.05)
        assert st["stage"] == "render", st
        worker_pid = json.loads((jobs / accepted[0] / "job.json").read_text())["pid"]
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
    finally:
        server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker_pid), "the worker outlived the killed server"
    assert json.loads((jobs / accepted[0] / "job.json").read_text())["state"] == "running"
    (jobs / "0123456789abcdef0123456789abcdef" / "inputs").mkdir(parents=True)  # an upload cut by the kill

    server = tools.start_server(jobs, "--no-page")
    try:
        final = tools.wait_final(server.url, accepted)
        assert {st["state"] for st in final.values()} == {"done"}, final
        first = final[accepted[0]]
        assert first["attempts"] == 2 and "interrupted by a server restart" in first["note"]
        assert all(final[j]["attempts"] == 1 for j in accepted[1:])
        for jid in accepted:
            expected = (125, True) if jid == accepted[0] else (10, True)
            assert tools.video_frames(httpx.get(f"{server.url}/v1/jobs/{jid}/video").content) == expected
        assert not (jobs / "0123456789abcdef0123456789abcdef").exists()
        st = httpx.get(f"{server.url}/v1/jobs/{cancelled}").json()
        assert st["state"] == "cancelled" and st["attempts"] == 0 and not st["has_video"]
        assert not list(jobs.glob("*/.output.*"))  # the killed run's temp file was cleaned
    finally:
        server.stop()


def test_token_required_beyond_loopback(tools, tmp_path):
    env = tools.server_env()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "real3d.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(tools.free_port()),
            "--jobs",
            str(tmp_path / "j0"),
            "--no-page",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "give an access token with --token or $REAL3D_TOKEN" in r.stderr
    token = "s3cret-token-for-tests"
    server = tools.start_server(tmp_path / "jobs", "--no-page", "--token", token, host="0.0.0.0", token=token)
    try:
        url = server.url
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": token}):
            r = httpx.get(f"{url}/v1/health", headers=headers)
            assert r.status_code == 401 and "access token" in r.json()["error"]
        r = httpx.post(f"{url}/v1/jobs", files={"source": ("a.png", b"x", "image/png")})
        assert r.status_code == 401
        assert httpx.get(f"{url}/v1/health", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        page = httpx.get(f"{url}/")
        assert page.status_code == 401 and "token" in page.text
        r = httpx.get(f"{url}/v1/options?token={token}")
        assert r.status_code == 303 and r.headers["location"] == "/v1/options"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert httpx.get(f"{url}/v1/options", cookies={"real3d_token": token}).status_code == 200
        assert httpx.get(f"{url}/v1/options", cookies={"real3d_token": "nope"}).status_code == 401
    finally:
        server.stop()
