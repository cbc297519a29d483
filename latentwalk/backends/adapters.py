"""LoRA and textual-inversion files on a loaded pipeline, with a LoRA weight per batch row.

Files load through diffusers (`load_lora_weights`, `load_textual_inversion`), so every layout
diffusers reads (its own, kohya's, A1111's) works. peft's LoRA layers add
`lora_B(lora_A(x)) * scaling[adapter]` to the frozen layer's output; a forward pre-hook on each
UNet LoRA layer sets that scaling to a (rows, 1, ..., 1) tensor, so each row of a UNet call
gets its own frame's weight. Rows never mix, so a frame's pixels do not depend on its
batch-mates, and weight 0 adds exactly zero: the base model's pixels.

Text-encoder LoRA layers run at the LoRA's top-level weight: prompts are encoded once per render
and then interpolated, so a travelling weight would need one encoding per frame.
"""

from pathlib import Path
from typing import Sequence

import torch

from latentwalk.errors import UserError
from latentwalk.modelspec import EmbeddingSpec, LoraSpec

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
SDXL_EMBEDDING_KEYS = ("clip_l", "clip_g")  # an SDXL textual-inversion file: one tensor per encoder


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def lora_layers(module: torch.nn.Module, adapter: str) -> list[torch.nn.Module]:
    """The peft LoRA layers inside `module` that carry `adapter`."""
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]


class LoraRows:
    """The LoRAs of a pipeline, with per-row UNet weights set before each batch (`set_rows`)."""

    def __init__(self, pipe, loras: Sequence[LoraSpec]):
        # 1. Load every file as a named adapter; one that matches no layer is a user error.
        self.loras = tuple(loras)
        self.rows: dict[str, torch.Tensor] | None = None  # name → (B,) weights of the next UNet calls
        self.cache: dict[tuple, torch.Tensor] = {}
        for i, lora in enumerate(self.loras):
            try:
                pipe.load_lora_weights(lora.path, adapter_name=lora.name)
            except Exception as e:  # diffusers and peft raise many types for a foreign file
                raise UserError(f"loras[{i}]: cannot load {lora.path!r} into this {type(pipe).__name__}: {first_line(e)}") from None
            if not any(lora_layers(getattr(pipe, part), lora.name) for part in ("unet", *TEXT_ENCODERS) if getattr(pipe, part, None) is not None):
                raise UserError(f"loras[{i}]: {lora.path!r} matches no layer of this {type(pipe).__name__} (a LoRA for another model family?)")
        pipe.set_adapters([lora.name for lora in self.loras])  # all active, each at scale 1
        # 2. Text encoders: fixed at the top-level weight. UNet: per row, through a pre-hook.
        self.base: dict[torch.nn.Module, dict[str, float]] = {}  # layer → adapter → scaling at weight 1
        encoders = [getattr(pipe, part) for part in TEXT_ENCODERS if getattr(pipe, part, None) is not None]
        for lora in self.loras:
            for layer in (layer for encoder in encoders for layer in lora_layers(encoder, lora.name)):
                layer.scaling[lora.name] = layer.scaling[lora.name] * lora.weight
            for layer in lora_layers(pipe.unet, lora.name):
                self.base.setdefault(layer, {})[lora.name] = layer.scaling[lora.name]
        self.hooks = [layer.register_forward_pre_hook(self.scale_rows) for layer in self.base]

    def set_rows(self, weights: dict[str, Sequence[float]]) -> None:
        """Each LoRA's weight for each row of the coming UNet calls: name → (B,) weights."""
        self.rows = {name: torch.tensor(list(w), dtype=torch.float64) for name, w in weights.items()}
        self.cache.clear()

    def weights(self, lora: LoraSpec) -> torch.Tensor:
        return self.rows[lora.name] if self.rows is not None and lora.name in self.rows else torch.tensor([lora.weight], dtype=torch.float64)

    def scale_rows(self, layer: torch.nn.Module, args: tuple) -> None:
        """Forward pre-hook: scaling = base × each row's weight, shaped to broadcast over x (N, ...)."""
        x = args[0]
        for lora in self.loras:
            if lora.name in self.base[layer]:
                layer.scaling[lora.name] = self.row_scaling(lora, self.base[layer][lora.name], x)

    def row_scaling(self, lora: LoraSpec, base: float, x: torch.Tensor) -> torch.Tensor:
        key = (lora.name, base, x.shape[0], x.ndim, x.dtype, x.device)
        if key not in self.cache:
            weights = self.weights(lora)
            rows = len(weights)
            if x.shape[0] % rows:
                raise RuntimeError(f"LoRA rows: a UNet layer got {x.shape[0]} rows for {rows} frames")
            # With classifier-free guidance a call carries [uncond rows; cond rows]: the same
            # frames twice, in order, so the weights repeat.
            scale = (weights * base).repeat(x.shape[0] // rows)
            self.cache[key] = scale.view(-1, *[1] * (x.ndim - 1)).to(x.device, x.dtype)
        return self.cache[key]


def load_embeddings(pipe, embeddings: Sequence[EmbeddingSpec]) -> None:
    """Add each textual-inversion token to the tokenizer(s); SDXL files carry one tensor per encoder."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    for i, embedding in enumerate(embeddings):
        try:
            if sdxl:
                state = sdxl_embedding(embedding, i)
                pipe.load_textual_inversion(state["clip_l"], token=embedding.token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
                pipe.load_textual_inversion(state["clip_g"], token=embedding.token, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
            else:
                pipe.load_textual_inversion(embedding.path, token=embedding.token)
        except UserError:
            raise
        except Exception as e:  # wrong width, a token already in the vocabulary, a foreign file
            raise UserError(f"embeddings[{i}]: cannot load {embedding.path!r} as {embedding.token!r}: {first_line(e)}") from None


def sdxl_embedding(embedding: EmbeddingSpec, index: int) -> dict[str, torch.Tensor]:
    """The clip_l and clip_g vectors of an SDXL embedding file."""
    if Path(embedding.path).suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(embedding.path)
    else:
        state = torch.load(embedding.path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or any(key not in state for key in SDXL_EMBEDDING_KEYS):
        found = ", ".join(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise UserError(
            f"embeddings[{index}]: {embedding.path!r} is not an SDXL embedding: an SDXL model needs "
            f"one vector per text encoder (tensors clip_l and clip_g), found: {found}"
        )
    return state
