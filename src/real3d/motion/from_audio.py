"""Audio driver: speech samples -> MotionTrack (mouth from phones, the spectral balance, the 1-3 kHz level and
rhythm and the formants, its amplitude set per speaker from the median voiced F1; blinks; idle head motion).

The mouth rests closed: a source photographed mid-word or smiling with teeth is first closed
(`real3d.motion.mouth.closed_mouth`), and speech opens the mouth from there.

Analysis (phones, loudness, viseme parameters, blink and pose curves) produces small per-frame arrays
for the whole input; the [T,478,3] expression offsets are only materialized chunk by chunk in
`AudioDriver.chunks`, so a 10-minute input needs about as much memory as a 10-second one.
Frame i shows the mouth state at time i/fps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from real3d.audio.features import (
    hops_to_frames,
    spectral_openness,
    speech_bands_db,
    speech_level,
)
from real3d.audio.formants import formant_tracks, speaker_scale, vowel_cues
from real3d.audio.phones import Phone, PhoneConfig, recognize_phones
from real3d.errors import InputError
from real3d.motion.blink import BlinkMode, blink_curve
from real3d.motion.idle import IdleConfig, idle_motion
from real3d.motion.mouth import (
    MouthRig,
    build_rig,
    closed_mouth,
    inner_lip_gap,
    mouth_offsets,
    normalise_opening,
)
from real3d.motion.track import N_LANDMARKS, MotionTrack
from real3d.motion.visemes import (
    OFFICIAL_MOUTH_AMP,
    VisemeConfig,
    amplitude_scale,
    pauses,
    sample_at_frames,
    visemes_from_phones,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The driver's input rate (mono float32)."""
OPENING_SD = 0.068
"""Standard deviation of the inner-lip gap while a typical speaker (`speaker_scale` 1, median voiced F1 700 Hz)
talks, canonical units (outer-eye-corner distance = 1), before `mouth_amp`; the driver scales the jaw so that its
opening moves this much times `speaker_scale` (`real3d.motion.mouth.normalise_opening`). The real speakers of the
nine development clips move 1.05-1.46e-4 x their median F1 (MediaPipe on the clip), and MediaPipe reads our
rendered openings 1.12-1.38x the rig's gap (pose, the lips' texture); 0.068 puts the median of the rendered sd
ratios near 1 (0.085 gave 1.0-1.55). One constant for all speakers: the spread that remains is the speakers'."""


@dataclass(frozen=True)
class AudioAnalysis:
    """Per-frame curves of the whole input (small arrays)."""

    phones: list[Phone]
    """Recognized phones with times (seconds)."""
    mouth_params: np.ndarray
    """[T,k] mouth parameters per frame (columns as `real3d.motion.mouth.MOUTH_PARAMS`)."""
    mouth_open: np.ndarray
    """[T] inner-lip gap / outer-eye-corner distance."""
    blink: np.ndarray
    """[T] eyelid closure in [0,1]."""
    euler: np.ndarray
    """[T,3] head rotation as Euler angles (pitch, yaw, roll), radians."""
    trans: np.ndarray
    """[T,3] head translation (x, y canonical units; z log-scale)."""
    loudness_db: np.ndarray
    """[T] frame loudness (dB re full scale)."""
    speaker_scale: float = 1.0
    """How wide this speaker opens relative to a typical one (`real3d.audio.formants.speaker_scale`)."""


