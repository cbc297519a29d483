"""The user's MIDI file: its exact beat and bar grid, and its notes as per-frame track variables.

Read with mido (MIT, pure Python). The grid is laid in ticks, from the time-signature events
(bars start at each one; 4/4 when there is none), then turned into seconds through the tempo
events (120 quarter notes per minute before the first, or when there is none). Notes become the
variables `midi.gate`, `midi.velocity`, `midi.pitch`, and the same per channel (`midi.ch1.velocity`,
channels 1-16 as DAWs number them) and per track (`midi.track2.gate`, 1-based, in file order).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwalk.errors import UserError
from latentwalk.tempomap import COMPOUND, DEFAULT_BPM, DEFAULT_METER, Grid
from latentwalk.tracks import MIDI_VARIABLE as VARIABLE

NOTE_FIELDS = ("gate", "velocity", "pitch")
MAX_TICKS = 1 << 40  # a file whose events reach past this is hostile, not music
MAX_BEATS = 2_000_000


@dataclass(frozen=True)
class Note:
    start: float  # seconds from the file's zero
    end: float
    pitch: int  # MIDI note number, 0-127
    velocity: int  # 1-127
    channel: int  # 1-16
    track: int  # 1-based, in file order


@dataclass(frozen=True)
class MidiSong:
    ticks_per_beat: int
    tempos: tuple[tuple[int, int], ...]  # (tick, microseconds per quarter note), sorted, first at tick 0
    meters: tuple[tuple[int, int, int], ...]  # (tick, numerator, denominator), sorted, first at tick 0
    notes: tuple[Note, ...]
    end_tick: int  # the last event's tick
    assumed_tempo: bool  # no tempo event: 120 bpm
    assumed_meter: bool  # no time signature: 4/4

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Seconds of tick positions through the tempo events (exact for each tempo's own span)."""
        ticks = np.asarray(ticks, dtype=np.int64)
        starts = np.array([t for t, _ in self.tempos], dtype=np.int64)
        tempo = np.array([us for _, us in self.tempos], dtype=np.int64)
        at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * tempo[:-1] / (1e6 * self.ticks_per_beat))])
        j = np.searchsorted(starts, ticks, side="right") - 1
        return at[j] + (ticks - starts[j]) * tempo[j] / (1e6 * self.ticks_per_beat)

    @property
    def end(self) -> float:
        return float(self.seconds(np.array([self.end_tick]))[0])

    def channels(self) -> list[int]:
        return sorted({n.channel for n in self.notes})

    def tracks(self) -> list[int]:
        return sorted({n.track for n in self.notes})


def beat_ticks(ticks_per_beat: int, numerator: int, denominator: int) -> tuple[float, int]:
    """(ticks per tapped beat, beats per bar): a dotted quarter in 6/8, 9/8, 12/8."""
    note = ticks_per_beat * 4 / denominator
    if denominator >= 8 and numerator in COMPOUND:
        return 3 * note, numerator // 3
    return note, numerator


