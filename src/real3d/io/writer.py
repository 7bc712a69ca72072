"""Streaming H.264 (yuv420p) + AAC writer with atomic output and an optional per-frame filter (the provenance marks).

Frames go to libx264 one by one and packets are muxed as they come, so memory does not grow with the
video's length. By default the frame filter, libx264 and the muxer run in a background thread fed by a short
queue (`background=True`): the caller renders the next frame while this one is encoded (PyAV, libx264 and
NumPy release the GIL), and the file is byte-identical to a synchronous run; an encoding error is raised by the
next `write` or by `close`. Audio is encoded alongside (interleaved), trimmed or zero-padded so that the output lasts
exactly `frames / fps`. Everything is written to a hidden temp file in the target folder and renamed over
the target only when the `with` block ends without an exception; on any exception (KeyboardInterrupt
included) the temp file is deleted and no output exists.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from real3d.errors import InputError, OutputError
from real3d.io.audio import Audio, AudioStream

log = logging.getLogger(__name__)

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def check_writable(path: str | Path) -> Path:
    """Make sure `path` can be written (folder exists and accepts files); raises OutputError otherwise.

    Call it before any expensive work so a bad `-o` fails in a second, not after rendering.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"output {p} is a folder; give a file name such as {p / 'out.mp4'}")
    if p.suffix.lower() not in _FORMATS:
        raise OutputError(f"unsupported output type {p.suffix or '(none)'!r} for {p}; use a .mp4, .mov or .mkv name")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"output folder {folder} does not exist; create it (mkdir -p) or choose another -o path")
    if not folder.is_dir():
        raise OutputError(f"{folder} is not a folder; choose an -o path inside an existing folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".real3d-probe-", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write into {folder} ({e.strerror}); choose a folder you can write to") from e
    os.close(fd)
    os.unlink(probe)
    return p


