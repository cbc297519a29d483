"""Stage 3: pure schedule math. Timeline + beat grid → one record per video frame.

No torch, no files. A segment runs from keyframe k (inclusive) to keyframe k+1 (exclusive),
so a keyframe's own image appears exactly once: at its frame, with t = 0 of its segment.
"""

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from latentwalk import tracks as track_math
from latentwalk.beats import bar_to_beat, beat_positions, beat_time, snap_times
from latentwalk.errors import UserError
from latentwalk.modelspec import LoraSpec
from latentwalk.params import DEFAULT_LORA_WEIGHT, LORA_PARAM, TRACK_BOUNDS, TRACK_DEFAULTS, lora_param
from latentwalk.timeline import MAX_FRAMES, SETTING_DEFAULTS, Keyframe, Position, Timeline, format_path


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


def position_time(
    pos: Position, beats: np.ndarray, fps: float, beats_per_bar: int, downbeat: int, field: str,
    bpm: float | None = None, audio_end: float | None = None, bar_starts: tuple[int, ...] = (),
) -> float:
    """Seconds from the video's start of a position in any unit (bars: see beats.bar_to_beat)."""
    if pos.unit == "time":
        return pos.value
    if pos.unit == "frame":
        return pos.value / fps
    beat = pos.value if pos.unit == "beat" else bar_to_beat(pos.value, np.asarray(bar_starts, dtype=int), beats_per_bar, downbeat)
    return beat_time(beat, beats, field, bpm, audio_end)


def position_frame(pos: Position, time: float, fps: float) -> int:
    """Frame index of a position: frames are exact, everything else rounds time × fps."""
    return int(pos.value) if pos.unit == "frame" else round(time * fps)


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
    target: int  # index of the keyframe it travels toward (segment + 1; the last keyframe holds itself)
    t: float  # prompt interpolation weight toward keyframe segment + 1
    noise_t: float  # noise slerp weight toward keyframe segment + 1
    seed_a: int
    seed_b: int
    guidance: float
    # Every other track the timeline sets, as sorted (name, value) pairs, left out where the value
    # is its no-effect default, so frames of a timeline without tracks keep their keys.
    params: tuple[tuple[str, float], ...] = ()
    # Perceptual placement: the weights (t0, t1) of the probes on either side of this frame, when
    # it lies strictly between two (frames.FrameInputs.share); None on a probe and under `spacing: t`.
    share: tuple[float, float] | None = None


@dataclass(frozen=True)
class Plan:
    fps: float
    n_frames: int
    duration: float  # n_frames / fps
    bpm: float | None
    beats: np.ndarray  # beat times in seconds used for placement
    keyframes: tuple[ResolvedKeyframe, ...]
    frames: tuple[FrameRecord, ...]
    # Names of the tracks the timeline sets (guidance always), then each LoRA's weight ("lora:<name>")
    # in the order the LoRAs are listed; track_value reads any of them from a frame record.
    tracks: tuple[str, ...] = ()
    tracker: str | None = None  # the beat tracker that placed `beats` (None: no audio analysed)
    beat_notes: tuple[str, ...] = ()  # where the beats came from, what was assumed or corrected (shown by `plan`)
    loop: bool = False  # the last keyframe's segment travels back to the first (its frames run on through the lead-in)


def track_value(record: FrameRecord, name: str, loras: tuple[LoraSpec, ...] = ()) -> float:
    """A frame's value of any track, the default where `params` leaves it out.

    A LoRA's weight ("lora:<name>") is its param, else its top-level weight in `loras`, else
    DEFAULT_LORA_WEIGHT (a frame of a planned timeline always carries every LoRA's param).
    """
    if name == "guidance":
        return record.guidance
    params = dict(record.params)
    if name in params:
        return params[name]
    if name.startswith(LORA_PARAM):
        return next((lora.weight for lora in loras if lora_param(lora.name) == name), DEFAULT_LORA_WEIGHT)
    return TRACK_DEFAULTS[name]


