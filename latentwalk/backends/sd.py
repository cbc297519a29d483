"""Stable Diffusion 1.x and 2.x: one CLIP tokenizer and text encoder, cross-attention only.

2.x v-prediction models need nothing here: the scheduler reads `prediction_type` from the
model's own scheduler config.
"""

import torch

from latentwalk.backends.base import Backend, Cond
from latentwalk.conditioning import TextConditioner
from latentwalk.prompts import PromptExpr


class SDBackend(Backend):
    family = "sd"
    pipeline_class = "StableDiffusionPipeline"

    def __init__(self, pipe, *args, **kwargs):
        super().__init__(pipe, *args, **kwargs)
        self.conditioner = TextConditioner(pipe.tokenizer, pipe.text_encoder, convert=pipe.maybe_convert_prompt)

    def encode(self, expr: PromptExpr, negative: bool = False) -> Cond:
        return {"embeds": self.conditioner.encode(expr).float()}  # (1, L, D)

    def unet_kwargs(self, cond: Cond, width: int, height: int) -> dict:
        return {"encoder_hidden_states": cond["embeds"]}

    @property
    def encode_count(self) -> int:
        return self.conditioner.encode_count


def empty_like(cond: Cond) -> Cond:
    return {name: torch.zeros_like(tensor) for name, tensor in cond.items()}
