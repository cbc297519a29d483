"""Schedulers and the guided denoising loop: one UNet call per step for a whole batch.

Every per-sample quantity (noise, conditioning, guidance, init latents) is a row of the batch,
so a frame's pixels do not depend on which frames share its batch. Rows that share a batch
share its timestep schedule (steps, img2img strength) and whether classifier-free guidance runs.
"""

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:  # the timeline reads the names below without loading model code
    from latentwalk.backends import Backend, Cond

# name → (diffusers class, config overrides). Few-step models: `lcm` for LCM and LCM-LoRA,
# `euler_a` (ancestral) as SD-Turbo/SDXL-Turbo's model cards use it, with trailing spacing.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    # DPM-Solver++(2M), Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling".
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    # Latent Consistency Models, Luo et al. 2023.
    "lcm": ("LCMScheduler", {}),
}
# How the steps spread over the training timesteps; distilled few-step models need `trailing`
# (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed"). `auto`: the model's own.
TIMESTEP_SPACINGS = ("auto", "leading", "linspace", "trailing")
# Salt between a seed's starting noise and its ancestral samplers' per-step noise.
STEP_NOISE_SALT = 0x5EED
# Schedulers whose frames share their first steps under `share_steps: auto`. Any scheduler can
# start a frame from given latents at step k (a multistep solver starts its history afresh there,
# an ancestral one draws the frame's own step noise); the few-step samplers are left out of
# `auto`, since with 1-4 steps there is nothing worth sharing.
SHARE_AUTO_SCHEDULERS = ("ddim", "euler", "dpmpp_2m")


@dataclass(frozen=True)
class BatchInputs:
    noise: torch.Tensor  # (B, C, h, w) unit-variance noise, before the scheduler's scaling
    cond: "Cond"  # each (B, ...)
    uncond: "Cond"  # each (B, ...)
    guidance: torch.Tensor  # (B,)
    step_seeds: tuple[int, ...]  # (B,) seeds of stochastic samplers' per-step noise
    init_latents: torch.Tensor | None = None  # (B, C, h, w) img2img starting latents
    # `interpolation: blend`: `cond` is prompt A's, `cond_b` prompt B's, and each row's noise
    # prediction is (1 - blend)·ε_A + blend·ε_B (one more UNet row per frame).
    cond_b: "Cond | None" = None  # each (B, ...)
    blend: torch.Tensor | None = None  # (B,)


def make_scheduler(name: str, config: dict, spacing: str = "auto"):
    """A fresh scheduler of the named family built from the model's own noise schedule."""
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    if spacing != "auto":
        overrides = {**overrides, "timestep_spacing": spacing}
    return getattr(diffusers, class_name).from_config(config, **overrides)


def img2img_start(steps: int, strength: float) -> int:
    """Index of the first of `steps` timesteps an img2img run denoises (diffusers' get_timesteps)."""
    return steps - min(int(steps * strength), steps)


def uses_guidance(scale: float) -> bool:
    """Classifier-free guidance runs above 1, as in diffusers; at or below 1 the prompt alone steers."""
    return scale > 1.0


@torch.no_grad()
def denoise(
    backend: "Backend",
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
