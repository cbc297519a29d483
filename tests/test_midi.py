"""The user's own grid: MIDI files and tempo maps (bit-exact beats and bars), MIDI notes as track
variables, stems, beat overrides and the errors for bad ones (latentwalk/midi.py, tempomap.py,
usergrid.py, stems.py)."""

import subprocess
import sys

import mido
import numpy as np
import pytest
import soundfile

from latentwalk.api import midi_analysis, plan
from latentwalk.errors import UserError
from latentwalk.midi import estimate_offset, midi_grid, note_curve, read_midi, Note
from latentwalk.tempomap import TempoSection, grid, meter_beats, read_tempo_map
from latentwalk.timeline import parse_timeline
from latentwalk.toy.soundtrack import SAMPLE_RATE, _kick

TPB = 480


def write_midi(path, events, tempo_events=((0, 500000),), meters=((0, 4, 4),), tpb=TPB):
    """A type-1 file: a conductor track of tempo/meter events, then one track of (tick, channel, pitch, length, velocity) notes."""
    mid = mido.MidiFile(ticks_per_beat=tpb)
    conductor = mido.MidiTrack()
    meta = [(t, mido.MetaMessage("set_tempo", tempo=us)) for t, us in tempo_events]
    meta += [(t, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for t, n, d in meters]
    now = 0
    for t, msg in sorted(meta, key=lambda m: m[0]):
        conductor.append(msg.copy(time=t - now))
        now = t
    mid.tracks.append(conductor)
    notes = mido.MidiTrack()
    timed = []
    for tick, channel, pitch, length, velocity in events:
        timed += [(tick, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)),
                  (tick + length, 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0))]
    now = 0
    for t, _, msg in sorted(timed, key=lambda m: (m[0], m[1])):
        notes.append(msg.copy(time=t - now))
        now = t
    mid.tracks.append(notes)
    mid.save(str(path))
    return path


def timeline(text: str, folder) -> "object":
    return parse_timeline(text, "t.yaml", base_dir=folder)


# MIDI grids: exact beats and bars ---------------------------------------------------------------