def resolve_keyframes(
    timeline: Timeline, beats: np.ndarray, n_frames: int, bpm: float | None = None, audio_duration: float | None = None
) -> tuple[ResolvedKeyframe, ...]:
    """Place every keyframe on a frame; reject out-of-order, coinciding or late keyframes."""
    fps = timeline.settings.fps
    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    resolved: list[ResolvedKeyframe] = []
    for i, kf in enumerate(timeline.keyframes):
        field = f"{timeline.source}:{kf.line}: {format_path(('keyframes', i, kf.position.unit))}"
        time = position_time(kf.position, beats, fps, bpb, down, field, bpm, audio_duration, bar_starts(timeline))
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
    if timeline.lyrics:
        resolved = merge_lyrics(timeline, resolved, beats, n_frames, bpm)
    return tuple(resolved)


def merge_lyrics(
    timeline: Timeline, ordinary: list[ResolvedKeyframe], beats: np.ndarray, n_frames: int, bpm: float | None
) -> list[ResolvedKeyframe]:
    """Ordinary and lyric keyframes in time order; lyric lines past the video's end are left out."""

    fps = timeline.settings.fps
    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    # 1. Lyric times, snapped to the grid when asked.
    lyrics = timeline.lyrics
    times = np.array([kf.position.value for kf in lyrics])
    snap = lyrics[0].snap
    if snap != "none":
        if not bpm:
            raise UserError(f"{timeline.at('lyrics_snap')}: {snap} needs a beat grid (an audio file, or audio: {{bpm: ...}})")
        if len(beats) == 0:
            raise UserError(f"{timeline.at('lyrics_snap')}: {snap}: no beats were found in the audio, so lyrics cannot snap to them")
        times = snap_times(times, snap, beats, bpm, bpb, down)
    # 2. Merge by frame; two keyframes on one frame are an error that names both.
    merged = [(k.frame, k.time, k.keyframe) for k in ordinary]
    merged += [(round(t * fps), float(t), kf) for t, kf in zip(times, lyrics) if round(t * fps) < n_frames]
    if not merged:  # lyrics only, and every line after the video's end
        fix = "a later end:" if timeline.end is not None else "lyrics timed inside the audio clip"
        raise UserError(
            f"{timeline.at('lyrics')}: every sung line falls after the end of the video ({n_frames / fps:.3f}s; the first, "
            f"{lyrics[0].origin}, at {times[0]:.3f}s), so the video has no keyframe; add keyframes, or {fix}"
        )
    merged.sort(key=lambda m: m[0])
    name = lambda kf: kf.origin or f"{timeline.source}:{kf.line}: keyframe"  # noqa: E731
    for (f0, _, a), (f1, _, b) in zip(merged, merged[1:]):
        if f0 == f1:
            hint = " (try lyrics_snap: beat or none)" if snap == "bar" else ""
            raise UserError(f"{name(b)}: lyrics: lands on frame {f0}, the same frame as {name(a)} {a.prompt!r}{hint}")
    # 3. A lyric keyframe without a seed keeps the noise of the keyframe before it.
    out, seed = [], next((kf.seed for _, _, kf in merged if kf.seed is not None), 0)
    for i, (frame, time, kf) in enumerate(merged):
        if kf.seed is None:
            kf = replace(kf, seed=seed)
        seed = kf.seed
        out.append(ResolvedKeyframe(i, frame, time, kf))
    return out


