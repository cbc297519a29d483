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
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from latentwalk import camera
from latentwalk.camera import ColourStats, Motion

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


# --- today's denoising loop as the two callables (until the engine takes per-row init latents) ---


def denoise_fns(
    model, conditioning, *, width: int, height: int, steps: int, scheduler: str = "ddim", interpolation: str = "slerp", batch_size: int = 1
) -> tuple[Callable[[Sequence[FeedbackFrame]], Images], Callable[[Images, Sequence[FeedbackFrame]], Images]]:
    """(first_fn, img2img_fn) over `render.denoise` for frames whose `row` is a schedule.FrameRecord.

    Calls are padded to `batch_size` rows (see render.py: shapes pick kernels), and split by
    strength, since `denoise` takes one strength per call; init latents are per row (B, C, h, w),
    the VAE posterior mean as in sweep.encode_image.
    """
    import torch

    from latentwalk.interpolation import seed_noise
    from latentwalk.render import batch_inputs, decode, denoise, latent_shape

    shape = latent_shape(model, width, height)
    noise_of_seed: dict[int, torch.Tensor] = {}

    def inputs(rows: Sequence[FeedbackFrame]):
        records = [f.row for f in rows] + [rows[-1].row] * (batch_size - len(rows))
        for r in records:
            for seed in (r.seed_a, r.seed_b):
                if seed not in noise_of_seed:
                    noise_of_seed[seed] = seed_noise(seed, shape)
        return batch_inputs(records, conditioning, noise_of_seed, interpolation)

    def chunks(n: int):
        return [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]

    def first_fn(rows: Sequence[FeedbackFrame]) -> Images:
        out = [decode(model, denoise(model, inputs([rows[i] for i in c]), scheduler, steps))[: len(c)] for c in chunks(len(rows))]
        return np.concatenate(out).astype(np.float32) / 255

    @torch.no_grad()
    def img2img_fn(init_images: Images, rows: Sequence[FeedbackFrame]) -> Images:
        out = np.zeros((len(rows), height, width, 3), dtype=np.float32)
        for strength in sorted({f.strength for f in rows}):
            same = [i for i, f in enumerate(rows) if f.strength == strength]
            for c in chunks(len(same)):
                idx = [same[i] for i in c]
                pixels = torch.from_numpy(init_images[idx + [idx[-1]] * (batch_size - len(idx))]).permute(0, 3, 1, 2) * 2 - 1
                latents = model.vae.encode(pixels.to(model.device, model.dtype)).latent_dist.mean.float()
                latents = latents * model.vae.config.scaling_factor  # (B, C, h, w): one init per row
                denoised = denoise(model, inputs([rows[i] for i in idx]), scheduler, steps, latents, strength)
                out[idx] = decode(model, denoised)[: len(idx)].astype(np.float32) / 255
        return out

    return first_fn, img2img_fn
