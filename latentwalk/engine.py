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
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from latentwalk.backends import Backend, Cond
from latentwalk.frames import FrameInputs
from latentwalk.params import MAX_SEED
from latentwalk.interpolation import INTERPOLATORS, seed_noise, slerp_noise
from latentwalk.prompts import parse_prompt
from latentwalk.sampling import BatchInputs, denoise
from latentwalk.schedulers import STEP_NOISE_SALT, uses_guidance

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


def image_key(image: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 init image, as FrameInputs.init names it."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def batch_class(frame: FrameInputs) -> tuple:
    """What the rows of one batch must share: the timestep schedule (and the step a shared frame
    starts at) and the guidance mode."""
    return (frame.steps, frame.strength, uses_guidance(frame.guidance), frame.share[2] if frame.share else 0)


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


def frame_noise(frame: FrameInputs, shape: tuple[int, int, int]) -> torch.Tensor:
    """(1, C, h, w): the slerp of the two seeds' noise, moved `noise_shift` toward a second direction.

    The second direction is the noise of `noise_shift_seed` when the timeline sets one, else
    that of each seed + 1, travelling with the frame's noise weight; a shift of 0 is the frame's
    own noise exactly.
    """
    noise_t = torch.tensor([frame.noise_t], dtype=torch.float64)
    noise = slerp_noise(seed_noise(frame.seed_a, shape), seed_noise(frame.seed_b, shape), noise_t)
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


def batch_inputs(
    rows: Sequence[FrameInputs],
    conditioning: Conditioning,
    shape: tuple[int, int, int],
    interpolation: str,
    init_latents: dict[str, torch.Tensor] | None = None,
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
        noise=torch.cat([frame_noise(r, shape) for r in rows]),
        cond={name: torch.cat([c[name] for c in conds]) for name in conds[0]},
        uncond={name: torch.cat([c[name] for c in unconds]) for name in unconds[0]},
        guidance=torch.tensor([r.guidance for r in rows], dtype=torch.float32),
        step_seeds=tuple((r.seed_a ^ STEP_NOISE_SALT) % 2**63 for r in rows),
        init_latents=None if rows[0].init is None else torch.cat([init_latents[r.init] for r in rows]),
        cond_b={name: torch.cat([c[name] for c in conds_b]) for name in conds_b[0]} if blending else None,
        blend=torch.tensor([r.t for r in rows], dtype=torch.float32) if blending else None,
    )


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

    def run(batch: Sequence[FrameInputs], **kwargs) -> torch.Tensor:
        padded = list(batch) + [batch[-1]] * (settings.batch_size - len(batch))
        inputs = batch_inputs(padded, conditioning, shape, settings.interpolation, init_latents)
        backend.set_rows(padded)  # per-row quantities inside the model: LoRA weights
        first = batch[0]
        return denoise(
            backend, inputs, settings.scheduler, first.steps, width=settings.width, height=settings.height,
            strength=first.strength, spacing=settings.timestep_spacing, guided=uses_guidance(first.guidance), **kwargs,
        )

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
