"""Schedulers by name: the one table the timeline validates against and the sampler builds from.

Torch-free at import (diffusers loads inside `make_scheduler`), so reading a timeline never
loads model code.
"""

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
