"""Render-time perceptual placement: probe each `spacing: perceptual` segment, then re-place its frames.

The schedule gives every frame its eased, paced progress (its `t` under `spacing: t`). Here that
progress is read as *perceived* progress: each segment's path is rendered at a few probe weights
(a coarse batch, then bisection rounds where the probes predict uneven frames, until they
predict even ones or the segment's budget of probes is spent: smooth.next_probes), the change
between adjacent probes (smooth.shares: the larger of its share of the pixel and of the
structural change) sums to the cumulative perceived progress P, and each frame's weight becomes
P⁻¹(its progress). Keyframe frames have progress 0 and stay exactly t = 0.

Probes are ordinary frames (`FrameInputs` with the probe's t = noise_t), rendered through the
engine in full batches and kept in the frame store under their own keys: a probe a frame lands
on is that frame, and a resumed render re-places from stored probes without rendering any.

Noise: probes walk the prompt and noise weights together (t = noise_t = s), and the same map
P⁻¹ is applied to a frame's `noise_t` as to its `t`. With `noise_easing` equal to `easing` (the
default) frames lie on the probed path exactly; with another noise easing the map is the
path's, an approximation that still keeps both weights monotone and exact at the keyframes.

A segment is placed only where nothing but the two weights travels (guidance, LoRA weights and
other tracks constant along it): probes of a path along which other quantities change would
measure those too. Other segments keep `t` spacing, as the manifest records.
"""

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from latentwalk.errors import UserError
from latentwalk.frames import FrameInputs, canonical
from latentwalk.schedule import Plan
from latentwalk.smooth import (
    Evenness, StopRule, coarse_probes, interval_distances, next_probes, perceptual_distance, pixel_distance, place_frames,
    predict_evenness, ratios, shares, snap_to_probes, ssim_distance,
)

PROBES = 8  # coarse probes per segment, and the most one bisection round adds to it
# Probing stops where the probes predict adjacent-frame p95/median and max/median at or below these
# in both distances (smooth.StopRule). Below the goal (2, 3) by the margin that the tuning half of
# benchmarks/bench_smooth.py's generated walks needed for their measured frames (docs/smooth-travel.md).
P95_TARGET = 1.6
MAX_TARGET = 2.2
BUDGET = 32  # probe frames per segment when no budget is given (the timeline's `placement_budget`)
# A frame this close to a probe (as a fraction of its gap to a neighbour) becomes the probe,
# whose render is then reused: ≤ 10 % of one frame's step of unevenness for fewer renders.
SNAP_TOLERANCE = 0.1
# Distances are measured on frames block-averaged to at most this many pixels per side: cheap at
# any resolution, and the change a viewer sees between frames is not in single pixels.
DISTANCE_SIDE = 128

ImagesOf = Callable[[Sequence[FrameInputs]], list[np.ndarray]]


@dataclass(frozen=True)
class Segment:
    """A perceptually spaced segment: its video frames (keyframe first) and its keyframe's own frame.

    `share_steps` > 0: only the coarse probes are denoised from their own noise; every other
    frame of the segment, bisection probes included, starts at that step from the slerp of the
    coarse probes around it (shared trajectories), so probes measure the path the frames take.
    """

    index: int  # the keyframe it leaves
    frames: tuple[int, ...]
    base: FrameInputs  # the path A → B at t = noise_t = 0 (its keyframe's frame is base.along_path(0))
    share_steps: int = 0
    budget: int = BUDGET  # probe frames, coarse batch included

    def rule(self) -> StopRule:
        """Never more coarse probes than the segment has frames (plus its far end)."""
        return StopRule(budget=self.budget, batch_size=max(2, min(PROBES, len(self.frames) + 1)), p95=P95_TARGET, max=MAX_TARGET)

    def sources(self) -> np.ndarray:
        """The coarse probes' weights: frames denoised from their own noise."""
        return coarse_probes(self.rule())

    def shared_between(self, t: float) -> tuple[float, float] | None:
        """The coarse probes a frame at weight t starts from; None: from its own noise."""
        return between(self.sources(), t) if self.share_steps else None

    def probe(self, s: float) -> FrameInputs:
        """The frame at weight s along the path (prompt and noise together)."""
        around = self.shared_between(s)
        return replace(self.base.along_path(s), share=None if around is None else (*around, self.share_steps))


@dataclass(frozen=True)
class SegmentPlacement:
    """What placed one segment: its probes, the distances between adjacent ones, and why probing stopped."""

    index: int
    frames: tuple[int, ...]  # its video frames, keyframe first
    probe_t: tuple[float, ...]
    distances: tuple[float, ...]  # per probe interval, smooth.shares of the two below: what frames are placed by
    pixel: tuple[float, ...]  # per probe interval, pixel MAD
    root_ssim: tuple[float, ...]  # per probe interval, √(1 − SSIM)
    probes: int  # probe frames used (len(probe_t))
    budget: int
    predicted: Evenness  # the frames' evenness the probes predict (smooth.predict_evenness)
    stopped: str  # "even": predicted evenness met the targets; "budget": probes spent; "narrow": nothing left to split


