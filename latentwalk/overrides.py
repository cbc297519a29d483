"""One render's overrides of a timeline: a draft, a size, steps, fps, and a range of the video.

Overrides change the parsed Timeline (dataclasses.replace on its settings and keyframes) before
planning, so they show in the manifest's resolved settings and enter every frame's store key
like any setting. A draft (`--draft`) is the same video made cheaply with its timing kept: half
the size (a multiple of 8, at least 64), a quarter of the steps (at least 4), half the fps
(keyframes at beats, bars and seconds are placed again at the new rate, and `frame:` positions
become the seconds they stood for), and `spacing: t` everywhere (no placement probes).

A range (`--from`, `--to`: seconds, beat:N, bar:N) never changes the timeline: the whole video
is planned (and placed) as always, and only its frames whose time lies in [from, to) are
rendered, with the matching stretch of audio. A range's frames are therefore the very frames of
the whole render, with the same keys, reused from its store and reusable by it.
"""

import math
import re
from dataclasses import dataclass, replace

from latentwalk.errors import UserError
from latentwalk.schedule import Plan, position_frame, position_time
from latentwalk.schedulers import SHARE_AUTO_SCHEDULERS
from latentwalk.timeline import MAX_BEATS, MAX_FPS, MAX_SECONDS, MAX_SIZE, MAX_STEPS, SHARE_AUTO_FRACTION, Position, Timeline

DRAFT_MIN_SIZE = 64  # pixels per side a draft keeps at least (never more than the timeline's own)
DRAFT_MIN_STEPS = 4
SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
RANGE_UNITS = {"time": "time", "s": "time", "beat": "beat", "bar": "bar"}


@dataclass(frozen=True)
class Overrides:
    """What one render (or plan) changes; None: the timeline's own."""

    draft: bool = False
    size: tuple[int, int] | None = None  # (width, height)
    steps: int | None = None
    fps: float | None = None
    start: Position | None = None  # --from
    stop: Position | None = None  # --to

    @property
    def is_range(self) -> bool:
        return self.start is not None or self.stop is not None

    @property
    def changes_timeline(self) -> bool:
        return self.draft or self.size is not None or self.steps is not None or self.fps is not None

    def manifest(self, frames: tuple[int, int] | None = None) -> dict:
        """The overrides as given, for the manifest's "overrides" (with the range's video frames)."""
        data = {
            "draft": self.draft,
            "size": list(self.size) if self.size else None,
            "steps": self.steps,
            "fps": self.fps,
            "from": describe(self.start),
            "to": describe(self.stop),
        }
        if frames is not None:
            data["frames"] = {"first": frames[0], "stop": frames[1]}  # video frames first..stop-1 of the whole plan
        return data

    def video_name(self, path, whole: bool = False):
        """The default output with this render's tags: x.mp4 → x.draft.mp4, x.bar8-bar16.mp4 (`whole`: without the range)."""
        tags = [".draft"] if self.draft else []
        if self.is_range and not whole:
            tags.append(f".{name_part(self.start, '0s')}-{name_part(self.stop, 'end')}")
        return path.with_name(path.stem + "".join(tags) + path.suffix)


def describe(pos: Position | None) -> str | None:
    if pos is None:
        return None
    return f"{pos.value:g}s" if pos.unit == "time" else f"{pos.unit}:{pos.value:g}"


def name_part(pos: Position | None, default: str) -> str:
    if pos is None:
        return default
    return f"{pos.value:g}s" if pos.unit == "time" else f"{pos.unit}{pos.value:g}"


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """'WxH' → (W, H): each a multiple of 8 from 8 to MAX_SIZE, like width and height in a timeline."""
    match = SIZE.match(text)
    if not match:
        raise UserError(f"{flag}: expected WIDTHxHEIGHT in pixels, e.g. 256x144, got {text!r}")
    sizes = tuple(int(v) for v in match.groups())
    for what, size in zip(("width", "height"), sizes):
        if size < 8 or size > MAX_SIZE:
            raise UserError(f"{flag}: the {what} must be from 8 to {MAX_SIZE} pixels, got {size}")
        if size % 8:
            raise UserError(f"{flag}: the {what} must be a multiple of 8, got {size} (try {max(8, round(size / 8) * 8)})")
    return sizes


def parse_position(text: str, flag: str) -> Position:
    """'12.5' or '12.5s' (seconds), 'beat:32', 'bar:8' → a Position."""
    unit, _, value = text.strip().rpartition(":")
    if not unit and value.endswith("s"):
        unit, value = "s", value[:-1]
    unit = RANGE_UNITS.get(unit.strip().lower() or "time")
    try:
        number = float(value)
    except ValueError:
        number = None
    if unit is None or number is None:
        raise UserError(f"{flag}: expected seconds (12.5), beat:N or bar:N, got {text!r}")
    limit = MAX_SECONDS if unit == "time" else MAX_BEATS
    if not math.isfinite(number) or number < 0 or number > limit:
        raise UserError(f"{flag}: must be from 0 to {limit:g} {'seconds' if unit == 'time' else unit + 's'}, got {text!r}")
    return Position(unit, number)