def video_frames(timeline: Timeline, beats: np.ndarray, audio_duration: float | None, bpm: float | None = None) -> int:
    """Total frame count: round(duration × fps), or the `end` frame itself."""
    fps = timeline.settings.fps
    if timeline.end is None:
        n = round(audio_duration * fps)
        if n < 1:  # blame the field that made the clip short, not the first keyframe
            spec = timeline.audio
            key = "end" if spec.end is not None else "start" if spec.start > 0 else "path"
            raise short_clip_error(timeline, audio_duration, timeline.at("audio", key), "the audio clip")
        return check_frame_count(n, timeline.at("fps"), fps)
    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    field = timeline.at("end", timeline.end.unit)
    time = position_time(timeline.end, beats, fps, bpb, down, field, bpm, audio_duration, bar_starts(timeline))
    n = position_frame(timeline.end, time, fps)
    if audio_duration is not None and time > audio_duration + 1e-6:
        raise UserError(f"{field}: {timeline.end.value:g} ({time:.3f}s) is past the end of the audio ({audio_duration:.3f}s)")
    if n < 1 and timeline.end.unit != "frame" and time > 0:
        raise short_clip_error(timeline, time, field, f"a video ending at {timeline.end.unit} {timeline.end.value:g}")
    if n < 1:
        raise UserError(f"{field}: the video would have no frames ({timeline.end.value:g})")
    return check_frame_count(n, field, fps)


def short_clip_error(timeline: Timeline, seconds: float, field: str, what: str) -> UserError:
    """`seconds` of video make no frame: blame fps when the timeline sets one too low for a clip
    that holds frames at the default rate, else `field`, the clip's own end (or start)."""
    fps = timeline.settings.fps
    if "fps" in timeline.raw and round(seconds * SETTING_DEFAULTS["fps"]) >= 1:
        return UserError(
            f"{timeline.at('fps')}: {fps:g} fps gives {what} ({seconds:.3f}s) no frame at all; "
            f"it needs at least {1 / seconds:.3g} fps"
        )
    return UserError(f"{field}: {what} is {seconds:.3f}s long, shorter than one frame at {fps:g} fps")


def check_frame_count(n: int, field: str, fps: float) -> int:
    """`n`, or an error naming `field` when the video would exceed MAX_FRAMES."""
    if n > MAX_FRAMES:
        raise UserError(
            f"{field}: the video would have {n:,} frames ({n / fps:,.0f}s at {fps:g} fps), "
            f"more than the limit of {MAX_FRAMES:,}; lower fps or end sooner"
        )
    return n


def check_clip(timeline: Timeline, file_duration: float | None) -> None:
    """Reject an audio.start or audio.end past the end of a file `file_duration` seconds long (None: unknown)."""
    spec = timeline.audio
    if file_duration is None:
        return
    for key, value in (("start", spec.start), ("end", spec.end)):
        if value is not None and value > file_duration + 1e-6 or key == "start" and value >= file_duration:
            raise UserError(f"{timeline.at('audio', key)}: {value:g}s is past the end of the audio file ({file_duration:.3f}s long)")
    clip = (spec.end if spec.end is not None else file_duration) - spec.start
    if round(clip * timeline.settings.fps) < 1:  # before analysing it: a clip this short has no beats to track
        key = "end" if spec.end is not None else "start"
        raise short_clip_error(timeline, clip, timeline.at("audio", key), "the audio clip")


def travel(a: float, b: float, t: float) -> float:
    """A per-keyframe quantity between two keyframes at eased progress t: exactly `a` at t = 0."""
    return float(a + (b - a) * t)


def lora_params(loras: tuple[LoraSpec, ...], a: Keyframe, b: Keyframe, t: float) -> tuple[tuple[str, float], ...]:
    """("lora:<name>", weight) of every LoRA, travelling from keyframe a's weight to b's; sorted by name."""
    def weight(keyframe: Keyframe, lora: LoraSpec) -> float:  # a keyframe that does not set it: the top-level weight
        return dict(keyframe.loras).get(lora.name, lora.weight)

    return tuple(sorted((lora_param(lora.name), travel(weight(a, lora), weight(b, lora), t)) for lora in loras))


def control_params(specs, a: Keyframe, b: Keyframe, t: float) -> tuple[tuple[str, float], ...]:
    """("control:<name>", weight) of every ControlNet (control.ControlSpec), travelling from keyframe a's weight to b's."""
    return tuple((spec.param(), travel(dict(a.controls).get(spec.name, spec.weight), dict(b.controls).get(spec.name, spec.weight), t)) for spec in specs)