class VideoWriter:
    """Context manager writing RGB frames to an H.264 + AAC file, atomically.

    >>> with VideoWriter("out.mp4", fps=25, size=(512, 512), audio=audio) as w:
    ...     for frame in frames:  # RGB uint8 HxWx3
    ...         w.write(frame)
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 25.0,
        size: tuple[int, int] = (512, 512),
        audio: Audio | str | Path | None = None,
        crf: int = 18,
        preset: str = "veryfast",
        frame_filter: Callable[[np.ndarray], np.ndarray] | None = None,
        total: int | None = None,
        quiet: bool = False,
        audio_bitrate: int = 128_000,
        background: bool = True,
        queue_frames: int = 4,
        encoder_threads: int | None = None,
    ) -> None:
        """`size` is (width, height), both even; `total` (frames) only feeds the progress bar. `audio` is
        decoded samples or a file (an audio file or a video with sound) that is decoded piece by piece while
        the frames are written; the soundtrack is cut or padded with silence to the video's length.
        `background` filters and encodes in a worker thread, at most `queue_frames` frames behind `write`
        (each queued frame is a copy: memory stays bounded). `encoder_threads` sets libx264's threads (None: its
        automatic choice over the CPUs, as before the background thread existed; note that libx264 here does not
        promise identical bytes from run to run, decoded frames can differ by a few levels)."""
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.width, self.height = int(size[0]), int(size[1])
        if self.width % 2 or self.height % 2 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"size must be positive and even for yuv420p, got {size}")
        self.audio = audio
        self.crf = crf
        self.preset = preset
        self.frame_filter = frame_filter
        self.total = total
        self.quiet = quiet
        self.audio_bitrate = audio_bitrate
        self.frames_written = 0
        self._container = None
        self._vstream = None
        self._astream = None
        self._asource: AudioStream | None = None  # yields CxN float32 at the output rate
        self._apos = 0  # next audio sample to encode
        self._tmp: Path | None = None
        self._bar = None
        self.background = background
        self.encoder_threads = encoder_threads
        self.queue_frames = max(1, int(queue_frames))
        self._queue: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None  # raised by the worker, re-raised by write/close
        self.encode_seconds = 0.0
        """Wall time spent filtering + encoding frames (in the worker thread when `background`)."""

    # -- lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Create the temp file and the streams (called by `__enter__`)."""
        target = check_writable(self.path)
        fmt = _FORMATS[target.suffix.lower()]
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._container = av.open(str(self._tmp), mode="w", format=fmt)
            vs = self._container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
            vs.codec_context.time_base = 1 / self.fps
            vs.options = {"crf": str(self.crf), "preset": self.preset}
            if self.encoder_threads is not None:
                vs.codec_context.thread_count = int(self.encoder_threads)
            self._vstream = vs
            if self.audio is not None:
                self._open_audio(self.audio)
        except InputError:
            self.abort()
            raise
        except (av.error.FFmpegError, OSError, ValueError) as e:
            self.abort()
            raise OutputError(f"cannot start the encoder for {target}: {e}") from e
        if not self.quiet:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, unit="frame", desc=f"writing {target.name}", file=sys.stderr, leave=False
            )
        if self.background:
            self._queue = queue.Queue(maxsize=self.queue_frames)
            self._worker = threading.Thread(target=self._work, name=f"real3d-encode-{target.name}", daemon=True)
            self._worker.start()

    def _open_audio(self, audio: Audio | str | Path) -> None:
        if isinstance(audio, Audio):
            if audio.num_samples == 0:
                log.warning("audio track is empty; writing a silent track of the video's length")
            rate = audio.sample_rate if audio.sample_rate in AAC_RATES else 48000
            if rate != audio.sample_rate:
                audio = audio.resample(rate)
            pcm = audio.channels_first()
            if pcm.shape[0] > 2:
                log.info("down-mixing %d audio channels to stereo", pcm.shape[0])
                pcm = np.stack([pcm[0::2].mean(0), pcm[1::2].mean(0)])
            source = AudioStream.of(Audio(pcm, rate))
        else:
            source = AudioStream(audio)
            if source.sample_rate not in AAC_RATES:
                source.close()
                source = AudioStream(audio, sample_rate=48000)
        self._asource = source
        a = self._container.add_stream("aac", rate=source.sample_rate)
        a.codec_context.layout = "mono" if source.num_channels == 1 else "stereo"
        a.codec_context.bit_rate = self.audio_bitrate
        self._astream = a

    # -- writing ----------------------------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Encode one RGB uint8 frame (height x width x 3), after `frame_filter` (e.g. the provenance marks)."""
        if self._container is None:
            raise RuntimeError("VideoWriter is not open; use it as a context manager")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 frame of shape {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}"
            )
        if self._queue is None:
            self._encode(frame, self.frames_written)
        else:
            self._raise_worker_error()
            # a copy: the caller may reuse its buffer for the next frame while this one waits in the queue
            self._queue.put((np.array(frame, order="C", copy=True), self.frames_written))
        self.frames_written += 1
        if self._bar is not None:
            self._bar.update(1)

    def _encode(self, frame: np.ndarray, index: int) -> None:
        """Filter, encode and mux frame number `index`, then the audio up to its end."""
        t = time.perf_counter()
        if self.frame_filter is not None:
            frame = self.frame_filter(frame)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = index
        vf.time_base = 1 / self.fps
        try:
            self._container.mux(self._vstream.encode(vf))
            if self._astream is not None:
                self._encode_audio_until(self._audio_samples_for(index + 1), final=False)
        except av.error.FFmpegError as e:
            raise OutputError(f"encoding failed while writing {self.path}: {e}") from e
        finally:
            self.encode_seconds += time.perf_counter() - t

    def _work(self) -> None:
        """Worker thread: encode queued frames in order until the `None` sentinel. After an error it keeps
        taking (and dropping) frames so that `write` never blocks on a full queue."""
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._encode(*item)
                except BaseException as e:  # handed to the caller's thread by _raise_worker_error
                    self._error = e

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop_worker(self) -> None:
        """Let the worker finish the queued frames (or drop them after an error) and end."""
        if self._worker is None:
            return
        self._queue.put(None)
        self._worker.join()
        self._worker = None
        self._queue = None

    def _audio_samples_for(self, n_frames: int) -> int:
        return int(round(n_frames / self.fps * self._astream.codec_context.sample_rate))

    def _encode_audio_until(self, end: int, final: bool) -> None:
        """Encode audio samples [self._apos, end) (zero-padded past the track) in encoder-sized frames."""
        cc = self._astream.codec_context
        fs = cc.frame_size or 1024
        while self._apos < end and (final or end - self._apos >= fs):
            n = min(fs, end - self._apos)
            chunk = np.clip(self._asource.read(n), -1.0, 1.0)
            if chunk.shape[1] < n:  # past the end of the track: pad with silence
                chunk = np.pad(chunk, ((0, 0), (0, n - chunk.shape[1])))
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=cc.layout.name)
            af.sample_rate = cc.sample_rate
            af.pts = self._apos
            af.time_base = Fraction(1, cc.sample_rate)
            self._container.mux(self._astream.encode(af))
            self._apos += n

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it over the target; returns the target path."""
        if self._container is None:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise OutputError(f"no frames were written, so {self.path} was not created")
        self._stop_worker()
        if self._error is not None:
            self.abort()
            raise self._error
        try:
            self._container.mux(self._vstream.encode(None))
            if self._astream is not None:
                self._encode_audio_until(self._audio_samples_for(self.frames_written), final=True)
                self._container.mux(self._astream.encode(None))
            self._container.close()
            self._container = None
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp made it 0600; give it a normal file's mode
            os.replace(self._tmp, self.path)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise OutputError(f"could not finish {self.path}: {e}") from e
        finally:
            self._close_bar()
            self._close_audio()
        log.info("wrote %s (%d frames at %s fps)", self.path, self.frames_written, self.fps)
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Stop without output: close the encoder and delete the temp file."""
        if self._error is None and self._worker is not None:
            self._error = OutputError("aborted")  # the worker drops the frames still queued
        self._stop_worker()
        self._close_bar()
        self._close_audio()
        if self._container is not None:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError) as e:  # the file is discarded anyway
                log.debug("ignoring error while closing an aborted output: %s", e)
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _close_audio(self) -> None:
        if self._asource is not None:
            self._asource.close()
            self._asource = None

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