def read_midi(path: Path, field: str = "audio.midi") -> MidiSong:
    """A standard MIDI file's tempo and meter events and notes; errors name `field`."""
    import mido

    try:
        mid = mido.MidiFile(str(path), clip=True)
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        raise UserError(f"{field}: cannot read MIDI file {str(path)!r}: {e or type(e).__name__}") from None
    if mid.type == 2:
        raise UserError(f"{field}: {str(path)!r} is a type 2 MIDI file (independent patterns), which has no single timeline")
    tpb = mid.ticks_per_beat
    if not isinstance(tpb, int) or tpb <= 0:
        raise UserError(f"{field}: {str(path)!r} counts time in SMPTE frames, not beats; export it with ticks per quarter note")
    tempos, meters, end_tick = [], [], 0
    held: dict[tuple[int, int, int], list[tuple[int, int]]] = {}  # (track, channel, pitch) -> [(tick, velocity)]
    raw_notes: list[tuple[int, int, int, int, int, int]] = []  # start tick, end tick, pitch, velocity, channel, track
    for number, track in enumerate(mid.tracks, start=1):
        tick = 0
        for msg in track:
            tick += msg.time
            if tick > MAX_TICKS:
                raise UserError(f"{field}: {str(path)!r} has events past tick {MAX_TICKS:,}; it is not a song")
            end_tick = max(end_tick, tick)
            if msg.type == "set_tempo":
                tempos.append((tick, int(msg.tempo)))
            elif msg.type == "time_signature":
                meters.append((tick, int(msg.numerator), int(msg.denominator)))
            elif msg.type == "note_on" and msg.velocity > 0:
                held.setdefault((number, msg.channel, msg.note), []).append((tick, msg.velocity))
            elif msg.type in ("note_on", "note_off"):
                starts = held.get((number, msg.channel, msg.note))
                if starts:
                    start, velocity = starts.pop(0)
                    raw_notes.append((start, tick, msg.note, velocity, msg.channel + 1, number))
        for (number_, channel, pitch), starts in list(held.items()):
            if number_ == number:  # a note never released sounds to its track's end
                raw_notes += [(start, tick, pitch, velocity, channel + 1, number) for start, velocity in starts]
                del held[(number_, channel, pitch)]
    assumed_tempo, assumed_meter = not tempos, not meters
    tempos = sorted({t: us for t, us in sorted(tempos)}.items())  # one tempo per tick: the last written
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, round(60e6 / DEFAULT_BPM)))
    meters = sorted({t: (n, d) for t, n, d in sorted(meters)}.items())
    meters = [(t, n, d) for t, (n, d) in meters]
    if not meters or meters[0][0] > 0:
        meters.insert(0, (0, *DEFAULT_METER))
    song = MidiSong(tpb, tuple(tempos), tuple(meters), (), end_tick, assumed_tempo, assumed_meter)
    if raw_notes:
        ticks = np.array([[n[0], n[1]] for n in raw_notes], dtype=np.int64)
        secs = song.seconds(ticks.ravel()).reshape(-1, 2)
        notes = tuple(Note(float(s), float(e), p, v, c, k) for (s, e), (_, _, p, v, c, k) in zip(secs, raw_notes))
        song = MidiSong(tpb, tuple(tempos), tuple(meters), notes, end_tick, assumed_tempo, assumed_meter)
    return song


def midi_grid(song: MidiSong, end: float) -> Grid:
    """Every tapped beat and bar start from tick 0 to `end` seconds (past the file's end at its last tempo)."""
    beats: list[np.ndarray] = []
    bar_starts: list[int] = []
    count = 0
    last_tick = song.end_tick
    # ticks up to `end`: extend past the file's last event at the last tempo
    t_last, us_last = song.tempos[-1]
    end_time_last = float(song.seconds(np.array([t_last]))[0])
    end_tick = max(last_tick, t_last + int(np.ceil(max(0.0, end - end_time_last) * 1e6 * song.ticks_per_beat / us_last)))
    for i, (tick0, num, den) in enumerate(song.meters):
        stop = song.meters[i + 1][0] if i + 1 < len(song.meters) else end_tick + 1
        step, bpb = beat_ticks(song.ticks_per_beat, num, den)
        n = int(np.ceil((stop - tick0) / step - 1e-9))
        if count + n > MAX_BEATS:
            raise UserError(f"audio.midi: the grid would have more than {MAX_BEATS:,} beats")
        positions = tick0 + np.arange(n) * step  # float ticks where a beat is not a whole tick (odd tpb in 6/8)
        bar_starts += list(range(count, count + n, bpb))
        count += n
        beats.append(positions)
    ticks = np.concatenate(beats)
    times = seconds_at(song, ticks)
    keep = times <= end + 1e-9
    times = times[keep]
    starts = np.asarray([b for b in bar_starts if b < len(times)], dtype=int)
    return Grid(times, times[starts], starts, tuple(f"{n}/{d}" for _, n, d in song.meters))


def seconds_at(song: MidiSong, ticks: np.ndarray) -> np.ndarray:
    """song.seconds for tick positions that may be fractional."""
    whole = np.floor(ticks).astype(np.int64)
    frac = ticks - whole
    base = song.seconds(whole)
    if not np.any(frac):
        return base
    starts = np.array([t for t, _ in song.tempos], dtype=np.int64)
    j = np.searchsorted(starts, whole, side="right") - 1
    tempo = np.array([us for _, us in song.tempos], dtype=np.float64)[j]
    return base + frac * tempo / (1e6 * song.ticks_per_beat)


def midi_bpm(song: MidiSong, at: float = 0.0) -> float:
    """Quarter notes per minute of the tempo in force at `at` seconds."""
    ticks = np.array([t for t, _ in song.tempos], dtype=np.int64)
    j = int(np.searchsorted(song.seconds(ticks), at, side="right")) - 1
    return 60e6 / song.tempos[max(j, 0)][1]


