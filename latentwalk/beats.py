"""Pure beat-grid maths: beat indices ↔ seconds, extrapolated at the local tempo, and snapping.

Used by the schedule (keyframe positions), lyrics (snapping lines) and tracks (the `beat`
variables). No files, no audio decoding: a grid is an array of beat times in seconds.
"""

import numpy as np

from latentwalk.errors import UserError

LOCAL_SPAN = 4  # beats: extrapolation past either end of the grid uses the tempo of the nearest span


def edge_period(beats: np.ndarray, bpm: float | None, last: bool = True) -> float | None:
    """Seconds per beat at the end (or start) of the grid: its local tempo, else `bpm`."""
    if len(beats) >= 2:
        k = min(LOCAL_SPAN, len(beats) - 1)
        return float(beats[-1] - beats[-1 - k]) / k if last else float(beats[k] - beats[0]) / k
    return 60.0 / bpm if bpm else None


def beat_time(beat: float, beats: np.ndarray, field: str, bpm: float | None = None, audio_end: float | None = None) -> float:
    """Time in seconds of a (fractional) beat index on the tracked beat grid.

    Past the last tracked beat the grid continues at the local tempo of its last beats (the
    tracker drops the silent tail, so "bar 8" of an 8-bar track is the downbeat after its last
    beat) up to `audio_end`.
    """
    if len(beats) == 0:
        raise UserError(f"{field}: no beats were found in the audio, so beat/bar positions cannot be used")
    last = len(beats) - 1
    if beat <= last:
        return float(np.interp(beat, np.arange(len(beats)), beats))
    period = edge_period(beats, bpm) if bpm else None
    time = float(beats[-1] + (beat - last) * period) if period else float("inf")
    if audio_end is not None and time > audio_end + 1e-6 or not period:
        raise UserError(
            f"{field}: beat {beat:g} is past the end of the audio (it has {len(beats)} beats, "
            f"numbered 0-{last}, the last at {beats[-1]:.3f}s"
            + (f"; the audio ends at {audio_end:.3f}s)" if audio_end is not None else ")")
        )
    return time


def beat_positions(times: np.ndarray, beats: np.ndarray, bpm: float) -> np.ndarray:
    """Fractional beat index of each time, extrapolated at the local tempo before the first/after the last beat."""
    if len(beats) == 0:
        return times * bpm / 60.0
    index = np.interp(times, beats, np.arange(len(beats)))
    index = np.where(times < beats[0], (times - beats[0]) / edge_period(beats, bpm, last=False), index)
    return np.where(times > beats[-1], len(beats) - 1 + (times - beats[-1]) / edge_period(beats, bpm), index)


def beat_to_time(beat: np.ndarray, beats: np.ndarray, bpm: float) -> np.ndarray:
    """Inverse of beat_positions: seconds of fractional beat indices, at `bpm` off the grid."""
    beat = np.asarray(beat, dtype=np.float64)
    if len(beats) == 0:
        return beat * 60.0 / bpm
    period = 60.0 / bpm
    inside = np.interp(beat, np.arange(len(beats)), beats)
    before = beats[0] + beat * period
    after = beats[-1] + (beat - (len(beats) - 1)) * period
    return np.where(beat < 0, before, np.where(beat > len(beats) - 1, after, inside))


def snap_times(times: np.ndarray, mode: str, beats: np.ndarray, bpm: float, beats_per_bar: int, downbeat: int) -> np.ndarray:
    """Times moved to the nearest beat (`beat`) or bar start (`bar`, counted from beat `downbeat`)."""
    times = np.asarray(times, dtype=np.float64)
    if mode == "none":
        return times
    position = beat_positions(times, beats, bpm)
    # floor(x + 0.5): halfway rounds up (later), where np.round would round half to even.
    if mode == "beat":
        snapped = np.floor(position + 0.5)
    else:
        snapped = downbeat + np.floor((position - downbeat) / beats_per_bar + 0.5) * beats_per_bar
    return np.maximum(beat_to_time(snapped, beats, bpm), 0.0)


def bar_to_beat(bar: float, bar_starts: np.ndarray, beats_per_bar: int, downbeat: int) -> float:
    """Fractional beat index of a (fractional) bar number.

    With known bar starts (beat indices; a MIDI file's or tempo map's bars, whose meters may
    change) bar b is bar_starts[b], a fraction of the way into its bar's beats, and past the
    last one the last bar's length continues; without, bars are beats_per_bar from `downbeat`.
    """
    if len(bar_starts) == 0:
        return downbeat + bar * beats_per_bar
    starts = np.asarray(bar_starts, dtype=np.float64)
    last = len(starts) - 1
    if 0 <= bar <= last:
        return float(np.interp(bar, np.arange(len(starts)), starts))
    edge = float(starts[-1] - starts[-2]) if bar > last and len(starts) > 1 else float(starts[1] - starts[0]) if len(starts) > 1 else beats_per_bar
    return float(starts[-1] + (bar - last) * edge) if bar > last else float(starts[0] + bar * edge)


def bar_phases(beat: np.ndarray, bar_starts: np.ndarray, beats_per_bar: int, downbeat: int) -> np.ndarray:
    """Position in the bar (0 at its start, → 1 at the next bar's) of fractional beat indices."""
    beat = np.asarray(beat, dtype=np.float64)
    if len(bar_starts) < 2:
        return np.mod((beat - downbeat) / beats_per_bar, 1.0)
    starts = np.asarray(bar_starts, dtype=np.float64)
    lengths = np.diff(starts)
    bar = np.interp(beat, starts, np.arange(len(starts)))
    bar = np.where(beat < starts[0], (beat - starts[0]) / lengths[0], bar)
    bar = np.where(beat > starts[-1], len(starts) - 1 + (beat - starts[-1]) / lengths[-1], bar)
    return np.mod(bar, 1.0)


def lay_sections(beats: np.ndarray, sections: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """Beats with each (start, end, bpm) section's tracked beats replaced by a steady grid from `start`.

    Tracked beats within half a period of either end go too, so the grid hands over without a
    double beat.
    """
    beats = np.asarray(beats, dtype=np.float64)
    for start, end, bpm in sections:
        period = 60.0 / bpm
        grid = start + np.arange(int(np.ceil((end - start) / period - 1e-9))) * period
        keep = (beats < start - 0.5 * period) | (beats >= max(end, grid[-1] + 0.5 * period))
        beats = np.sort(np.concatenate([beats[keep], grid]))
    return beats
