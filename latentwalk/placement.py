"""Render-time perceptual placement: probe each `spacing: perceptual` segment, then re-place its frames.

The schedule gives every frame its eased, paced progress (its `t` under `spacing: t`). Here that
progress is read as *perceived* progress: each segment's path is rendered at a few probe weights
(a coarse batch, then bisection rounds where the picture changes most; smooth.py's plan), the
change between adjacent probes (smooth.interval_weights: the larger of its share of the pixel
and of the structural change) sums to the cumulative perceived progress P, and each frame's
weight becomes P⁻¹(its progress). Keyframe frames have progress 0 and stay exactly t = 0.

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
from latentwalk.smooth import ProbePlan, coarse_probes, interval_weights, perceptual_distance, place_frames, refine_probes, snap_to_probes

PROBES = 8  # coarse probes per segment, and the most one bisection round adds to it
# Bisection rounds after the coarse pass. Measured on 5 walks (docs/smooth-travel.md): with 3 every
# walk's adjacent-frame p95/median ≤ 1.7 and max/median ≤ 2.4 in both distances; with 2 three
# walks kept a 1 − SSIM max/median above 3.
ROUNDS = 3
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

    def probe_plan(self) -> ProbePlan:
        """Never more coarse probes than the segment has frames (plus its far end)."""
        return ProbePlan(batch_size=max(2, min(PROBES, len(self.frames) + 1)), rounds=ROUNDS)

    def sources(self) -> np.ndarray:
        """The coarse probes' weights: frames denoised from their own noise."""
        return coarse_probes(self.probe_plan())

    def shared_between(self, t: float) -> tuple[float, float] | None:
        """The coarse probes a frame at weight t starts from; None: from its own noise."""
        return between(self.sources(), t) if self.share_steps else None

    def probe(self, s: float) -> FrameInputs:
        """The frame at weight s along the path (prompt and noise together)."""
        around = self.shared_between(s)
        return replace(self.base.along_path(s), share=None if around is None else (*around, self.share_steps))


@dataclass(frozen=True)
class SegmentPlacement:
    """What placed one segment: probe weights and the distance between adjacent probes."""

    index: int
    probe_t: tuple[float, ...]
    distances: tuple[float, ...]


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
    thumbs = [thumbnail(im) for im in images]
    return np.array([float(perceptual_distance(a, b)) for a, b in zip(thumbs, thumbs[1:])])


def placed_segments(schedule: Plan, inputs: Sequence[FrameInputs], share_steps: int = 0) -> tuple[Segment, ...]:
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
            segments.append(Segment(k, frames, base, share_steps))
    return tuple(segments)


def place(schedule: Plan, inputs: Sequence[FrameInputs], images_of: ImagesOf, share_steps: int = 0) -> Placement:
    """Probe every perceptual segment (all segments' probes in one call per round) and re-place its frames.

    `images_of(frames)` returns each frame's (H, W, 3) uint8 image: from the store, else rendered.
    `share_steps` > 0: frames other than the coarse probes share their first steps (Segment).
    """
    segments = placed_segments(schedule, inputs, share_steps)
    thumbs: dict[FrameInputs, np.ndarray] = {}

    def measure(wanted: dict[int, np.ndarray]) -> None:
        probes = [s.probe(t) for s in segments for t in wanted.get(s.index, ()) if s.probe(t) not in thumbs]
        probes = list(dict.fromkeys(probes))
        for probe, image in zip(probes, images_of(probes) if probes else []):
            thumbs[probe] = thumbnail(image)

    def distances(segment: Segment, probe_t: np.ndarray) -> np.ndarray:
        return interval_weights(np.stack([thumbs[segment.probe(t)] for t in probe_t]))

    # 1. Coarse pass: one batch of probes per segment, both ends included.
    probe_t = {s.index: s.sources() for s in segments}
    measure(probe_t)
    dist = {s.index: distances(s, probe_t[s.index]) for s in segments}
    # 2. Bisection rounds where a probe interval holds more than one frame's share of the change.
    for _ in range(ROUNDS):
        new = {s.index: refine_probes(probe_t[s.index], dist[s.index], len(s.frames), s.probe_plan()) for s in segments}
        if not any(len(t) for t in new.values()):
            break
        measure(new)
        for s in segments:
            probe_t[s.index] = np.union1d(probe_t[s.index], new[s.index])
            dist[s.index] = distances(s, probe_t[s.index])
    # 3. Each frame's weights: P⁻¹ of its scheduled progress, snapped onto probes within tolerance.
    records, placed = list(schedule.frames), list(inputs)
    for s in segments:
        t = np.array([records[f].t for f in s.frames])
        noise = np.array([records[f].noise_t for f in s.frames])
        placed_t = snap_to_probes(place_frames(probe_t[s.index], dist[s.index], t), probe_t[s.index], SNAP_TOLERANCE)
        placed_noise = placed_t if np.array_equal(t, noise) else place_frames(probe_t[s.index], dist[s.index], noise)
        for f, a, b in zip(s.frames, placed_t, placed_noise):
            around = s.shared_between(a)
            records[f] = replace(records[f], t=float(a), noise_t=float(b), share=around)
            share = None if around is None else (*around, s.share_steps)
            placed[f] = canonical(replace(s.base, t=float(a), noise_t=float(b), share=share))
    return Placement(
        replace(schedule, frames=tuple(records)),
        tuple(placed),
        tuple(thumbs),
        tuple(SegmentPlacement(s.index, tuple(map(float, probe_t[s.index])), tuple(map(float, dist[s.index]))) for s in segments),
    )


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
