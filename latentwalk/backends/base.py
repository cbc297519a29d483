"""The model seam: what the engine needs from a diffusion model family, and what every family shares.

A backend wraps a loaded diffusers pipeline. It turns prompt expressions into a conditioning
object (`Cond`: named tensors with one row each), calls the denoiser for a batch, and moves
images in and out of latent space. Families differ only in `encode` and `unet_kwargs`.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np
import torch

from latentwalk.control import residuals, split_cond
from latentwalk.frames import FrameInputs
from latentwalk.params import LORA_PARAM
from latentwalk.prompts import PromptExpr
# Cond: conditioning of one prompt (each tensor (1, ...)) or of a batch (each (B, ...)), named so
# that every operation (sums, slerp, rows) acts on all of a family's tensors alike.
from latentwalk.sampling import Cond

if TYPE_CHECKING:
    from latentwalk.backends.adapters import LoraRows
    from latentwalk.control import ControlUnit



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


class Backend:
    """One model family behind the engine's interface."""

    family: ClassVar[str]  # e.g. "sd", "sdxl"
    pipeline_class: ClassVar[str]  # the diffusers class that loads it

    def __init__(self, pipe, source: str, device: torch.device, dtype: torch.dtype, options: ModelOptions):
        self.pipe = pipe
        self.source = source
        self.device = device
        self.dtype = dtype
        self.options = options
        self.unet = pipe.unet  # replaced by a compiled UNet when `compile` is on
        self.vae = pipe.vae
        self.scheduler_config = dict(pipe.scheduler.config)
        self.unet_calls = 0  # UNet forward passes so far (a batch with CFG counts once)
        self.loras: "LoraRows | None" = None  # set by load_backend when the timeline has LoRAs
        self.controlnets: "dict[str, ControlUnit] | None" = None  # set by load_backend: name → ControlNet

    # --- shapes --------------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        f = self.vae_scale_factor
        return (self.latent_channels, height // f, width // f)

    # --- the family's own parts ----------------------------------------------------------------

    def encode(self, expr: PromptExpr, negative: bool = False) -> Cond:
        """Conditioning of one prompt expression, each tensor (1, ...) in float32."""
        raise NotImplementedError

    def unet_kwargs(self, cond: Cond, width: int, height: int) -> dict:
        """Keyword arguments of the UNet call for a batch of conditioning rows."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[FrameInputs]) -> None:
        """Per-row quantities the model itself applies (LoRA weights), for the next batch's UNet calls."""
        if self.loras is not None:
            self.loras.set_rows({
                lora.name: [row.param(LORA_PARAM + lora.name, lora.weight) for row in rows] for lora in self.loras.loras
            })

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, width: int, height: int) -> torch.Tensor:
        """The denoiser's output (noise, or v for v-prediction models) for a batch, in float32."""
        self.unet_calls += 1
        text, controls = split_cond(cond)
        batch = {name: tensor.to(self.device, self.dtype) for name, tensor in text.items()}
        kwargs = self.unet_kwargs(batch, width, height)
        if controls and self.controlnets:
            # The fraction of the noise schedule behind this step (see control.py).
            progress = 1.0 - float(t) / self.scheduler_config.get("num_train_timesteps", 1000)
            down, mid = residuals(self.controlnets, controls, x.to(self.dtype), t, kwargs, progress)
            if down is not None:
                kwargs = kwargs | {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = self.unet(x.to(self.dtype), t, **kwargs)
        return out.sample.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) → frames (B, H, W, 3) uint8 in one batched VAE call."""
        vae_dtype = next(self.vae.parameters()).dtype  # float32 when the VAE is upcast
        scaled = latents.to(self.device, vae_dtype) / self.vae.config.scaling_factor
        images = self.vae.decode(scaled).sample.float()  # (B, 3, H, W) in [-1, 1]
        images = ((images / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 → scaled latents (B, C, h, w): the posterior mean, so no generator is needed."""
        vae_dtype = next(self.vae.parameters()).dtype
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W)
        posterior = self.vae.encode(pixels.to(self.device, vae_dtype)).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor
