import numpy as np
import pytest

from latentwalk.api import analyze_audio
from latentwalk.audio import envelope_at_fps, fitted_bpm
from latentwalk.errors import UserError
from latentwalk.toy.soundtrack import drum_track, write_wav

WINDOW = 0.07  # seconds: the standard ±70 ms beat-tracking tolerance (MIREX)


def f_measure(reference: np.ndarray, estimated: np.ndarray, window: float = WINDOW) -> float:
    """Beat F-measure with one-to-one matching inside ±window."""
    used = np.zeros(len(estimated), dtype=bool)
    hits = 0
    for r in reference:
        candidates = np.where(~used & (np.abs(estimated - r) <= window))[0]
        if len(candidates):
            used[candidates[np.argmin(np.abs(estimated[candidates] - r))]] = True
            hits += 1
    if hits == 0:
        return 0.0
    precision, recall = hits / len(estimated), hits / len(reference)
    return 2 * precision * recall / (precision + recall)


def test_beats_of_synthesized_drum_track(drum_wav):
    path, track = drum_wav
    analysis = analyze_audio(path)
    assert f_measure(track.beats, analysis.beats) >= 0.95
    assert analysis.bpm == pytest.approx(120.0, rel=0.01)
    assert analysis.duration == pytest.approx(len(track.samples) / track.sample_rate, abs=1e-3)


@pytest.mark.parametrize("bpm, lead_in", [(96.0, 0.37), (140.0, 1.0)])
def test_beats_at_other_tempos_and_offsets(tmp_path, bpm, lead_in):
    track = drum_track(bpm, 8, lead_in=lead_in, seed=2)
    analysis = analyze_audio(write_wav(track, tmp_path / "d.wav"))
    assert f_measure(track.beats, analysis.beats) >= 0.95
    assert analysis.bpm == pytest.approx(bpm, rel=0.01)
    # beat 0 is the first hit, not a beat the tracker extrapolated into the silent lead-in
    assert abs(analysis.beats[0] - track.beats[0]) <= WINDOW


def test_first_beat_at_time_zero_is_kept(drum_wav):
    assert abs(analyze_audio(drum_wav[0]).beats[0] - 0.0) <= WINDOW


def test_start_offset_shifts_beats(drum_wav):
    path, track = drum_wav
    analysis = analyze_audio(path, start=2.0, end=12.0)
    expected = track.beats[(track.beats >= 2.0) & (track.beats < 12.0)] - 2.0
    assert analysis.duration == pytest.approx(10.0, abs=1e-3)
    assert f_measure(expected, analysis.beats) >= 0.95


def test_bpm_override_is_reported(drum_wav):
    analysis = analyze_audio(drum_wav[0], bpm=120.0)
    assert analysis.bpm == 120.0
    assert f_measure(drum_wav[1].beats, analysis.beats) >= 0.95


def test_fitted_bpm_of_exact_grid():
    assert fitted_bpm(np.arange(10) * 0.5 + 0.2) == pytest.approx(120.0)


def test_envelope_at_fps_preserves_mean_and_length():
    env = np.abs(np.sin(np.arange(431) / 7.0))  # ~10 s at 43 Hz
    frames = envelope_at_fps(env, fps=12, n_frames=120)
    assert frames.shape == (120,)
    assert frames.mean() == pytest.approx(env[: int(10 * 22050 / 512)].mean(), rel=0.02)


def test_unreadable_audio(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(UserError, match="cannot read audio file"):
        analyze_audio(bad)


def test_pacing_energy_drives_the_step_that_ends_on_the_beat():
    from latentwalk.audio import ENVELOPE_RATE, attack_delay, pacing_energy

    fps, beats = 24.0, np.arange(1, 8) * 0.5  # beats on frames 12, 24, ...
    env = np.full(int(5 * ENVELOPE_RATE), 0.1)
    for b in beats:  # each hit's envelope peaks 3 hops (~70 ms) after it, as spectral flux does
        env[int(round(b * ENVELOPE_RATE)) + 3] = 5.0
    assert attack_delay(env, beats) == pytest.approx(3 / ENVELOPE_RATE)
    energy = pacing_energy(env, beats, fps, 96)
    beat_frames = np.round(beats * fps).astype(int)[:3]
    # window index 1: the step f-1 -> f (ending on the beat frame), 2: the step f -> f+1
    assert all(int(np.argmax(energy[f - 2 : f + 3])) in (1, 2) for f in beat_frames)
    before = envelope_at_fps(env, fps, 96)  # each frame's own span: the steps after that, one to two frames late
    assert all(int(np.argmax(before[f - 2 : f + 3])) >= 3 for f in beat_frames)
