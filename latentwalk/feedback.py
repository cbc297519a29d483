"""The img2img feedback loop: chain keys, resume planning, and a driver over two render callables.

Frame k of a chain is img2img(warp(frame k-1)) under frame k's own prompt, seed and strength;
the first frame of a chain (a `cut`) is rendered from scratch. So a frame's pixels depend on
every earlier frame of its chain, and its store key is a chain: key_k = sha256(key_{k-1} +
frame k's own inputs). An edit at frame k changes keys k, k+1, ... of that chain and nothing
before k; a killed run resumes at each chain's first missing key, from the stored predecessor.

The driver knows nothing of models: it takes `first_fn(rows) -> images` (text-to-image) and
`img2img_fn(init_images, rows) -> images`, images float32 (B, H, W, 3) in [0, 1], and
`load(key)` / `save(key, frame)` over a store of uint8 frames. The init of every frame is its
predecessor as stored (uint8), so a resumed chain sees exactly the bytes an unbroken one saw.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Sequence

import numpy as np

from latentwalk import camera
from latentwalk.camera import ColourStats, Motion
from latentwalk.params import CAMERA_TRACKS

Images = np.ndarray  # (B, H, W, 3) float32 in [0, 1]


@dataclass(frozen=True)
class Coherence:
    """What keeps a long feedback run alive; applied to each init before img2img, in this order (as Deforum)."""

    colour: float = 1.0  # 0..1: how far each init's LAB mean/std moves to the reference's
    sharpen: float = 0.0  # unsharp-mask amount, at most camera.MAX_SHARPEN
    max_contrast: float = 0.0  # lightness std held within ×this of the reference's; 0: off
    noise: float = 0.0  # std of Gaussian pixel noise added last, in [0, 1] units


@dataclass(frozen=True)
class FeedbackFrame:
    """One frame of a feedback plan as the driver sees it; `row` is the engine's own per-frame input."""

    row: Any  # handed to first_fn / img2img_fn untouched (e.g. a FrameRecord)
    key: str  # the key of the frame's independent (text-to-image) render: its prompt, seed, ...
    cut: bool = False  # rendered from scratch; starts a chain
    motion: Motion = Motion()  # the camera's step from the previous frame to this one
    strength: float = 0.6  # how much of the warped previous frame img2img re-imagines
    coherence: Coherence = Coherence()
    noise_seed: int = 0  # seeds `coherence.noise`
    reference: int | None = None  # frame whose independent render is the colour reference; None: the chain's first
    diffused: bool = True  # False: a cadence in-between, filled by warping its diffused neighbours
    fov: float = camera.DEFAULT_FOV  # degrees; only 3D steps use it
    border: str = "reflect"  # what the warp shows past the picture's edges: "reflect" or "replicate"


def step_inputs(frame: FeedbackFrame, reference_key: str) -> str:
    """Canonical JSON of what a feedback step adds to its predecessor (json floats round-trip exactly)."""
    payload = {
        "motion": asdict(frame.motion),
        "strength": frame.strength,
        "coherence": asdict(frame.coherence),
        "noise_seed": frame.noise_seed,
        "reference": reference_key,
        "diffused": frame.diffused,
        "fov": frame.fov,
        "border": frame.border,
    }
    return json.dumps(payload, sort_keys=True)


def chain_key(previous: str, own_key: str, step: str) -> str:
    """sha256 hex of the predecessor's key and this frame's own inputs."""
    return hashlib.sha256(f"{previous}\n{own_key}\n{step}".encode()).hexdigest()


def fill_key(chain: str, next_diffused: str) -> str:
    """A cadence in-between frame also depends on the diffused frame after it."""
    return hashlib.sha256(f"fill\n{chain}\n{next_diffused}".encode()).hexdigest()


def split_chains(frames: Sequence[FeedbackFrame]) -> list[list[int]]:
    """Frame indices grouped into chains: a new chain at frame 0 and at every cut."""
    chains: list[list[int]] = []
    for i, frame in enumerate(frames):
        if i == 0 or frame.cut:
            chains.append([])
        chains[-1].append(i)
    return chains


def reference_index(frames: Sequence[FeedbackFrame], chain: list[int], i: int) -> int:
    return frames[i].reference if frames[i].reference is not None else chain[0]


def chain_frames(frames: Sequence[FeedbackFrame], chain: Sequence[int]) -> list[FeedbackFrame]:
    """One chain as a plan of its own (references re-indexed): its keys are the whole plan's keys for it.

    A chain depends on nothing outside itself, so a worker can render it alone (a Ray farm).
    """
    start, end = chain[0], chain[-1]
    out = []
    for i in chain:
        ref = frames[i].reference
        if ref is not None and not start <= ref <= end:
            raise ValueError(f"frame {i}'s colour reference {ref} lies outside its chain {start}-{end}")
        out.append(replace(frames[i], reference=None if ref is None else ref - start))
    return out


def feedback_keys(frames: Sequence[FeedbackFrame]) -> list[str]:
    """The store key of every frame: chain keys for diffused frames, fill keys for cadence in-betweens."""
    keys = [""] * len(frames)
    for chain in split_chains(frames):
        if not frames[chain[0]].diffused:
            raise ValueError(f"frame {chain[0]} starts a chain, so it must be diffused")
        running = frames[chain[0]].key  # a chain's first frame is its independent render
        keys[chain[0]] = running
        pending: list[int] = []  # in-betweens waiting for the next diffused frame
        for i in chain[1:]:
            ref = reference_index(frames, chain, i)
            running = chain_key(running, frames[i].key, step_inputs(frames[i], frames[ref].key))
            keys[i] = running
            if frames[i].diffused:
                for j in pending:
                    keys[j] = fill_key(keys[j], running)
                pending = []
            else:
                pending.append(i)
        if pending:
            raise ValueError(f"frame {chain[-1]} ends a chain, so it must be diffused (see camera.diffused_indices)")
    return keys


def first_changed(old_keys: Sequence[str], new_keys: Sequence[str]) -> int | None:
    """The first frame an edit re-renders, or None when nothing changed."""
    for i, (old, new) in enumerate(zip(old_keys, new_keys)):
        if old != new:
            return i
    return None if len(old_keys) == len(new_keys) else min(len(old_keys), len(new_keys))


@dataclass(frozen=True)
class FeedbackWork:
    """What a run still has to do, per chain (a plan's keys against the store)."""

    keys: tuple[str, ...]
    chains: tuple[tuple[int, ...], ...]
    diffuse: tuple[tuple[int, ...], ...]  # per chain, in order: diffused frames whose key is missing
    fill: tuple[tuple[int, ...], ...]  # per chain: in-betweens whose key is missing
    references: tuple[int, ...]  # non-cut frames whose independent render is a colour reference

    def resume_at(self) -> tuple[int | None, ...]:
        """Per chain, the first frame to render (None: the chain is complete)."""
        return tuple(min(d + f, default=None) for d, f in zip(self.diffuse, self.fill))


def plan_work(frames: Sequence[FeedbackFrame], stored: Callable[[str], bool]) -> FeedbackWork:
    """Missing frames per chain; a stored later frame is valid as is, since its key covers its whole past."""
    keys = feedback_keys(frames)
    chains = split_chains(frames)
    diffuse = tuple(tuple(i for i in c if frames[i].diffused and not stored(keys[i])) for c in chains)
    fill = tuple(tuple(i for i in c if not frames[i].diffused and not stored(keys[i])) for c in chains)
    refs = {reference_index(frames, c, i) for c in chains for i in c[1:]}
    references = tuple(sorted(r for r in refs if not (r == 0 or frames[r].cut)))
    return FeedbackWork(tuple(keys), tuple(map(tuple, chains)), diffuse, fill, references)


def prepare_init(previous: np.ndarray, step: np.ndarray, frame: FeedbackFrame, reference: ColourStats) -> np.ndarray:
    """The init of a feedback step: the stored predecessor warped, then colour, sharpness/contrast, noise."""
    image = camera.warp_matrix(previous.astype(np.float32) / 255, step, frame.border)
    c = frame.coherence
    if c.colour > 0:
        image = camera.match_colour(image, reference, c.colour)
    if c.sharpen > 0 or c.max_contrast > 0:
        image = camera.guard(image, reference, c.sharpen, c.max_contrast)
    return camera.add_noise(image, c.noise, frame.noise_seed)


