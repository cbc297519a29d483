"""Model families behind one seam. The family is read from the model, never spelled by the user:
a diffusers folder's `model_index.json` names its pipeline class, and a single checkpoint file's
tensor names tell SD 1.x, SD 2.x and SDXL apart.
"""

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from latentwalk.backends.adapters import LoraRows, diffusers_quiet, load_embeddings
from latentwalk.backends.base import Backend, Cond, ModelOptions
from latentwalk.backends.sd import SDBackend
from latentwalk.backends.sdxl import SDXLBackend
from latentwalk.device import pick_device, pick_dtype, resolve_model
from latentwalk.errors import UserError
from latentwalk.modelspec import ModelSpec, is_checkpoint

__all__ = ["Backend", "Cond", "ModelOptions", "ModelSpec", "load_backend", "model_family", "FAMILIES"]

# Pipeline classes (model_index.json `_class_name`) each backend drives. Few-step models are
# ordinary members: SD-Turbo and LCM folders are SD, SDXL-Turbo and Lightning are SDXL.
FAMILIES: dict[str, type[Backend]] = {
    "StableDiffusionPipeline": SDBackend,
    "StableDiffusionImg2ImgPipeline": SDBackend,
    "LatentConsistencyModelPipeline": SDBackend,
    "StableDiffusionXLPipeline": SDXLBackend,
    "StableDiffusionXLImg2ImgPipeline": SDXLBackend,
}
HUB_TIMEOUT_S = 3  # an offline machine should hear "unreachable" in seconds, not minutes
# Tensor-name prefixes of the original (CompVis/Stability) single-file layouts.
CHECKPOINT_MARKERS = (
    ("conditioner.embedders.1.model.", SDXLBackend),  # SDXL: OpenCLIP ViT-bigG as the second encoder
    ("cond_stage_model.model.", SDBackend),  # SD 2.x: OpenCLIP ViT-H
    ("cond_stage_model.transformer.", SDBackend),  # SD 1.x: CLIP ViT-L
)


def supported() -> str:
    return "SD 1.x/2.x (" + ", ".join(k for k, v in FAMILIES.items() if v is SDBackend) + "), SDXL (" + ", ".join(
        k for k, v in FAMILIES.items() if v is SDXLBackend
    ) + ")"


def model_family(spec: ModelSpec) -> type[Backend]:
    """The backend for a model, from its own files; a clear UserError for anything unsupported."""
    source = resolve_model(spec.model)
    if is_checkpoint(source):
        family = checkpoint_family(Path(source))
        if spec.model_config is not None:  # its configs must describe a model of the checkpoint's own family
            configs = folder_family(Path(spec.model_config) / "model_index.json", "model_config", spec.model_config)
            if configs is not family:
                raise UserError(
                    f"model_config: {spec.model_config!r} is an {family_name(configs)} model, but the checkpoint {spec.model!r} is "
                    f"an {family_name(family)} one; set model_config: to a diffusers folder of the checkpoint's own family"
                )
        return family
    index = Path(source) / "model_index.json"
    if not index.is_file():
        index = Path(hub_file(source, "model_index.json"))
    return folder_family(index, "model", spec.model)


def folder_family(index: Path, field: str, name: str) -> type[Backend]:
    """The backend of a diffusers folder from its model_index.json; errors name `field`."""
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{field}: cannot read {index}: {e}") from None
    class_name = data.get("_class_name") if isinstance(data, dict) else None
    if not isinstance(class_name, str):
        raise UserError(f"{field}: {str(index)!r} names no pipeline class (no \"_class_name\" text in it): not a diffusers model folder")
    if class_name not in FAMILIES:
        raise UserError(f"{field}: {name!r} is a {class_name}, which latentwalk does not drive; supported: {supported()}")
    return FAMILIES[class_name]


def family_name(family: type[Backend]) -> str:
    """The family as people say it: "SDXL" or "SD 1.x/2.x"."""
    return "SDXL" if family is SDXLBackend else "SD 1.x/2.x"


def checkpoint_family(path: Path) -> type[Backend]:
    names = checkpoint_names(path)
    for prefix, family in CHECKPOINT_MARKERS:
        if any(name.startswith(prefix) for name in names):
            return family
    raise UserError(f"model: {str(path)!r} is not an SD 1.x, SD 2.x or SDXL checkpoint (no text-encoder tensors found); supported: {supported()}")


