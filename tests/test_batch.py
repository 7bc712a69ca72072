"""`real3d batch`: failing rows, resume, shards, manifest validation."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import av
import pytest

from real3d.batch import BatchConfig, parse_shard, read_manifest, run_batch, shard_rows
from real3d.cli import main
from real3d.errors import InputError


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder with the astronaut photo, 1 s of espeak-ng speech and a text file."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("batch_media")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    subprocess.run([espeak, "-v", "en-us", "-s", "170", "-w", str(d / "hello.wav"), "Hello there."], check=True)
    (d / "notes.txt").write_text("not a photo\n")
    return d


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["source", "audio", "output", "options", "seed"])
        w.writeheader()
        w.writerows(rows)
    return path


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


FAST = json.dumps({"max_seconds": 0.4, "fps": 10})


def test_failing_row_resume_and_shards(media, tmp_path):
    manifest = _write_csv(
        media / "manifest.csv",
        [
            {"source": "astronaut.png", "audio": "hello.wav", "output": "a.mp4", "options": FAST, "seed": "1"},
            {"source": "notes.txt", "audio": "hello.wav", "output": "bad.mp4", "options": FAST},
            {"source": "astronaut.png", "audio": "hello.wav", "output": "b", "options": FAST, "seed": "2"},
            {"source": "astronaut.png", "audio": "missing.wav", "output": "c.mp4", "options": FAST},
        ],
    )
    out = tmp_path / "out"
    # two shards on the same OUTDIR, as two machines of a job array would run them
    r0 = run_batch(BatchConfig(manifest=manifest, outdir=out, shard=(0, 2), quiet=True))
    r1 = run_batch(BatchConfig(manifest=manifest, outdir=out, shard=(1, 2), quiet=True))
    assert [r.row for r in r0] == [0, 2] and [r.row for r in r1] == [1, 3]
    by_row = {r.row: r for r in r0 + r1}
    assert by_row[0].status == "done" and by_row[2].status == "done"
    assert by_row[1].status == "failed" and "notes.txt" in by_row[1].error and "image" in by_row[1].error
    assert by_row[3].status == "failed" and "missing.wav" in by_row[3].error
    assert by_row[0].frames == 4 and _frames(out / "a.mp4") == 4 and _frames(out / "b.mp4") == 4
    assert not (out / "bad.mp4").exists() and not list(out.glob(".*.part*"))
    for shard in ("shard-0-of-2", "shard-1-of-2"):
        assert (out / f"batch-summary.{shard}.csv").is_file()
    summary = list(csv.DictReader(open(out / "batch-summary.shard-1-of-2.csv")))
    assert [(s["row"], s["status"]) for s in summary] == [("1", "failed"), ("3", "failed")]
    assert "notes.txt" in summary[0]["error"]

    # resumed: finished rows are skipped (file untouched), failing rows are tried again, exit code 1
    mtime = (out / "a.mp4").stat().st_mtime_ns
    assert main(["batch", str(manifest), "-o", str(out), "-q"]) == 1
    summary = json.loads((out / "batch-summary.json").read_text())
    assert [s["status"] for s in summary] == ["skipped", "failed", "skipped", "failed"]
    assert (out / "a.mp4").stat().st_mtime_ns == mtime

    # a changed option re-renders only that row
    rows = list(csv.DictReader(open(manifest)))
    rows[2]["seed"] = "3"
    _write_csv(manifest, rows)
    res = run_batch(BatchConfig(manifest=manifest, outdir=out, quiet=True))
    assert [r.status for r in res] == ["skipped", "failed", "done", "failed"]


def test_workers_run_rows_in_processes(media, tmp_path):
    manifest = media / "two.json"
    manifest.write_text(
        json.dumps(
            [
                {
                    "source": "astronaut.png",
                    "audio": "hello.wav",
                    "output": "x.mp4",
                    "options": {"max_seconds": 0.3, "fps": 10},
                },
                {"source": str(media / "notes.txt"), "audio": "hello.wav", "options": {"max_seconds": 0.3}},
                {
                    "source": "astronaut.png",
                    "audio": "hello.wav",
                    "output": "y.mp4",
                    "still": True,
                    "max_seconds": 0.3,
                    "fps": 10,
                },
            ]
        )
    )
    res = run_batch(BatchConfig(manifest=manifest, outdir=tmp_path, workers=2, quiet=True))
    assert [r.status for r in res] == ["done", "failed", "done"]
    assert res[1].output == "00001_notes.mp4" and "image" in res[1].error
    assert _frames(tmp_path / "x.mp4") == 3 and _frames(tmp_path / "y.mp4") == 3


def test_shards_cover_every_row_once(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("source,audio\n" + "".join(f"p{i}.jpg,s{i}.wav\n" for i in range(11)))
    rows = read_manifest(manifest)
    for n in (1, 2, 3, 4, 11, 12):
        seen = [r.index for i in range(n) for r in shard_rows(rows, (i, n))]
        assert sorted(seen) == list(range(11))
    assert [r.index for r in shard_rows(rows, (1, 4))] == [1, 5, 9]
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)


@pytest.mark.parametrize(
    "text,message",
    [
        ("source,audio,colour\np.jpg,s.wav,red\n", "unknown column"),
        ('source,audio,options\np.jpg,s.wav,"{""bogus"": 1}"\n', "unknown option 'bogus'"),
        ("source,audio,seed\np.jpg,s.wav,abc\n", "'seed' must be a whole number"),
        ("source,audio,output\np.jpg,s.wav,../escape.mp4\n", "plain file name"),
        ("source,audio,output\np.jpg,s.wav,same.mp4\nq.jpg,s.wav,same.mp4\n", "both write same.mp4"),
        ("audio\ns.wav\n", "no source photo"),
        ('source,audio,options\np.jpg,s.wav,"{""output"": ""/etc/x""}"\n', "unknown option 'output'"),
    ],
)
def test_manifest_errors(tmp_path, text, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=message):
        read_manifest(manifest)


def test_manifest_values_and_paths(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("source,video,still,mouth_amp,max_seconds,output\nsub/p.jpg,/abs/d.mp4,true,0.6,,o\n")
    (row,) = read_manifest(manifest)
    assert row.files == {"source": tmp_path / "sub" / "p.jpg", "video": Path("/abs/d.mp4")}
    assert row.options == {"still": True, "mouth_amp": 0.6}
    assert row.output == "o.mp4"
    assert main(["batch", str(tmp_path / "nope.csv"), "-o", str(tmp_path)]) == InputError.exit_code