def check(overrides: Overrides) -> None:
    """The numbers a caller of the API passed (the CLI's parsers check the rest)."""
    if overrides.steps is not None and not (isinstance(overrides.steps, int) and 1 <= overrides.steps <= MAX_STEPS):
        raise UserError(f"--steps: must be a whole number from 1 to {MAX_STEPS}, got {overrides.steps}")
    if overrides.fps is not None and not (0 < overrides.fps <= MAX_FPS):
        raise UserError(f"--fps: must be above 0 and at most {MAX_FPS}, got {overrides.fps:g}")
    if overrides.size is not None:
        parse_size(f"{overrides.size[0]}x{overrides.size[1]}")


def draft_size(size: int) -> int:
    return min(size, max(DRAFT_MIN_SIZE, round(size / 2 / 8) * 8))


def apply(timeline: Timeline, overrides: Overrides | None) -> Timeline:
    """The timeline as this render sees it; unchanged without overrides of its settings."""
    if overrides is None or not overrides.changes_timeline:
        return timeline
    check(overrides)
    settings = timeline.settings
    width, height, steps, fps = settings.width, settings.height, settings.steps, settings.fps
    if overrides.draft:
        width, height = draft_size(width), draft_size(height)
        steps = min(steps, max(DRAFT_MIN_STEPS, steps // 4))
        fps = fps / 2
    width, height = overrides.size or (width, height)
    steps = overrides.steps or steps
    fps = overrides.fps or fps
    share = settings.share_steps
    if steps != settings.steps:  # `share_steps` resolved again for the new count: auto's fraction, or below steps
        written = timeline.raw.get("share_steps", "auto") if isinstance(timeline.raw, dict) else "auto"
        if written == "auto":
            share = min(round(SHARE_AUTO_FRACTION * steps), steps - 1) if settings.scheduler in SHARE_AUTO_SCHEDULERS else 0
        else:
            share = min(share, steps - 1)
    changed = replace(timeline, settings=replace(settings, width=width, height=height, steps=steps, fps=fps, share_steps=share))
    if fps != settings.fps:  # a `frame:` position meant a time at the timeline's own rate
        as_time = lambda p: Position("time", p.value / settings.fps) if p is not None and p.unit == "frame" else p  # noqa: E731
        changed = replace(
            changed,
            keyframes=tuple(replace(k, position=as_time(k.position)) for k in changed.keyframes),
            end=as_time(changed.end),
        )
    if overrides.draft:  # no placement probes: every segment spaced by t
        changed = replace(
            changed,
            keyframes=tuple(replace(k, spacing="t") for k in changed.keyframes),
            lyrics=tuple(replace(k, spacing="t") for k in changed.lyrics),
        )
    return changed


def frame_range(timeline: Timeline, schedule: Plan, overrides: Overrides | None) -> tuple[int, int] | None:
    """(first, stop): the whole plan's video frames in [--from, --to); None without a range.

    `timeline` carries its bar 0 (the tracked downbeat applied). A position lands on the frame a
    keyframe at it would (round(time × fps)); a range outside the video, or holding no frame, is an error.
    """
    if overrides is None or not overrides.is_range:
        return None
    fps, n = schedule.fps, schedule.n_frames
    bpb, down = (timeline.audio.beats_per_bar, timeline.audio.downbeat or 0) if timeline.audio else (4, 0)
    video = f"the video ({n} frames, {schedule.duration:.3f}s)"

    def resolve(pos: Position | None, flag: str, default: int) -> tuple[int, float]:
        if pos is None:
            return default, default / fps
        time = position_time(pos, schedule.beats, fps, bpb, down, flag, schedule.bpm)
        if time > schedule.duration + 1e-6:
            raise UserError(f"{flag}: {describe(pos)} ({time:.3f}s) is past the end of {video}")
        return position_frame(pos, time, fps), time

    first, start = resolve(overrides.start, "--from", 0)
    stop, end = resolve(overrides.stop, "--to", n)
    if start >= end:
        raise UserError(
            f"--from: {describe(overrides.start) or '0s'} ({start:.3f}s) is not before --to {describe(overrides.stop) or 'end'} ({end:.3f}s)"
        )
    if first >= n:
        raise UserError(f"--from: {describe(overrides.start)} ({start:.3f}s) lands on frame {first}, the end of {video}; no frame follows it")
    if stop <= first:
        raise UserError(f"--from/--to: {start:.3f}s to {end:.3f}s holds no frame at {fps:g} fps")
    return first, min(stop, n)


def slice_plan(schedule: Plan, first: int, stop: int) -> Plan:
    """The plan of video frames first..stop-1: their records (numbered as in the whole plan), every keyframe."""
    return replace(schedule, frames=schedule.frames[first:stop], n_frames=stop - first, duration=(stop - first) / schedule.fps)


def outside_range(schedule: Plan, first: int, stop: int) -> Plan:
    """The plan with segments that hold no frame of the range spaced by t: placement probes only the range's segments.

    Each segment is placed from its own probes alone, so the range's frames are placed exactly as
    in the whole render (see placement.place).
    """
    used = {r.segment for r in schedule.frames[first:stop]}
    keyframes = tuple(
        k if i in used else replace(k, keyframe=replace(k.keyframe, spacing="t")) for i, k in enumerate(schedule.keyframes)
    )
    return replace(schedule, keyframes=keyframes)
