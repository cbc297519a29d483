"""Stage 5: model loading and the batched denoising loop.

All frames go through one loop in fixed-size batches that may cross keyframes. Each batch
gets a fresh scheduler, and every per-sample quantity (noise, conditioning, guidance) is a
row of the batch, so a frame's pixels do not depend on which frames share its batch. A short
batch is padded to the full batch size, because kernels may choose a different algorithm for
a different shape and so change a frame's last bit (the frame store relies on exact pixels).

`run_overlapped` lets the UNet denoise batch k while a worker thread decodes batch k-1.
"""

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from latentwalk.errors import UserError
from latentwalk.interpolation import INTERPOLATORS, seed_noise, slerp_noise
from latentwalk.schedule import FrameRecord

SCHEDULER_CLASSES = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    # DPM-Solver++(2M), Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling".
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}


OVERLAP_DEPTH = 2  # denoised batches waiting for the decoder: bounds memory at ~3 batches
T = TypeVar("T")


@dataclass(frozen=True)
class ModelOptions:
    """Memory and speed switches for big models and GPUs (timeline settings of the same names)."""

    channels_last: bool = False  # NHWC convolutions: faster on tensor-core GPUs
    compile: bool = False  # torch.compile the UNet: slow first batch, faster after
    attention_slicing: bool = False  # attention in slices: less peak memory, a little slower
    vae_tiling: bool = False  # decode in overlapping tiles: big frames in little memory
    cpu_offload: bool = False  # one component on the GPU at a time (accelerate hooks)

    def numerics(self) -> tuple[tuple[str, bool], ...]:
        """The options that can change a frame's pixels (offloading only moves weights)."""
        return (
            ("channels_last", self.channels_last),
            ("compile", self.compile),
            ("attention_slicing", self.attention_slicing),
            ("vae_tiling", self.vae_tiling),
        )


@dataclass(frozen=True)
class Model:
    tokenizer: object  # transformers.CLIPTokenizer
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    source: str  # what `model:` resolved to

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels


def resolve_model(spec: str) -> str:
    """`toy` → the embedded model's folder; hub ids and folders pass through unchanged."""
    if spec == "toy":
        from latentwalk.toy import MODEL_DIR

        return str(MODEL_DIR)
    return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' was asked for, but torch sees no CUDA device (install a CUDA build of torch)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device: 'mps' was asked for, but torch sees no MPS device")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """float16 on CUDA by default (half the memory, tensor cores); float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def load_model(spec: str, device: str = "auto", dtype: str = "auto", options: ModelOptions = ModelOptions()) -> Model:
    """Load a Stable-Diffusion-style diffusers folder or hub id; `toy` is just another folder."""
    import diffusers
    import transformers

    # Library chatter (optional-backend notices, loading bars) would bury our own progress bar.
    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    diffusers.logging.disable_progress_bar()

    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    if options.cpu_offload and torch_device.type != "cuda":
        raise UserError(f"cpu_offload: needs a CUDA device, but the render runs on {torch_device.type!r}")
    source = resolve_model(spec)
    try:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(source, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model: could not load {spec!r} ({source}): {first_line}") from None
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    unet = apply_options(pipe, torch_device, torch_dtype, options)
    return Model(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        unet=unet,
        vae=pipe.vae,
        scheduler_config=dict(pipe.scheduler.config),
        device=torch_device,
        dtype=torch_dtype,
        source=source,
    )


def apply_options(pipe, device: torch.device, dtype: torch.dtype, options: ModelOptions) -> torch.nn.Module:
    """Place the pipeline on its device with the options applied; returns the UNet to call."""
    if options.cpu_offload:
        # Weights stay on the CPU; a hook moves each component to the GPU when it is called.
        pipe.to(dtype=dtype)
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device, dtype)
    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options.attention_slicing:
        pipe.enable_attention_slicing("auto")
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.compile:
        return torch.compile(pipe.unet, fullgraph=False, dynamic=False)  # batches are padded: one shape
    return pipe.unet