def to_uint8(images: Images) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def render_feedback(
    frames: Sequence[FeedbackFrame],
    img2img_fn: Callable[[Images, Sequence[FeedbackFrame]], Images],
    first_fn: Callable[[Sequence[FeedbackFrame]], Images],
    load: Callable[[str], np.ndarray | None],
    save: Callable[[str, np.ndarray], None],
    batch_size: int = 8,
    on_step: Callable[[Sequence[int]], None] | None = None,
    stored: Callable[[str], bool] | None = None,
) -> list[str]:
    """Render every missing frame into the store, chains side by side; returns all keys in frame order.

    Each round takes the next missing diffused frame of up to `batch_size` chains and renders
    them in one call (cuts through `first_fn`, the rest through `img2img_fn`); cadence
    in-betweens are filled as soon as both their diffused neighbours exist.
    """
    # 1. Keys against the store: what is missing, where each chain resumes.
    work = plan_work(frames, stored or (lambda key: load(key) is not None))
    keys = list(work.keys)
    latest: dict[str, np.ndarray] = {}  # each chain's newest diffused frame, saving a reload

    def frame_at(i: int) -> np.ndarray | None:
        return latest[keys[i]] if keys[i] in latest else load(keys[i])

    # 2. Colour references that are not a chain's own first frame: independent renders.
    missing_refs = [r for r in work.references if load(frames[r].key) is None]
    for start in range(0, len(missing_refs), batch_size):
        rows = missing_refs[start : start + batch_size]
        for r, image in zip(rows, to_uint8(first_fn([frames[r] for r in rows]))):
            save(frames[r].key, image)
    stats: dict[int, ColourStats] = {}

    def reference_stats(chain: tuple[int, ...], i: int) -> ColourStats:
        r = reference_index(frames, list(chain), i)
        if r not in stats:
            image = frame_at(r) if r == chain[0] else load(frames[r].key)
            stats[r] = camera.colour_stats(image.astype(np.float32) / 255)
        return stats[r]

    # 3. Rounds: the next missing diffused frame of up to batch_size chains, in one call each kind.
    queues = [list(d) for d in work.diffuse]
    fills = [set(f) for f in work.fill]
    while any(queues):
        active = [c for c, q in enumerate(queues) if q][:batch_size]
        cuts = [c for c in active if queues[c][0] == work.chains[c][0]]
        steps = [c for c in active if c not in cuts]
        outputs: dict[int, np.ndarray] = {}
        if cuts:
            outputs.update(zip(cuts, to_uint8(first_fn([frames[queues[c][0]] for c in cuts]))))
        if steps:
            inits = []
            for c in steps:
                i, chain = queues[c][0], work.chains[c]
                previous = _previous_diffused(frames, chain, i)
                image = frame_at(previous)
                step = camera.compose([_step_matrix(frames[j], image.shape) for j in range(previous + 1, i + 1)])
                inits.append(prepare_init(image, step, frames[i], reference_stats(chain, i)))
            outputs.update(zip(steps, to_uint8(img2img_fn(np.stack(inits), [frames[queues[c][0]] for c in steps]))))
        for c in active:
            i = queues[c].pop(0)
            save(keys[i], outputs[c])
            if i != work.chains[c][0]:
                latest.pop(keys[_previous_diffused(frames, work.chains[c], i)], None)
            latest[keys[i]] = outputs[c]
            # 4. In-betweens whose two diffused neighbours now exist.
            _fill_ready(frames, work.chains[c], fills[c], keys, frame_at, save)
        if on_step is not None:
            on_step(active)
    for c, chain in enumerate(work.chains):  # gaps whose both ends were already stored
        _fill_ready(frames, chain, fills[c], keys, frame_at, save)
    return keys


def _previous_diffused(frames: Sequence[FeedbackFrame], chain: Sequence[int], i: int) -> int:
    return max(j for j in chain if j < i and frames[j].diffused)


def _step_matrix(frame: FeedbackFrame, shape: tuple[int, ...]) -> np.ndarray:
    return camera.motion_matrix(frame.motion, shape[1], shape[0], frame.fov)


