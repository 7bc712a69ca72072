"""Timed phone recognition with pocketsphinx's shipped en-US model (phone-loop / "allphone" decoding).

`pocketsphinx==5.1.1` ships an en-US acoustic model and a phone language model, so phones with times
come without downloading anything. Accuracy on any single phone is modest (the phone loop has no
words to lean on), but vowel classes, closures and silences are tracked well enough to drive visemes;
`real3d.motion.visemes` also gates everything with the loudness envelope. Non-English speech is decoded
into the nearest English phones, which still gives plausible open/close mouth motion.

Long audio is decoded in pieces of about `max_piece_s`, cut at the quietest 10 ms inside the last third
of each piece, so memory does not grow with the length of the input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from real3d.errors import DependencyError, InputError

log = logging.getLogger(__name__)

SILENCE = "SIL"
"""Label of silence (pocketsphinx fillers such as <sil>, +NSN+, +BREATH+ map to it)."""
NOISE_SPEECH = "+SPN+"
"""Pocketsphinx's 'spoken noise' filler: speech-like sound it could not label."""
FRAME_S = 0.01
"""Pocketsphinx's frame period (frate 100)."""


@dataclass(frozen=True)
class Phone:
    """One recognized phone with its time span."""

    phone: str
    """CMU/ARPAbet label (AA, B, ... ZH), SILENCE, or NOISE_SPEECH."""
    start: float
    """Start time in seconds."""
    end: float
    """End time in seconds (exclusive)."""


@dataclass(frozen=True)
class PhoneConfig:
    """Decoder settings for phone-loop decoding (the values measured to work on 16 kHz speech)."""

    language_weight: float = 2.0
    """Weight of the phone language model (`lw`); higher values drop more phones."""
    phone_insertion_penalty: float = 0.3
    """Phone insertion probability (`pip`)."""
    beam: float = 1e-20
    """Search beam (`beam`)."""
    phone_beam: float = 1e-20
    """Phone beam (`pbeam`)."""
    max_piece_s: float = 30.0
    """Longest stretch decoded as one utterance; longer audio is cut at quiet points."""
    silence_peak: float = 1e-3
    """Audio whose peak amplitude stays below this is taken as silence without decoding."""


@lru_cache(maxsize=1)
def _model_paths() -> tuple[str, str]:
    try:
        import pocketsphinx
    except ImportError as e:  # pragma: no cover - pocketsphinx is a hard dependency
        raise DependencyError("pocketsphinx is needed for audio-driven motion; pip install pocketsphinx==5.1.1") from e
    root = Path(pocketsphinx.get_model_path())
    hmm, lm = root / "en-us" / "en-us", root / "en-us" / "en-us-phone.lm.bin"
    if not hmm.is_dir() or not lm.is_file():
        raise DependencyError(f"pocketsphinx's en-US model is missing under {root}; reinstall pocketsphinx==5.1.1")
    return str(hmm), str(lm)


def _decoder(config: PhoneConfig):
    from pocketsphinx import Decoder

    hmm, lm = _model_paths()
    return Decoder(
        hmm=hmm,
        allphone=lm,
        lw=config.language_weight,
        pip=config.phone_insertion_penalty,
        beam=config.beam,
        pbeam=config.phone_beam,
        samprate=16000,
        loglevel="FATAL",
    )


def _normalize_label(word: str) -> str:
    if word == NOISE_SPEECH:
        return NOISE_SPEECH
    if word.startswith(("+", "<")) or word.upper() in ("SIL", "[SIL]"):
        return SILENCE
    return word.upper()


def _cut_points(x: np.ndarray, sample_rate: int, max_piece_s: float) -> list[int]:
    """Sample indices that split x into pieces <= max_piece_s, each cut at the quietest 10 ms of the
    last third of its piece."""
    n = len(x)
    piece = int(max_piece_s * sample_rate)
    hop = int(FRAME_S * sample_rate)
    cuts = [0]
    while n - cuts[-1] > piece:
        lo = cuts[-1] + (2 * piece) // 3
        hi = cuts[-1] + piece
        seg = x[lo:hi]
        e = (seg[: len(seg) // hop * hop].reshape(-1, hop) ** 2).sum(1)
        cuts.append(lo + int(np.argmin(e)) * hop)
    cuts.append(n)
    return cuts


def _merge(phones: list[Phone]) -> list[Phone]:
    """Merge neighbouring silences and drop zero-length items."""
    out: list[Phone] = []
    for p in phones:
        if p.end <= p.start:
            continue
        if out and out[-1].phone == SILENCE and p.phone == SILENCE:
            out[-1] = Phone(SILENCE, out[-1].start, p.end)
        else:
            out.append(p)
    return out


def recognize_phones(samples: np.ndarray, sample_rate: int = 16000, config: PhoneConfig | None = None) -> list[Phone]:
    """Timed phones of 16 kHz mono float samples; the list covers [0, duration) without gaps
    (silence included). Empty audio gives an empty list."""
    cfg = config or PhoneConfig()
    if sample_rate != 16000:
        raise InputError(
            f"phone recognition needs 16 kHz audio, got {sample_rate} Hz; resample first (load_audio does)"
        )
    x = np.asarray(samples, np.float32)
    if x.ndim != 1:
        raise InputError(f"expected mono samples [N], got shape {x.shape}; mix down to mono first")
    duration = len(x) / sample_rate
    if len(x) == 0:
        return []
    if not np.all(np.isfinite(x)):
        raise InputError("audio contains NaN or infinite samples; the file is corrupt")
    if max(float(x.max()), -float(x.min())) < cfg.silence_peak or duration < 0.1:
        return [Phone(SILENCE, 0.0, duration)]
    decoder = _decoder(cfg)
    out: list[Phone] = []
    cuts = _cut_points(x, sample_rate, cfg.max_piece_s)
    for a, b in zip(cuts[:-1], cuts[1:]):
        t0 = a / sample_rate
        piece_end = b / sample_rate
        decoder.start_utt()
        pcm = (np.clip(x[a:b], -1.0, 1.0) * 32767.0).astype(np.int16)  # one piece at a time
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        cursor = t0
        for seg in decoder.seg():
            start = t0 + seg.start_frame * FRAME_S
            end = min(t0 + (seg.end_frame + 1) * FRAME_S, piece_end)
            if start > cursor:
                out.append(Phone(SILENCE, cursor, start))
            start = max(start, cursor)
            if end > start:
                out.append(Phone(_normalize_label(seg.word), start, end))
                cursor = end
        if cursor < piece_end:
            out.append(Phone(SILENCE, cursor, piece_end))
    log.debug("recognized %d phones in %.2f s of audio", len(out), duration)
    return _merge(out)
