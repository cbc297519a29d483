"""Text conditioning for prompt expressions: CLIP encodings of sentences, combined by weight.

Where each operation happens:
- `+ - * /` and `mix`: on the text encoder's *output*. `encode` is the weighted sum of each
  sentence's last_hidden_state; every sentence is padded (and truncated) to the tokenizer's
  model_max_length L, so all encodings are (1, L, D) and their positions line up.
- `{a|b:w}` token edits: on the encoder's *input*. The slot's token embeddings are the weighted
  blend of the alternatives' embeddings; the rest of the sentence goes in unchanged.

Token-edit alignment: a slot is as wide as its longest alternative, in tokens, and a shorter
alternative is padded by repeating its last token. The slot width, and so every later position,
then does not depend on the weights: sweeping a weight from 0 to 1 never shifts the sentence. The
price: `{cat|big dog:0}` reads "cat cat" in that slot, not "cat"; for alternatives of equal
length the endpoints equal the plain sentences exactly. Text around an edit is tokenized on its
own, so an edit replaces whole words ("snow{man|ball:0.5}" reads "snow man" / "snow ball").

The blend goes in through a forward hook on the token embedding because CLIPTextModel.forward
(transformers 5) takes input_ids only, and its pooled output finds the EOS position in them.
The ids passed along are real ones (the first alternative's), so EOS stays where it belongs.
"""

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from latentwalk.errors import UserError
from latentwalk.prompts import PromptExpr, Sentence, parse_prompt

if TYPE_CHECKING:  # transformers loads with the pipeline; type hints alone should not load it
    from transformers import PreTrainedTokenizerBase

# Sentences kept encoded. A (1, 77, 768) float32 encoding is ~240 KB, so this bounds the cache
# near 250 MB for SD 1.x while still covering every distinct sentence of a typical timeline.
DEFAULT_MAX_CACHED = 1024


@dataclass(frozen=True)
class SentenceTokens:
    """Encoder input for one sentence: padded ids, and each blended position's (id, weight) mix."""

    input_ids: tuple[int, ...]  # (L,): BOS, tokens, EOS, padding
    blends: tuple[tuple[int, tuple[tuple[int, float], ...]], ...]  # (position, ((id, weight), ...))


# Rewrites text before tokenizing: textual-inversion tokens with several vectors become
# "<tok> <tok>_1 ..." (diffusers' maybe_convert_prompt); the identity otherwise.
Convert = Callable[[str, "PreTrainedTokenizerBase"], str]


def _no_convert(text: str, tokenizer: "PreTrainedTokenizerBase") -> str:
    return text


def sentence_tokens(sentence: Sentence, tokenizer: "PreTrainedTokenizerBase", convert: Convert = _no_convert) -> SentenceTokens:
    """CLIP layout [BOS, tokens, EOS, pad...], model_max_length long, truncated as usual."""
    length = tokenizer.model_max_length
    ids: list[int] = []
    blends: list[tuple[int, tuple[tuple[int, float], ...]]] = []
    for part in sentence.parts:
        if isinstance(part, str):
            ids += _word_ids(tokenizer, convert(part, tokenizer))
            continue
        alternatives = [(_word_ids(tokenizer, convert(text, tokenizer)), weight) for text, weight in part.alternatives]
        for (alt_ids, _), (text, _) in zip(alternatives, part.alternatives):
            if not alt_ids:
                raise UserError(f"token edit {part.text}: alternative {text!r} has no tokens")
        width = max(len(alt_ids) for alt_ids, _ in alternatives)
        for k in range(width):
            mix = tuple((alt_ids[min(k, len(alt_ids) - 1)], w) for alt_ids, w in alternatives)
            blends.append((1 + len(ids), mix))  # 1 +: BOS comes first
            ids.append(mix[0][0])
    content = ids[: length - 2]  # room for BOS and EOS, as tokenizer truncation leaves it
    padded = [tokenizer.bos_token_id, *content, tokenizer.eos_token_id]
    padded += [tokenizer.pad_token_id] * (length - len(padded))
    kept = tuple((position, mix) for position, mix in blends if position <= len(content))
    return SentenceTokens(tuple(padded), kept)


