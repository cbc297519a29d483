r"""Prompt expressions: weighted sums of sentences, and token-level blends inside one sentence.

After stripping, a prompt field is an *expression* when it starts with '"', '(', '-', a digit
(or '.' and a digit), or 'mix('; anything else is one plain sentence with weight 1, so plain
prompts keep their meaning. Quote a plain prompt that happens to start that way: "3 cats".

    expr  := term (("+" | "-") term)*          # lowest precedence
    term  := unary (("*" | "/") unary)*
    unary := "-" unary | atom
    atom  := NUMBER | "sentence" | "(" expr ")" | "mix(" expr "," expr "," expr ")"

mix(a, b, w) is (1 - w)·a + w·b (a w outside [0, 1] extrapolates). Numbers scale prompts; two
prompts cannot be multiplied, and an expression must end up a prompt, not a number. Everything
expands to a `PromptExpr`: weight·sentence terms, like sentences merged, zero weights dropped.

Any sentence, quoted or plain, may hold token edits: `{cat|kitten:0.3|puppy:0.2}` blends the
alternatives' token embeddings; the first takes the remainder (here 0.5), the others' weights
lie in [0, 1] and may not add up to more than 1. Escapes: \\ \" \{ \} \| \: (a bare '|' or ':'
is literal outside braces).
"""

import math
import re
from dataclasses import dataclass
from typing import NoReturn

from latentwalk.errors import UserError

# Slack for edit weights written to sum to 1 (0.1 + 0.2 + 0.7) that land a few ulps above it.
EDIT_SUM_TOLERANCE = 1e-9
# Parentheses and mix( calls nest at most this deep: the parser recurses four Python frames per
# level, and 10,000 levels hit Python's recursion limit. Unary minus signs are read in a loop.
MAX_NESTING = 100
ESCAPABLE = '\\"{}|:'
# A number token is read greedily up to the next operator, so '1.2.3' and '2cats' are reported
# whole as bad numbers instead of as a number followed by something puzzling.
_NUMBER_RUN = re.compile(r"(?:\d|\.\d)(?:[\w.]|(?<=[eE])[+-])*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_]\w*")
_EXPRESSION_START = re.compile(r'["(\-]|\.?\d|mix\(')
_PLAIN_HINT = (
    "A field that starts with '\"', '(', '-', a number or 'mix(' is read as an expression; "
    "to use it as a plain prompt, wrap all of it in double quotes."
)


class PromptSyntaxError(UserError):
    """A malformed prompt field; the message points a caret at the offending column (1-based)."""

    def __init__(
        self,
        message: str,
        source: str,
        column: int,
        field: str | None = None,
        hint: str | None = None,
    ):
        self.message, self.source, self.column = message, source, column
        self.field, self.hint = field, hint
        # Newlines and tabs from YAML block scalars would throw the caret off its column.
        shown = re.sub(r"\s", " ", source)
        prefix = f"{field}: " if field else ""
        text = f"{prefix}{message} at column {column}\n  {shown}\n  {' ' * (column - 1)}^"
        super().__init__(text + (f"\n{hint}" if hint else ""))

    def with_field(self, field: str) -> "PromptSyntaxError":
        """The same error, its message prefixed with the timeline field it came from."""
        return PromptSyntaxError(self.message, self.source, self.column, field, self.hint)


@dataclass(frozen=True)
class TokenEdit:
    """One word slot whose input token embeddings blend alternatives: ((text, weight), ...)."""

    alternatives: tuple[tuple[str, float], ...]

    @property
    def text(self) -> str:
        """Source form, e.g. '{cat|kitten:0.3}'; the first alternative's weight is implied."""
        first, *rest = (_escape(alt, "|:") for alt, _ in self.alternatives)
        weights = [w for _, w in self.alternatives[1:]]
        return "{" + "|".join([first] + [f"{a}:{w!r}" for a, w in zip(rest, weights)]) + "}"


@dataclass(frozen=True)
class Sentence:
    """Text the encoder reads in one pass, token edits included; build it with `Sentence.of`."""

    parts: tuple[str | TokenEdit, ...]

    @classmethod
    def of(cls, *parts: str | TokenEdit) -> "Sentence":
        """Sentence with adjacent strings joined and empty ones dropped: equal text, equal key."""
        merged: list[str | TokenEdit] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            elif part != "":
                merged.append(part)
        return cls(tuple(merged))

    @property
    def text(self) -> str:
        """Source form, escaped so that parsing it gives this sentence back."""
        return "".join(p.text if isinstance(p, TokenEdit) else _escape(p) for p in self.parts)


