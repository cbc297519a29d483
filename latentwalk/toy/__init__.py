"""The embedded toy model: a tiny text-to-image latent diffusion model trained from scratch."""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"  # a plain diffusers StableDiffusionPipeline folder