class AudioDriver:
    """Motion for a portrait from a speech recording (16 kHz mono float32 samples).

    `mouth_amp` scales the mouth motion (official default 0.45 = neutral), `blink` picks the blink
    schedule, `still` turns the idle head motion off, `seed` makes blinks and head motion repeatable.
    """

    def __init__(
        self,
        samples16k: np.ndarray,
        neutral_canonical: np.ndarray,
        fps: float = 25.0,
        mouth_amp: float = OFFICIAL_MOUTH_AMP,
        blink: BlinkMode = "natural",
        still: bool = False,
        seed: int = 0,
        visemes: VisemeConfig | None = None,
        idle: IdleConfig | None = None,
        phones: PhoneConfig | None = None,
    ) -> None:
        x = np.asarray(samples16k, np.float32)
        if x.ndim != 1:
            raise InputError(f"audio must be mono samples [N], got shape {x.shape}; load it with mono=True")
        if len(x) == 0:
            raise InputError("the audio has zero length; give a recording with at least one frame of sound or silence")
        if not np.all(np.isfinite(x)):
            raise InputError("the audio contains NaN or infinite samples; the file is corrupt")
        neutral = np.asarray(neutral_canonical, np.float64)
        if neutral.shape != (N_LANDMARKS, 3):
            raise ValueError(f"neutral_canonical must be [{N_LANDMARKS},3], got {neutral.shape}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if blink not in ("natural", "periodic", "none"):
            raise ValueError(f"unknown blink mode {blink!r}; use 'natural', 'periodic' or 'none'")
        self.samples: np.ndarray | None = x
        """The 16 kHz input; released once `analysis()` has run (the curves are all that is needed then)."""
        self.num_samples = len(x)
        self.neutral = neutral
        self.rest = closed_mouth(neutral)
        """The source's face with the lips together: speech opens the mouth from here."""
        self._rest_offset = (self.rest - neutral).astype(np.float32)
        self.fps = float(fps)
        self.mouth_amp = float(mouth_amp)
        self.blink_mode: BlinkMode = blink
        self.still = still
        self.seed = seed
        self.viseme_config = visemes or VisemeConfig()
        self.idle_config = idle or IdleConfig()
        self.phone_config = phones or PhoneConfig()
        self._analysis: AudioAnalysis | None = None
        self._rig: MouthRig | None = None

    def __len__(self) -> int:
        """Number of frames: round(duration * fps), at least 1."""
        return max(1, int(round(self.num_samples / SAMPLE_RATE * self.fps)))

    @property
    def rig(self) -> MouthRig:
        """The mouth rig of the closed rest face."""
        if self._rig is None:
            self._rig = build_rig(self.rest)
        return self._rig

    def analysis(self) -> AudioAnalysis:
        """Phones, mouth parameters, blink and pose for the whole input (computed once)."""
        if self._analysis is None:
            self._analysis = self._analyze()
            self.samples = None  # a long recording's samples are not kept while frames are rendered
        return self._analysis

    def _analyze(self) -> AudioAnalysis:
        n = len(self)
        rms_db, (band_db, low_db) = speech_bands_db(self.samples, SAMPLE_RATE)
        phones = recognize_phones(self.samples, SAMPLE_RATE, self.phone_config)
        live = rms_db > speech_level(rms_db) + self.viseme_config.close_db  # hops that carry speech, not pauses
        formants = formant_tracks(self.samples, SAMPLE_RATE, len(rms_db))
        speaker = speaker_scale(formants, live)
        params_hop = visemes_from_phones(
            phones,
            rms_db,
            self.mouth_amp,
            self.viseme_config,
            articulation_db=band_db,
            openness=spectral_openness(band_db, low_db, live),
            vowels=vowel_cues(formants, live),
        )
        params = sample_at_frames(params_hop, n, self.fps, offset_s=self.viseme_config.visual_lead_s)
        talking = hops_to_frames(pauses(rms_db, self.viseme_config), n, self.fps) < 0.5
        target = OPENING_SD * speaker * amplitude_scale(self.mouth_amp)
        params, gain = normalise_opening(self.rest, params, target, talking, self.rig)
        mouth_open = inner_lip_gap(self.rest, params, self.rig)
        blink = blink_curve(n, self.fps, self.blink_mode, np.random.default_rng(self.seed))
        power = np.power(10.0, rms_db.astype(np.float64) / 10.0)
        loud = 10.0 * np.log10(np.maximum(hops_to_frames(power, n, self.fps), 1e-10)).astype(np.float32)
        if self.still:
            rot, trans = np.zeros((n, 3), np.float32), np.zeros((n, 3), np.float32)
        else:
            ref = speech_level(loud)
            emphasis = np.clip((loud - (ref - 30.0)) / 30.0, 0.0, 1.0)
            rot, trans = idle_motion(n, self.fps, emphasis, self.seed + 1, self.idle_config)
        log.debug(
            "audio analysis: %d frames, %d phones, speaker scale %.2f, jaw gain %.2f", n, len(phones), speaker, gain
        )
        return AudioAnalysis(phones, params, mouth_open, blink, rot, trans, loud, speaker)

    def _track(self, start: int, stop: int) -> MotionTrack:
        a = self.analysis()
        sl = slice(start, stop)
        return MotionTrack(
            fps=self.fps,
            euler=a.euler[sl].copy(),
            trans=a.trans[sl].copy(),
            expression=mouth_offsets(self.rest, a.mouth_params[sl], self.rig) + self._rest_offset,
            blink=a.blink[sl].copy(),
            mouth_open=a.mouth_open[sl].copy(),
            meta={"driver": "audio", "start_frame": start, "mouth_amp": self.mouth_amp, "blink": self.blink_mode},
        )

    def chunks(self, size: int = 250) -> Iterator[MotionTrack]:
        """Consecutive MotionTracks of at most `size` frames covering the whole input."""
        if size <= 0:
            raise ValueError(f"chunk size must be positive, got {size}")
        n = len(self)
        for start in range(0, n, size):
            yield self._track(start, min(n, start + size))

    def track(self) -> MotionTrack:
        """The whole MotionTrack at once (use `chunks` for long audio)."""
        return self._track(0, len(self))