def make_scheduler(name: str, config: dict):
    """A fresh scheduler of the named family built from the model's own noise schedule."""
    import diffusers

    class_name, overrides = SCHEDULER_CLASSES[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of every keyframe, each prompt encoded once. Rows: keyframe index."""

    cond: torch.Tensor  # (K, L, D) positive prompts
    uncond: torch.Tensor  # (K, L, D) negative prompts


@dataclass(frozen=True)
class BatchInputs:
    noise: torch.Tensor  # (B, C, h, w) unit-variance noise, before the scheduler's scaling
    cond: torch.Tensor  # (B, L, D)
    uncond: torch.Tensor  # (B, L, D)
    guidance: torch.Tensor  # (B,)


def encode_keyframes(model: Model, prompts: Sequence[str], negatives: Sequence[str]) -> Conditioning:
    """Encode each keyframe's prompt and negative prompt; repeated texts are encoded once."""
    from latentwalk.conditioning import TextConditioner

    conditioner = TextConditioner(model.tokenizer, model.text_encoder)
    cond = torch.cat([conditioner.encode_text(p) for p in prompts])
    uncond = torch.cat([conditioner.encode_text(n) for n in negatives])
    return Conditioning(cond.float(), uncond.float())


def latent_shape(model: Model, width: int, height: int) -> tuple[int, int, int]:
    f = model.vae_scale_factor
    return (model.latent_channels, height // f, width // f)


def batch_inputs(
    records: Sequence[FrameRecord],
    conditioning: Conditioning,
    noise_of_seed: dict[int, torch.Tensor],
    interpolation: str,
) -> BatchInputs:
    """Per-frame noise, conditioning and guidance for a batch of frame records."""
    a = torch.tensor([r.segment for r in records])
    b = torch.clamp(a + 1, max=len(conditioning.cond) - 1)
    t = torch.tensor([r.t for r in records], dtype=torch.float64)
    noise_t = torch.tensor([r.noise_t for r in records], dtype=torch.float64)
    interpolate = INTERPOLATORS[interpolation]
    noise = torch.cat(
        [slerp_noise(noise_of_seed[r.seed_a], noise_of_seed[r.seed_b], noise_t[i : i + 1]) for i, r in enumerate(records)]
    )
    return BatchInputs(
        noise=noise,
        cond=interpolate(conditioning.cond[a], conditioning.cond[b], t[:, None]),
        uncond=interpolate(conditioning.uncond[a], conditioning.uncond[b], t[:, None]),
        guidance=torch.tensor([r.guidance for r in records], dtype=torch.float32),
    )


def img2img_start(steps: int, strength: float) -> int:
    """Index of the first of `steps` timesteps an img2img run denoises (diffusers' get_timesteps)."""
    return steps - min(int(steps * strength), steps)


@torch.no_grad()
def denoise(
    model: Model,
    inputs: BatchInputs,
    scheduler_name: str,
    steps: int,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) with one UNet call per step and per-sample scales.

    With `init_latents` (1, C, h, w), img2img as in SDEdit (Meng et al. 2022) and diffusers'
    img2img pipeline: the image's latents are noised to the timestep that `strength` reaches
    and only the rest of the schedule runs.
    """
    scheduler = make_scheduler(scheduler_name, model.scheduler_config)
    # Timesteps and sigmas stay on the CPU: indexing with a device scalar would sync every step.
    scheduler.set_timesteps(steps, device="cpu")
    noise = inputs.noise.to(model.device, torch.float32)  # (B, C, h, w)
    timesteps = scheduler.timesteps
    if init_latents is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        begin = img2img_start(steps, strength) * scheduler.order
        timesteps = timesteps[begin:]
        latents = init_latents.to(model.device, torch.float32).expand_as(noise)
        if len(timesteps) == 0:  # strength 0: the image through the VAE and back
            return latents.clone()
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(noise)))
    context = torch.cat([inputs.uncond, inputs.cond]).to(model.device, model.dtype)  # (2B, L, D)
    scale = inputs.guidance.to(model.device).view(-1, 1, 1, 1)
    for t in timesteps:
        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = model.unet(x.to(model.dtype), t, encoder_hidden_states=context).sample.float()
        eps_uncond, eps_cond = eps.chunk(2)
        eps = eps_uncond + scale * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents


@torch.no_grad()
def decode(model: Model, latents: torch.Tensor) -> np.ndarray:
    """Latents (B, C, h, w) → frames (B, H, W, 3) uint8 in one batched VAE call."""
    scaled = latents.to(model.device, model.dtype) / model.vae.config.scaling_factor
    images = model.vae.decode(scaled).sample.float()  # (B, 3, H, W) in [-1, 1]
    images = ((images / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


@dataclass(frozen=True)
class Denoised:
    """One denoised batch on its way to the decoder."""

    records: Sequence[FrameRecord]
    latents: torch.Tensor  # (b, C, h, w) on the model's device; padding rows already dropped
    ready: "torch.cuda.Event | None"  # CUDA: recorded after the last step, for the decode stream


def denoised_batches(
    model: Model,
    records: Sequence[FrameRecord],
    conditioning: Conditioning,
    *,
    width: int,
    height: int,
    steps: int,
    scheduler: str,
    interpolation: str,
    batch_size: int,
) -> Iterator[Denoised]:
    """Denoise the records in batches of exactly `batch_size` rows (the last one padded)."""
    shape = latent_shape(model, width, height)
    noise_of_seed = {seed: seed_noise(seed, shape) for seed in {r.seed_a for r in records} | {r.seed_b for r in records}}
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        padded = list(batch) + [batch[-1]] * (batch_size - len(batch))
        latents = denoise(model, batch_inputs(padded, conditioning, noise_of_seed, interpolation), scheduler, steps)
        ready = None
        if latents.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
        yield Denoised(batch, latents[: len(batch)], ready)


def decode_denoised(model: Model, item: Denoised) -> np.ndarray:
    """`decode` on any thread; on CUDA on a side stream that first waits for the batch."""
    if item.ready is None:
        return decode(model, item.latents)
    stream = torch.cuda.Stream(model.device)
    stream.wait_event(item.ready)
    item.latents.record_stream(stream)  # keep the allocator from reusing it under the decode
    with torch.cuda.stream(stream):
        return decode(model, item.latents)


def render_batches(
    model: Model,
    records: Sequence[FrameRecord],
    conditioning: Conditioning,
    *,
    width: int,
    height: int,
    steps: int,
    scheduler: str,
    interpolation: str,
    batch_size: int,
) -> Iterator[tuple[Sequence[FrameRecord], np.ndarray]]:
    """Yield (records, frames) batch by batch, sequentially; memory is bounded by one batch."""
    for item in denoised_batches(
        model, records, conditioning, width=width, height=height, steps=steps, scheduler=scheduler,
        interpolation=interpolation, batch_size=batch_size,
    ):
        yield item.records, decode(model, item.latents)


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
