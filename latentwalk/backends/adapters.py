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

from contextlib import contextmanager
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


def reason(error: BaseException) -> str:
    """An error from deep inside diffusers or peft, in words: Python's own errors (a KeyError's bare
    key, "list index out of range") say the layout was not understood, and which error it was."""
    if isinstance(error, (KeyError, IndexError, TypeError, AttributeError)):
        return f"its layout is not one diffusers reads ({type(error).__name__}: {first_line(error)})"
    return first_line(error)


def model_kind(pipe) -> str:
    """"this SDXL model (StableDiffusionXLPipeline)", for messages."""
    family = "SDXL" if getattr(pipe, "text_encoder_2", None) is not None else "SD 1.x/2.x"
    return f"this {family} model ({type(pipe).__name__})"


@contextmanager
def diffusers_quiet():
    """diffusers logs a failed LoRA load as an error, the whole state-dict mismatch; our message says it once."""
    import diffusers

    level = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity(diffusers.logging.CRITICAL)
    try:
        yield
    finally:
        diffusers.logging.set_verbosity(level)


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
                with diffusers_quiet():
                    pipe.load_lora_weights(lora.path, adapter_name=lora.name)
            except Exception as e:  # diffusers and peft raise many types for a foreign file
                if "size mismatch" in str(e):
                    raise UserError(
                        f"loras[{i}].path: {lora.path!r} does not fit {model_kind(pipe)}: its layers have other sizes "
                        "than the model's (a LoRA made for another model family?)"
                    ) from None
                raise UserError(f"loras[{i}].path: cannot load {lora.path!r} into {model_kind(pipe)}: {reason(e)}") from None
            if not any(lora_layers(getattr(pipe, part), lora.name) for part in ("unet", *TEXT_ENCODERS) if getattr(pipe, part, None) is not None):
                raise UserError(f"loras[{i}].path: {lora.path!r} matches no layer of {model_kind(pipe)} (a LoRA for another model family?)")
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
        check_embedding(pipe, embedding, i, sdxl)  # the token and the vectors' width, in words, before diffusers
        try:
            if sdxl:
                state = sdxl_embedding(embedding, i)
                pipe.load_textual_inversion(state["clip_l"], token=embedding.token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
                pipe.load_textual_inversion(state["clip_g"], token=embedding.token, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
            else:
                pipe.load_textual_inversion(embedding.path, token=embedding.token)
        except UserError:
            raise
        except Exception as e:  # what check_embedding cannot foresee: a foreign file diffusers rejects
            raise UserError(f"embeddings[{i}]: cannot load {embedding.path!r} as {embedding.token!r}: {reason(e)}") from None


def read_embedding(embedding: EmbeddingSpec, index: int):
    """The contents of a textual-inversion file, read as diffusers reads it (tensors only, no code)."""
    try:
        if Path(embedding.path).suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(embedding.path)
        return torch.load(embedding.path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file, a pickle of something else: many types
        raise UserError(f"embeddings[{index}].path: cannot read {embedding.path!r} as a textual-inversion file: {first_line(e)}") from None


def sdxl_embedding(embedding: EmbeddingSpec, index: int) -> dict[str, torch.Tensor]:
    """The clip_l and clip_g vectors of an SDXL embedding file."""
    state = read_embedding(embedding, index)
    if not isinstance(state, dict) or any(key not in state for key in SDXL_EMBEDDING_KEYS):
        found = ", ".join(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise UserError(
            f"embeddings[{index}].path: {embedding.path!r} is not an SDXL embedding: an SDXL model needs "
            f"one vector per text encoder (tensors clip_l and clip_g), found: {found}"
        )
    return state


def embedding_vectors(embedding: EmbeddingSpec, index: int, sdxl: bool) -> dict[str, object]:
    """Text encoder attribute → the file's vectors for it, in the layouts diffusers reads:
    SDXL's clip_l and clip_g, a bare tensor, one named tensor (diffusers) or string_to_param (A1111)."""
    if sdxl:
        state = sdxl_embedding(embedding, index)
        return {"text_encoder": state["clip_l"], "text_encoder_2": state["clip_g"]}
    state = read_embedding(embedding, index)
    if isinstance(state, dict) and len(state) == 1:
        state = next(iter(state.values()))
    elif isinstance(state, dict) and isinstance(state.get("string_to_param"), dict) and "*" in state["string_to_param"]:
        state = state["string_to_param"]["*"]
    elif isinstance(state, dict):
        raise UserError(
            f"embeddings[{index}].path: {embedding.path!r} is not a textual-inversion embedding: expected one tensor "
            f"(diffusers' layout) or string_to_param (A1111's), found {len(state)} entries: {', '.join(map(str, list(state)[:4]))}"
        )
    return {"text_encoder": state}


def check_embedding(pipe, embedding: EmbeddingSpec, index: int, sdxl: bool) -> None:
    """The file holds vectors as wide as each text encoder's, and the token is no word the tokenizer knows."""
    for part, vectors in embedding_vectors(embedding, index, sdxl).items():
        encoder = "text encoder" if not sdxl else f"{'first' if part == 'text_encoder' else 'second'} text encoder"
        if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2) or vectors.numel() == 0:
            shape = f"a tensor of shape {tuple(vectors.shape)}" if isinstance(vectors, torch.Tensor) else type(vectors).__name__
            raise UserError(
                f"embeddings[{index}].path: {embedding.path!r} is not a textual-inversion embedding: it holds {shape} "
                f"for the {encoder}, where a (tokens, width) tensor of vectors was expected"
            )
        width = getattr(pipe, part).get_input_embeddings().weight.shape[-1]
        if vectors.shape[-1] != width:
            raise UserError(
                f"embeddings[{index}].path: {embedding.path!r} holds vectors {vectors.shape[-1]} wide, but the {encoder} of "
                f"{model_kind(pipe)} takes {width} (an embedding made for another model family?)"
            )
    for name in ("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",):
        tokenizer = getattr(pipe, name)
        pieces = tokenizer.tokenize(embedding.token)
        known = len(pieces) == 1 and tokenizer.convert_tokens_to_ids(pieces[0]) != tokenizer.unk_token_id
        if embedding.token in tokenizer.get_vocab() or known:
            raise UserError(
                f"embeddings[{index}].token: {embedding.token!r} is already a word of this model's tokenizer, so the "
                f"embedding would replace it in every prompt; choose a token that is no word, such as '<{embedding.token}>'"
            )
