import pytest

from latentwalk.errors import UserError
from latentwalk.prompts import (
    PromptExpr,
    PromptSyntaxError,
    Sentence,
    TokenEdit,
    is_expression,
    linear_combination,
    parse_prompt,
)


def s(*parts: str | TokenEdit) -> Sentence:
    return Sentence.of(*parts)


def weights(source: str) -> dict[str, float]:
    return {sentence.text: w for sentence, w in parse_prompt(source).terms}


# --- plain prompts and the expression rule --------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["a snowy night over the mountains", "mixed media: grain | noise", 'a "quoted" word', "x - y"],
)
def test_plain_prompt_is_one_sentence_with_weight_one(source):
    assert parse_prompt(source) == PromptExpr(((s(source), 1.0),))


def test_plain_prompt_is_stripped_and_empty_prompt_allowed():
    assert parse_prompt("  a cat \n") == parse_prompt("a cat")
    assert parse_prompt("") == PromptExpr(((Sentence(()), 1.0),))


@pytest.mark.parametrize(
    "source, expected",
    [('"a"', True), ("(x)", True), ("-x", True), ("3 cats", True), (".5", True), ("mix(", True),
     ("  mix(", True), ("mixture", False), ("mix (", False), ("a cat", False), ("'a'", False)],
)
def test_expression_rule(source, expected):
    assert is_expression(source) is expected


# --- expressions ----------------------------------------------------------------------------


def test_weighted_difference_expands_and_merges():
    assert weights('"a cat" + 0.5 * ("a kitten" - "a cat")') == {"a cat": 0.5, "a kitten": 0.5}


def test_zero_times_difference_is_exactly_the_identity():
    expr = parse_prompt('"a" + 0*("b" - "a")')
    assert expr == PromptExpr(((s("a"), 1.0),))
    assert expr.terms[0][1] == 1.0


def test_precedence_and_unary_minus():
    assert weights('"a" + 2 * "b" - "c" / 4') == {"a": 1.0, "b": 2.0, "c": -0.25}
    assert weights('-"a" * 3') == {"a": -3.0}
    assert weights('- - "a"') == {"a": 1.0}
    assert weights('2 * -"a" + 3 * 2 * "b"') == {"a": -2.0, "b": 6.0}
    assert weights('(1 - 0.25) * "a"') == {"a": 0.75}


def test_nested_parentheses():
    assert weights('2 * ((("a") - 0.5 * ("b" + "a")))') == {"a": 1.0, "b": -1.0}


def test_mix():
    assert weights('mix("a", "b", 0.25)') == {"a": 0.75, "b": 0.25}
    assert weights('mix("a", "b", 0)') == {"a": 1.0}
    assert weights('mix("a", "b", 1)') == {"b": 1.0}
    assert weights('mix("a", mix("b", "c", 0.5), 0.5)') == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert weights('mix("a", "b", 1.5)') == {"a": -0.5, "b": 1.5}


def test_terms_cancel_to_empty_expression():
    assert parse_prompt('"a" - "a"') == PromptExpr(())


def test_equal_combinations_are_equal_and_hash_equal():
    a, b = parse_prompt('"x" + "y"'), parse_prompt('"y" + "x"')
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1


@pytest.mark.parametrize(
    "source",
    [
        '"a cat" + 0.5 * ("a kitten" - "a cat")',
        'mix("a", "b", 0.3)',
        '-0.1 * "a"',
        '"a" - "a"',
        "a photo of a {cat|kitten:0.3|puppy:1e-05}",
        r'"say \"hi\" \{x\} \\ {a\:b|c\|d:0.5}" - 2 * "e"',
    ],
)
def test_str_round_trips(source):
    expr = parse_prompt(source)
    assert parse_prompt(str(expr)) == expr


def test_linear_combination_of_parsed_prompts():
    a, b = parse_prompt("a"), parse_prompt('"b" + "a"')
    assert linear_combination([(a, 0.5), (b, 0.5)]) == parse_prompt('"a" + 0.5 * "b"')


# --- sentences, escapes and token edits -----------------------------------------------------


def test_escapes_in_quoted_prompts():
    assert parse_prompt(r'"say \"hi\" \\ \{x\}"').terms[0][0] == s('say "hi" \\ {x}')


def test_token_edit_in_plain_and_quoted_prompts():
    edit = TokenEdit((("cat", 0.7), ("kitten", 0.3)))
    assert parse_prompt("a photo of a {cat|kitten:0.3}").terms[0][0] == s("a photo of a ", edit)
    spaced = parse_prompt('"a photo of a {cat | kitten : 0.3}"')
    assert spaced.terms[0][0] == s("a photo of a ", edit)