def checkpoint_names(path: Path) -> list[str]:
    """Tensor names of a .safetensors (header only) or .ckpt file."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many types
        raise UserError(f"model: cannot read checkpoint {str(path)!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return list(state)


def hub_file(repo: str, name: str) -> str:
    """A file of a hub model, from the local cache or the hub; one line when neither can be had."""
    try:
        from huggingface_hub import constants, hf_hub_download

        try:
            return hf_hub_download(repo, name, local_files_only=True)
        except Exception:
            pass  # not cached: ask the hub, if it answers at all
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
        with socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S):
            pass
        return hf_hub_download(repo, name, etag_timeout=HUB_TIMEOUT_S)
    except Exception as e:  # offline, unknown repo, gated: all the same to the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model: {repo!r} is not a local folder and could not be fetched from the model hub ({type(e).__name__}: {reason[:200]})") from None


def load_backend(spec: ModelSpec, device: str = "auto", dtype: str = "auto", options: ModelOptions = ModelOptions()) -> Backend:
    """Load a model as its family's backend, on `device` in `dtype`, with the options applied."""
    import diffusers
    import transformers

    # 1. Check what can be checked before reading gigabytes: family, device, dtype, options.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars would bury our own
    diffusers.logging.set_verbosity_error()
    diffusers.logging.disable_progress_bar()
    family = model_family(spec)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    if options.cpu_offload and torch_device.type != "cuda":
        raise UserError(f"cpu_offload: needs a CUDA device, but the render runs on {torch_device.type!r}")
    source = resolve_model(spec.model)
    pipeline = getattr(diffusers, family.pipeline_class)
    extra = {}
    if spec.vae is not None:
        extra["vae"] = load_vae(spec.vae)

    # 2. Load the pipeline: a folder or hub id, or one checkpoint file with configs from a folder.
    if is_checkpoint(source):
        pipe = load_checkpoint(pipeline, source, spec, extra)
    else:
        try:
            pipe = pipeline.from_pretrained(source, **extra, **({"safety_checker": None, "requires_safety_checker": False} if family is SDBackend else {}))
        except (OSError, ValueError, EnvironmentError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"model: could not load {spec.model!r} ({source}): {first_line}") from None
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).eval().requires_grad_(False)
    if spec.vae is not None and pipe.vae.config.latent_channels != pipe.unet.config.in_channels:
        raise UserError(
            f"vae: the VAE in {spec.vae!r} makes latents of {pipe.vae.config.latent_channels} channels, but this model's UNet "
            f"takes {pipe.unet.config.in_channels} (a VAE of another model family?)"
        )

    # 3. Adapters: textual-inversion tokens before the backend's tokenizers are wrapped, LoRAs
    # before the weights move, so their layers follow the model to its device and dtype.
    load_embeddings(pipe, spec.embeddings)
    loras = LoraRows(pipe, spec.loras) if spec.loras else None

    # 4. Place it on the device with the options applied.
    backend = family(pipe, source, torch_device, torch_dtype, options)
    backend.loras = loras
    if spec.controlnets:  # beside the UNet, on its device and dtype; family checked against its config
        from latentwalk.control import load_controlnets

        backend.controlnets = load_controlnets(spec.controlnets, dict(pipe.unet.config), torch_device, torch_dtype)
    backend.unet = apply_options(pipe, torch_device, torch_dtype, options)
    return backend


def load_vae(folder: str):
    """A `vae:` folder as an AutoencoderKL; anything else there is a UserError naming `vae`."""
    import diffusers

    config = Path(folder) / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"vae: cannot read {str(config)!r}: {e}") from None
    found, expected = (data.get("_class_name") if isinstance(data, dict) else None), diffusers.AutoencoderKL.__name__
    if not isinstance(data, dict) or found not in (None, expected):  # a UNet's folder fails deep in diffusers otherwise
        what = f"a {found}" if isinstance(found, str) else "no diffusers model"
        raise UserError(f"vae: {folder!r} is not a VAE: its config.json describes {what}, not an {expected}")
    try:
        with diffusers_quiet():  # its own "error occurred" line would precede ours
            return diffusers.AutoencoderKL.from_pretrained(folder)
    except Exception as e:  # missing or foreign weights, a config of the wrong shape: many types
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"vae: cannot load the VAE in {folder!r}: {reason}") from None


def load_checkpoint(pipeline, source: str, spec: ModelSpec, extra: dict):
    """A single-file checkpoint through diffusers' loader, its configs from `model_config` (a folder).

    Without model_config diffusers fetches the configs of its reference model for the family
    from the model hub (even with local_files_only); offline that fails, and the message says
    what to set.
    """
    try:
        return pipeline.from_single_file(source, config=spec.model_config, local_files_only=True, **extra)
    except Exception as e:  # diffusers raises many types for a foreign or mismatched checkpoint
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if spec.model_config is None:
            raise UserError(
                f"model_config: needed for the checkpoint {spec.model!r}: its layer sizes, scheduler and tokenizer "
                f"come from a diffusers folder of the same family, and none could be fetched from the model hub "
                f"({reason}); set model_config: to a local diffusers folder (e.g. an SD 1.5 or SDXL download)"
            ) from None
        reason = reason.split(". If you want")[0]  # diffusers' advice on overwriting weights is not the user's
        raise UserError(
            f"model_config: the configs of {spec.model_config!r} do not fit the checkpoint {spec.model!r} "
            f"(its layers have other sizes: a model of another version?): {reason}"
        ) from None


def apply_options(pipe, device: torch.device, dtype: torch.dtype, options: ModelOptions) -> torch.nn.Module:
    """Place the pipeline on its device with the options applied; returns the UNet to call."""
    if options.cpu_offload:
        # Weights stay on the CPU; a hook moves each component to the GPU when it is called.
        pipe.to(dtype=dtype)
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device, dtype)
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        # SDXL's VAE overflows in float16 (black frames); diffusers decodes it in float32 too.
        pipe.vae.to(dtype=torch.float32)
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
