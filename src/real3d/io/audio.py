"""Loading audio with PyAV: wav/mp3/m4a/flac/ogg files and the audio track of videos.

Decoded audio goes through PyAV's resampler (libswresample), so any input rate, channel layout and sample
format comes out as float32 planar at the requested rate, optionally down-mixed to mono. `load_audio`
decodes a whole file; `AudioStream` decodes it piece by piece as it is read (the writer muxes a
10-minute soundtrack with the memory of a few seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from real3d.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 samples in [-1, 1], mono (N,) or multichannel (C, N), and their rate."""

    samples: np.ndarray
    """float32 (N,) for mono or (C, N) for C channels."""
    sample_rate: int
    """Samples per second."""

    @property
    def num_samples(self) -> int:
        """Number of samples per channel."""
        return int(self.samples.shape[-1])

    @property
    def num_channels(self) -> int:
        """1 for mono (N,) arrays, else C."""
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / float(self.sample_rate)

    def channels_first(self) -> np.ndarray:
        """Samples as float32 (C, N), also for mono."""
        return self.samples[None, :] if self.samples.ndim == 1 else self.samples

    def resample(self, sample_rate: int) -> Audio:
        """This audio at another sample rate (PyAV's resampler); channels are kept."""
        if sample_rate == self.sample_rate:
            return self
        planar = np.ascontiguousarray(self.channels_first(), dtype=np.float32)  # CxN
        layout = _layout_name(planar.shape[0])
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        chunks = []
        step = 1 << 15
        for start in range(0, planar.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + step]), format="fltp", layout=layout
            )
            frame.sample_rate = self.sample_rate
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
        out = np.concatenate(chunks, axis=1) if chunks else np.zeros((planar.shape[0], 0), np.float32)  # CxN'
        out = out.astype(np.float32, copy=False)
        return Audio(out[0] if self.samples.ndim == 1 else out, sample_rate)


def _layout_name(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    return av.AudioLayout(channels).name


def _open(path: str | Path) -> tuple[Path, av.container.InputContainer]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}; check the path (quote it if it contains spaces)")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an audio file; pass a wav/mp3/m4a/flac/ogg file or a video")
    try:
        return p, av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise InputError(
            f"cannot read {p} as audio ({e.__class__.__name__}: {e.strerror or e}); "
            "pass a wav, mp3, m4a, flac or ogg file, or a video with a sound track"
        ) from e


def has_audio(path: str | Path) -> bool:
    """True when the file has at least one audio stream (InputError when it cannot be opened at all)."""
    _, container = _open(path)
    try:
        return bool(container.streams.audio)
    finally:
        container.close()


def load_audio(path: str | Path, sample_rate: int | None = 16000, mono: bool = True) -> Audio:
    """Decode the first audio stream of a file (an audio file or a video's sound track).

    `sample_rate=None` keeps the file's rate. `mono=True` down-mixes to (N,), else returns (C, N).
    Raises InputError for a missing, corrupt or unsupported file, a file without audio, or zero samples.
    """
    with AudioStream(path, sample_rate=sample_rate, max_channels=1 if mono else None) as stream:
        chunks = []
        while (chunk := stream.read(1 << 20)).shape[1]:
            chunks.append(chunk)
    if not chunks:
        raise InputError(f"{stream.path} has an audio stream with no samples; pass a recording that is not empty")
    data = np.concatenate(chunks, axis=1)  # CxN
    return Audio(np.ascontiguousarray(data[0] if mono else data), stream.sample_rate)


class AudioStream:
    """The first audio stream of a file, decoded lazily: `read(n)` returns the next n samples (C x n float32,
    fewer at the end, then C x 0). `max_channels` 1 down-mixes to mono, 2 keeps mono/stereo and down-mixes
    more channels to stereo (libswresample), None keeps them all; `sample_rate=None` keeps the file's rate.
    Use as a context manager or `close()`. An `Audio` (already decoded) is read the same way through
    `AudioStream.of(audio)`.
    """

    def __init__(self, path: str | Path, sample_rate: int | None = None, max_channels: int | None = 2) -> None:
        p, container = _open(path)
        self.path = p
        self._container = container
        if not container.streams.audio:
            container.close()
            raise InputError(f"{p} has no audio stream; pass a file with sound (or a video that has a sound track)")
        stream = container.streams.audio[0]
        rate = int(sample_rate or stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0) or 1
        if rate <= 0:
            container.close()
            raise InputError(f"{p}: the audio stream has no sample rate; re-encode it (e.g. to 16 kHz wav)")
        self.sample_rate = rate
        self.num_channels = channels if max_channels is None else min(channels, max(1, max_channels))
        layout = "mono" if self.num_channels == 1 else "stereo" if self.num_channels == 2 else None
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._pieces: Iterator[np.ndarray] = self._decode(stream)
        self._buffer = np.zeros((self.num_channels, 0), np.float32)
        self._array: np.ndarray | None = None  # set by `of`

    @classmethod
    def of(cls, audio: Audio) -> AudioStream:
        """A stream over already decoded samples (no file)."""
        self = cls.__new__(cls)
        self.path = None
        self._container = None
        self.sample_rate = audio.sample_rate
        self._array = audio.channels_first()
        self.num_channels = int(self._array.shape[0])
        self._pos = 0
        return self

    def _decode(self, stream) -> Iterator[np.ndarray]:
        try:
            for frame in self._container.decode(stream):
                for f in self._resampler.resample(frame):
                    yield f.to_ndarray()
            for f in self._resampler.resample(None):
                yield f.to_ndarray()
        except av.error.FFmpegError as e:
            raise InputError(
                f"cannot decode the audio of {self.path}: {e}; the file may be corrupt, re-export it"
            ) from e
        except ValueError as e:
            raise InputError(f"unsupported audio in {self.path}: {e}; convert it to a 16 kHz mono wav") from e

    def read(self, n: int) -> np.ndarray:
        """The next `n` samples per channel, C x m float32 with m <= n (m < n only at the end)."""
        if self._array is not None:
            out = self._array[:, self._pos : self._pos + n]
            self._pos += out.shape[1]
            return np.ascontiguousarray(out, dtype=np.float32)
        pieces, have = [self._buffer], self._buffer.shape[1]
        while have < n:
            piece = next(self._pieces, None)
            if piece is None:
                break
            pieces.append(piece.astype(np.float32, copy=False))
            have += piece.shape[1]
        data = np.concatenate(pieces, axis=1) if len(pieces) > 1 else self._buffer
        out, self._buffer = data[:, :n], data[:, n:]
        return out

    def close(self) -> None:
        """Release the file."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