def plan_frames(
    timeline: Timeline,
    beats: np.ndarray,
    bpm: float | None,
    audio_duration: float | None,
    energy: np.ndarray | None = None,
    features: dict[str, np.ndarray] | None = None,
) -> Plan:
    """The per-frame schedule. `energy`: percussive energy per video frame, for audio pacing;
    `features`: audio features at audio.ENVELOPE_RATE (onset, rms, low, mid, high) for tracks."""
    fps = timeline.settings.fps
    n_frames = video_frames(timeline, beats, audio_duration, bpm)
    keys = resolve_keyframes(timeline, beats, n_frames, bpm, audio_duration)
    loop = timeline.loop
    if loop and len(keys) < 2:  # lyric keyframes past the video's end leave one
        raise UserError(f"{timeline.at('loop')}: needs at least two keyframes in the video, found {len(keys)}: the last one travels back to the first")
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
        span = np.arange(key.frame, stop)  # the segment's frames in the order it travels
        if k + 1 == len(keys):
            if not loop:
                continue  # after the last keyframe: hold it to the end
            # loop: the last keyframe travels on through the video's end and the lead-in to the first,
            # so frame n_frames - 1 leads into frame 0 like any two neighbours.
            span = np.concatenate([span, np.arange(keys[0].frame)])
            segment[span] = k
        kf = key.keyframe
        seg_energy = energy[span] if kf.pacing == "audio" and energy is not None else None
        u = hold_then(paced_progress(len(span), seg_energy, kf.pacing_strength), kf.hold)
        t[span] = EASINGS[kf.easing](u)
        noise_t[span] = EASINGS[kf.noise_easing](u)

    # Tracks: every keyframe's value at every frame, blended along the segment like the prompt.
    variables = frame_variables(timeline, times, beats, bpm, features)
    seg_b = (segment + 1) % len(keys) if loop else np.minimum(segment + 1, len(keys) - 1)
    values = {name: track_values(timeline, keys, name, variables, segment, seg_b, t) for name in TRACK_DEFAULTS}
    # Offsets push the travel weights, inside segments only: lead-in and final hold stay put.
    travelling = np.ones(n_frames, bool) if loop else (frames >= keys[0].frame) & (segment < len(keys) - 1)
    t = np.where(travelling, np.clip(t + values["prompt_offset"], 0.0, 1.0), t)
    noise_t = np.where(travelling, np.clip(noise_t + values["noise_offset"], 0.0, 1.0), noise_t)
    used = set_tracks(timeline, keys)
    params = [name for name in sorted(used) if name != "guidance"]
    records = []
    for f in frames:
        target = int(seg_b[f])
        a, b = keys[segment[f]], keys[target]
        records.append(
            FrameRecord(
                frame=int(f),
                time=float(times[f]),
                beat=float(beat_pos[f]),
                segment=int(segment[f]),
                target=int(target),
                t=float(t[f]),
                noise_t=float(noise_t[f]),
                seed_a=a.keyframe.seed,
                seed_b=b.keyframe.seed,
                guidance=float(values["guidance"][f]),
                params=tuple(
                    sorted(
                        tuple((n, float(values[n][f])) for n in params if values[n][f] != TRACK_DEFAULTS[n])
                        + lora_params(timeline.settings.loras, a.keyframe, b.keyframe, float(t[f]))
                        + control_params(timeline.settings.controlnets, a.keyframe, b.keyframe, float(t[f]))
                    )
                ),
            )
        )
    lora_tracks = tuple(lora_param(lora.name) for lora in timeline.settings.loras) + tuple(c.param() for c in timeline.settings.controlnets)
    return Plan(fps, n_frames, n_frames / fps, bpm, beats, keys, tuple(records), tuple(sorted(used)) + lora_tracks, loop=loop)


def set_tracks(timeline: Timeline, keys: tuple[ResolvedKeyframe, ...]) -> set[str]:
    """Names of the tracks a timeline sets anywhere, guidance always included."""
    top = {name for name, value in timeline.tracks if name in timeline.raw}
    return {"guidance"} | top | {name for k in keys for name, _ in k.keyframe.tracks}


