"""Stage 2: audio analysis with librosa: tempo, beat times and a percussive-energy envelope."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwalk.errors import UserError

SAMPLE_RATE = 22050
HOP_LENGTH = 512  # onset-envelope hop: 512 / 22050 ≈ 23 ms per envelope frame
ENVELOPE_RATE = SAMPLE_RATE / HOP_LENGTH  # envelope frames per second
# The tracker (run untrimmed: librosa's own trimming drops real first beats) extends its grid
# into silent lead-ins. A leading or trailing beat whose loudness (RMS within BEAT_REACH) is
# below this fraction of the median beat's is dropped, so beat 0 is the first beat you hear.
QUIET_BEAT_FRACTION = 0.1
BEAT_REACH = 0.07  # seconds: the MIREX tolerance between a beat and its onset


@dataclass(frozen=True)
class AudioAnalysis:
    duration: float  # seconds of audio analysed (after start/end trimming)
    bpm: float
    beats: np.ndarray  # (N,) beat times in seconds from the start of the analysed clip
    onset_envelope: np.ndarray  # (M,) percussive onset strength at ENVELOPE_RATE


def load_audio(path: str | Path, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Mono float32 samples at SAMPLE_RATE of [start, end) seconds of a file."""
    import librosa

    duration = None if end is None else end - start
    try:
        y, _ = librosa.load(str(path), sr=SAMPLE_RATE, mono=True, offset=start, duration=duration)
    except Exception as e:  # librosa/soundfile/audioread raise many types for unreadable files
        raise UserError(f"audio.path: cannot read audio file {str(path)!r}: {e}") from None
    if y.size == 0:
        raise UserError(f"audio: no samples in {str(path)!r} between start={start} and end={end}")
    return y


def file_duration(path: str | Path) -> float | None:
    """Seconds of audio in a file from its header, or None when it cannot be read (load_audio then says why)."""
    import librosa

    try:
        return float(librosa.get_duration(path=str(path)))
    except Exception:  # unreadable: load_audio reports it with its own message
        return None


def analyze(y: np.ndarray, bpm: float | None = None) -> AudioAnalysis:
    """Beats by dynamic programming (Ellis 2007, librosa.beat.beat_track) on the onset envelope.

    With `bpm`, the tracker is told the tempo instead of estimating it. The envelope of the
    percussive part (HPSS, Fitzgerald 2010) drives audio pacing.
    """
    import librosa

    onset = librosa.onset.onset_strength(y=y, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    tempo, beats = librosa.beat.beat_track(
        onset_envelope=onset, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, bpm=bpm, units="time", trim=False
    )
    tempo = float(np.atleast_1d(tempo)[0])
    beats = audible_beats(y, np.asarray(beats, dtype=np.float64))
    percussive = librosa.effects.percussive(y)
    envelope = librosa.onset.onset_strength(y=percussive, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    beats = np.asarray(beats, dtype=np.float64)
    if bpm is None:
        bpm = fitted_bpm(beats) or tempo
    return AudioAnalysis(duration=len(y) / SAMPLE_RATE, bpm=float(bpm), beats=beats, onset_envelope=envelope)


def audible_beats(y: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Beat times without the near-silent ones at either end (see QUIET_BEAT_FRACTION)."""
    if len(beats) == 0:
        return beats
    reach = int(BEAT_REACH * SAMPLE_RATE)
    centers = np.round(beats * SAMPLE_RATE).astype(int)
    loudness = np.array([np.sqrt(np.mean(y[max(0, c - reach) : c + reach] ** 2)) if c < len(y) else 0.0 for c in centers])
    loud = np.flatnonzero(loudness >= QUIET_BEAT_FRACTION * np.median(loudness))
    return beats[loud[0] : loud[-1] + 1] if len(loud) else beats[:0]


def fitted_bpm(beats: np.ndarray) -> float | None:
    """Tempo from a least-squares line through beat times: finer than the tracker's tempo bins."""
    if len(beats) < 4:
        return None
    period = np.polyfit(np.arange(len(beats)), beats, 1)[0]
    return 60.0 / period if period > 0 else None


def beat_grid(bpm: float, duration: float) -> np.ndarray:
    """Beat times of a steady tempo from 0 up to `duration` (for timelines without audio)."""
    return np.arange(0.0, duration + 1e-9, 60.0 / bpm)


def envelope_at_fps(envelope: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Onset envelope averaged over each video frame's time span → (n_frames,)."""
    if len(envelope) == 0:
        return np.zeros(n_frames)
    edges = np.arange(n_frames + 1) / fps * ENVELOPE_RATE
    cumulative = np.concatenate([[0.0], np.cumsum(envelope)])
    positions = np.arange(len(cumulative))
    # Integrate the piecewise-constant envelope between frame edges, then divide by width.
    area = np.interp(edges, positions, cumulative, right=cumulative[-1])
    widths = np.diff(edges)
    return np.diff(area) / widths
