"""Pipeline: option handling, driver reading, frame limits, progress, stopping, and every driver through the
mesh backend. The backend is reached only through the `Backend` interface (a recording fake shows what it got)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from skimage import data

from real3d.backends.mesh import MeshBackend, MeshRenderer
from real3d.errors import Cancelled, InputError, NoFaceError
from real3d.face.portrait import analyze_portrait
from real3d.io.writer import VideoWriter
from real3d.motion.driving import Driving, DrivingVideo, read_speech
from real3d.motion.from_video import track_from_landmarks
from real3d.motion.track import MotionTrack
from real3d.pipeline import AnimateOptions, Pipeline, Progress

N_DRIVER = 10


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A driving video (the astronaut turning its head, 10 frames at 25 fps) and 0.6 s of espeak-ng speech."""
    root = tmp_path_factory.mktemp("pipeline")
    renderer = MeshRenderer(analyze_portrait(data.astronaut()))
    track = MotionTrack.still(N_DRIVER, 25)
    track.euler[:, 1] = np.linspace(0, 0.3, N_DRIVER)
    drv = root / "driver.mp4"
    with VideoWriter(drv, fps=25, quiet=True) as w:
        for i in range(N_DRIVER):
            w.write(renderer.render(track, i))
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = root / "speech.wav"
    subprocess.run([espeak, "-v", "en-us", "-w", str(wav), "Hello there."], check=True)
    return {"drv": drv, "wav": wav}


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


class RecordingBackend:
    """A `Backend` that renders grey frames whose level is the frame index, and remembers what it was given.
    Like the neural backend, it tracks a driving video whole before rendering."""

    name = "fake"

    def __init__(self) -> None:
        self.timings = {"fake": 1.0}
        self.driving: Driving | None = None
        self.tracked = None
        self.rendered = 0

    def prepare(self, portrait):
        return portrait

    def motion(self, source, driving: Driving):
        self.driving = driving
        if driving.video is not None:
            self.tracked = driving.video.track()
            n = len(self.tracked)
        else:
            n = int(len(driving.speech) / 16000 * driving.fps)
        return list(range(driving.limit(n)))

    def frames(self, source, motion):
        for i in motion:
            self.rendered += 1
            yield np.full((64, 48, 3), 10 * i, np.uint8)

    def frame_size(self, source):
        return 64, 48


@pytest.fixture
def fake(monkeypatch):
    backend = RecordingBackend()
    monkeypatch.setattr(Pipeline, "backend", lambda self, opts: backend)
    return backend


def _opts(tmp_path, **kw) -> AnimateOptions:
    kw.setdefault("output", tmp_path / "out.mp4")
    return AnimateOptions(source=data.astronaut(), quiet=True, visible_watermark=False, invisible_watermark=False, **kw)


def test_video_driver_reaches_the_backend_to_be_tracked(media, tmp_path, fake):
    res = Pipeline()(_opts(tmp_path, video=media["drv"]))
    d = fake.driving
    assert d.speech is None and d.pose is None and not d.still
    assert d.video.path == media["drv"] and d.video.n_frames == N_DRIVER
    tracked = fake.tracked
    assert tracked.landmarks.shape == (N_DRIVER, 478, 3) and tracked.size == (512, 512)
    assert np.isfinite(tracked.landmarks).all()
    frames = _frames(res.output)
    assert res.frames == len(frames) == N_DRIVER and frames.shape[1:] == (64, 48, 3)
    np.testing.assert_allclose(frames[:, 32, 24, 0], 10 * np.arange(N_DRIVER), atol=3)  # in order, none lost
    assert res.timings["fake"] == 1.0 and {"source_analysis", "driver_analysis", "render", "encode"} <= set(res.timings)


def test_audio_driver_and_options_reach_the_backend(media, tmp_path, fake):
    Pipeline()(
        _opts(
            tmp_path,
            audio=media["wav"],
            pose_video=media["drv"],
            still=True,
            mouth_amp=0.7,
            blink="none",
            seed=5,
            fps=20,
        )
    )
    d = fake.driving
    assert d.video is None and d.speech.dtype == np.float32 and d.speech.ndim == 1
    assert d.pose.landmarks.shape[1:] == (478, 3) and len(d.pose) == 8  # 10 frames at 25 fps -> 0.4 s at 20 fps
    assert (d.still, d.mouth_amp, d.blink, d.seed, d.fps) == (True, 0.7, "none", 5, 20)


def test_max_seconds_limits_tracking_and_frames(media, tmp_path, fake):
    res = Pipeline()(_opts(tmp_path, video=media["drv"], max_seconds=0.2))
    assert fake.driving.video.n_frames == len(fake.tracked) == 5 and res.frames == fake.rendered == 5


def test_progress_reports_every_stage_and_frame(media, tmp_path, fake):
    seen: list[Progress] = []
    Pipeline()(_opts(tmp_path, video=media["drv"]), on_progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages[:2] == ["source", "source"] and stages[-1] == "done"
    tracked = [p for p in seen if p.stage == "driver" and p.total == N_DRIVER]
    assert [p.done for p in tracked] == list(range(1, N_DRIVER + 1))
    render = [p for p in seen if p.stage == "render"]
    assert [p.done for p in render] == list(range(1, N_DRIVER + 1)) and render[-1].fraction == 1.0
    assert all(p.frame.shape == (64, 48, 3) for p in render)
    assert stages.index("render") > max(i for i, s in enumerate(stages) if s == "driver")


def test_stop_ends_the_run_between_frames_with_no_output(media, tmp_path, fake):
    stop = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.stage == "render" and p.done == 3:
            stop.set()

    with pytest.raises(Cancelled, match="stopped on request"):
        Pipeline()(_opts(tmp_path, video=media["drv"]), on_progress=on_progress, stop=stop)
    assert fake.rendered == 3
    assert list(tmp_path.iterdir()) == []  # no output, no temp file


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "nothing drives the portrait"),
        ({"video": "a.mp4", "audio": "b.wav"}, "either --video or --audio"),
        ({"audio": "b.wav", "fps": 0}, "out of range"),
        ({"audio": "b.wav", "blink": "often"}, "unknown blink mode"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, fake, kw, message):
    with pytest.raises(InputError, match=message):
        Pipeline()(_opts(tmp_path, **kw))
    assert fake.driving is None


