"""Stage 3: pure schedule math. Timeline + beat grid → one record per video frame.

No torch, no files. A segment runs from keyframe k (inclusive) to keyframe k+1 (exclusive),
so a keyframe's own image appears exactly once: at its frame, with t = 0 of its segment.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from latentwalk.errors import UserError
from latentwalk.timeline import Keyframe, Position, Timeline, format_path


def linear(t: np.ndarray) -> np.ndarray:
    return t


def smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def cosine(t: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * t)


def cubic_in(t: np.ndarray) -> np.ndarray:
    return t**3


def cubic_out(t: np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - t) ** 3


def cubic_in_out(t: np.ndarray) -> np.ndarray:
    return np.where(t < 0.5, 4.0 * t**3, 1.0 - (-2.0 * t + 2.0) ** 3 / 2.0)


# Every easing maps [0, 1] → [0, 1], monotone, f(0) = 0, f(1) = 1. "hold" is linear after
# the hold fraction, which `hold_then` applies to any easing.
EASINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": linear,
    "smoothstep": smoothstep,
    "cosine": cosine,
    "cubic_in": cubic_in,
    "cubic_out": cubic_out,
    "cubic_in_out": cubic_in_out,
    "hold": linear,
}


def hold_then(u: np.ndarray, hold: float) -> np.ndarray:
    """Progress that stays at 0 for the first `hold` fraction, then runs 0 → 1."""
    return np.clip((u - hold) / (1.0 - hold), 0.0, 1.0)


def paced_progress(n: int, energy: np.ndarray | None = None, strength: float = 0.0) -> np.ndarray:
    """Progress u_k ∈ [0, 1) of a segment's n frames; with energy, loud frames move further.

    Each frame advances by (1 - s) + s · e_k / mean(e), normalised over the segment, in the
    spirit of nateraw/stable-diffusion-videos' audio offsets, with strength s settable.
    Uniform pacing (s = 0 or no energy) gives exactly k / n.
    """
    steps = np.ones(n)
    if energy is not None and strength > 0 and np.mean(energy) > 0:
        steps = (1.0 - strength) + strength * np.asarray(energy, dtype=np.float64) / np.mean(energy)
        steps = np.maximum(steps, 0.0)
    return np.concatenate([[0.0], np.cumsum(steps)[:-1]]) / np.sum(steps)


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


def position_time(
    pos: Position, beats: np.ndarray, fps: float, beats_per_bar: int, downbeat: int, field: str,
    bpm: float | None = None, audio_end: float | None = None,
) -> float:
    """Seconds from the video's start of a position in any unit."""
    if pos.unit == "time":
        return pos.value
    if pos.unit == "frame":
        return pos.value / fps
    beat = pos.value if pos.unit == "beat" else downbeat + pos.value * beats_per_bar
    return beat_time(beat, beats, field, bpm, audio_end)


def position_frame(pos: Position, time: float, fps: float) -> int:
    """Frame index of a position: frames are exact, everything else rounds time × fps."""
    return int(pos.value) if pos.unit == "frame" else round(time * fps)


def beat_positions(times: np.ndarray, beats: np.ndarray, bpm: float) -> np.ndarray:
    """Fractional beat index of each time, extrapolated at the local tempo before the first/after the last beat."""
    if len(beats) == 0:
        return times * bpm / 60.0
    index = np.interp(times, beats, np.arange(len(beats)))
    index = np.where(times < beats[0], (times - beats[0]) / edge_period(beats, bpm, last=False), index)
    return np.where(times > beats[-1], len(beats) - 1 + (times - beats[-1]) / edge_period(beats, bpm), index)


@dataclass(frozen=True)
class ResolvedKeyframe:
    index: int
    frame: int
    time: float  # the keyframe's exact time (its frame shows it at frame / fps)
    keyframe: Keyframe


@dataclass(frozen=True)
class FrameRecord:
    frame: int
    time: float
    beat: float  # fractional position on the beat grid
    segment: int  # index of the keyframe this frame travels away from
    t: float  # prompt interpolation weight toward keyframe segment + 1
    noise_t: float  # noise slerp weight toward keyframe segment + 1
    seed_a: int
    seed_b: int
    guidance: float


@dataclass(frozen=True)
class Plan:
    fps: float
    n_frames: int
    duration: float  # n_frames / fps
    bpm: float | None
    beats: np.ndarray  # beat times in seconds used for placement
    keyframes: tuple[ResolvedKeyframe, ...]
    frames: tuple[FrameRecord, ...]