@dataclass(frozen=True)
class PromptExpr:
    """A prompt as sum(weight · encode(sentence)); hashable, so usable as a cache key."""

    terms: tuple[tuple[Sentence, float], ...]

    @property
    def sentences(self) -> tuple[Sentence, ...]:
        """The sentences the text encoder has to read, in canonical order."""
        return tuple(s for s, _ in self.terms)

    def __str__(self) -> str:
        """Canonical expression text; `parse_prompt(str(e)) == e` (weights written exactly)."""
        if not self.terms:
            return '0 * ""'
        if len(self.terms) == 1 and self.terms[0][1] == 1.0:
            return f'"{self.terms[0][0].text}"'
        out = []
        for i, (sentence, weight) in enumerate(self.terms):
            sign = "-" if weight < 0 else "+"
            factor = "" if abs(weight) == 1.0 else f"{abs(weight)!r} * "
            op = (sign + " ") if i else ("-" if sign == "-" else "")
            out.append(f'{op}{factor}"{sentence.text}"')
        return " ".join(out)


def linear_combination(pairs: list[tuple[PromptExpr, float]]) -> PromptExpr:
    """Canonical sum(w · expr): like sentences merged, zero weights dropped, terms sorted."""
    weights: dict[Sentence, float] = {}
    for expr, scale in pairs:
        for sentence, weight in expr.terms:
            weights[sentence] = weights.get(sentence, 0.0) + scale * weight
    # Sorted terms give equal expressions one term order, hence bit-identical weighted sums.
    kept = sorted(((s, w) for s, w in weights.items() if w != 0.0), key=lambda t: t[0].text)
    return PromptExpr(tuple(kept))


def is_expression(source: str) -> bool:
    """Whether a field is read as an expression, not plain text (rule in the module docstring)."""
    return _EXPRESSION_START.match(source.lstrip()) is not None


def parse_prompt(source: str, field: str | None = None) -> PromptExpr:
    """Parse a prompt field, plain text or expression, into its canonical linear combination."""
    if not isinstance(source, str):
        raise UserError(f"{field + ': ' if field else ''}expected a prompt string, got {source!r}")
    try:
        if not is_expression(source):
            start = len(source) - len(source.lstrip())
            sentence, _ = _read_sentence(source, start, quoted=False, end=len(source.rstrip()))
            return PromptExpr(((sentence, 1.0),))
        return _Parser(source).parse()
    except PromptSyntaxError as error:
        raise (error.with_field(field) if field else error) from None


# --- sentences ------------------------------------------------------------------------------


def _escape(text: str, extra: str = "") -> str:
    return "".join("\\" + c if c in '\\"{}' + extra else c for c in text)


def _error(message: str, source: str, index: int, hint: str | None = None) -> PromptSyntaxError:
    return PromptSyntaxError(message, source, index + 1, hint=hint)


def _unescape(source: str, i: int) -> str:
    """The character that the backslash at source[i] escapes."""
    if i + 1 >= len(source):
        raise _error("backslash at the end", source, i)
    if source[i + 1] not in ESCAPABLE:
        message = f"unknown escape '\\{source[i + 1]}' (escapable: {' '.join(ESCAPABLE)})"
        raise _error(message, source, i)
    return source[i + 1]


# One alternative of a token edit as read: its characters, the source index of each (plus the
# closing '|' or '}', so an empty one still has a column), and the position of its last bare ':'.
_RawAlternative = tuple[list[str], list[int], int | None]


def _read_sentence(source: str, i: int, quoted: bool, end: int) -> tuple[Sentence, int]:
    """Sentence from source[i:] up to an unescaped '"' (quoted) or `end`, and the index after it."""
    opening = i - 1
    parts: list[str | TokenEdit] = []
    text: list[str] = []
    while True:
        if i >= end:
            if quoted:
                raise _error("unclosed quote", source, opening)
            break
        c = source[i]
        if quoted and c == '"':
            i += 1
            break
        if c == "\\":
            text.append(_unescape(source, i))
            i += 2
        elif c == "{":
            edit, i = _read_edit(source, i, quoted, end)
            parts += ["".join(text), edit]
            text = []
        elif c == "}":
            raise _error("unexpected '}' (write \\} for a literal brace)", source, i)
        else:
            text.append(c)
            i += 1
    return Sentence.of(*parts, "".join(text)), i