def frame_variables(
    timeline: Timeline, times: np.ndarray, beats: np.ndarray, bpm: float | None, features: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Expression variables per frame (tracks.frame_variables with the timeline's bar layout)."""
    from latentwalk.audio import ENVELOPE_RATE

    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    return track_math.frame_variables(times, beats, bpm, bpb, down, features or {}, ENVELOPE_RATE, timeline.settings.fps, bar_starts(timeline))


def bar_starts(timeline: Timeline) -> tuple[int, ...]:
    """Beat index of every bar start where the grid knows its bars exactly (a MIDI file, a tempo map), else ()."""
    return timeline.audio.bar_starts if timeline.audio is not None else ()


def track_values(
    timeline: Timeline,
    keys: tuple[ResolvedKeyframe, ...],
    name: str,
    variables: dict[str, np.ndarray],
    segment: np.ndarray,
    seg_b: np.ndarray,
    t: np.ndarray,
) -> np.ndarray:
    """(n_frames,) values of one track: keyframe a's value travelling to keyframe b's by t."""
    fps, n = timeline.settings.fps, len(t)
    top = dict(timeline.tracks).get(name, TRACK_DEFAULTS[name])
    cache: dict = {}
    rows, sources = [], []
    for key in keys:
        value = dict(key.keyframe.tracks).get(name, top)
        if value not in cache:
            cache[value] = track_math.evaluate(value, variables, fps, n, track_math.MISSING_REASONS)
        rows.append(cache[value])
        sources.append(value)
    table = np.stack(rows)  # (n_keyframes, n_frames)
    frames = np.arange(n)
    a, b = table[segment, frames], table[seg_b, frames]
    out = a + (b - a) * t
    return check_bounds(timeline, name, out, (a, b), (segment, seg_b), t, sources)


def check_bounds(
    timeline: Timeline, name: str, values: np.ndarray, ends: tuple[np.ndarray, np.ndarray], keys: tuple[np.ndarray, np.ndarray],
    t: np.ndarray, sources: list,
) -> np.ndarray:
    """A track's per-frame values against its TRACK_BOUNDS, blaming the field whose expression leaves them.

    Constants are checked when the timeline is read; an expression per frame here. Each frame is
    a + (b - a) * t of its two keyframes' values (`ends`, of keyframes `keys`, `sources` their
    fields' values), t in [0, 1] under every easing, so a frame out of range has a value out of
    range behind it: the one travelled from (weight 1 - t) or toward (weight t). Values whose
    every source is in range and that still overshoot by a rounding error are clipped.
    """
    low, high, exclusive = TRACK_BOUNDS.get(name, (None, None, False))

    def outside(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        below = np.zeros(len(v), bool) if low is None else (v <= low if exclusive else v < low)
        return below, np.zeros(len(v), bool) if high is None else v > high

    bad = np.flatnonzero(np.logical_or(*outside(values)))
    if not len(bad):
        return values
    fps = timeline.settings.fps
    weights = (1.0 - t, t)  # of the value travelled from, and of the one travelled toward
    flags = (outside(ends[0]), outside(ends[1]))
    for f in bad:
        for side in (0, 1):
            below, above = flags[side][0][f], flags[side][1][f]
            if weights[side][f] <= 0 or not (below or above):
                continue
            field = getattr(sources[keys[side][f]], "field", "") or name  # constants were checked when read
            field = field if field.startswith(f"{timeline.source}:") else f"{timeline.source}: {field}"
            need = (f"greater than {low:g}" if exclusive else f"at least {low:g}") if below else f"at most {high:g}"
            fix = f"max({low:g}, ...)" if below else f"min({high:g}, ...)"
            where = f"segment {keys[0][f]}" + (", which travels toward this value" if side else "")
            raise UserError(
                f"{field}: must be {need}, but its expression gives {ends[side][f]:g} "
                f"at frame {f} ({f / fps:.3f}s, {where}); clip it, e.g. {fix}"
            )
    low = None if exclusive else low
    return values if low is None and high is None else np.clip(values, low, high)  # a rounding error past a bound
