"""Parameter tracks: per-frame numbers given as constants or as expressions over time and audio.

A track field (`guidance`, `noise_shift`, ...) is a number or an expression string such as
`6 + 3 * low` or `0.2 * attack_release(onset, 0.01, 0.25)`. Expressions are parsed here by a
small recursive-descent parser (no `eval`) and evaluated vectorised over every video frame:

    expr  := term (("+" | "-") term)*              # a flat run: one Fold node, folded left in a loop
    term  := unary (("*" | "/") unary)*            # likewise
    unary := ("-" | "+") unary | power
    power := atom (("**" | "^") unary)?          # right-associative; -2 ** 2 is -4, as in Python
    atom  := NUMBER | VARIABLE | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Recursion follows nesting only (parentheses, calls, unary signs, powers), which is capped at
MAX_DEPTH levels; a flat run of terms (`1 + 1 + ... + 1`, 20,000 of them) is parsed, walked and
evaluated in loops. An expression is at most MAX_CHARS characters.

Variables (per frame, see `frame_variables`): t, frame, beat, beat_phase, bar_phase, onset, rms,
low, mid, high. Functions: see FUNCTIONS. Errors point a caret at the column, like prompt errors.
"""

import difflib
import math
import operator
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple, NoReturn

import numpy as np

from latentwalk.prompts import PromptSyntaxError

# Deep enough for any formula a person writes, shallow enough that parsing and evaluating
# (about five Python frames per level) stays far below Python's recursion limit.
MAX_DEPTH = 100
MAX_CHARS = 100_000  # characters in one expression: a 20,000-term sum fits
SHOWN_CHARS = 120  # an error shows this much of a longer expression, around the caret
TIME_VARIABLES = ("t", "frame", "beat", "beat_phase", "bar_phase")
AUDIO_VARIABLES = ("onset", "rms", "low", "mid", "high")
VARIABLES = TIME_VARIABLES + AUDIO_VARIABLES
# Variables named by the audio a timeline gives (docs/beats.md): a stem's feature (`rms.drums`)
# and the user's MIDI notes (`midi.velocity`, `midi.ch10.gate`, `midi.track2.pitch`); the
# timeline reader checks that its audio holds the stem, channel or track.
STEM_VARIABLE = re.compile(r"^(onset|rms|low|mid|high)\.([A-Za-z_]\w*)$")
MIDI_VARIABLE = re.compile(r"^midi(?:\.(ch|track)(\d+))?\.(gate|velocity|pitch)$")


def is_variable(name: str) -> bool:
    return name in VARIABLES or bool(STEM_VARIABLE.match(name) or MIDI_VARIABLE.match(name))
# Band limits of `low`, `mid` and `high` in Hz (docs/tracks.md names them; tests/test_docs.py checks it).
BANDS: dict[str, tuple[float, float]] = {"low": (0.0, 200.0), "mid": (200.0, 2000.0), "high": (2000.0, math.inf)}
# Each audio variable is divided by this percentile of its values over the clip and clipped to
# [0, 1]: one stray peak (a clap, a click) does not squash the rest of the track towards zero.
NORMALISE_PERCENTILE = 99.0

_NUMBER_RUN = re.compile(r"(?:\d|\.\d)(?:[\w.]|(?<=[eE])[+-])*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")  # dotted: a stem's feature (rms.drums), a MIDI note field
_SPACE = re.compile(r"\s+")


