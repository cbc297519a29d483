"""Memory a render needs beyond the model's weights, estimated before the model loads.

A lower bound from the buffers whose size follows width × height × batch_size (the weights
are the backend's to count): refusing on it never turns away a render that would have fit,
and it catches `width: 4096, batch_size: 256` before gigabytes are allocated.
"""

import os
from dataclasses import dataclass

from latentwalk.errors import UserError

LATENT_CHANNELS = 4  # SD-family VAEs downsample by 8 into 4 channels
VAE_FACTOR = 8
# The VAE decoder's last up block runs 128 channels at full resolution (SD 1.x/2.x/XL): two such
# activations are alive at once while it decodes, in the model's dtype.
DECODER_CHANNELS = 128
DECODER_LIVE = 2
# Latents per batch row alive in the denoising loop: the latents, the doubled input for
# classifier-free guidance, the two noise predictions, the scheduler's state.
LATENT_COPIES = 6
FRAME_QUEUE = 3  # decoded batches waiting for the writer (render.OVERLAP_DEPTH + the one in hand)
HEADROOM = 0.9  # use at most this fraction of what the system reports available


@dataclass(frozen=True)
class MemoryEstimate:
    latents: int  # bytes
    decode: int
    frames: int

    @property
    def total(self) -> int:
        return self.latents + self.decode + self.frames


def estimate(width: int, height: int, batch_size: int, dtype_bytes: int = 4, vae_tiling: bool = False) -> MemoryEstimate:
    """Bytes of latents, VAE decode activations and frame buffers for one batch in flight."""
    pixels = width * height
    latents = batch_size * LATENT_COPIES * LATENT_CHANNELS * (pixels // VAE_FACTOR**2) * 4  # float32 noise and latents
    # Tiled decoding works on 512x512 tiles (diffusers' default tile size), one row at a time.
    decoded_pixels = min(pixels, 512 * 512) if vae_tiling else pixels
    decode = batch_size * DECODER_LIVE * DECODER_CHANNELS * decoded_pixels * dtype_bytes
    frames = FRAME_QUEUE * batch_size * pixels * 3 * (4 + 1)  # float32 images and their uint8 copies
    return MemoryEstimate(latents, decode, frames)


def largest_batch(width: int, height: int, available: int, dtype_bytes: int = 4, vae_tiling: bool = False) -> int:
    """The biggest batch_size whose estimate fits in `available` bytes (0 if not even one frame)."""
    per_frame = estimate(width, height, 1, dtype_bytes, vae_tiling).total
    return int(available * HEADROOM // per_frame)


def check_fits(
    width: int, height: int, batch_size: int, available: int | None, where: str, dtype_bytes: int = 4, vae_tiling: bool = False
) -> None:
    """UserError naming what would fit when one batch needs more than `available` bytes (None: unknown)."""
    if available is None:
        return
    need = estimate(width, height, batch_size, dtype_bytes, vae_tiling).total
    if need <= available * HEADROOM:
        return
    fits = largest_batch(width, height, available, dtype_bytes, vae_tiling)
    advice = f"batch_size: {fits} fits" if fits >= 1 else "not even batch_size: 1 fits; use a smaller width and height"
    if not vae_tiling and fits < batch_size:
        advice += " (vae_tiling: true lowers the decoder's share)"
    raise UserError(
        f"{where}: {width}x{height} frames in batches of {batch_size} need at least {need / 2**30:.1f} GiB "
        f"besides the model, but {available / 2**30:.1f} GiB is available; {advice}"
    )


def available_memory(device_type: str) -> int | None:
    """Free bytes on the device a render runs on: the GPU's free memory, or MemAvailable on the host."""
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    if device_type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None  # mps shares system memory in ways the OS does not report simply


def check_render_memory(timeline, batch_size: int, device_type: str, dtype: str) -> None:
    """check_fits for a timeline's frame size on the device it renders on (dtype as 'torch.float16')."""
    settings = timeline.settings
    dtype_bytes = 2 if dtype.endswith(("float16", "bfloat16")) else 4
    where = timeline.at("batch_size") if ("batch_size",) in timeline.lines else timeline.at("width")
    check_fits(settings.width, settings.height, batch_size, available_memory(device_type), where, dtype_bytes, settings.vae_tiling)
