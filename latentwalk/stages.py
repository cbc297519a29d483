"""Each stage's view of a timeline's (or sweep's) RenderSettings: the model's, the engine's.

Renders and sweeps read the same settings, so they derive these views here, in one place.
Torch-free at import: the views' classes load with the stage that uses them.
"""

from typing import TYPE_CHECKING

from latentwalk.modelspec import ModelSpec
from latentwalk.timeline import RenderSettings

if TYPE_CHECKING:
    from latentwalk.backends import ModelOptions
    from latentwalk.engine import EngineSettings


def model_spec(settings: RenderSettings) -> ModelSpec:
    return ModelSpec(settings.model, settings.model_config, settings.vae, settings.loras, settings.embeddings, settings.controlnets)


def model_options(settings: RenderSettings, device_type: str) -> "ModelOptions":
    """The model switches of the settings, `auto` resolved for the device that renders."""
    from latentwalk.backends import ModelOptions

    return ModelOptions(
        # auto: on where measured faster (CPU: VAE decode 1.45x, UNet 1.09x on the embedded model).
        channels_last=settings.channels_last if isinstance(settings.channels_last, bool) else device_type == "cpu",
        compile=settings.compile,
        attention_slicing=settings.attention_slicing,
        vae_tiling=settings.vae_tiling,
        cpu_offload=settings.cpu_offload,
    )


def input_images(settings: RenderSettings):
    """The video inits and control images the frames name (control.InputImages), or None."""
    from latentwalk.control import input_images as images

    return images(settings.width, settings.height, settings.video, settings.controlnets)


def engine_settings(settings: RenderSettings, batch_size: int | None = None) -> "EngineSettings":
    from latentwalk.engine import EngineSettings

    return EngineSettings(
        width=settings.width,
        height=settings.height,
        scheduler=settings.scheduler,
        timestep_spacing=settings.timestep_spacing,
        interpolation=settings.interpolation,
        batch_size=batch_size or settings.batch_size,
        images=input_images(settings),
    )