def check_variable(name: str, song: MidiSong, source: str) -> str | None:
    """Why a `midi.*` variable cannot be given by this file (no notes on its channel or track), else None."""
    m = VARIABLE.match(name)
    if m is None:
        return f"unknown MIDI variable {name!r}; expected midi.FIELD, midi.chN.FIELD or midi.trackN.FIELD with FIELD one of {', '.join(NOTE_FIELDS)}"
    kind, number = m.group(1), m.group(2)
    if kind is None:
        return None if song.notes else f"{source} has no notes"
    have = song.channels() if kind == "ch" else song.tracks()
    if int(number) not in have:
        what = "channel" if kind == "ch" else "track"
        listed = ", ".join(map(str, have)) or "none"
        return f"{source} has no notes on {what} {int(number)} (its {what}s with notes: {listed})"
    return None


def note_variables(song: MidiSong, names: set[str], times: np.ndarray, fps: float, offset: float) -> dict[str, np.ndarray]:
    """Per-frame values of the `midi.*` variables in `names` at video times `times` (clip time = MIDI time + offset).

    gate: 1 while a note sounds within the frame's span, else 0; velocity: the loudest such
    note's velocity / 127; pitch: the highest such note's number, holding the last one heard
    between notes (0 before the first).
    """
    out = {}
    for name in sorted(names):
        m = VARIABLE.match(name)
        if m is None:
            continue
        kind, number, what = m.group(1), m.group(2), m.group(3)
        notes = [n for n in song.notes if kind is None or (n.channel if kind == "ch" else n.track) == int(number)]
        out[name] = note_curve(notes, what, times, fps, offset)
    return out


def note_curve(notes: list[Note], what: str, times: np.ndarray, fps: float, offset: float) -> np.ndarray:
    """One field of `notes` per frame (see note_variables)."""
    n = len(times)
    values = np.zeros(n)
    sounding = np.zeros(n, bool)
    for note in notes:
        lo = int(np.ceil((note.start + offset) * fps - 1.0 + 1e-9))  # first frame whose span [f, f+1)/fps overlaps the note
        hi = int(np.ceil((note.end + offset) * fps - 1e-9))  # frames before this overlap it
        lo, hi = max(lo, 0), min(max(hi, lo + 1), n)
        if lo >= hi:
            continue
        sounding[lo:hi] = True
        value = 1.0 if what == "gate" else note.velocity / 127.0 if what == "velocity" else float(note.pitch)
        values[lo:hi] = np.maximum(values[lo:hi], value)
    if what == "pitch" and n:  # hold the last pitch heard between notes
        index = np.where(sounding, np.arange(n), -1)
        last = np.maximum.accumulate(index)
        values = np.where(last >= 0, values[np.maximum(last, 0)], 0.0)
    return values


def onset_times(song: MidiSong) -> np.ndarray:
    """Sorted start times of every note, seconds (for aligning the file with the audio)."""
    return np.sort(np.array([n.start for n in song.notes], dtype=np.float64))


def estimate_offset(onsets: np.ndarray, envelope: np.ndarray, rate: float, max_offset: float | None = None) -> tuple[float, float]:
    """(offset, confidence): the shift of the MIDI note onsets that best matches the audio's onset envelope.

    Cross-correlation of the envelope with an impulse train at the note onsets (FFT), over shifts
    that keep the first note inside the audio; confidence is the peak over the next best
    shift more than 0.1 s away (1: no clear winner).
    """
    if len(onsets) == 0 or len(envelope) < 2:
        return 0.0, 0.0
    env = np.asarray(envelope, dtype=np.float64)
    env = np.maximum(env - np.median(env), 0.0)
    length = len(env)
    first = onsets[0]
    span = int(np.ceil((onsets[-1] - first) * rate)) + 1
    train = np.zeros(span)
    np.add.at(train, np.round((onsets - first) * rate).astype(int), 1.0)
    size = 1 << int(np.ceil(np.log2(length + span)))
    corr = np.fft.irfft(np.fft.rfft(env, size) * np.conj(np.fft.rfft(train, size)), size)[:length]  # corr[k]: first note at frame k
    if max_offset is not None:
        corr = corr[: max(1, int(round((first + max_offset) * rate)) + 1)]
    best = int(np.argmax(corr))
    away = int(0.1 * rate)
    rest = np.concatenate([corr[: max(0, best - away)], corr[best + away + 1 :]])
    confidence = float(corr[best] / rest.max()) if len(rest) and rest.max() > 0 else 1.0
    return best / rate - first, confidence

