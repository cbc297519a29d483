"""The guided denoising loop: one UNet call per step for a whole batch.

Every per-sample quantity (noise, conditioning, guidance, init latents) is a row of the batch,
so a frame's pixels do not depend on which frames share its batch. Rows that share a batch
share its timestep schedule (steps, img2img strength) and whether classifier-free guidance runs.
"""

import inspect
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from latentwalk.schedulers import img2img_start, make_scheduler

Cond = dict[str, torch.Tensor]  # named conditioning tensors, each (B, ...) (see backends.base)


class Denoiser(Protocol):
    """What the guided loop needs of a model family (backends.base.Backend has it)."""

    device: torch.device
    scheduler_config: dict

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, width: int, height: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class BatchInputs:
    noise: torch.Tensor  # (B, C, h, w) unit-variance noise, before the scheduler's scaling
    cond: Cond  # each (B, ...)
    uncond: Cond  # each (B, ...)
    guidance: torch.Tensor  # (B,)
    step_seeds: tuple[int, ...]  # (B,) seeds of stochastic samplers' per-step noise
    init_latents: torch.Tensor | None = None  # (B, C, h, w) img2img starting latents
    # `interpolation: blend`: `cond` is prompt A's, `cond_b` prompt B's, and each row's noise
    # prediction is (1 - blend)·ε_A + blend·ε_B (one more UNet row per frame).
    cond_b: Cond | None = None  # each (B, ...)
    blend: torch.Tensor | None = None  # (B,)


@torch.no_grad()
def denoise(
    backend: Denoiser,
    inputs: BatchInputs,
    scheduler_name: str,
    steps: int,
    *,
    width: int,
    height: int,
    strength: float | None = None,
    spacing: str = "auto",
    guided: bool = True,
    start: tuple[int, torch.Tensor] | None = None,
    stop: int | None = None,
    on_step: "Callable[[int, torch.Tensor], None] | None" = None,
) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) with one UNet call per step and per-sample scales.

    `guided=False` skips the unconditional half (half the UNet work): every row's scale is ≤ 1.
    With `strength` and `inputs.init_latents`, img2img as in SDEdit (Meng et al. 2022) and
    diffusers' img2img pipeline: the latents are noised to the timestep that `strength`
    reaches and only the rest of the schedule runs.

    Shared trajectories (text-to-image): `stop=k` returns the latents after the first k steps,
    which are those an uninterrupted run has after its first k steps (`on_step(k, latents)`
    sees them); `start=(k, latents)` runs the rest of the schedule from given latents.
    """
    scheduler = make_scheduler(scheduler_name, backend.scheduler_config, spacing)
    # Timesteps and sigmas stay on the CPU: indexing with a device scalar would sync every step.
    scheduler.set_timesteps(steps, device="cpu")
    noise = inputs.noise.to(backend.device, torch.float32)  # (B, C, h, w)
    timesteps = scheduler.timesteps
    if start is not None:
        begin, latents = start[0] * scheduler.order, start[1].to(backend.device, torch.float32)
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
    elif strength is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        begin = img2img_start(steps, strength) * scheduler.order
        timesteps = timesteps[begin:]
        latents = inputs.init_latents.to(backend.device, torch.float32)
        if len(timesteps) == 0:  # strength 0: the image through the VAE and back
            return latents.clone()
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(noise)))
    # One generator per row, so a row's per-step noise does not depend on its batch.
    step_kwargs = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = [torch.Generator("cpu").manual_seed(s) for s in inputs.step_seeds]
    # UNet rows: [uncond,] cond[, cond_b], each B rows.
    parts = ([inputs.uncond] if guided else []) + [inputs.cond] + ([inputs.cond_b] if inputs.cond_b is not None else [])
    cond = {name: torch.cat([p[name] for p in parts]) for name in inputs.cond}  # (len(parts)·B, ...)
    scale = inputs.guidance.to(backend.device).view(-1, 1, 1, 1)
    blend = None if inputs.blend is None else inputs.blend.to(backend.device, torch.float32).view(-1, 1, 1, 1)
    if stop is not None:
        timesteps = timesteps[: stop * scheduler.order - (start[0] * scheduler.order if start else 0)]
    done = start[0] if start is not None else 0  # steps behind the latents (order-1 schedulers)
    for t in timesteps:
        x = torch.cat([latents] * len(parts)) if len(parts) > 1 else latents
        x = scheduler.scale_model_input(x, t)
        out = backend.predict(x, t, cond, width, height).chunk(len(parts))
        # Composable diffusion (Liu et al. 2022): the two prompts' predictions blended per row;
        # at blend 0 exactly prompt A's (1·ε_A + 0·ε_B).
        out_cond = out[-1] if blend is None else out[-2] * (1 - blend) + out[-1] * blend
        out = out[0] + scale * (out_cond - out[0]) if guided else out_cond
        latents = scheduler.step(out, t, latents, **step_kwargs).prev_sample
        done += 1
        if on_step is not None:
            on_step(done, latents)
    return latents
