import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from latentwalk.conditioning import TextConditioner, sentence_tokens
from latentwalk.prompts import Sentence, parse_prompt
from latentwalk.toy.tokenizer import write_clip_tokenizer

WORDS = ["a", "photo", "of", "cat", "kitten", "big", "dog", "on", "the", "beach", "snowy", "night"]
MAX_LENGTH = 16  # short, so truncation is cheap to reach
LONG = " ".join(["snowy night"] * 20)  # more tokens than MAX_LENGTH


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = write_clip_tokenizer(WORDS, tmp_path_factory.mktemp("tokenizer"), MAX_LENGTH)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    config = CLIPTextConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return tokenizer, CLIPTextModel(config).eval()


@pytest.fixture
def conditioner(models):
    return TextConditioner(*models)


def pipeline_ids(tokenizer, text: str) -> list[int]:
    """Token ids as diffusers' Stable Diffusion pipeline prepares them."""
    return tokenizer(text, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids


def pooled(conditioner: TextConditioner, source: str) -> torch.Tensor:
    return conditioner.encode_pooled(parse_prompt(source))


def test_plain_prompt_matches_the_usual_pipeline_encoding(conditioner, models):
    tokenizer, text_encoder = models
    text = "a photo of a cat on the beach"
    with torch.no_grad():
        expected = text_encoder(torch.tensor([pipeline_ids(tokenizer, text)])).last_hidden_state
    got = conditioner.encode_text(text)
    assert got.shape == (1, MAX_LENGTH, 32)
    assert torch.equal(got, expected)
    assert not got.requires_grad


def test_long_prompt_truncates_like_the_tokenizer(models):
    tokenizer, _ = models
    tokens = sentence_tokens(Sentence.of(LONG), tokenizer)
    assert list(tokens.input_ids) == pipeline_ids(tokenizer, LONG)


def test_zero_times_difference_is_exactly_the_first_prompt(conditioner):
    a = conditioner.encode_text('"a cat"')
    assert torch.equal(conditioner.encode_text('"a cat" + 0*("a dog" - "a cat")'), a)


def test_mix_endpoints_are_exact(conditioner):
    encode = conditioner.encode_text
    a, b = encode("a cat"), encode("a dog")
    assert torch.equal(encode('mix("a cat", "a dog", 0)'), a)
    assert torch.equal(encode('mix("a cat", "a dog", 1)'), b)


def test_combination_is_linear_in_the_encodings(conditioner):
    encode = conditioner.encode_text
    a, b = encode("a cat"), encode("a dog on the beach")
    got = encode('2 * "a cat" - "a dog on the beach"')
    torch.testing.assert_close(got, 2 * a - b, rtol=0, atol=1e-6)


def test_pooled_embeddings_combine_with_the_same_weights(conditioner):
    got = pooled(conditioner, 'mix("a cat", "a dog on the beach", 0.25)')
    expected = 0.75 * pooled(conditioner, "a cat") + 0.25 * pooled(conditioner, "a dog on the beach")
    assert got.shape == (1, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_empty_combination_is_zero(conditioner):
    got = conditioner.encode_text('"a cat" - "a cat"')
    assert got.shape == (1, MAX_LENGTH, 32) and not got.any()


def test_token_edit_endpoints_equal_plain_sentences(conditioner):
    encode = conditioner.encode_text
    assert torch.equal(encode("a photo of a {cat|kitten:0}"), encode("a photo of a cat"))
    assert torch.equal(encode("a photo of a {cat|kitten:1}"), encode("a photo of a kitten"))
    # The pooled output is read at the real EOS, so it matches too.
    edited, plain = "a photo of a {cat|kitten:0}", "a photo of a cat"
    assert torch.equal(pooled(conditioner, edited), pooled(conditioner, plain))


def test_token_edit_blends_only_its_slot_at_the_encoder_input(conditioner, models):
    tokenizer, text_encoder = models
    captured = []

    def capture(module, args, output):
        captured.append(output.clone())

    handle = text_encoder.embeddings.register_forward_hook(capture)
    try:
        conditioner.encode_text("a photo of a {cat|kitten:0.3}")
    finally:
        handle.remove()
    ids = pipeline_ids(tokenizer, "a photo of a cat")
    kitten = pipeline_ids(tokenizer, "kitten")[1]
    slot = ids.index(tokenizer.eos_token_id) - 1  # the last word, "cat"
    table = text_encoder.get_input_embeddings().weight.detach()
    position = text_encoder.embeddings.position_embedding.weight[slot].detach()
    blended = captured[0][0]  # (L, D): token + position embeddings
    torch.testing.assert_close(
        blended[slot], 0.7 * table[ids[slot]] + 0.3 * table[kitten] + position, rtol=0, atol=1e-6
    )
    with torch.no_grad():
        plain = text_encoder.embeddings(torch.tensor([ids]))[0]
    others = [k for k in range(MAX_LENGTH) if k != slot]
    assert torch.equal(blended[others], plain[others])


def test_half_edit_lies_between_its_endpoints(conditioner):
    encode = conditioner.encode_text
    cat, kitten = encode("a photo of a cat"), encode("a photo of a kitten")
    half = encode("a photo of a {cat|kitten:0.5}")
    gap = (cat - kitten).norm()
    assert 0 < (half - cat).norm() < gap
    assert 0 < (half - kitten).norm() < gap


def test_edit_of_different_lengths_repeats_the_shorter_alternatives_last_token(conditioner):
    encode, eos = conditioner.encode_text, conditioner.tokenizer.eos_token_id
    sentence = parse_prompt("a {cat|big dog:0.5} on the beach").sentences[0]
    tokens = sentence_tokens(sentence, conditioner.tokenizer)
    plain = sentence_tokens(Sentence.of("a big dog on the beach"), conditioner.tokenizer)
    assert tokens.input_ids.index(eos) == plain.input_ids.index(eos)
    assert [position for position, _ in tokens.blends] == [2, 3]
    # The slot is as wide as "big dog": at weight 0 it reads "cat cat", at weight 1 "big dog".
    assert torch.equal(encode("a {cat|big dog:0} on the beach"), encode("a cat cat on the beach"))
    assert torch.equal(encode("a {cat|big dog:1} on the beach"), encode("a big dog on the beach"))
    assert torch.isfinite(encode("a {cat|big dog:0.5} on the beach")).all()


def test_token_edit_past_the_length_limit_is_truncated_away(conditioner):
    encode = conditioner.encode_text
    assert torch.equal(encode(LONG + " {cat|dog:0.5}"), encode(LONG))


def test_each_unique_sentence_is_encoded_once(conditioner):
    conditioner.encode_text('"a cat" + "a dog"')
    assert conditioner.encode_count == 2
    conditioner.encode_text('mix("a dog", "a cat", 0.3)')
    conditioner.encode_text("a cat")
    conditioner.encode_pooled(parse_prompt("a dog"))
    assert conditioner.encode_count == 2
    conditioner.encode_text("a {cat|dog:0.5}")
    assert conditioner.encode_count == 3


def test_cache_is_bounded_and_least_recently_used_goes_first(models):
    conditioner = TextConditioner(*models, max_cached=2)
    for text in ["a cat", "a dog", "a cat", "the beach", "a cat", "a dog"]:
        conditioner.encode_text(text)
    assert conditioner.encode_count == 4  # "the beach" evicted "a dog", never "a cat"


def test_results_are_new_tensors(conditioner):
    first = conditioner.encode_text("a cat")
    saved = first.clone()
    first.add_(1.0)
    assert torch.equal(conditioner.encode_text("a cat"), saved)


def test_tokenizer_longer_than_encoder_is_refused(models):
    tokenizer, text_encoder = models
    config = CLIPTextConfig(**{**text_encoder.config.to_dict(), "max_position_embeddings": 8})
    with pytest.raises(ValueError, match="model_max_length=16"):
        TextConditioner(tokenizer, CLIPTextModel(config))