def _fill_ready(frames, chain, missing: set[int], keys, frame_at, save) -> None:
    """Fill each missing in-between whose previous and next diffused frames are available."""
    diffused = [j for j in chain if frames[j].diffused]
    for a, b in zip(diffused, diffused[1:]):
        gap = [j for j in range(a + 1, b) if j in missing]
        if not gap:
            continue
        frame_a, frame_b = frame_at(a), frame_at(b)
        if frame_a is None or frame_b is None:
            continue  # b is not rendered yet
        path = [_step_matrix(frames[j], frame_a.shape) for j in range(a + 1, b + 1)]
        a_b = [frame.astype(np.float32) / 255 for frame in (frame_a, frame_b)]
        filled = to_uint8(camera.cadence_fill(*a_b, b - a - 1, path, frames[b].border))
        for j in gap:
            save(keys[j], filled[j - a - 1])
            missing.discard(j)


# --- a timeline's plan as feedback frames, and the engine as the two callables ---------------


def timeline_feedback_frames(
    records: Sequence, keyframes: Sequence, inputs: Sequence, keys: Sequence[str], settings, diffused: set[int] | None = None,
) -> list[FeedbackFrame]:
    """One FeedbackFrame per video frame of a schedule (schedule.FrameRecord, ResolvedKeyframe).

    `inputs` / `keys`: each frame's text-to-image FrameInputs and its frame key, so a chain's
    first frame is exactly the frame a travel render makes; `settings`: timeline.FeedbackSettings.
    `diffused`: the frames to diffuse (interpolation's anchors) instead of cadence's.
    """
    def track(record, name: str) -> float:  # a camera track's value (schedule.track_value, without the schedule)
        return dict(record.params).get(name, CAMERA_TRACKS[name])

    # 1. Chains start at frame 0 and at every keyframe marked cut.
    cuts = {0} | {k.frame for k in keyframes if k.keyframe.cut}
    coherence = Coherence(colour=settings.colour, sharpen=settings.sharpen, max_contrast=settings.max_contrast, noise=settings.noise)
    motion_names = [f.name for f in fields(Motion)]
    frames = []
    for r, row, key in zip(records, inputs, keys):
        reference = None  # the chain's first frame
        if settings.reference == "keyframe" and keyframes[r.segment].frame <= r.frame:
            reference = keyframes[r.segment].frame  # lead-in frames before the first keyframe keep the chain's first
        frames.append(
            FeedbackFrame(
                row=row, key=key, cut=r.frame in cuts,
                motion=Motion(**{name: track(r, name) for name in motion_names}),
                strength=track(r, "strength"), coherence=coherence,
                noise_seed=r.seed_a + r.frame,  # a different pixel noise every frame, fixed by the timeline
                reference=reference, fov=settings.fov, border=settings.border,
            )
        )
    # 2. Cadence: every Nth frame of each chain is diffused (and its last), the rest filled.
    if diffused is None:
        diffused = {chain[j] for chain in split_chains(frames) for j in camera.diffused_indices(len(chain), settings.cadence)}
    return [replace(frame, diffused=i in diffused) for i, frame in enumerate(frames)]


def engine_fns(backend, frames: Sequence[FeedbackFrame], settings) -> tuple[
    Callable[[Sequence[FeedbackFrame]], Images], Callable[[Images, Sequence[FeedbackFrame]], Images]
]:
    """(first_fn, img2img_fn) through engine.render_frames, for frames whose `row` is a frames.FrameInputs.

    Every prompt is encoded once for the whole run. img2img rows are the frame's own inputs with
    its strength and the content hash of its init (the warped predecessor as uint8, the engine's
    init format), so a row's noise, conditioning and guidance are a travel render's.
    """
    from latentwalk.engine import Conditioning, image_key, render_frames

    conditioning = Conditioning(backend, [f.row for f in frames])

    def run(rows: list, init_images: dict[str, np.ndarray] | None) -> Images:
        out: dict = {}
        collect = lambda batch, images: out.update(zip(batch, images))  # noqa: E731
        render_frames(backend, rows, settings, collect, init_images=init_images, overlap=False, conditioning=conditioning)
        return np.stack([out[row] for row in rows]).astype(np.float32) / 255

    def first_fn(rows: Sequence[FeedbackFrame]) -> Images:
        return run([f.row for f in rows], None)

    def img2img_fn(init_images: Images, rows: Sequence[FeedbackFrame]) -> Images:
        inits = to_uint8(init_images)  # (B, H, W, 3)
        hashes = [image_key(image) for image in inits]
        return run([replace(f.row, strength=f.strength, init=h) for f, h in zip(rows, hashes)], dict(zip(hashes, inits)))

    return first_fn, img2img_fn
