"""CLIP-tokenizer-compatible files (vocab.json, merges.txt) for a small word vocabulary.

`transformers.CLIPTokenizer` reads them with no custom code. Every single character, plain
and word-final ("a</w>"), is in the vocabulary, so a word outside it splits into known
pieces instead of failing; each vocabulary word gets a chain of merges that rebuilds it.
"""

import json
import string
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Characters any prompt may contain; everything else is dropped by CLIP's own text cleaning
# or maps to the unknown token (EOS).
ALPHABET = string.ascii_lowercase + string.digits + ".,!?'-:;()&/"


def word_pieces(word: str) -> list[str]:
    """The symbols CLIP's BPE starts from: characters, the last one marked word-final."""
    return list(word[:-1]) + [word[-1] + "</w>"]


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Token→id map and ordered merge rules that make each word (mostly) one token."""
    tokens: list[str] = []
    for c in ALPHABET:
        tokens += [c, c + "</w>"]
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    # Longer words' merges rank first, so a short word ("in") cannot split a longer one
    # that contains it ("rain") before the longer chain gets its turn.
    for word in sorted(set(w.lower() for w in words), key=lambda w: (-len(w), w)):
        pieces = word_pieces(word)
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in seen_merges:
                seen_merges.add((left, right))
                merges.append((left, right))
            left = left + right
            tokens.append(left)
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def write_clip_tokenizer(words: list[str], folder: str | Path, max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs that CLIPTokenizer loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0, sort_keys=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "errors": "replace",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder
