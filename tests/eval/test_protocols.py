"""Protocols end to end on a 10-frame synthetic clip (the mesh backend animating scikit-image's astronaut),
plus case discovery, manifests, the cache and the CLI's refusals."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from real3d.errors import InputError
from real3d.eval import protocols as P
from real3d.eval.cli import eval_main, run

FPS = 25.0
N = 10


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """clips/astro_talk.mp4 (10 frames at 25 fps, with speech) and photos/astronaut.png."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (needed to make the synthetic clip's speech)")
    from real3d.pipeline import AnimateOptions, Pipeline

    root = tmp_path_factory.mktemp("eval_media")
    (root / "clips").mkdir()
    (root / "photos").mkdir()
    wav = root / "speech.wav"
    subprocess.run([espeak, "-v", "en-us", "-s", "170", "-w", str(wav), "Hello there, open wide."], check=True)
    Image.fromarray(data.astronaut()).save(root / "photos" / "astronaut.png")
    clip = root / "clips" / "astro_talk.mp4"
    Pipeline()(
        AnimateOptions(
            source=data.astronaut(),
            audio=wav,
            output=clip,
            fps=FPS,
            max_seconds=N / FPS,
            quiet=True,
            visible_watermark=False,
        )
    )
    return root


@pytest.fixture(scope="module")
def results(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    cases = P.cases_from_folders(media / "clips", media / "photos", None)
    cfg = P.EvalConfig(out_dir=out, max_frames=N, id_every=5)
    res = run(cases, cfg, workers=1, quiet=True)
    return out, cases, {(r.protocol, r.method): r for r in res}


def test_cases_from_folders(media):
    cases = P.cases_from_folders(media / "clips", media / "photos", None)
    by = {c.protocol: c for c in cases}
    assert sorted(by) == ["audio", "cross", "same"] and len(cases) == 3
    clip, photo = media / "clips" / "astro_talk.mp4", media / "photos" / "astronaut.png"
    assert by["same"] == P.Case("same", "astro_talk", source=clip, driver=clip, reference=clip)
    assert by["cross"] == P.Case("cross", "astronaut-astro_talk", source=photo, driver=clip, reference=clip)
    assert by["audio"] == P.Case("audio", "astro_talk", source=clip, audio=clip, reference=clip)


def test_same_identity_ground_truth_is_the_ceiling(results):
    _, _, r = results
    gt = r[("same", "gt")]
    assert gt.frames == N and gt.fps == pytest.approx(FPS)
    assert gt.metrics["L1"] == 0.0 and gt.metrics["PSNR"] == math.inf and gt.metrics["SSIM"] == pytest.approx(1.0)
    assert gt.metrics["AKD_px512"] == 0.0 and gt.metrics["pose_err_deg"] == pytest.approx(0.0, abs=1e-4)
    assert gt.metrics["mouth_corr"] == pytest.approx(1.0)
    assert gt.metrics["detect_rate"] == 1.0


def test_same_identity_mesh_and_static(results):
    _, _, r = results
    mesh, static = r[("same", "mesh")].metrics, r[("same", "static")].metrics
    assert r[("same", "mesh")].frames == N
    # the mesh re-renders the clip's own motion from its first frame: close, not identical
    assert 18 < mesh["PSNR"] < math.inf and 0.6 < mesh["SSIM"] < 1.0 and 0 < mesh["L1"] < 0.1
    assert 0 < mesh["AKD_px512"] < 10 and mesh["detect_rate"] == 1.0
    assert mesh["dlib_dist"] < 0.6  # the same person by dlib's rule
    # static = the source frame itself: identity exact, motion absent
    assert static["CSIM_dlib"] == pytest.approx(1.0, abs=1e-6) and static["dlib_dist"] == pytest.approx(0.0, abs=1e-6)
    assert static["mouth_open_std"] < mesh["mouth_open_std"]


def test_cross_and_audio_protocol_metrics(results):
    _, _, r = results
    cross = r[("cross", "mesh")].metrics
    assert {"pose_rel_err_deg", "mouth_corr", "CSIM_dlib", "dlib_dist"} <= set(cross)
    assert "PSNR" not in cross  # no ground truth in cross-identity reenactment
    assert r[("cross", "gt")].metrics["pose_rel_err_deg"] == pytest.approx(0.0, abs=1e-4)
    audio = r[("audio", "mesh")]
    assert audio.frames == N and {"mouth_corr", "mouth_corr_best_lag"} <= set(audio.metrics)
    # the reference clip was rendered from the same speech: the mouths move together, in step
    assert audio.metrics["mouth_corr"] > 0.6 and abs(audio.metrics["mouth_best_lag"]) <= 1


def test_envelope_baseline_of_audio_cases(results, media):
    """The speech's own loudness envelope is scored like a method on audio cases with a reference clip (the
    floor of lip sync), without a video; other protocols do not get it."""
    from real3d.eval import metrics as M
    from real3d.io.audio import load_audio

    out, _, r = results
    env = r[("audio", "envelope")]
    assert env.frames == N and env.video is None
    assert set(env.metrics) == {"mouth_corr", "mouth_corr_best_lag", "mouth_best_lag"}
    assert -1.0 <= env.metrics["mouth_corr"] <= env.metrics["mouth_corr_best_lag"] <= 1.0
    assert not any(m == "envelope" for p, m in r if p != "audio")
    assert "| envelope | 10 |" in (out / "summary.md").read_text()
    assert 0.5 < r[("audio", "mesh")].metrics["mouth_sd_ratio"] < 2.0  # same pipeline on both sides: ~1
    # the envelope: RMS in 40 ms around each frame time, exact on a known signal
    x = np.zeros(16000, np.float32)
    x[12 * 640 :] = 0.5  # a step at frame 12's time (640 samples per frame)
    e = M.loudness_envelope(x, 25, 25.0)
    assert e[5] == pytest.approx(0.0, abs=1e-5) and e[20] == pytest.approx(0.5, rel=1e-6)
    assert e[12] == pytest.approx(np.sqrt(0.25 * 0.5), rel=1e-6)  # half its window is before the step
    assert len(M.loudness_envelope(load_audio(media / "clips" / "astro_talk.mp4", 16000, True).samples, 7, 25.0)) == 7


def test_outputs_json_summary_and_cache(results):
    out, cases, r = results
    saved = json.loads((out / "cases" / "same" / "astro_talk__mesh.json").read_text())
    assert saved["metrics"]["SSIM"] == pytest.approx(r[("same", "mesh")].metrics["SSIM"])
    assert saved["video"] and saved["inputs"]["driver"].endswith("astro_talk.mp4")
    summary = (out / "summary.md").read_text()
    for proto in ("same", "cross", "audio"):
        assert f"### {proto} (1 cases)" in summary
    assert "| gt | 10 | 0 |" in summary  # L1 of the ground truth
    table = json.loads((out / "summary.json").read_text())
    assert table["same"]["gt"]["SSIM"]["mean"] == pytest.approx(1.0)
    assert "| astro_talk | mesh | 10 |" in (out / "cases.md").read_text()
    # the reports can be rebuilt from the case JSONs alone
    (out / "summary.md").unlink()
    assert eval_main(["--report-only", "-o", str(out)]) == 0
    assert (out / "summary.md").read_text() == summary
    # a second generation with the same inputs and options comes from the cache
    video = out / "cache" / saved["video"].split("/")[-1]
    stamp = video.stat().st_mtime_ns
    cfg = P.EvalConfig(out_dir=out, max_frames=N)
    fps = r[("same", "mesh")].fps
    same = next(c for c in cases if c.protocol == "same")
    assert P.generate(same, fps, N, cfg) == video and video.stat().st_mtime_ns == stamp
    assert P.cache_key(same, fps, N, cfg) != P.cache_key(same, fps, N + 1, cfg)


def test_manifest_csv_and_json(media, tmp_path):
    clip = media / "clips" / "astro_talk.mp4"
    photo = media / "photos" / "astronaut.png"
    csv_path = tmp_path / "cases.csv"
    csv_path.write_text(
        f"protocol,source,driver,audio,reference,name\nsame,{clip},{clip},,,\ncross,{photo},{clip},,,mine\n"
    )
    cases = P.cases_from_manifest(csv_path)
    assert [c.protocol for c in cases] == ["same", "cross"]
    assert cases[0].reference == clip and cases[1].name == "mine"
    js = tmp_path / "cases.json"
    shutil.copy(photo, tmp_path / "p.png")
    js.write_text(json.dumps([{"protocol": "audio", "source": "p.png", "audio": str(clip)}]))
    (c,) = P.cases_from_manifest(js)
    assert c.source == tmp_path / "p.png" and c.reference is None and c.audio == clip
    js.write_text(json.dumps([{"protocol": "dance", "source": "p.png"}]))
    with pytest.raises(InputError, match="protocol"):
        P.cases_from_manifest(js)
    js.write_text(json.dumps([{"protocol": "same", "source": "missing.png", "driver": str(clip)}]))
    with pytest.raises(InputError, match="does not exist"):
        P.cases_from_manifest(js)


def test_cli_refusals(media, tmp_path, capsys):
    assert eval_main(["-o", str(tmp_path / "o")]) == 2  # nothing to evaluate
    assert eval_main(["--clips", str(media / "clips"), "--protocols", "bogus", "-o", str(tmp_path / "o")]) == 2
    # a plug-in weight file that is absent fails before any rendering (DependencyError, exit 5)
    rc = eval_main(["--clips", str(media / "clips"), "--fid", str(tmp_path / "none.pth"), "-o", str(tmp_path / "o")])
    assert rc == 5 and "pt_inception" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    rc = eval_main(["--clips", str(media / "clips"), "--syncnet", str(junk), "-o", str(tmp_path / "o")])
    assert rc == 4  # CheckpointError
    assert not (tmp_path / "o" / "cache").exists()


class _TinyFeatures(torch.nn.Module):
    """Stand-in for Inception in plumbing tests: 6 pooled colour statistics per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1)


def test_plugins_flow_through_the_protocol(media, tmp_path):
    """LPIPS, ArcFace, SyncNet (random weights) and FID features reach the case metrics and the summary."""
    from real3d.eval import plugins
    from real3d.eval.nets import iresnet, lpips, syncnet

    torch.manual_seed(0)
    plug = P.MetricModels(P.EvalConfig())
    net = lpips.LPIPS("alex").eval()
    with torch.no_grad():
        for lin in net.lins:
            lin.weight.abs_()  # LPIPS heads are non-negative
    plug.lpips = plugins.LpipsMetric(None, None, model=net)
    plug.arcface = plugins.ArcFaceMetric(model=iresnet.IResNet(iresnet.IResNetConfig.tiny()).eval())
    plug.sync = plugins.SyncMetric(model=syncnet.SyncNet().eval())
    plug.fid = plugins.FidMetric(model=_TinyFeatures())
    cfg = P.EvalConfig(out_dir=tmp_path, max_frames=N, id_every=5, fid="stub")
    same = next(c for c in P.cases_from_folders(media / "clips", None, None, ("same",)))
    gt = P.evaluate_case(same, "gt", cfg, plug)
    plug.sync = None  # (SyncNet is the slow one; once is enough)
    static = P.evaluate_case(same, "static", cfg, plug)
    assert "LSE_D" not in static.metrics
    assert gt.metrics["LPIPS"] == pytest.approx(0.0, abs=1e-6) and static.metrics["LPIPS"] > 0
    # static repeats the source image: only the landmark-based alignment differs (tracking vs single-image mode)
    assert gt.metrics["CSIM_arcface"] <= 1.0 + 1e-6 and static.metrics["CSIM_arcface"] == pytest.approx(1.0, abs=3e-3)
    assert np.isfinite(gt.metrics["LSE_D"]) and np.isfinite(gt.metrics["LSE_C"])  # the clip carries speech
    fid = P.fid_by_group([gt, static], tmp_path)
    assert fid[("same", "gt")] == pytest.approx(0.0, abs=1e-6) and fid[("same", "static")] > 0
    table, _ = P.summarize([gt, static], fid)
    assert "LPIPS ↓" in table and "FID ↓" in table and "LSE-C ↑" in table
