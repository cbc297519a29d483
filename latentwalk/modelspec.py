"""What weights a render runs: the model, LoRA and embedding specs, their files' suffixes and fingerprints.

The timeline reads these specs, the backends load them and the frame key fingerprints them;
each table here is the only copy. Torch-free: reading a spec never loads model code.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from latentwalk.params import lora_param

# Single-file checkpoints the backends load (diffusers' from_single_file reads all four).
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")  # textual inversion: diffusers' and A1111's files
LORA_SUFFIXES = (".safetensors",)
# Model files at most this big are fingerprinted by content (configs, tokenizer files); bigger
# ones (weights) by size and mtime, which costs a stat instead of reading gigabytes.
CONTENT_HASH_LIMIT = 1 << 20
# Tensor-name prefixes of LoRA layers in the UNet, in diffusers', kohya's and original layouts.
UNET_LORA_PREFIXES = ("unet.", "lora_unet_", "model.diffusion_model.", "diffusion_model.")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file applied to the model (`loras:` at the top of a timeline or sweep)."""

    name: str  # how keyframes refer to it; the file's stem unless given
    path: str  # resolved against the timeline's folder
    # Weight of every keyframe that does not set its own, and the fixed weight of the LoRA's
    # text-encoder layers (prompts are encoded once per render, not once per weight).
    weight: float


@dataclass(frozen=True)
class EmbeddingSpec:
    """A textual-inversion file whose token can be used in prompts (`embeddings:`)."""

    path: str  # resolved against the timeline's folder
    token: str  # e.g. "<my-style>"; a file with several vectors expands to "<my-style> <my-style>_1 ..."


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides which weights a render runs."""

    model: str  # `toy`, a diffusers folder, a hub id or a checkpoint file
    model_config: str | None = None  # a local diffusers folder of the same family: configs for a checkpoint file
    vae: str | None = None  # a diffusers VAE folder replacing the model's (e.g. an fp16-safe SDXL VAE)
    loras: tuple[LoraSpec, ...] = ()  # applied in this order, weights per frame (see backends.adapters)
    embeddings: tuple[EmbeddingSpec, ...] = ()  # textual-inversion tokens added to the tokenizers
    controlnets: tuple = ()  # control.ControlSpec each, loaded beside the UNet (control.load_controlnets)


def is_checkpoint(source: str) -> bool:
    """A single-file checkpoint rather than a diffusers folder or a hub id."""
    return Path(source).suffix.lower() in CHECKPOINT_SUFFIXES and Path(source).is_file()


def safetensors_names(path: Path) -> list[str]:
    """Tensor names from a .safetensors header (8-byte little-endian length, then JSON); reads no tensors."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if size < 8 or not 2 <= length <= size - 8:
            raise ValueError(f"not a safetensors file (header length {length}, file size {size})")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (header is not a mapping)")
    return [name for name in header if name != "__metadata__"]


def file_fingerprint(source: str | Path) -> str:
    """sha256 over a model folder or file: small files by content, big ones by size and mtime."""
    root = Path(source)
    if not root.exists():
        return ""  # a hub id: the id itself is part of the identity
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update((str(path.relative_to(root)) if path != root else path.name).encode() + b"\0")
        if stat.st_size <= CONTENT_HASH_LIMIT:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def adapter_identity(loras: tuple[LoraSpec, ...], embeddings: tuple[EmbeddingSpec, ...]) -> tuple[tuple[str, str], ...]:
    """(name, fingerprint) of every LoRA and embedding, in the order applied.

    A LoRA's per-frame weight is a frame param; its top-level weight is part of the identity
    too unless the file holds UNet layers only, since text-encoder layers run at that weight.
    """
    identity = []
    for lora in loras:
        fingerprint = file_fingerprint(lora.path)
        if not all(name.startswith(UNET_LORA_PREFIXES) for name in safetensors_names(Path(lora.path))):
            fingerprint += f";text_encoder_weight={lora.weight!r}"
        identity.append((lora_param(lora.name), fingerprint))
    identity += [(f"embedding:{e.token}", file_fingerprint(e.path)) for e in embeddings]
    return tuple(identity)
