"""The beats a timeline gives itself: from its MIDI file, tempo map or beat list, and its
corrections of the tracked beats (beats_offset, sections at a set bpm). See docs/beats.md.

The result is an AudioAnalysis like the tracker's, whose `notes` say where its beats came from
(and what was assumed), so `plan` and `beats` can show it.
"""

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from latentwalk.audio import AudioAnalysis, median_bpm, tempo_curve
from latentwalk.beats import lay_sections
from latentwalk.tempomap import Grid, grid, read_tempo_map, shifted

if TYPE_CHECKING:
    from latentwalk.timeline import AudioSpec

SILENT_HORIZON = 3600.0  # seconds of grid laid past a silent MIDI file's or tempo map's end (for any `end:`)


def user_grid(spec: "AudioSpec", clip_end: float | None) -> tuple[Grid, list[str], float]:
    """The MIDI file's or tempo map's grid in clip seconds (up to `clip_end`; None: silent), its notes and bpm."""
    from latentwalk.midi import midi_bpm, midi_grid, read_midi

    shift = spec.offset - spec.start  # clip time = map time + offset - start
    if spec.midi is not None:
        song = read_midi(spec.midi)
        end = (clip_end - shift) if clip_end is not None else song.end + SILENT_HORIZON
        g = midi_grid(song, end + 1.0)
        notes = [f"beats and bars from {spec.midi.name} (meter {', '.join(dict.fromkeys(g.meters))}, offset {spec.offset:g}s)"]
        if song.assumed_tempo:
            notes.append(f"{spec.midi.name} has no tempo events: 120 bpm assumed")
        if song.assumed_meter:
            notes.append(f"{spec.midi.name} has no time signature: 4/4 assumed")
        bpm = midi_bpm(song)
    else:
        sections = read_tempo_map(spec.tempo_map)
        end = (clip_end - shift) if clip_end is not None else sections[-1].time + SILENT_HORIZON
        g = grid(sections, end + 1.0)
        notes = [f"beats and bars from {spec.tempo_map.name} ({len(sections)} rows, meter {', '.join(dict.fromkeys(g.meters))}, offset {spec.offset:g}s)"]
        bpm = sections[0].bpm
    return shifted(g, shift, clip_end), notes, bpm


def silent_grid(spec: "AudioSpec") -> AudioAnalysis:
    """A MIDI file's or tempo map's grid without audio: beats and bars, no features."""
    g, notes, bpm = user_grid(spec, None)
    beats, bars = lay(spec, g.beats, g.downbeats, exact=True)
    return AudioAnalysis(
        float(beats[-1]) if len(beats) else 0.0, median_bpm(beats) or bpm, beats, {}, "midi" if spec.midi else "tempo_map",
        downbeats=beats[bars] if len(bars) else np.zeros(0), tempo=tempo_curve(beats), bar_starts=bars, notes=tuple(notes + corrections(spec)),
    )


def given_beats(spec: "AudioSpec", analysis: AudioAnalysis) -> AudioAnalysis:
    """`analysis` with the timeline's own beats and bars, and its corrections, applied."""
    if spec.midi is None and spec.tempo_map is None and spec.beats is None and not spec.beats_offset and not spec.sections:
        return analysis
    notes = list(analysis.notes)
    source = analysis.tracker
    if spec.midi is not None or spec.tempo_map is not None:
        g, more, _ = user_grid(spec, analysis.duration)
        beats, downbeats, exact, source = g.beats, g.downbeats, True, "midi" if spec.midi else "tempo_map"
        notes += more
    elif spec.beats is not None:
        beats = np.asarray(spec.beats, dtype=np.float64) - spec.start
        beats = beats[(beats >= 0) & (beats <= analysis.duration + 1e-9)]
        downbeats, exact, source = np.zeros(0), False, "beats"
        notes.append(f"beats from the timeline's list ({len(beats)} in the clip)")
    else:
        beats, downbeats, exact = analysis.beats, analysis.downbeats, False
    if spec.beats_offset and spec.midi is None and spec.tempo_map is None:
        beats, downbeats = beats + spec.beats_offset, downbeats + spec.beats_offset
        keep = (beats >= 0) & (beats <= analysis.duration + 1e-9)
        beats, downbeats = beats[keep], downbeats[(downbeats >= 0) & (downbeats <= analysis.duration + 1e-9)]
    notes += corrections(spec)
    beats, bars = lay(spec, beats, downbeats, exact)
    return replace(
        analysis, bpm=spec.bpm or median_bpm(beats) or analysis.bpm, beats=beats, tracker=source,
        downbeats=beats[bars] if exact and len(bars) else (downbeats if not spec.sections else beats[bars] if len(bars) else np.zeros(0)),
        tempo=tempo_curve(beats), bar_starts=bars if exact else np.zeros(0, int), notes=tuple(notes),
    )


def lay(spec: "AudioSpec", beats: np.ndarray, downbeats: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(beats with the sections laid, beat index of each downbeat that is still a beat)."""
    if spec.sections:
        beats = lay_sections(beats, spec.sections)
    if not len(beats) or not len(downbeats):
        return beats, np.zeros(0, int)
    index = np.clip(np.searchsorted(beats, downbeats), 0, len(beats) - 1)
    before = np.clip(index - 1, 0, len(beats) - 1)
    nearest = np.where(np.abs(beats[before] - downbeats) < np.abs(beats[index] - downbeats), before, index)
    on_beat = np.abs(beats[nearest] - downbeats) < 1e-6 if exact and not spec.sections else np.ones(len(nearest), bool)
    return beats, np.unique(nearest[on_beat])


def corrections(spec: "AudioSpec") -> list[str]:
    """Plan notes for the timeline's corrections of the beats."""
    out = []
    if spec.beats_offset and spec.midi is None and spec.tempo_map is None:
        out.append(f"beats moved by {spec.beats_offset:+g}s (audio.beats_offset)")
    for start, end, bpm in spec.sections:
        out.append(f"beats from {start:g}s to {end:g}s laid at {bpm:g} bpm (audio.sections)")
    return out


def timeline_note_variables(timeline, n_frames: int) -> dict[str, np.ndarray]:
    """Per-frame values of every `midi.*` variable the timeline's tracks read (of its audio.midi)."""
    from latentwalk.midi import VARIABLE, note_variables, read_midi
    from latentwalk.timeline import track_expressions

    names = {n for e in track_expressions((timeline.tracks, timeline.keyframes, timeline.lyrics, timeline.feedback)) for n in e.variables}
    names = {n for n in names if VARIABLE.match(n)}
    if not names:
        return {}
    spec, fps = timeline.audio, timeline.settings.fps
    return note_variables(read_midi(spec.midi), names, np.arange(n_frames) / fps, fps, spec.offset - spec.start)