def test_token_edit_remainder_goes_to_first_alternative():
    edit = parse_prompt("{a|b:0.2|c:0.3} x").terms[0][0].parts[0]
    assert edit == TokenEdit((("a", 0.5), ("b", 0.2), ("c", 0.3)))
    assert parse_prompt("{a|b:0.1|c:0.2|d:0.7}").terms[0][0].parts[0].alternatives[0] == ("a", 0.0)
    assert parse_prompt("{cat|kitten:1}").terms[0][0].parts[0].alternatives[0] == ("cat", 0.0)


def test_token_edit_alternatives_may_hold_spaces_and_escaped_colons():
    edit = parse_prompt(r"{big dog|cat\: tabby:0.5}").terms[0][0].parts[0]
    assert edit.alternatives == (("big dog", 0.5), ("cat: tabby", 0.5))


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, column, message",
    [
        ('"a" + "b', 7, "unclosed quote"),
        ('"a" +', 6, "unexpected end of expression"),
        ('"a" + * "b"', 7, "unexpected '*'"),
        ('"a" * "b"', 5, "cannot multiply two prompts"),
        ('2 * "a" * (1 + "b")', 14, "cannot add a number and a prompt"),
        ('"a" / "b"', 5, "cannot divide by a prompt"),
        ('"a" / 0', 5, "division by zero"),
        ('"a" + blend("b", "c")', 7, "unknown function 'blend'"),
        ('"a" * 1.2.3', 7, "bad number '1.2.3'"),
        ('"a" * 1e999', 7, "bad number '1e999'"),
        ('("a" + "b"', 11, "expected ')' but found end of expression"),
        ('"a" + (0.5 * "b"))', 18, "unexpected ')'"),
        ('"a" + cat', 7, "unexpected word 'cat'"),
        ("3 cats on a sofa", 3, "unexpected word 'cats'"),
        ("2 * 3", 1, "this expression is a number, not a prompt"),
        ('mix("a", "b")', 1, "mix takes 3 arguments"),
        ('mix("a", 0.5, 0.5)', 10, "mix's second argument must be a prompt"),
        ('mix("a", "b", "c")', 15, "mix's third argument must be a number"),
        ('"a" # "b"', 5, "unexpected '#'"),
        ("a {b|c:0.7|d:0.5}", 14, "token edit weights add up to 1.2, more than 1"),
        ("a {b|c:1.5}", 8, "bad weight '1.5'"),
        ("a {b|c:-0.5}", 8, "bad weight '-0.5'"),
        ("a {b|c}", 6, "alternative 'c' needs a weight"),
        ("a {b:0.2|c:0.3}", 5, "the first alternative takes the remainder"),
        ("a {b}", 3, "at least two alternatives"),
        ("a {b| :0.5}", 6, "empty alternative"),
        ("a {b|c:0.5", 3, "unclosed '{'"),
        ('"a {b|c:0.5" + "d"', 4, "unclosed '{'"),
        ("a {b|{c|d:0.1}:0.5}", 6, "token edits cannot nest"),
        ("a } b", 3, "unexpected '}'"),
        (r"a \q", 3, r"unknown escape '\q'"),
    ],
)
def test_error_column_and_message(source, column, message):
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(source)
    assert info.value.column == column
    assert message in str(info.value)


def test_error_message_names_field_and_points_a_caret():
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt('"a" + (0.5 * "b"))', field="keyframes[2].prompt")
    assert str(info.value) == (
        "keyframes[2].prompt: unexpected ')' at column 18\n"
        '  "a" + (0.5 * "b"))\n'
        "                   ^"
    )
    assert isinstance(info.value, UserError)


def test_with_field_keeps_column_and_adds_prefix():
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt('"a" * "b"')
    named = info.value.with_field("negative_prompt")
    assert named.column == 5 and named.field == "negative_prompt"
    assert str(named).startswith("negative_prompt: cannot multiply two prompts at column 5\n")


def test_caret_stays_aligned_for_multiline_source():
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt('"a" +\n\t* "b"')
    assert info.value.column == 8
    assert str(info.value).splitlines()[1:] == ['  "a" +  * "b"', "         ^"]


def test_bare_word_error_suggests_quoting_a_plain_prompt():
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt("3 cats on a sofa")
    assert "wrap all of it in double quotes" in str(info.value)
    assert parse_prompt('"3 cats on a sofa"') == PromptExpr(((s("3 cats on a sofa"), 1.0),))


def test_non_string_field_is_a_user_error():
    with pytest.raises(UserError, match=r"sweep\[0\]: expected a prompt string, got 0.5"):
        parse_prompt(0.5, field="sweep[0]")