def _word_ids(tokenizer: "PreTrainedTokenizerBase", text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def _blend_slots(
    module: nn.Embedding,
    args: tuple,
    output: torch.Tensor,
    blends: tuple[tuple[int, tuple[tuple[int, float], ...]], ...],
) -> torch.Tensor:
    """Forward hook: token embeddings (1, L, D) with each blended position set to its mix."""
    output = output.clone()
    for position, mix in blends:
        ids = torch.tensor([token for token, _ in mix], device=output.device)
        weights = torch.tensor([w for _, w in mix], dtype=torch.float32, device=output.device)
        rows = module.weight[ids].float()  # (alternatives, D)
        output[0, position] = (weights[:, None] * rows).sum(0).to(output.dtype)
    return output


class TextConditioner:
    """Encodes prompt expressions with one CLIP tokenizer and text encoder.

    `layer`: None for the last hidden state (SD 1.x/2.x), or a hidden-states index (SDXL: -2).
    """

    def __init__(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        text_encoder: nn.Module,
        max_cached: int = DEFAULT_MAX_CACHED,
        layer: int | None = None,
        convert: Convert = _no_convert,
    ):
        length = tokenizer.model_max_length
        positions = text_encoder.config.max_position_embeddings
        if length > positions:
            raise ValueError(
                f"tokenizer.model_max_length={length} exceeds the text encoder's "
                f"max_position_embeddings={positions}; load a tokenizer that matches the encoder"
            )
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_cached = max_cached
        self.layer = layer
        self.convert = convert
        self.encode_count = 0  # text-encoder passes so far: one per distinct (cached) sentence
        self._cache: OrderedDict[Sentence, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def encode(self, expr: PromptExpr) -> torch.Tensor:
        """Conditioning (1, L, D): the weighted sum of each term's last_hidden_state."""
        return self._combine(expr, 0)

    def encode_pooled(self, expr: PromptExpr) -> torch.Tensor:
        """Pooled embedding (1, D'), combined with the same weights as `encode`."""
        return self._combine(expr, 1)

    def encode_text(self, source: str, field: str | None = None) -> torch.Tensor:
        """Parse a prompt field (see latentwalk.prompts), then `encode` it."""
        return self.encode(parse_prompt(source, field))

    def _combine(self, expr: PromptExpr, which: int) -> torch.Tensor:
        """Weighted sum of cached encodings, in float32 and cast back, always a new tensor."""
        if not expr.terms:
            return torch.zeros_like(self._encoded(Sentence(()))[which])
        total: torch.Tensor | None = None
        for sentence, weight in expr.terms:
            encoded = self._encoded(sentence)[which]
            # A new tensor even for weight 1, so callers cannot write into the cache.
            term = weight * encoded.float()
            total = term if total is None else total + term
        return total.to(encoded.dtype)

    def _encoded(self, sentence: Sentence) -> tuple[torch.Tensor, torch.Tensor]:
        """(last_hidden_state, pooled) of one sentence, from the cache or one encoder pass."""
        if sentence in self._cache:
            self._cache.move_to_end(sentence)
            return self._cache[sentence]
        encoded = self._run(sentence_tokens(sentence, self.tokenizer, self.convert))
        self.encode_count += 1
        self._cache[sentence] = encoded
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return encoded

    @torch.no_grad()
    def _run(self, tokens: SentenceTokens) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.text_encoder.get_input_embeddings()
        input_ids = torch.tensor([tokens.input_ids], device=embedding.weight.device)  # (1, L)
        hook = embedding.register_forward_hook(partial(_blend_slots, blends=tokens.blends))
        try:
            out = self.text_encoder(input_ids=input_ids, output_hidden_states=self.layer is not None)
        finally:
            hook.remove()
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        # CLIPTextModelWithProjection (SDXL's second encoder) pools into text_embeds.
        pooled = getattr(out, "text_embeds", None)
        return hidden, out.pooler_output if pooled is None else pooled