def _read_edit(source: str, i: int, quoted: bool, end: int) -> tuple[TokenEdit, int]:
    """Token edit starting at the '{' at source[i], and the index after its '}'."""
    brace = i
    alternatives: list[_RawAlternative] = []
    chars: list[str] = []
    where: list[int] = []
    colon: int | None = None
    i += 1
    while True:
        if i >= end or (quoted and source[i] == '"'):
            raise _error("unclosed '{'", source, brace)
        c = source[i]
        if c == "\\":
            chars.append(_unescape(source, i))
            where.append(i)
            i += 2
            continue
        if c == "{":
            raise _error("token edits cannot nest", source, i)
        if c in "|}":
            alternatives.append((chars, where + [i], colon))
            chars, where, colon = [], [], None
            i += 1
            if c == "}":
                return _make_edit(source, brace, alternatives), i
            continue
        if c == ":":
            colon = len(chars)
        chars.append(c)
        where.append(i)
        i += 1


def _make_edit(source: str, brace: int, alternatives: list[_RawAlternative]) -> TokenEdit:
    """Validated edit: texts stripped, weights checked, the first alternative given the rest."""
    if len(alternatives) < 2:
        message = "a token edit needs at least two alternatives, like {cat|kitten:0.3}"
        raise _error(message, source, brace)
    texts: list[str] = []
    weights: list[float] = []
    for k, (chars, where, colon) in enumerate(alternatives):
        text = "".join(chars[:colon] if colon is not None else chars)
        if not text.strip():
            raise _error("empty alternative in token edit", source, where[0])
        texts.append(text.strip())
        if k == 0:
            if colon is not None:
                message = "the first alternative takes the remainder and has no ':weight'"
                raise _error(message + " (write \\: for a colon)", source, where[colon])
            continue
        if colon is None:
            message = f"alternative '{text.strip()}' needs a weight, like {{cat|kitten:0.3}}"
            raise _error(message, source, where[0])
        raw = "".join(chars[colon + 1 :])
        at = where[colon + 1] + len(raw) - len(raw.lstrip()) if raw.strip() else where[colon]
        if not _NUMBER.fullmatch(raw.strip()) or float(raw) > 1.0:
            raise _error(f"bad weight '{raw.strip()}' (a number from 0 to 1)", source, at)
        weights.append(float(raw))
        if math.fsum(weights) > 1.0 + EDIT_SUM_TOLERANCE:
            message = f"token edit weights add up to {math.fsum(weights):g}, more than 1"
            raise _error(message, source, at)
    remainder = max(0.0, 1.0 - math.fsum(weights))
    return TokenEdit(tuple(zip(texts, [remainder] + weights)))


# --- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "prompt", "number", "word", "end", or the operator character itself
    index: int
    value: Sentence | float | str | None = None

    def describe(self) -> str:
        if self.kind == "prompt":
            return f'prompt "{self.value.text}"'
        if self.kind == "number":
            return f"number {self.value:g}"
        if self.kind == "word":
            return f"word '{self.value}'"
        return "end of expression" if self.kind == "end" else f"'{self.kind}'"


def _tokenize(source: str) -> list[_Token]:
    """Lexical tokens of an expression, ending with an 'end' token after the last character."""
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
        elif c == '"':
            sentence, j = _read_sentence(source, i + 1, quoted=True, end=n)
            tokens.append(_Token("prompt", i, sentence))
            i = j
        elif m := _NUMBER_RUN.match(source, i):
            if not _NUMBER.fullmatch(m.group()) or not math.isfinite(float(m.group())):
                hint = _PLAIN_HINT if i == 0 else None
                raise _error(f"bad number '{m.group()}'", source, i, hint)
            tokens.append(_Token("number", i, float(m.group())))
            i = m.end()
        elif m := _WORD.match(source, i):
            tokens.append(_Token("word", i, m.group()))
            i = m.end()
        elif c in "+-*/(),":
            tokens.append(_Token(c, i))
            i += 1
        else:
            raise _error(f"unexpected '{c}'", source, i)
    tokens.append(_Token("end", len(source.rstrip())))
    return tokens


_Value = PromptExpr | float  # what a sub-expression evaluates to


