"""A picture inverted to the noise that reproduces it: DDIM inversion refined by fixed-point steps.

DDIM inversion (Song et al. 2021, "Denoising Diffusion Implicit Models"; Mokady et al. 2023,
"Null-text Inversion") runs the deterministic sampler backwards, from the picture's latent up to
the first timestep, each step using the noise prediction at the latent it starts from. That
prediction belongs to the latent it ends at, so every step is off by a little, and more so with
classifier-free guidance. Fixed-point DDIM inversion (Pan et al. 2023, "Effective Real Image
Editing with Accelerated Iterative Diffusion Inversion"; Garibi et al. 2024, "ReNoise")
re-evaluates the prediction at the step's own end a few times, so that a sampler step from the
inverted latent lands back where it started. What is left of the error is measured once (the
keyframe's frame denoised from the inverted noise, against the picture's latent) and handed to
the engine as a residual that makes the keyframe's own frame the picture exactly.

Numbers for the embedded model (iterations against reconstruction error and cost) are in
docs/pictures.md and benchmarks/bench_images.py.
"""

from dataclasses import dataclass

import numpy as np
import torch

from latentwalk.sampling import BatchInputs, Denoiser
from latentwalk.schedulers import make_scheduler

# Fixed-point refinements per inversion step (0: plain DDIM inversion). Each costs one more UNet
# call per step; measured on the embedded model in docs/pictures.md.
INVERSION_ITERATIONS = 3


@dataclass(frozen=True)
class Inverted:
    """One picture side, ready for the engine (all on the CPU, float32)."""

    noise: torch.Tensor  # (C, h, w) unit-scale noise (as interpolation.seed_noise) the sampler denoises to ~ the picture
    latent: torch.Tensor  # (C, h, w) the picture's scaled latent: the VAE posterior mean
    residual: torch.Tensor  # (C, h, w) latent - the keyframe's frame denoised from `noise`


def guided_prediction(backend: Denoiser, x: torch.Tensor, t: torch.Tensor, inputs: BatchInputs, guided: bool, width: int, height: int) -> torch.Tensor:
    """The guided model output for latents x (B, C, h, w), as sampling.denoise forms it."""
    parts = ([inputs.uncond] if guided else []) + [inputs.cond] + ([inputs.cond_b] if inputs.cond_b is not None else [])
    cond = {name: torch.cat([p[name] for p in parts]) for name in inputs.cond}
    out = backend.predict(torch.cat([x] * len(parts)), t, cond, width, height).chunk(len(parts))
    if inputs.blend is None:
        out_cond = out[-1]
    else:
        blend = inputs.blend.to(backend.device, torch.float32).view(-1, 1, 1, 1)
        out_cond = out[-2] * (1 - blend) + out[-1] * blend
    if not guided:
        return out_cond
    return out[0] + inputs.guidance.to(backend.device).view(-1, 1, 1, 1) * (out_cond - out[0])


def alpha_at(alphas: torch.Tensor, t: float) -> float:
    """ᾱ at a (possibly fractional) training timestep, linearly between the table's entries."""
    return float(np.interp(float(t), np.arange(len(alphas)), alphas.double().numpy()))


def eps_and_x0(output: torch.Tensor, x: torch.Tensor, alpha: float, prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε, x0) from the model's output under its prediction type, for VP latents x at ᾱ = alpha."""
    a, s = alpha**0.5, (1 - alpha) ** 0.5
    if prediction == "v_prediction":
        return a * output + s * x, a * x - s * output
    if prediction == "sample":
        return (x - a * output) / s, output
    return output, (x - s * output) / a


@torch.no_grad()
def invert(
    backend: Denoiser, latent: torch.Tensor, inputs: BatchInputs, scheduler_name: str, steps: int, *,
    width: int, height: int, spacing: str = "auto", guided: bool = True, iterations: int | None = None,
) -> torch.Tensor:
    """(1, C, h, w) starting noise whose denoising under `inputs`' conditioning gives back `latent` (1, C, h, w).

    The walk follows the render's own timesteps; each step goes from ᾱ_prev (the sampler's
    next timestep, or the schedule's final ᾱ) up to ᾱ_t along the DDIM update, with the
    prediction taken at the step's end `iterations` times (fixed-point DDIM inversion; None:
    INVERSION_ITERATIONS).
    """
    iterations = INVERSION_ITERATIONS if iterations is None else iterations
    scheduler = make_scheduler(scheduler_name, backend.scheduler_config, spacing)
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = list(dict.fromkeys(float(t) for t in scheduler.timesteps))  # multistep solvers repeat none here; order-2 Heun would
    ddim = make_scheduler("ddim", backend.scheduler_config, spacing)
    alphas, final = ddim.alphas_cumprod, float(ddim.final_alpha_cumprod)
    prediction = backend.scheduler_config.get("prediction_type", "epsilon")
    x = latent.to(backend.device, torch.float32)
    for i in range(len(timesteps) - 1, -1, -1):  # from the last sampler step up to the first
        t = timesteps[i]
        alpha_t = alpha_at(alphas, t)
        alpha_prev = alpha_at(alphas, timesteps[i + 1]) if i + 1 < len(timesteps) else final
        t_model = torch.tensor(t, dtype=scheduler.timesteps.dtype)
        start = x
        guess = start
        for _ in range(iterations + 1):
            eps, _ = eps_and_x0(guided_prediction(backend, guess, t_model, inputs, guided, width, height), guess, alpha_t, prediction)
            x0 = (start - (1 - alpha_prev) ** 0.5 * eps) / alpha_prev**0.5
            guess = alpha_t**0.5 * x0 + (1 - alpha_t) ** 0.5 * eps
        x = guess
    # The sampler starts from noise · init_noise_sigma and shows the model scale_model_input of it.
    first = scheduler.timesteps[0]
    scale = float(scheduler.scale_model_input(torch.ones(1), first)[0]) * float(scheduler.init_noise_sigma)
    return (x / scale).float()