@dataclass(frozen=True)
class Placement:
    schedule: Plan  # frames' t and noise_t placed (and `share`: the probes a frame starts from), for plans and manifests
    inputs: tuple[FrameInputs, ...]  # (n_frames,) every video frame's inputs, placed: what the render keys and denoises
    probes: tuple[FrameInputs, ...]  # every probe rendered or read (keep them: a resume reuses them)
    segments: tuple[SegmentPlacement, ...]


def thumbnail(image: np.ndarray, side: int = DISTANCE_SIDE) -> np.ndarray:
    """(H, W, 3) uint8 → float [0, 1], block-averaged by the integer factor that brings it to ≤ side."""
    factor = max(1, -(-max(image.shape[:2]) // side))
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    x = image[:h, :w].astype(np.float64) / 255.0
    return x.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def frame_distances(images: Sequence[np.ndarray]) -> np.ndarray:
    """The placement distance between each frame and the next: (n - 1,)."""
    return frame_measures(images)[0]


def frame_measures(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(placement distance, pixel MAD, 1 − SSIM) between each frame and the next, on thumbnails: three (n - 1,)."""
    thumbs = [thumbnail(im) for im in images]
    pairs = [(a, b) for a, b in zip(thumbs, thumbs[1:])]
    return tuple(np.array([float(f(a, b)) for a, b in pairs]) for f in (perceptual_distance, pixel_distance, ssim_distance))


def placed_segments(schedule: Plan, inputs: Sequence[FrameInputs], share_steps: int = 0, budget: int = BUDGET) -> tuple[Segment, ...]:
    """Segments with `spacing: perceptual`, at least two frames, and only t and noise_t travelling."""
    segments = []
    keys = schedule.keyframes
    for k, key in enumerate(keys if schedule.loop else keys[:-1]):  # a loop's last segment wraps to the first keyframe
        if key.keyframe.spacing != "perceptual":
            continue
        wraps = k == len(keys) - 1  # its frames run on from the video's end through the lead-in
        frames = tuple(r.frame for r in schedule.frames if r.segment == k and r.frame >= key.frame)
        frames += tuple(r.frame for r in schedule.frames if wraps and r.segment == k and r.frame < key.frame)
        moving = {f for f in frames if inputs[f].t != 0.0 or inputs[f].noise_t != 0.0}
        if len(frames) < 2 or not moving:
            continue
        # The path A → B at its start, from a frame that travels: frames at t = 0 (the keyframe's,
        # and those `hold` keeps there) leave out the keyframe they travel to (frames.canonical).
        base = replace(inputs[min(moving)], t=0.0, noise_t=0.0, share=None)
        still = base.prompt_a == base.prompt_b and base.negative_a == base.negative_b and base.seed_a == base.seed_b
        if still or inputs[key.frame] != base.along_path(0.0):
            continue
        if all(
            replace(inputs[f], t=0.0, noise_t=0.0, share=None) == (base if f in moving else base.along_path(0.0)) for f in frames
        ):
            segments.append(Segment(k, frames, base, share_steps, budget))
    return tuple(segments)


def place(schedule: Plan, inputs: Sequence[FrameInputs], images_of: ImagesOf, share_steps: int = 0, budget: int = BUDGET) -> Placement:
    """Probe every perceptual segment (all segments' probes in one call per round) and re-place its frames.

    `images_of(frames)` returns each frame's (H, W, 3) uint8 image: from the store, else rendered.
    `share_steps` > 0: frames other than the coarse probes share their first steps (Segment).
    `budget`: the most probe frames a segment gets (smooth.StopRule).
    """
    segments = placed_segments(schedule, inputs, share_steps, budget)
    thumbs: dict[FrameInputs, np.ndarray] = {}
    pairs: dict[tuple[FrameInputs, FrameInputs], tuple[float, float]] = {}

    def measure(wanted: dict[int, np.ndarray]) -> None:
        probes = [s.probe(t) for s in segments for t in wanted.get(s.index, ()) if s.probe(t) not in thumbs]
        probes = list(dict.fromkeys(probes))
        for probe, image in zip(probes, images_of(probes) if probes else []):
            thumbs[probe] = thumbnail(image)

    def distances(segment: Segment, probe_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixel MAD, √(1 − SSIM)) per probe interval; each adjacent pair measured once."""
        probes = [segment.probe(t) for t in probe_t]
        for a, b in zip(probes, probes[1:]):
            if (a, b) not in pairs:
                mad, root_ssim = interval_distances(np.stack([thumbs[a], thumbs[b]]))
                pairs[a, b] = (float(mad[0]), float(root_ssim[0]))
        return tuple(np.array([pairs[a, b][i] for a, b in zip(probes, probes[1:])]) for i in (0, 1))

    progress = {s.index: np.array([schedule.frames[f].t for f in s.frames]) for s in segments}
    # 1. Coarse pass: one batch of probes per segment, both ends included.
    probe_t = {s.index: s.sources() for s in segments}
    measure(probe_t)
    dist = {s.index: distances(s, probe_t[s.index]) for s in segments}
    # 2. Bisection rounds until every segment's probes predict even frames or its budget is spent.
    while True:
        new = {s.index: next_probes(probe_t[s.index], *dist[s.index], progress[s.index], s.rule()) for s in segments}
        if not any(len(t) for t in new.values()):
            break
        measure(new)
        for s in segments:
            if len(new[s.index]):
                probe_t[s.index] = np.union1d(probe_t[s.index], new[s.index])
                dist[s.index] = distances(s, probe_t[s.index])
    # 3. Each frame's weights: P⁻¹ of its scheduled progress, snapped onto probes within tolerance.
    records, placed = list(schedule.frames), list(inputs)
    for s in segments:
        weights = shares(*dist[s.index])
        t = progress[s.index]
        noise = np.array([records[f].noise_t for f in s.frames])
        placed_t = snap_to_probes(place_frames(probe_t[s.index], weights, t), probe_t[s.index], SNAP_TOLERANCE)
        placed_noise = placed_t if np.array_equal(t, noise) else place_frames(probe_t[s.index], weights, noise)
        for f, a, b in zip(s.frames, placed_t, placed_noise):
            around = s.shared_between(a)
            records[f] = replace(records[f], t=float(a), noise_t=float(b), share=around)
            share = None if around is None else (*around, s.share_steps)
            placed[f] = canonical(replace(s.base, t=float(a), noise_t=float(b), share=share))
    return Placement(replace(schedule, frames=tuple(records)), tuple(placed), tuple(thumbs),
                     tuple(segment_placement(s, probe_t[s.index], *dist[s.index], progress[s.index]) for s in segments))


def segment_placement(segment: Segment, probe_t: np.ndarray, mad: np.ndarray, root_ssim: np.ndarray, progress: np.ndarray) -> SegmentPlacement:
    """The record of one probed segment, with the evenness its probes predict and why probing stopped."""
    rule = segment.rule()
    predicted, _ = predict_evenness(probe_t, mad, root_ssim, progress)
    stopped = "even" if predicted.meets(rule.p95, rule.max) else "budget" if len(probe_t) >= rule.budget else "narrow"
    floats = lambda x: tuple(map(float, x))  # noqa: E731
    return SegmentPlacement(segment.index, segment.frames, floats(probe_t), floats(shares(mad, root_ssim)), floats(mad), floats(root_ssim),
                            len(probe_t), rule.budget, predicted, stopped)


def measured_evenness(frames: Sequence[int], records: Sequence, pixel: np.ndarray, ssim: np.ndarray) -> Evenness | None:
    """The evenness of a segment's rendered frames from the video's adjacent-frame distances; None if not all there.

    `records`: the video's schedule records (a range's start later), `pixel` and `ssim` per
    record and the next. Steps that do not advance (a hold on the keyframe) are left out, as in
    the prediction.
    """
    position = {r.frame: i for i, r in enumerate(records)}
    steps = [position.get(f, len(records)) for f in frames]
    if not steps or max(steps) + 1 >= len(records) or max(steps) >= len(pixel):
        return None
    moving = [i for i in steps if records[i + 1].t != records[i].t or records[i + 1].segment != records[i].segment]
    return Evenness(*ratios(pixel[moving]), *ratios(ssim[moving]))


def between(probe_t: np.ndarray, t: float) -> tuple[float, float] | None:
    """The probes on either side of t, or None where t is a probe (or outside them)."""
    i = int(np.searchsorted(probe_t, t))
    if i == 0 or i == len(probe_t) or probe_t[i] == t:
        return None
    return float(probe_t[i - 1]), float(probe_t[i])


class StoredImages:
    """`images_of` over the frame store: stored frames are read, missing ones rendered in full batches and stored.

    `render(frames, keys, done)` renders frames through an executor, which calls `done(keys,
    images)` per batch (images None: the executor stored them itself); None: a missing frame is
    an error (planning without a model, e.g. `store --prune`). `fresh` re-renders each frame once.
    """

    def __init__(self, store, key_of: Callable[[FrameInputs], str], shape: tuple[int, int, int], render=None, fresh: bool = False):
        self.store, self.key_of, self.shape, self.render, self.fresh = store, key_of, shape, render, fresh
        self.rendered: set[str] = set()  # keys denoised by this object

    def __call__(self, frames: Sequence[FrameInputs]) -> list[np.ndarray]:
        keys = [self.key_of(f) for f in frames]
        missing = {k: f for k, f in zip(keys, frames) if k not in self.rendered and (self.fresh or not self.store.has(k, self.shape))}
        if missing and self.render is None:
            raise UserError(
                f"perceptual placement needs {len(missing)} probe frames that are not in the frame store "
                f"{self.store.root}; render the timeline first (or set `spacing: t`)"
            )
        images: dict[str, np.ndarray] = {}

        def keep(done: Sequence[str], decoded: np.ndarray | None) -> None:
            for i, key in enumerate(done):
                if decoded is not None:
                    self.store.save(key, decoded[i])
                    images[key] = decoded[i]
                self.rendered.add(key)

        if missing:
            self.render(list(missing.values()), list(missing), keep)
        return [images[k] if k in images else self.store.load(k, self.shape) for k in keys]