class TrackSyntaxError(PromptSyntaxError):
    """A malformed or failing track expression; the caret marks the column (1-based).

    Of an expression longer than SHOWN_CHARS, the message shows the stretch around the caret.
    """

    def __init__(self, message: str, source: str, column: int, field: str | None = None, hint: str | None = None):
        super().__init__(message, source, column, field, hint)
        if len(source) > SHOWN_CHARS:
            start = max(0, min(column - 1 - SHOWN_CHARS // 2, len(source) - SHOWN_CHARS))
            end = start + SHOWN_CHARS
            lead, tail = ("..." if start else ""), ("..." if end < len(source) else "")
            shown = lead + re.sub(r"\s", " ", source[start:end]) + tail
            prefix = f"{field}: " if field else ""
            text = f"{prefix}{message} at column {column}\n  {shown}\n  {' ' * (len(lead) + column - 1 - start)}^"
            self.args = (text + (f"\n{hint}" if hint else ""),)

    def with_field(self, field: str) -> "TrackSyntaxError":
        return TrackSyntaxError(self.message, self.source, self.column, field, self.hint)


# --- syntax tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float
    index: int


@dataclass(frozen=True)
class Variable:
    name: str
    index: int


@dataclass(frozen=True)
class Unary:
    op: str
    operand: "Node"
    index: int


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / **
    left: "Node"
    right: "Node"
    index: int


@dataclass(frozen=True)
class Fold:
    """A flat run `first op operand op operand ...` of + and - (or * and /), folded left.

    One node with a tuple, not a chain of Binary nodes as deep as the run is long: a 20,000-term
    sum is walked, compared, hashed and evaluated in loops.
    """

    first: "Node"
    rest: tuple[tuple[str, "Node", int], ...]  # (operator, operand, index of the operator)
    index: int  # of the first operator


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Node", ...]
    index: int


Node = Number | Variable | Unary | Binary | Fold | Call


@dataclass(frozen=True)
class Expression:
    """A parsed track expression; `field` names where it came from, for evaluation errors."""

    source: str
    root: Node
    field: str = ""

    @property
    def variables(self) -> frozenset[str]:
        """Names of the variables the expression reads."""
        return frozenset(_variables(self.root))

    def __str__(self) -> str:
        return self.source


Track = float | Expression  # a track field's value: a constant or an expression


def _variables(root: Node):
    """Names of the variables under `root`, walked with a stack (no recursion)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Variable):
            yield node.name
        elif isinstance(node, Unary):
            stack.append(node.operand)
        elif isinstance(node, Binary):
            stack += [node.left, node.right]
        elif isinstance(node, Fold):
            stack.append(node.first)
            stack += [operand for _, operand, _ in node.rest]
        elif isinstance(node, Call):
            stack += node.args


# --- tokens and parser ----------------------------------------------------------------------


class _Token(NamedTuple):  # a tuple: tens of thousands are made for a long expression
    kind: str  # "number", "name", "end", or the operator itself ("**" included)
    index: int
    value: float | str | None = None

    def describe(self) -> str:
        if self.kind == "number":
            return f"number {self.value:g}"
        if self.kind == "name":
            return f"'{self.value}'"
        return "end of expression" if self.kind == "end" else f"'{self.kind}'"


def _tokenize(source: str, field: str) -> list[_Token]:
    """Tokens of an expression, ending with an 'end' token after its last character."""
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c.isspace():
            i = _SPACE.match(source, i).end()
        elif m := _NUMBER_RUN.match(source, i):
            if not _NUMBER.fullmatch(m.group()) or not math.isfinite(float(m.group())):
                raise TrackSyntaxError(f"bad number '{m.group()}'", source, i + 1, field or None)
            tokens.append(_Token("number", i, float(m.group())))
            i = m.end()
        elif m := _NAME.match(source, i):
            tokens.append(_Token("name", i, m.group()))
            i = m.end()
        elif source.startswith("**", i):
            tokens.append(_Token("**", i))
            i += 2
        elif c in "+-*/^(),":
            tokens.append(_Token("**" if c == "^" else c, i))
            i += 1
        else:
            raise TrackSyntaxError(f"unexpected '{c}'", source, i + 1, field or None)
    tokens.append(_Token("end", len(source.rstrip())))
    return tokens


def parse_expression(source: str, field: str = "") -> Expression:
    """Parse a track expression; errors name `field` (e.g. 'demo.yaml:9: guidance') and the column."""
    if not isinstance(source, str) or not source.strip():
        raise TrackSyntaxError("expected a number or an expression", str(source), 1, field or None)
    if len(source) > MAX_CHARS:
        raise TrackSyntaxError(f"expression longer than {MAX_CHARS:,} characters (it has {len(source):,})", source, MAX_CHARS + 1, field or None)
    return Expression(source, _Parser(source, field).parse(), field)


class _Parser:
    """Recursive descent over the grammar in the module docstring, with a nesting cap; flat runs are loops."""

    def __init__(self, source: str, field: str):
        self.source, self.field = source, field
        self.tokens = _tokenize(source, field)
        self.k = 0
        self.depth = 0

    def parse(self) -> Node:
        node = self.expr()
        if self.peek.kind != "end":
            self.fail(f"unexpected {self.peek.describe()}", self.peek)
        return node

    @property
    def peek(self) -> _Token:
        return self.tokens[self.k]

    def take(self) -> _Token:
        self.k += 1
        return self.tokens[self.k - 1]

    def fail(self, message: str, token: _Token, hint: str | None = None) -> NoReturn:
        raise TrackSyntaxError(message, self.source, token.index + 1, self.field or None, hint)

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"expression nested too deeply (more than {MAX_DEPTH} levels)", token)

    def expr(self) -> Node:
        self.enter(self.peek)
        node = self.fold(self.term, ("+", "-"))
        self.depth -= 1
        return node

    def term(self) -> Node:
        return self.fold(self.unary, ("*", "/"))

    def fold(self, operand: Callable[[], Node], operators: tuple[str, str]) -> Node:
        """`operand (op operand)*` as one Fold node (or the operand alone), read in a loop."""
        first = operand()
        rest = []
        while self.peek.kind in operators:
            op = self.take()
            rest.append((op.kind, operand(), op.index))
        return Fold(first, tuple(rest), rest[0][2]) if rest else first

    def unary(self) -> Node:
        if self.peek.kind not in ("-", "+"):
            return self.power()
        op = self.take()
        self.enter(op)
        operand = self.unary()
        self.depth -= 1
        return Unary(op.kind, operand, op.index) if op.kind == "-" else operand

    def power(self) -> Node:
        node = self.atom()
        if self.peek.kind == "**":
            op = self.take()
            self.enter(op)
            node = Binary("**", node, self.unary(), op.index)
            self.depth -= 1
        return node

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "number":
            return Number(token.value, token.index)
        if token.kind == "(":
            node = self.expr()
            if self.peek.kind != ")":
                self.fail(f"expected ')' but found {self.peek.describe()}", self.peek)
            self.take()
            return node
        if token.kind == "name" and self.peek.kind == "(":
            return self.call(token)
        if token.kind == "name":
            if token.value in FUNCTIONS:
                self.fail(f"'{token.value}' is a function: call it like {FUNCTIONS[token.value].usage}", token)
            if not is_variable(token.value):
                hint = f"variables: {', '.join(VARIABLES)}, FEATURE.STEM (rms.drums), midi.FIELD (midi.ch1.velocity)"
                self.fail(f"unknown variable '{token.value}'{_suggest(token.value, VARIABLES)}", token, hint)
            return Variable(token.value, token.index)
        self.fail(f"unexpected {token.describe()}", token)

    def call(self, name: _Token) -> Node:
        spec = FUNCTIONS.get(name.value)
        if spec is None:
            self.fail(f"unknown function '{name.value}'{_suggest(name.value, FUNCTIONS)}", name, f"functions: {', '.join(f.usage for f in FUNCTIONS.values())}")
        self.take()  # "("
        args = [self.expr()]
        while self.peek.kind == ",":
            self.take()
            args.append(self.expr())
        if self.peek.kind != ")":
            self.fail(f"expected ',' or ')' but found {self.peek.describe()}", self.peek)
        self.take()
        if not spec.arity[0] <= len(args) <= spec.arity[1]:
            self.fail(f"{name.value} takes {_count(spec.arity)}, got {len(args)}: {spec.usage}", name)
        return Call(name.value, tuple(args), name.index)


def _suggest(word: str, names) -> str:
    close = difflib.get_close_matches(word, list(names), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _count(arity: tuple[int, float]) -> str:
    low, high = arity
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"at least {low} arguments"


# --- functions ------------------------------------------------------------------------------

Array = np.ndarray  # (n_frames,) float64


def one_pole(x: Array, rise: Array, fall: Array, fps: float) -> Array:
    """Exponential follower: moves toward x with time constant `rise` (x above) or `fall` (below).

    y[0] = x[0]; y[k] = y[k-1] + a·(x[k] - y[k-1]) with a = 1 - exp(-1 / (fps·tau)), the
    sampled one-pole low-pass filter: a step reaches 1 - 1/e of its height tau·fps frames on,
    counting the step's own frame (tau seconds after that frame starts); tau = 0 follows x.
    """
    with np.errstate(divide="ignore"):
        a_rise = np.where(rise > 0, -np.expm1(-1.0 / (fps * np.maximum(rise, 1e-300))), 1.0)
        a_fall = np.where(fall > 0, -np.expm1(-1.0 / (fps * np.maximum(fall, 1e-300))), 1.0)
    y = np.empty_like(x)
    y[0] = x[0]
    for k in range(1, len(x)):  # a recursion: each frame needs the previous output
        prev = y[k - 1]
        a = a_rise[k] if x[k] > prev else a_fall[k]
        y[k] = prev + a * (x[k] - prev)
    return y


def pulse(beat: Array, period: Array, width: Array) -> Array:
    """1 during the first `width` fraction of every `period` beats (counted from beat 0), else 0."""
    phase = np.mod(beat / period, 1.0)
    return (phase < width).astype(np.float64)


@dataclass(frozen=True)
class Function:
    arity: tuple[int, float]
    usage: str
    # (args, variables, fps) -> values; args are already evaluated and broadcast to (n_frames,)
    apply: Callable[[list[Array], dict[str, Array], float], Array]
    # indices of arguments that are time constants in seconds, or periods: they must be >= 0 / > 0
    seconds: tuple[int, ...] = ()
    positive: tuple[int, ...] = ()


FUNCTIONS: dict[str, Function] = {
    "sin": Function((1, 1), "sin(x)  (radians)", lambda a, v, fps: np.sin(a[0])),
    "cos": Function((1, 1), "cos(x)  (radians)", lambda a, v, fps: np.cos(a[0])),
    "abs": Function((1, 1), "abs(x)", lambda a, v, fps: np.abs(a[0])),
    "min": Function((2, math.inf), "min(a, b, ...)", lambda a, v, fps: np.minimum.reduce(a)),
    "max": Function((2, math.inf), "max(a, b, ...)", lambda a, v, fps: np.maximum.reduce(a)),
    "clip": Function((3, 3), "clip(x, lo, hi)", lambda a, v, fps: np.minimum(np.maximum(a[0], a[1]), a[2])),
    "smooth": Function((2, 2), "smooth(x, seconds)", lambda a, v, fps: one_pole(a[0], a[1], a[1], fps), seconds=(1,)),
    "attack_release": Function(
        (3, 3), "attack_release(x, attack_seconds, release_seconds)", lambda a, v, fps: one_pole(a[0], a[1], a[2], fps), seconds=(1, 2)
    ),
    "pulse": Function((2, 2), "pulse(period_beats, width)", lambda a, v, fps: pulse(v["beat"], a[0], a[1]), positive=(0,)),
}
# Variables a function reads although no argument names them.
_IMPLICIT = {"pulse": "beat"}


# --- evaluation -----------------------------------------------------------------------------


def evaluate(track: Track, variables: dict[str, Array], fps: float, n_frames: int, missing: dict[str, str] | None = None) -> Array:
    """Values of a track at every frame → (n_frames,) float64.

    `variables` maps names to (n_frames,) arrays (see `frame_variables`); a name that is absent
    fails with its reason from `missing` (e.g. 'needs an audio file').
    """
    if not isinstance(track, Expression):
        return np.full(n_frames, float(track))
    out = _Evaluator(track, variables, fps, n_frames, missing or {}).eval(track.root)
    return np.broadcast_to(out, (n_frames,)).astype(np.float64)


# operator's functions act as numpy's on arrays and on numpy scalars, with less overhead per call.
_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}


class _Evaluator:
    def __init__(self, expr: Expression, variables: dict[str, Array], fps: float, n: int, missing: dict[str, str]):
        self.expr, self.variables, self.fps, self.n, self.missing = expr, variables, fps, n, missing

    def fail(self, message: str, index: int) -> NoReturn:
        raise TrackSyntaxError(message, self.expr.source, index + 1, self.expr.field or None)

    def variable(self, name: str, index: int) -> Array:
        if name not in self.variables:
            self.fail(f"'{name}' is not available: {self.missing.get(name, 'no value for it')}", index)
        return np.asarray(self.variables[name], dtype=np.float64)

    def finite(self, values: Array, what: str, index: int) -> Array:
        """`values` (a scalar or one per frame) unchanged, or an error at the first frame where they are not finite."""
        if not (math.isfinite(values) if isinstance(values, float) else np.all(np.isfinite(values))):
            f = int(np.flatnonzero(~np.isfinite(np.broadcast_to(values, (self.n,))))[0])
            self.fail(f"{what} is not a finite number at frame {f} ({f / self.fps:.3f}s)", index)
        return values

    def eval(self, node: Node) -> Array:
        with np.errstate(all="ignore"):  # non-finite results are reported by `finite` instead
            return self._eval(node)

    def apply(self, op: str, left: Array, right: Array, index: int) -> Array:
        if op == "/" and (right == 0 if isinstance(right, float) else np.any(right == 0)):
            f = int(np.flatnonzero(np.broadcast_to(right == 0, (self.n,)))[0])
            self.fail(f"division by zero at frame {f} ({f / self.fps:.3f}s)", index)
        symbol = "^" if op == "**" and self.expr.source[index] == "^" else op
        return self.finite(_OPERATORS[op](left, right), f"'{symbol}'", index)

    def _eval(self, node: Node) -> Array:
        """Values of `node`: a 0-d scalar where no variable is involved (broadcast at the end), else one per frame.

        Recursion follows nesting (at most MAX_DEPTH levels); a Fold's run is a loop.
        """
        if isinstance(node, Number):
            return np.float64(node.value)
        if isinstance(node, Variable):
            return self.variable(node.name, node.index)
        if isinstance(node, Unary):
            return -self._eval(node.operand)
        if isinstance(node, Fold):
            value = self._eval(node.first)
            for op, operand, index in node.rest:
                value = self.apply(op, value, self._eval(operand), index)
            return value
        if isinstance(node, Binary):
            return self.apply(node.op, self._eval(node.left), self._eval(node.right), node.index)
        spec = FUNCTIONS[node.name]
        args = [np.array(np.broadcast_to(self._eval(arg), (self.n,)), dtype=np.float64) for arg in node.args]
        for i in spec.seconds + spec.positive:
            arg = args[i]
            bad = np.flatnonzero(arg < 0 if i in spec.seconds else arg <= 0)
            if len(bad):
                f = int(bad[0])
                need = "at least 0 seconds" if i in spec.seconds else "greater than 0"
                self.fail(f"{node.name}: argument {i + 1} must be {need}, got {arg[f]:g} at frame {f}", node.args[i].index)
        implicit = _IMPLICIT.get(node.name)
        env = {implicit: self.variable(implicit, node.index)} if implicit else {}
        return self.finite(spec.apply(args, env, self.fps), f"{node.name}(...)", node.index)


# --- variables ------------------------------------------------------------------------------


def normalise(values: np.ndarray) -> np.ndarray:
    """Values divided by their NORMALISE_PERCENTILE-th percentile and clipped to [0, 1]."""
    values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    scale = np.percentile(values, NORMALISE_PERCENTILE) if len(values) else 0.0
    if scale <= 0:
        scale = values.max() if len(values) and values.max() > 0 else 1.0
    return np.clip(values / scale, 0.0, 1.0)


def frame_variables(
    times: np.ndarray,
    beats: np.ndarray | None,
    bpm: float | None,
    beats_per_bar: int,
    downbeat_index: int,
    features: dict[str, np.ndarray],
    envelope_rate: float,
    fps: float,
    bar_starts: tuple[int, ...] = (),
) -> dict[str, np.ndarray]:
    """Every expression variable at each video frame (times = frame / fps, in seconds).

    `beat` is the fractional beat index (beat 0 = the first tracked beat; extrapolated at `bpm`
    outside the grid), `beat_phase` its fractional part, `bar_phase` the position in the bar
    counted from beat `downbeat_index`. Audio features (arrays at `envelope_rate`) are averaged
    over each frame's span and normalised to [0, 1] over the clip (see `normalise`). Variables
    that cannot be computed (no beat grid, no audio) are left out.
    """
    from latentwalk.audio import envelope_at_fps
    from latentwalk.beats import bar_phases, beat_positions

    times = np.asarray(times, dtype=np.float64)
    n = len(times)
    out: dict[str, np.ndarray] = {"t": times, "frame": np.arange(n, dtype=np.float64)}
    if bpm:
        beat = beat_positions(times, np.asarray(beats if beats is not None else [], dtype=np.float64), bpm)
        out["beat"] = beat
        out["beat_phase"] = np.mod(beat, 1.0)
        out["bar_phase"] = bar_phases(beat, np.asarray(bar_starts), beats_per_bar, downbeat_index)
    for name, values in features.items():
        if MIDI_VARIABLE.match(name):  # the user's MIDI notes, already one value per video frame (midi.note_variables)
            out[name] = np.asarray(values, dtype=np.float64)[:n]
    for name in [*AUDIO_VARIABLES, *sorted(n for n in features if STEM_VARIABLE.match(n))]:
        if name in features:
            # envelope_at_fps assumes audio.ENVELOPE_RATE; rescale frame spans for other rates
            from latentwalk.audio import ENVELOPE_RATE

            per_frame = envelope_at_fps(np.asarray(features[name], dtype=np.float64), fps * ENVELOPE_RATE / envelope_rate, n)
            out[name] = normalise(per_frame)
    return out


MISSING_REASONS = {
    **{name: "it needs a beat grid (an audio file, or audio: {bpm: ...})" for name in ("beat", "beat_phase", "bar_phase")},
    **{name: "it needs an audio file (audio: path)" for name in AUDIO_VARIABLES},
}