class _Parser:
    """Recursive descent over the grammar in the module docstring; values are numbers or prompts."""

    def __init__(self, source: str):
        self.source = source
        self.tokens = _tokenize(source)
        self.k = 0
        self.depth = 0  # open parentheses and mix( calls around the current token

    def parse(self) -> PromptExpr:
        value = self.expr()
        if self.peek.kind != "end":
            hint = _PLAIN_HINT if self.peek.kind == "word" else None
            self.fail(f"unexpected {self.peek.describe()}", self.peek, hint)
        if not isinstance(value, PromptExpr):
            raise _error("this expression is a number, not a prompt", self.source, 0)
        if not all(math.isfinite(w) for _, w in value.terms):
            raise _error("weights overflow to infinity", self.source, 0)
        return value

    @property
    def peek(self) -> _Token:
        return self.tokens[self.k]

    def take(self) -> _Token:
        self.k += 1
        return self.tokens[self.k - 1]

    def fail(self, message: str, token: _Token, hint: str | None = None) -> NoReturn:
        raise _error(message, self.source, token.index, hint)

    def expect(self, kind: str) -> _Token:
        if self.peek.kind != kind:
            self.fail(f"expected '{kind}' but found {self.peek.describe()}", self.peek)
        return self.take()

    def expr(self) -> _Value:
        value = self.term()
        while self.peek.kind in ("+", "-"):
            op = self.take()
            right = self.term()
            if isinstance(value, PromptExpr) != isinstance(right, PromptExpr):
                verb = "add" if op.kind == "+" else "subtract"
                self.fail(f"cannot {verb} a number and a prompt", op)
            sign = 1.0 if op.kind == "+" else -1.0
            if isinstance(value, PromptExpr):
                value = linear_combination([(value, 1.0), (right, sign)])
            else:
                value = value + sign * right
        return value

    def term(self) -> _Value:
        value = self.unary()
        while self.peek.kind in ("*", "/"):
            op = self.take()
            right = self.unary()
            if isinstance(right, PromptExpr):
                if op.kind == "/":
                    self.fail("cannot divide by a prompt", op)
                if isinstance(value, PromptExpr):
                    self.fail("cannot multiply two prompts", op)
                value, right = right, value
            if op.kind == "/" and right == 0.0:
                self.fail("division by zero", op)
            if isinstance(value, PromptExpr):
                # Dividing each weight (not multiplying by 1/x) keeps "a" / 2 exactly 0.5.
                terms = [(s, w / right if op.kind == "/" else w * right) for s, w in value.terms]
                value = linear_combination([(PromptExpr(tuple(terms)), 1.0)])
            else:
                value = value / right if op.kind == "/" else value * right
        return value

    def unary(self) -> _Value:
        negate = False
        while self.peek.kind == "-":  # a loop, not recursion: "- - - x" may be thousands long
            self.take()
            negate = not negate
        value = self.atom()
        if not negate:
            return value
        return linear_combination([(value, -1.0)]) if isinstance(value, PromptExpr) else -value

    def nested(self, token: _Token) -> None:
        """Count one more level of nesting at `token`, failing past MAX_NESTING."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(f"parentheses and mix( nested more than {MAX_NESTING} levels deep", token)

    def atom(self) -> _Value:
        token = self.take()
        if token.kind == "prompt":
            return PromptExpr(((token.value, 1.0),))
        if token.kind == "number":
            return token.value
        if token.kind == "(":
            self.nested(token)
            value = self.expr()
            self.expect(")")
            self.depth -= 1
            return value
        if token.kind == "word" and self.peek.kind == "(":
            return self.call(token)
        if token.kind == "word":
            message = f"unexpected word '{token.value}'; quote prompts inside an expression"
            self.fail(message, token, _PLAIN_HINT)
        self.fail(f"unexpected {token.describe()}", token)

    def call(self, name: _Token) -> _Value:
        if name.value != "mix":
            self.fail(f"unknown function '{name.value}' (the only function is mix(a, b, w))", name)
        self.nested(self.take())
        args: list[tuple[_Token, _Value]] = [(self.peek, self.expr())]
        while self.peek.kind == ",":
            self.take()
            args.append((self.peek, self.expr()))
        self.expect(")")
        self.depth -= 1
        if len(args) != 3:
            self.fail(f"mix takes 3 arguments (a, b, w), got {len(args)}", name)
        (ta, a), (tb, b), (tw, w) = args
        for token, value, what in ((ta, a, "first"), (tb, b, "second")):
            if not isinstance(value, PromptExpr):
                self.fail(f"mix's {what} argument must be a prompt", token)
        if isinstance(w, PromptExpr):
            self.fail("mix's third argument must be a number", tw)
        return linear_combination([(a, 1.0 - w), (b, w)])