def test_midi_grid_is_exact_through_tempo_and_meter_changes(tmp_path):
    # 2 bars of 4/4 at 120, then 2 bars of 3/4 at 96 (0.625 s a beat), then 6/8 at 120 (dotted quarter 0.75 s)
    path = write_midi(
        tmp_path / "s.mid", [(k * TPB, 0, 60, TPB // 2, 100) for k in range(20)],
        tempo_events=((0, 500000), (8 * TPB, 625000), (14 * TPB, 500000)), meters=((0, 4, 4), (8 * TPB, 3, 4), (14 * TPB, 6, 8)),
    )
    g = midi_grid(read_midi(path), 10.0)
    expected = np.concatenate([np.arange(8) * 0.5, 4.0 + np.arange(6) * 0.625, 7.75 + np.arange(4) * 0.75])
    assert np.array_equal(g.beats, expected)  # bit-exact
    assert g.bar_starts.tolist() == [0, 4, 8, 11, 14, 16]
    assert np.array_equal(g.downbeats, expected[[0, 4, 8, 11, 14, 16]])
    assert g.meters == ("4/4", "3/4", "6/8")


@pytest.mark.parametrize("meter, bpb, period", [((2, 4), 2, 0.5), ((3, 4), 3, 0.5), ((4, 4), 4, 0.5), ((6, 8), 2, 0.75), ((12, 8), 4, 0.75), ((2, 2), 2, 1.0)])
def test_meters_tap_the_listeners_beat(tmp_path, meter, bpb, period):
    path = write_midi(tmp_path / "m.mid", [(0, 0, 60, TPB, 90)], meters=((0, *meter),))
    g = midi_grid(read_midi(path), 12.0)
    assert np.array_equal(g.beats, np.arange(len(g.beats)) * period)
    assert np.array_equal(np.diff(g.bar_starts), np.full(len(g.bar_starts) - 1, bpb))
    assert meter_beats(*meter)[0] == bpb


def test_keyframes_land_exactly_on_midi_bars(tmp_path):
    write_midi(tmp_path / "s.mid", [(0, 0, 60, TPB, 90)], tempo_events=((0, 500000), (6 * TPB, 625000)), meters=((0, 3, 4), (6 * TPB, 2, 4)))
    t = timeline("fps: 8\naudio: {midi: s.mid}\nend: {bar: 6}\nkeyframes:\n  - {bar: 0, prompt: a}\n  - {bar: 2, prompt: b}\n  - {bar: 3, prompt: c}\n  - {bar: 5, prompt: d}\n", tmp_path)
    p = plan(t)
    # bars 0, 1 of 3/4 at 0.5 s; from 3.0 s bars of 2 beats at 0.625 s
    assert [k.time for k in p.keyframes] == [0.0, 3.0, 3.0 + 1.25, 3.0 + 3 * 1.25]
    assert p.n_frames == round((3.0 + 4 * 1.25) * 8)
    assert p.beat_notes[0].startswith("beats and bars from s.mid (meter 3/4, 2/4")
    assert p.tracker == "midi"


def test_midi_without_tempo_assumes_120_and_plan_says_so(tmp_path):
    path = write_midi(tmp_path / "s.mid", [(0, 0, 60, TPB, 90)], tempo_events=(), meters=())
    song = read_midi(path)
    assert song.assumed_tempo and song.assumed_meter
    p = plan(timeline("audio: {midi: s.mid}\nend: {bar: 2}\nkeyframes:\n  - {bar: 1, prompt: a}\n", tmp_path))
    assert p.keyframes[0].time == 2.0
    assert any("no tempo events: 120 bpm assumed" in n for n in p.beat_notes)
    (tmp_path / "t.yaml").write_text("audio: {midi: s.mid}\nend: {bar: 2}\nkeyframes:\n  - {bar: 1, prompt: a}\n")
    out = subprocess.run([sys.executable, "-m", "latentwalk.cli", "plan", "t.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "beats: s.mid has no tempo events: 120 bpm assumed" in out.stdout


# Tempo maps -------------------------------------------------------------------------------------


def test_tempo_map_csv_and_yaml_give_the_same_exact_grid(tmp_path):
    (tmp_path / "map.csv").write_text("time,bpm,meter\n0,120,4/4\n4,96,3/4\n7.75,120,6/8\n")
    (tmp_path / "map.yaml").write_text("- {time: 0, bpm: 120, meter: 4/4}\n- {time: 4, bpm: 96, meter: 3/4}\n- {time: 7.75, bpm: 120, meter: 6/8}\n")
    a, b = grid(read_tempo_map(tmp_path / "map.csv"), 10.0), grid(read_tempo_map(tmp_path / "map.yaml"), 10.0)
    expected = np.concatenate([np.arange(8) * 0.5, 4.0 + np.arange(6) * 0.625, 7.75 + np.arange(4) * 0.75])
    assert np.array_equal(a.beats, expected) and np.array_equal(b.beats, expected)
    assert a.bar_starts.tolist() == b.bar_starts.tolist() == [0, 4, 8, 11, 14, 16]


def test_tempo_change_in_one_meter_keeps_counting_the_bar():
    g = grid([TempoSection(0.0, 120.0, 4, 4), TempoSection(3.0, 60.0, 4, 4)], 9.0)
    assert np.array_equal(g.beats, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert g.bar_starts.tolist() == [0, 4, 8, 12]


def test_tempo_map_with_offset_and_start(tmp_path, drum_wav):
    (tmp_path / "map.csv").write_text("time,bpm,meter\n0,120,4\n")
    wav = drum_wav[0]
    p = plan(timeline(f"fps: 10\naudio: {{path: {wav}, tempo_map: map.csv, offset: 1.0, start: 2.0}}\nkeyframes:\n  - {{bar: 0, prompt: a}}\n  - {{bar: 1, prompt: b}}\n", tmp_path))
    # map time 0 at 1.0 s into the file; the clip starts at 2.0 s (map time 1.0, beat 2 of a bar):
    # beats at 0, 0.5, ... of the clip, bar 0 is the first bar that starts in it (map time 2.0)
    assert np.array_equal(p.beats[:4], [0.0, 0.5, 1.0, 1.5])
    assert [k.time for k in p.keyframes] == [1.0, 3.0]


@pytest.mark.parametrize("text, message", [
    ("time,bpm,meter\n0,120,4/4\n8,100,4/4\n4,90,3/4\n", r"map.csv:4: time: 4s is not after the previous row's 8s"),
    ("time,bpm,meter\n0,0,4/4\n", r"map.csv:2: bpm: must be greater than 0"),
    ("time,bpm,meter\n0,120,seven\n", r"map.csv:2: meter: expected a meter such as 4/4"),
    ("bpm,meter\n120,4/4\n", r"map.csv:1: the first row must name the columns"),
])
def test_bad_tempo_maps_are_refused_with_their_line(tmp_path, text, message):
    (tmp_path / "map.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        timeline("audio: {tempo_map: map.csv}\nend: {bar: 2}\nkeyframes:\n  - {bar: 0, prompt: a}\n", tmp_path)


def test_bad_input_exits_2_before_any_model_loads(tmp_path):
    (tmp_path / "map.csv").write_text("time,bpm,meter\n0,120,4/4\n8,100,4/4\n4,90,3/4\n")
    (tmp_path / "t.yaml").write_text("audio: {tempo_map: map.csv}\nend: {bar: 2}\nkeyframes:\n  - {bar: 0, prompt: a}\n")
    code = "import sys; from latentwalk.cli import main; status = main(['render', 't.yaml']); assert 'torch' not in sys.modules; sys.exit(status)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert "map.csv:4: time:" in out.stderr and "Traceback" not in out.stderr


# MIDI notes as variables ------------------------------------------------------------------------


def test_midi_note_variables_per_channel_and_track(tmp_path):
    # channel 1: a note on every beat (velocity 127, half a beat long); channel 10: one long note at beat 2
    events = [(k * TPB, 0, 60 + k, TPB // 2, 127) for k in range(4)] + [(2 * TPB, 9, 36, 2 * TPB, 64)]
    write_midi(tmp_path / "s.mid", events)
    t = timeline(
        "fps: 4\naudio: {midi: s.mid}\nend: {beat: 4}\nguidance: 'midi.ch1.velocity + 10 * midi.ch10.gate'\n"
        "noise_shift: 'midi.track2.pitch / 1000'\nkeyframes:\n  - {beat: 0, prompt: a}\n", tmp_path)
    p = plan(t)
    # at 4 fps a beat (0.5 s) is two frames: the note sounds in the first of each pair
    assert [r.guidance for r in p.frames] == [1.0, 0.0, 1.0, 0.0, 11.0, 10.0, 11.0, 10.0]
    shift = [dict(r.params).get("noise_shift", 0.0) for r in p.frames]
    # track 2 holds both channels: the highest note sounding, the last one heard between notes
    assert shift == pytest.approx([0.060, 0.060, 0.061, 0.061, 0.062, 0.036, 0.063, 0.036])


def test_note_curve_holds_the_last_pitch_and_catches_short_notes():
    notes = [Note(0.01, 0.02, 64, 127, 1, 1), Note(1.0, 1.2, 40, 127, 1, 1)]
    times = np.arange(12) / 8
    assert note_curve(notes, "gate", times, 8, 0.0).tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    assert note_curve(notes, "pitch", times, 8, 0.0).tolist() == [64] * 8 + [40] * 4


@pytest.mark.parametrize("track, message", [
    ("midi.ch3.gate", r"t.yaml:3: guidance: 'midi.ch3.gate': s.mid has no notes on channel 3 \(its channels with notes: 1\)"),
    ("rms.drums", r"t.yaml:3: guidance: 'rms.drums' reads stem 'drums', but the timeline gives no audio.stems"),
])
def test_variables_the_audio_does_not_give_are_refused(tmp_path, track, message):
    write_midi(tmp_path / "s.mid", [(0, 0, 60, TPB, 90)])
    with pytest.raises(UserError, match=message):
        timeline(f"audio: {{midi: s.mid}}\nend: {{bar: 1}}\nguidance: '5 + {track}'\nkeyframes:\n  - {{bar: 0, prompt: a}}\n", tmp_path)


def test_midi_variable_without_midi_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"t.yaml:2: guidance: 'midi.velocity' reads the MIDI notes, but the timeline gives no audio.midi"):
        timeline("audio: {bpm: 120}\nguidance: '5 + midi.velocity'\nend: {bar: 1}\nkeyframes:\n  - {bar: 0, prompt: a}\n", tmp_path)


# Offset estimated from the audio ----------------------------------------------------------------


def kicks_at(times, duration, sr=SAMPLE_RATE):
    out = np.zeros(int(duration * sr), np.float32)
    kick = _kick(sr).astype(np.float32)
    for t in times:
        at = int(round(t * sr))
        out[at : at + len(kick)] += kick[: len(out) - at]
    return out / np.abs(out).max() * 0.8


def test_offset_of_the_midi_file_is_estimated_from_the_audio(tmp_path):
    # an irregular rhythm (so only one shift fits), played 1.3 s into the audio
    beats = [0, 1, 1.5, 3, 4, 4.75, 6, 7, 7.5, 9, 10.25, 11]
    write_midi(tmp_path / "s.mid", [(int(b * TPB), 0, 60, TPB // 4, 100) for b in beats])
    soundfile.write(tmp_path / "a.wav", kicks_at([1.3 + b * 0.5 for b in beats], 8.0), SAMPLE_RATE)
    analysis = midi_analysis(tmp_path / "a.wav", tmp_path / "s.mid")
    assert abs(analysis.beats[0] - 1.3) < 0.03
    assert any("estimated from the audio" in n for n in analysis.notes)
    given = midi_analysis(tmp_path / "a.wav", tmp_path / "s.mid", offset=1.25)
    assert np.array_equal(given.beats[:3], 1.25 + np.arange(3) * 0.5)


def test_estimate_offset_on_an_envelope():
    rate = 100.0
    env = np.zeros(1000)
    onsets = np.array([0.0, 0.5, 1.25, 2.0, 3.5])
    env[np.round((onsets + 2.37) * rate).astype(int)] = 1.0
    offset, confidence = estimate_offset(onsets, env, rate)
    assert offset == pytest.approx(2.37, abs=0.011) and confidence > 1


# Stems ------------------------------------------------------------------------------------------


def test_stem_features_become_variables_and_beats_come_from_the_chosen_stem(tmp_path):
    beats = np.arange(16) * 0.5
    drums = kicks_at(beats, 8.0)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(len(drums)) / SAMPLE_RATE)).astype(np.float32)
    tone[: len(tone) // 2] = 0  # the bass enters halfway
    soundfile.write(tmp_path / "drums.wav", drums, SAMPLE_RATE)
    soundfile.write(tmp_path / "bass.wav", tone, SAMPLE_RATE)
    soundfile.write(tmp_path / "mix.wav", 0.5 * drums + tone, SAMPLE_RATE)
    t = timeline(
        "fps: 4\naudio: {path: mix.wav, stems: {drums: drums.wav, bass: bass.wav}, beats_from: drums, tracker: librosa}\n"
        "guidance: '1 + rms.bass'\nkeyframes:\n  - {beat: 0, prompt: a}\n  - {beat: 8, prompt: b}\n", tmp_path)
    p = plan(t)
    assert p.tracker == "librosa" and "beats tracked on the drums stem (drums.wav)" in p.beat_notes
    assert np.max(np.abs(p.beats[:12] - beats[:12])) < 0.05
    guidance = np.array([r.guidance for r in p.frames])
    assert guidance[:14].max() == 1.0 and guidance[18:30].min() > 1.5  # silent first half, loud second


@pytest.mark.parametrize("other, message", [
    (lambda: (np.zeros(SAMPLE_RATE * 3, np.float32), SAMPLE_RATE), r"t.yaml:4: audio.stems.bass: bass.wav is 3.000s long, the mix \(mix.wav\) 2.000s"),
    (lambda: (np.zeros(44100 * 2, np.float32), 44100), r"t.yaml:4: audio.stems.bass: bass.wav is at 44100 Hz, the mix \(mix.wav\) at 22050 Hz"),
])
def test_stems_of_other_lengths_or_rates_are_refused(tmp_path, other, message):
    soundfile.write(tmp_path / "mix.wav", np.zeros(SAMPLE_RATE * 2, np.float32), SAMPLE_RATE)
    soundfile.write(tmp_path / "bass.wav", *other())
    t = timeline("fps: 4\naudio:\n  path: mix.wav\n  stems: {bass: bass.wav}\nkeyframes:\n  - {time: 0, prompt: a}\n", tmp_path)
    with pytest.raises(UserError, match=message):
        plan(t)


# Corrections: a beat list, beats_offset, sections at a set bpm ----------------------------------------


def test_beat_list_offset_and_sections_override_the_tracker(tmp_path, drum_wav):
    wav = drum_wav[0]
    (tmp_path / "beats.txt").write_text("time\n0.25\n0.75\n1.25\n1.75\n2.25\n")
    p = plan(timeline(f"fps: 4\naudio: {{path: {wav}, beats: beats.txt, end: 3}}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n  - {{beat: 4, prompt: b}}\n", tmp_path))
    assert np.array_equal(p.beats, [0.25, 0.75, 1.25, 1.75, 2.25]) and p.tracker == "beats"
    tracked = plan(timeline(f"fps: 4\naudio: {{path: {wav}, tracker: librosa}}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n", tmp_path)).beats
    moved = plan(timeline(f"fps: 4\naudio: {{path: {wav}, tracker: librosa, beats_offset: 0.1}}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n", tmp_path))
    assert np.allclose(moved.beats[:-1], tracked[:-1] + 0.1) and "beats moved by +0.1s (audio.beats_offset)" in moved.beat_notes
    laid = plan(timeline(f"fps: 4\naudio: {{path: {wav}, tracker: librosa, sections: [{{start: 2.0, end: 4.0, bpm: 60}}]}}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n", tmp_path))
    # the grid (2.0, 3.0) replaces every tracked beat from half a period before it to the section's end
    assert np.array_equal(laid.beats[(laid.beats >= 1.4) & (laid.beats < 3.9)], [2.0, 3.0])
    assert np.array_equal(laid.beats[laid.beats < 1.4], tracked[tracked < 1.4])
    assert "beats from 2s to 4s laid at 60 bpm (audio.sections)" in laid.beat_notes


def test_beats_plot_and_midi_flags(tmp_path, drum_wav):
    write_midi(tmp_path / "s.mid", [(k * TPB, 0, 60, TPB // 4, 100) for k in range(16)])
    out = subprocess.run(
        [sys.executable, "-m", "latentwalk.cli", "beats", str(drum_wav[0]), "--midi", "s.mid", "--offset", "0", "--end", "4", "--plot", "b.png", "--json"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    import json

    data = json.loads(out.stdout)
    assert data["beats"] == [0.5 * k for k in range(9)] and data["downbeats"] == [0.0, 2.0, 4.0] and data["tracker"] == "midi"
    import imageio.v3 as iio

    picture = iio.imread(tmp_path / "b.png")
    red = (picture[..., 0] > 180) & (picture[..., 1] < 90) & (picture[..., 2] < 90)
    assert red.any(axis=0).sum() >= 3  # the three downbeats are drawn in red