def resolve_keyframes(
    timeline: Timeline, beats: np.ndarray, n_frames: int, bpm: float | None = None, audio_duration: float | None = None
) -> tuple[ResolvedKeyframe, ...]:
    """Place every keyframe on a frame; reject out-of-order, coinciding or late keyframes."""
    fps = timeline.settings.fps
    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    resolved: list[ResolvedKeyframe] = []
    for i, kf in enumerate(timeline.keyframes):
        field = f"{timeline.source}:{kf.line}: {format_path(('keyframes', i, kf.position.unit))}"
        time = position_time(kf.position, beats, fps, bpb, down, field, bpm, audio_duration)
        frame = position_frame(kf.position, time, fps)
        if frame >= n_frames:
            raise UserError(
                f"{field}: {kf.position.value:g} lands on frame {frame} ({time:.3f}s), "
                f"past the end of the video ({n_frames} frames, {n_frames / fps:.3f}s)"
            )
        if resolved and frame <= resolved[-1].frame:
            prev = resolved[-1]
            how = "at the same frame as" if frame == prev.frame else "before"
            raise UserError(
                f"{field}: keyframe {i} lands on frame {frame}, {how} keyframe {prev.index} "
                f"(frame {prev.frame}); keyframes must be in order and at distinct frames"
            )
        resolved.append(ResolvedKeyframe(i, frame, time, kf))
    return tuple(resolved)


def video_frames(timeline: Timeline, beats: np.ndarray, audio_duration: float | None, bpm: float | None = None) -> int:
    """Total frame count: round(duration × fps), or the `end` frame itself."""
    fps = timeline.settings.fps
    if timeline.end is None:
        return round(audio_duration * fps)
    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    field = f"{timeline.source}: end.{timeline.end.unit}"
    time = position_time(timeline.end, beats, fps, bpb, down, field, bpm, audio_duration)
    n = position_frame(timeline.end, time, fps)
    if audio_duration is not None and time > audio_duration + 1e-6:
        raise UserError(f"{field}: {timeline.end.value:g} ({time:.3f}s) is past the end of the audio ({audio_duration:.3f}s)")
    if n < 1:
        raise UserError(f"{field}: the video would have no frames ({timeline.end.value:g})")
    return n


def plan_frames(
    timeline: Timeline,
    beats: np.ndarray,
    bpm: float | None,
    audio_duration: float | None,
    energy: np.ndarray | None = None,
) -> Plan:
    """The per-frame schedule. `energy`: percussive energy per video frame, for audio pacing."""
    fps = timeline.settings.fps
    n_frames = video_frames(timeline, beats, audio_duration, bpm)
    keys = resolve_keyframes(timeline, beats, n_frames, bpm, audio_duration)
    frames = np.arange(n_frames)
    times = frames / fps
    beat_pos = beat_positions(times, beats, bpm) if bpm else np.full(n_frames, np.nan)

    segment = np.zeros(n_frames, dtype=int)
    t = np.zeros(n_frames)
    noise_t = np.zeros(n_frames)
    for k, key in enumerate(keys):
        start = key.frame if k else 0  # frames before the first keyframe hold it
        stop = keys[k + 1].frame if k + 1 < len(keys) else n_frames
        segment[start:stop] = k
        if k + 1 == len(keys):
            continue  # after the last keyframe: hold it to the end
        kf = key.keyframe
        n = stop - key.frame
        seg_energy = energy[key.frame : stop] if kf.pacing == "audio" and energy is not None else None
        u = hold_then(paced_progress(n, seg_energy, kf.pacing_strength), kf.hold)
        t[key.frame : stop] = EASINGS[kf.easing](u)
        noise_t[key.frame : stop] = EASINGS[kf.noise_easing](u)

    default_g = timeline.settings.guidance
    records = []
    for f in frames:
        a = keys[segment[f]]
        b = keys[min(segment[f] + 1, len(keys) - 1)]
        ga = a.keyframe.guidance if a.keyframe.guidance is not None else default_g
        gb = b.keyframe.guidance if b.keyframe.guidance is not None else default_g
        records.append(
            FrameRecord(
                frame=int(f),
                time=float(times[f]),
                beat=float(beat_pos[f]),
                segment=int(segment[f]),
                t=float(t[f]),
                noise_t=float(noise_t[f]),
                seed_a=a.keyframe.seed,
                seed_b=b.keyframe.seed,
                guidance=float(ga + (gb - ga) * t[f]),
            )
        )
    return Plan(fps, n_frames, n_frames / fps, bpm, beats, keys, tuple(records))
