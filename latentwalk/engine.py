"""The engine: any list of `FrameInputs` → denoised, decoded frames, in full batches.

Timelines and sweeps both come here. Frames are grouped by what a batch must share (steps,
img2img strength, whether guidance runs), each group is cut into batches of exactly
`batch_size` rows (the last one padded: kernels may choose another algorithm for another
shape and so change a frame's last bit, and the frame store relies on exact pixels), and
every row's inputs are built from that frame alone.

Where the frames go is the caller's business (`on_batch`): the frame store, a contact sheet,
or a Ray driver. On CUDA the UNet denoises batch k while a side stream decodes batch k-1; on
the CPU decoding runs in line, because a decode thread competes with the UNet for the same
cores (measured: 30 s with the thread against 22–24 s without, 2 cores).
"""

import hashlib
import queue
import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from latentwalk.backends import Backend, Cond
from latentwalk.control import InputImages, control_cond
from latentwalk.frames import FrameInputs, ImageSide
from latentwalk.inversion import Inverted, invert
from latentwalk.params import IMAGE_STRENGTH, MAX_SEED
from latentwalk.interpolation import INTERPOLATORS, seed_noise, slerp_noise
from latentwalk.prompts import parse_prompt
from latentwalk.sampling import BatchInputs, denoise
from latentwalk.schedulers import STEP_NOISE_SALT, img2img_start, uses_guidance

# `interpolation: blend`: the two prompts' noise predictions are blended instead of their embeddings.
BLEND = "blend"
OVERLAP_DEPTH = 2  # denoised batches waiting for the decoder: bounds memory at ~3 batches
T = TypeVar("T")


@dataclass(frozen=True)
class EngineSettings:
    """What every frame of one engine run shares (see frames.RenderIdentity for the full identity)."""

    width: int
    height: int
    scheduler: str
    timestep_spacing: str
    interpolation: str  # how conditioning travels: slerp or lerp
    batch_size: int
    # Image keyframes' pictures at the frame size, by picture key (images.timeline_pictures): they
    # travel with the settings, so every executor (a Ray worker too) can invert them itself.
    pictures: dict[str, np.ndarray] = field(default_factory=dict, compare=False, hash=False)
    # Video inits and control images by reference (control.InputImages): file paths by content hash,
    # decoded where a batch needs them, so a Ray worker reads the same files itself.
    images: "InputImages | None" = field(default=None, compare=False, hash=False)