def test_unknown_backend_is_a_clear_error(tmp_path, media):
    with pytest.raises(InputError, match="unknown backend 'gan'"):
        Pipeline().backend(AnimateOptions(source="x.png", output=tmp_path / "o.mp4", audio=media["wav"], backend="gan"))


def test_source_video_uses_its_first_frame(media, tmp_path, fake, monkeypatch):
    seen = []
    monkeypatch.setattr(RecordingBackend, "prepare", lambda self, portrait: seen.append(portrait.image) or portrait)
    res = Pipeline()(AnimateOptions(source=media["drv"], video=media["drv"], output=tmp_path / "o.mp4", quiet=True))
    assert res.frames == N_DRIVER and seen[0].shape == (512, 512, 3)


# ------------------------------------------------------------------------------- the mesh backend, end to end
@pytest.mark.parametrize("driver", ["video", "audio", "still", "pose_video"])
def test_every_driver_through_the_mesh_backend(media, tmp_path, driver):
    kw = {
        "video": dict(video=media["drv"]),
        "audio": dict(audio=media["wav"]),
        "still": dict(video=media["drv"], still=True),
        "pose_video": dict(audio=media["wav"], pose_video=media["drv"], max_seconds=0.4),
    }[driver]
    res = Pipeline()(_opts(tmp_path, **kw))
    frames = _frames(res.output).astype(np.float64)
    assert frames.shape[1:] == (512, 512, 3) and len(frames) == res.frames > 0
    motion = np.abs(np.diff(frames, axis=0)).mean()
    if driver == "still":  # head held at the source pose: the frames barely change
        assert motion < 1.0
    else:  # the head turns (video, pose video) or the mouth moves (audio)
        assert motion > 0.2


def test_mesh_backend_motion_follows_the_driver_length(media):
    backend = MeshBackend()
    source = backend.prepare(analyze_portrait(data.astronaut()))
    speech = read_speech(media["wav"])
    assert len(backend.motion(source, Driving(fps=25, speech=speech))) == round(len(speech) / 16000 * 25)
    video = DrivingVideo.open(media["drv"], 25)
    assert len(backend.motion(source, Driving(fps=25, video=video, max_frames=4))) == 4
    assert backend.frame_size(source) == (512, 512)


def test_official_names_map_to_options(tmp_path):
    o = AnimateOptions.from_official(
        src_img="p.png",
        drv_aud="talk.mp4",
        drv_pose="static",
        bg_img="bg.jpg",
        out_name=str(tmp_path / "o.mp4"),
        blink_mode="period",
        out_mode="concat_debug",
        map_to_init_pose="False",
        mouth_amp=0.3,
        low_memory_usage=True,
    )
    assert (o.source, o.video, o.audio, o.still, o.pose_video, o.background) == (
        "p.png",
        "talk.mp4",
        None,
        True,
        None,
        "bg.jpg",
    )
    assert (o.blink, o.out_mode, o.map_to_init_pose, o.mouth_amp) == ("periodic", "debug", False, 0.3)
    assert AnimateOptions.from_official(src_img="p.png", drv_aud="talk.wav", out_name="o.mp4").audio == "talk.wav"
    assert (
        AnimateOptions.from_official(source="mine.png", src_img="", output="o.mp4", audio="a.wav").source == "mine.png"
    )
    with pytest.raises(InputError, match="unknown option.*colour"):
        AnimateOptions.from_official(source="p.png", output="o.mp4", colour="red")
    with pytest.raises(InputError, match="head_ckpt"):
        AnimateOptions.from_official(source="p.png", output="o.mp4", head_ckpt="head/")


def test_mesh_backend_renders_a_streamed_driver_like_the_whole_track(media):
    """The mesh backend tracks the driving video while it renders: the frames equal those of the whole track."""
    backend = MeshBackend()
    source = backend.prepare(analyze_portrait(data.astronaut()))
    video = DrivingVideo.open(media["drv"], 25)
    streamed = list(backend.frames(source, backend.motion(source, Driving(fps=25, video=video))))
    whole = track_from_landmarks(video.track().landmarks, source.p.canonical, 25)
    assert len(streamed) == len(whole) == N_DRIVER
    for i, frame in enumerate(streamed):
        np.testing.assert_array_equal(frame, source.render(whole, i))


def test_driving_video_without_a_face_fails_with_no_output(tmp_path):
    """The mesh backend tracks the driver while it renders: a driver with no face in any frame still fails with
    NoFaceError before any frame is written, and leaves no output file."""
    blank = tmp_path / "blank.mp4"
    with VideoWriter(blank, fps=25, size=(128, 128), quiet=True) as w:
        for i in range(20):
            w.write(np.full((128, 128, 3), 60 + i, np.uint8))
    out = tmp_path / "out.mp4"
    seen: list[Progress] = []
    with pytest.raises(NoFaceError, match="no face was found"):
        Pipeline()(_opts(tmp_path, video=blank, output=out), on_progress=seen.append)
    assert not any(p.stage == "render" for p in seen)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["blank.mp4"]
