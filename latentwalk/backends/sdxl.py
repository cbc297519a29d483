"""SDXL (Podell et al. 2023): two CLIP text encoders, pooled text embeddings and size conditioning.

As in diffusers' StableDiffusionXLPipeline: each encoder's penultimate hidden states are
concatenated along features ((1, 77, 768 + 1280) for SDXL 1.0), the pooled embedding comes
from the second encoder's projection, and `time_ids` condition on (original size, crop
top-left, target size) = (H, W, 0, 0, H, W). An empty negative prompt is all zeros when the
model asks for it (`force_zeros_for_empty_prompt`). The refiner is not needed.
"""

import torch

from latentwalk.backends.base import Backend, Cond
from latentwalk.conditioning import TextConditioner
from latentwalk.prompts import PromptExpr

PENULTIMATE = -2  # SDXL conditions on the second-to-last layer of both encoders


class SDXLBackend(Backend):
    family = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"

    def __init__(self, pipe, *args, **kwargs):
        super().__init__(pipe, *args, **kwargs)
        convert = pipe.maybe_convert_prompt
        self.conditioners = (
            TextConditioner(pipe.tokenizer, pipe.text_encoder, layer=PENULTIMATE, convert=convert),
            TextConditioner(pipe.tokenizer_2, pipe.text_encoder_2, layer=PENULTIMATE, convert=convert),
        )
        self.zero_empty_negative = bool(pipe.config.get("force_zeros_for_empty_prompt", True))

    def encode(self, expr: PromptExpr, negative: bool = False) -> Cond:
        first, second = self.conditioners
        embeds = torch.cat([first.encode(expr).float(), second.encode(expr).float()], dim=-1)  # (1, L, D1 + D2)
        pooled = second.encode_pooled(expr).float()  # (1, P)
        if negative and self.zero_empty_negative and not any(s.parts for s in expr.sentences):
            embeds, pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
        return {"embeds": embeds, "pooled": pooled}

    def unet_kwargs(self, cond: Cond, width: int, height: int) -> dict:
        rows = len(cond["embeds"])
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=cond["pooled"].dtype, device=cond["pooled"].device)
        return {
            "encoder_hidden_states": cond["embeds"],
            "added_cond_kwargs": {"text_embeds": cond["pooled"], "time_ids": time_ids.expand(rows, -1)},
        }

    @property
    def encode_count(self) -> int:
        return sum(c.encode_count for c in self.conditioners)