def image_key(image: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 init image, as FrameInputs.init names it."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def batch_class(frame: FrameInputs) -> tuple:
    """What the rows of one batch must share: the timestep schedule (and the step a shared frame
    starts at) and the guidance mode. img2img rows of different strengths that start at the same
    step share a schedule (a beat-pulsed strength would otherwise split batches at every value)."""
    start = None if frame.strength is None else img2img_start(frame.steps, frame.strength)
    return (frame.steps, start, uses_guidance(frame.guidance), frame.share[2] if frame.share else 0)


def plan_batches(frames: Sequence[FrameInputs], batch_size: int) -> list[list[FrameInputs]]:
    """Frames grouped by batch_class in first-seen order, cut into chunks of batch_size."""
    groups: dict[tuple, list[FrameInputs]] = {}
    for frame in frames:
        groups.setdefault(batch_class(frame), []).append(frame)
    return [group[i : i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


class Conditioning:
    """Every distinct prompt and negative prompt of a render, encoded once."""

    def __init__(self, backend: Backend, frames: Sequence[FrameInputs]):
        positives = dict.fromkeys(p for f in frames for p in (f.prompt_a, f.prompt_b))
        negatives = dict.fromkeys(n for f in frames for n in (f.negative_a, f.negative_b))
        self.positive = {text: backend.encode(parse_prompt(text)) for text in positives}
        self.negative = {text: backend.encode(parse_prompt(text), negative=True) for text in negatives}


def interpolate_cond(a: Cond, b: Cond, t: float, interpolation: str) -> Cond:
    """One row of conditioning between two prompts, every named tensor alike; t = 0 is `a` exactly."""
    interpolate = INTERPOLATORS[interpolation]
    weight = torch.tensor([t], dtype=torch.float64)
    return {name: a[name] if t == 0 else interpolate(a[name], b[name], weight) for name in a}


def frame_noise(frame: FrameInputs, shape: tuple[int, int, int], inverted: "dict[tuple[ImageSide, int], Inverted] | None" = None) -> torch.Tensor:
    """(1, C, h, w): the slerp of the two sides' noise, moved `noise_shift` toward a second direction.

    A side's noise is its seed's, or for an image keyframe its picture's inverted noise, slerped
    toward the seed's by the frame's image_strength. The second direction is the noise of
    `noise_shift_seed` when the timeline sets one, else that of each seed + 1, travelling with
    the frame's noise weight; a shift of 0 is the frame's own noise exactly.
    """
    noise_t = torch.tensor([frame.noise_t], dtype=torch.float64)
    noise = slerp_noise(side_noise(frame, frame.image_a, frame.seed_a, shape, inverted), side_noise(frame, frame.image_b, frame.seed_b, shape, inverted), noise_t)
    shift = frame.param("noise_shift")
    if shift == 0:
        return noise
    params = dict(frame.params)
    if "noise_shift_seed" in params:
        other = seed_noise(int(params["noise_shift_seed"]), shape)
    else:
        a, b = ((s + 1) % MAX_SEED for s in (frame.seed_a, frame.seed_b))
        other = slerp_noise(seed_noise(a, shape), seed_noise(b, shape), noise_t)[0]
    return slerp_noise(noise[0], other, torch.tensor([shift], dtype=torch.float64))


def side_noise(frame: FrameInputs, side: ImageSide | None, seed: int, shape: tuple[int, int, int], inverted) -> torch.Tensor:
    """(C, h, w): a seed's noise, or a picture's inverted noise slerped toward it by image_strength (text-to-image rows)."""
    if side is None or frame.strength is not None or inverted is None:
        return seed_noise(seed, shape)
    picture = inverted[side, frame.steps].noise
    strength = frame.param(IMAGE_STRENGTH)
    return picture if strength == 0 else slerp_noise(picture, seed_noise(seed, shape), torch.tensor([strength], dtype=torch.float64))[0]


def batch_inputs(
    rows: Sequence[FrameInputs],
    conditioning: Conditioning,
    shape: tuple[int, int, int],
    interpolation: str,
    init_latents: dict[str, torch.Tensor] | None = None,
    inverted: "dict[tuple[ImageSide, int], Inverted] | None" = None,
) -> BatchInputs:
    """Per-row noise, conditioning, guidance and init latents, each built from its own frame alone.

    `blend`: each row carries both prompts (the negatives travel by slerp) and the weight t.
    """
    blending = interpolation == BLEND
    travel = "slerp" if blending else interpolation
    unconds = [interpolate_cond(conditioning.negative[r.negative_a], conditioning.negative[r.negative_b], r.t, travel) for r in rows]
    if blending:
        conds = [conditioning.positive[r.prompt_a] for r in rows]
        conds_b = [conditioning.positive[r.prompt_b] for r in rows]
    else:
        conds = [interpolate_cond(conditioning.positive[r.prompt_a], conditioning.positive[r.prompt_b], r.t, interpolation) for r in rows]
    return BatchInputs(
        noise=torch.cat([frame_noise(r, shape, inverted) for r in rows]),
        cond={name: torch.cat([c[name] for c in conds]) for name in conds[0]},
        uncond={name: torch.cat([c[name] for c in unconds]) for name in unconds[0]},
        guidance=torch.tensor([r.guidance for r in rows], dtype=torch.float32),
        step_seeds=tuple((r.seed_a ^ STEP_NOISE_SALT) % 2**63 for r in rows),
        init_latents=None if rows[0].init is None else torch.cat([init_latents[r.init] for r in rows]),
        cond_b={name: torch.cat([c[name] for c in conds_b]) for name in conds_b[0]} if blending else None,
        blend=torch.tensor([r.t for r in rows], dtype=torch.float32) if blending else None,
    )


# Pictures inverted per loaded model, for the life of the process: probes, frames and a Ray worker's
# later batches reuse them (each costs steps × (1 + INVERSION_ITERATIONS) guided UNet calls).
INVERTED: "weakref.WeakKeyDictionary[Backend, dict]" = weakref.WeakKeyDictionary()


def side_frame(side: ImageSide, steps: int) -> FrameInputs:
    """The keyframe's own frame a picture side is inverted under: its prompt, guidance and params, the picture at strength 0."""
    return FrameInputs(
        seed_a=side.seed, seed_b=side.seed, noise_t=0.0, prompt_a=side.prompt, prompt_b=side.prompt, negative_a=side.negative,
        negative_b=side.negative, t=0.0, guidance=side.guidance, steps=steps, params=side.params, image_a=side, image_b=side,
    )


class Pictures:
    """The image keyframes' pictures of one engine run, each side inverted (once per model) when a row first needs it.

    Inversion and reconstruction run one row at a time, whatever the batches, so they do not
    depend on which frames a batch holds: a frame's pixels stay independent of its batch.
    """

    def __init__(self, backend: Backend, settings: EngineSettings, conditioning: Conditioning, shape: tuple[int, int, int]):
        self.backend, self.settings, self.conditioning, self.shape = backend, settings, conditioning, shape
        self.cache = INVERTED.setdefault(backend, {})

    def key(self, side: ImageSide, steps: int) -> tuple:
        s = self.settings
        return (side, steps, s.width, s.height, s.scheduler, s.timestep_spacing, s.interpolation)

    def __getitem__(self, side_steps: tuple[ImageSide, int]) -> Inverted:
        key = self.key(*side_steps)
        if key not in self.cache:
            self.cache[key] = self.invert(*side_steps)
        return self.cache[key]

    def need(self, rows: Sequence[FrameInputs]) -> None:
        """Invert the pictures of text-to-image rows now (before the batch's own LoRA rows are set)."""
        for row in rows:
            for side in (row.image_a, row.image_b):
                if side is not None and row.strength is None:
                    self[side, row.steps]

    def invert(self, side: ImageSide, steps: int) -> Inverted:
        """The picture's latent, its fixed-point DDIM inversion under its keyframe's frame, and the residual left."""
        s, backend = self.settings, self.backend
        pixels = s.pictures.get(side.picture)
        if pixels is None:
            raise RuntimeError(f"image keyframe: picture {side.picture[:12]} is not among the engine settings' pictures")
        anchor = side_frame(side, steps)
        for text, negative in ((side.prompt, False), (side.negative, True)):  # a caller's conditioning may lack them
            table = self.conditioning.negative if negative else self.conditioning.positive
            if text not in table:
                table[text] = backend.encode(parse_prompt(text), negative=negative)
        plain = batch_inputs([replace(anchor, image_a=None, image_b=None)], self.conditioning, self.shape, s.interpolation)
        backend.set_rows([anchor])
        guided = uses_guidance(side.guidance)
        latent = backend.encode_images(pixels[None]).cpu()  # (1, C, h, w)
        noise = invert(backend, latent, plain, s.scheduler, steps, width=s.width, height=s.height, spacing=s.timestep_spacing, guided=guided)
        partial = {(side, steps): Inverted(noise[0].cpu(), latent[0], torch.zeros_like(latent[0]))}
        inputs = batch_inputs([anchor], self.conditioning, self.shape, s.interpolation, inverted=partial)
        rebuilt = denoise(backend, inputs, s.scheduler, steps, width=s.width, height=s.height, spacing=s.timestep_spacing, guided=guided)
        return Inverted(noise[0].cpu(), latent[0], (latent - rebuilt.cpu())[0])

    def corrected(self, rows: Sequence[FrameInputs], latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) final latents with each row's pictures' residuals faded in by (1 - image_strength) × side weight.

        A keyframe's own frame (t = noise_t = 0, strength 0) is its picture's latent exactly: the
        picture through the VAE and back; away from it the correction fades linearly.
        """
        out = None
        for i, row in enumerate(rows):
            if row.strength is not None or (row.image_a is None and row.image_b is None):
                continue
            out = latents.clone() if out is None else out
            keep = 1.0 - row.param(IMAGE_STRENGTH)
            for weight, side in ((1.0 - row.noise_t, row.image_a), (row.noise_t, row.image_b)):
                if side is None or weight * keep == 0:
                    continue
                inverted = self[side, row.steps]
                if weight * keep == 1.0 and row.t == 0.0:
                    out[i] = inverted.latent.to(out.device)
                else:
                    out[i] += weight * keep * inverted.residual.to(out.device)
        return latents if out is None else out


class Trajectories:
    """Frames' latents after the first k steps of their denoising, which shared frames start from.

    Shared trajectories, as latentblending (lunarring) does: a frame between two probes of its
    path starts at step k from the slerp of the probes' step-k latents (FrameInputs.share) and
    runs only the remaining steps. Probe renders fill this (`capture=k`); sources it lacks (a
    resumed render reads its probes as images) are denoised again for k steps, which gives the
    same latents, since a row does not depend on its batch.
    """

    def __init__(self) -> None:
        # (frame, k) → (C, h, w), on the CPU: a long video keeps 8 per segment for the whole
        # render, which must not take GPU memory from the batches (a copy is exact either way).
        self.latents: dict[tuple[FrameInputs, int], torch.Tensor] = {}

    def keep(self, frames: Sequence[FrameInputs], k: int, latents: torch.Tensor) -> None:
        rows = latents.to("cpu", copy=True)
        for frame, row in zip(frames, rows):
            self.latents[frame, k] = row

    def missing_sources(self, frames: Sequence[FrameInputs], k: int) -> list[FrameInputs]:
        """Sources of the frames sharing k steps whose step-k latents are not kept yet, in order, once."""
        wanted = (source for f in frames if f.share and f.share[2] == k for source in f.share_sources()[:2])
        return [s for s in dict.fromkeys(wanted) if (s, k) not in self.latents]

    def start(self, rows: Sequence[FrameInputs]) -> torch.Tensor:
        """(B, C, h, w): each shared row's slerp between its sources' latents."""
        starts = []
        for row in rows:
            a, b, w = row.share_sources()
            k = row.share[2]
            starts.append(slerp_noise(self.latents[a, k], self.latents[b, k], torch.tensor([w], dtype=torch.float64)))
        return torch.cat(starts)


@dataclass(frozen=True)
class Denoised:
    """One denoised batch on its way to the decoder."""

    frames: Sequence[FrameInputs]
    # (batch_size, C, h, w) on the model's device, padding rows included: the VAE, too, may pick
    # another algorithm for another batch shape, so decoding drops them only afterwards.
    latents: torch.Tensor
    ready: "torch.cuda.Event | None"  # CUDA: recorded after the last step, for the decode stream


def denoised_batches(
    backend: Backend,
    frames: Sequence[FrameInputs],
    settings: EngineSettings,
    init_images: dict[str, np.ndarray] | None = None,
    conditioning: Conditioning | None = None,
    trajectories: Trajectories | None = None,
    capture: int = 0,
) -> Iterator[Denoised]:
    """Denoise the frames in batches of exactly `settings.batch_size` rows (the last one padded).

    `conditioning`: prompts already encoded (a superset of the frames'), for callers that render in many calls.
    `trajectories`: where shared frames find their sources' latents; `capture=k` keeps there the
    step-k latents of every frame denoised from its own noise (probes others will share).
    """
    # 1. Encode every distinct prompt once, and every init image once.
    conditioning = conditioning or Conditioning(backend, frames)
    init_latents = {key: backend.encode_images(image[None]) for key, image in (init_images or {}).items()}
    shape = backend.latent_shape(settings.width, settings.height)

    # Image keyframes: a frame with a picture side and no pictures in the settings fails in Pictures, naming it.
    with_pictures = settings.pictures or any(f.image_a or f.image_b for f in frames)
    pictures = Pictures(backend, settings, conditioning, shape) if with_pictures else None

    def run(batch: Sequence[FrameInputs], **kwargs) -> torch.Tensor:
        padded = list(batch) + [batch[-1]] * (settings.batch_size - len(batch))
        if pictures is not None:
            pictures.need(padded)
        own = source_latents(backend, padded, settings.images, init_latents)  # this batch's video inits
        inputs = batch_inputs(padded, conditioning, shape, settings.interpolation, init_latents | own if own else init_latents, pictures)
        inputs = with_controls(backend, padded, inputs, settings)
        backend.set_rows(padded)  # per-row quantities inside the model: LoRA weights
        first = batch[0]
        latents = denoise(
            backend, inputs, settings.scheduler, first.steps, width=settings.width, height=settings.height,
            strength=first.strength, spacing=settings.timestep_spacing, guided=uses_guidance(first.guidance), **kwargs,
        )
        return latents if pictures is None or "stop" in kwargs else pictures.corrected(padded, latents)

    # 2. Shared frames' sources that no probe render left behind: their first k steps again.
    trajectories = trajectories if trajectories is not None else Trajectories()
    for k in sorted({f.share[2] for f in frames if f.share}):
        for batch in plan_batches(trajectories.missing_sources(frames, k), settings.batch_size):
            trajectories.keep(batch, k, run(batch, stop=k))
    # 3. Denoise batch by batch.
    for batch in plan_batches(frames, settings.batch_size):
        first = batch[0]
        if first.share:
            padded = list(batch) + [batch[-1]] * (settings.batch_size - len(batch))
            latents = run(batch, start=(first.share[2], trajectories.start(padded)))
        elif capture and first.strength is None and capture < first.steps:

            def keep(done: int, early: torch.Tensor, batch=batch) -> None:
                if done == capture:
                    trajectories.keep(batch, capture, early)

            latents = run(batch, on_step=keep)
        else:
            latents = run(batch)
        ready = None
        if latents.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
        yield Denoised(batch, latents, ready)


def source_latents(backend: Backend, rows: Sequence[FrameInputs], images: "InputImages | None", known: dict) -> dict[str, torch.Tensor]:
    """Latents of the rows' video inits that `known` lacks, each image encoded alone (as every init is)."""
    if images is None:
        return {}
    refs = dict.fromkeys(r.init for r in rows if r.init is not None and r.init not in known)
    return {ref: backend.encode_images(np.array(images.load(ref))[None]) for ref in refs}


def with_controls(backend: Backend, rows: Sequence[FrameInputs], inputs: BatchInputs, settings: EngineSettings) -> BatchInputs:
    """The batch with its rows' control images and weights in every conditioning part (control.control_cond)."""
    if not backend.controlnets or not any(r.controls for r in rows):
        return inputs
    entries = control_cond(rows, list(backend.controlnets), settings.images, (settings.height, settings.width))
    if not entries:
        return inputs
    return replace(
        inputs, cond=inputs.cond | entries, uncond=inputs.uncond | entries,
        cond_b=None if inputs.cond_b is None else inputs.cond_b | entries,
    )


def decode_denoised(backend: Backend, item: Denoised) -> np.ndarray:
    """`decode` (the padded batch, then only its real rows) on any thread; on CUDA on a side
    stream that first waits for the batch."""
    if item.ready is None:
        return backend.decode(item.latents)[: len(item.frames)]
    stream = torch.cuda.Stream(backend.device)
    stream.wait_event(item.ready)
    item.latents.record_stream(stream)  # keep the allocator from reusing it under the decode
    with torch.cuda.stream(stream):
        return backend.decode(item.latents)[: len(item.frames)]


def render_frames(
    backend: Backend,
    frames: Sequence[FrameInputs],
    settings: EngineSettings,
    on_batch: Callable[[Sequence[FrameInputs], np.ndarray], None],
    *,
    init_images: dict[str, np.ndarray] | None = None,
    overlap: bool | None = None,
    conditioning: Conditioning | None = None,
    trajectories: Trajectories | None = None,
    capture: int = 0,
) -> None:
    """Render `frames` and hand each decoded batch, (frames, (b, H, W, 3) uint8), to `on_batch`.

    `trajectories`, `capture`: shared trajectories, see denoised_batches.

    `overlap`: decode batch k-1 on a worker thread while batch k denoises; None = only where
    it helps (CUDA, unless offload hooks move components between devices per call).
    """
    if not frames:
        return
    if overlap is None:
        overlap = backend.device.type == "cuda" and not backend.options.cpu_offload
    batches = denoised_batches(backend, frames, settings, init_images, conditioning, trajectories, capture)

    def finish(item: Denoised) -> None:
        images = decode_denoised(backend, item) if overlap else backend.decode(item.latents)[: len(item.frames)]
        on_batch(item.frames, images)

    if overlap:
        run_overlapped(batches, finish)
    else:
        for item in batches:
            finish(item)


def run_overlapped(items: Iterator[T], consume: Callable[[T], None], depth: int = OVERLAP_DEPTH) -> None:
    """Consume items on a worker thread while this thread produces the next ones.

    At most `depth` produced items wait in the queue. An exception in the worker is raised
    here. One here (Ctrl-C included) lets the worker finish the items already produced (for
    rendering: decode and store batches whose denoising is paid for), then propagates.
    """
    pending: queue.Queue = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []
    done = object()

    def work() -> None:
        while (item := pending.get()) is not done:
            try:
                consume(item)
            except BaseException as e:  # handed to the producing thread
                failure.append(e)
                return

    worker = threading.Thread(target=work, name="latentwalk-decode", daemon=True)
    worker.start()

    def put(item) -> None:
        while worker.is_alive():  # timed waits keep Ctrl-C responsive and notice a dead worker
            try:
                pending.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish() -> None:
        put(done)
        while worker.is_alive():
            worker.join(timeout=0.1)

    try:
        for item in items:
            if failure:
                break
            put(item)
    except BaseException:
        finish()
        raise
    finish()
    if failure:
        raise failure[0]
