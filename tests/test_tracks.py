import math

import numpy as np
import pytest

from latentwalk.toy.soundtrack import drum_track
from latentwalk.tracks import (
    MAX_DEPTH,
    TrackSyntaxError,
    evaluate,
    frame_variables,
    normalise,
    one_pole,
    parse_expression,
    pulse,
)

FPS = 10.0


def run(source: str, n: int = 5, **variables) -> np.ndarray:
    variables = {k: np.asarray(v, dtype=np.float64) for k, v in variables.items()}
    return evaluate(parse_expression(source, "x.yaml:3: guidance"), variables, FPS, n)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("2 ** 3 ** 2", 512.0),  # right-associative
        ("2 ^ 3", 8.0),
        ("-2 ** 2", -4.0),  # as in Python: the power binds tighter
        ("--3", 3.0),
        ("+3 - -1", 4.0),
        ("7 / 2", 3.5),
        ("1e-1 * 10", 1.0),
        ("abs(-2.5)", 2.5),
        ("min(3, 1, 2)", 1.0),
        ("max(3, 1, 2)", 3.0),
        ("clip(5, 0, 1)", 1.0),
        ("clip(-5, 0, 1)", 0.0),
        ("sin(0) + cos(0)", 1.0),
    ],
)
def test_arithmetic_and_functions(source, expected):
    np.testing.assert_array_equal(run(source), np.full(5, expected))


def test_variables_are_per_frame():
    low = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(run("6 + 3 * low", low=low), 6 + 3 * low)
    np.testing.assert_allclose(run("0.2 * onset * (1 - bar_phase)", onset=low, bar_phase=low[::-1]), 0.2 * low * low)


def test_constant_track_is_a_full_array():
    out = evaluate(7.5, {}, FPS, 4)
    assert out.dtype == np.float64 and out.tolist() == [7.5] * 4


@pytest.mark.parametrize(
    "source, message, column",
    [
        ("6 + * 2", "unexpected '*'", 5),
        ("6 + 3 * lwo", "unknown variable 'lwo' (did you mean 'low'?)", 9),
        ("smoth(low, 1)", "unknown function 'smoth' (did you mean 'smooth'?)", 1),
        ("smooth(low)", "smooth takes 2 arguments, got 1", 1),
        ("(1 + 2", "expected ')' but found end of expression", 7),
        ("1.2.3", "bad number '1.2.3'", 1),
        ("2 $ 3", "unexpected '$'", 3),
        ("sin + 1", "'sin' is a function", 1),
        ("1 2", "unexpected number 2", 3),
        ("", "expected a number or an expression", 1),
    ],
)
def test_syntax_errors_name_field_and_column(source, message, column):
    with pytest.raises(TrackSyntaxError) as info:
        parse_expression(source, "x.yaml:3: guidance")
    error = info.value
    assert error.column == column
    text = str(error)
    assert text.startswith("x.yaml:3: guidance: ") and message in text and f"at column {column}" in text
    caret_line = text.splitlines()[2]
    assert caret_line.index("^") == 2 + column - 1


@pytest.mark.parametrize("source", ["(" * 10_000 + "1" + ")" * 10_000, "-" * 10_000 + "1", "2^" * 10_000 + "2", "abs(" * 10_000 + "1" + ")" * 10_000])
def test_deep_nesting_is_a_clear_error_not_recursion(source):
    with pytest.raises(TrackSyntaxError, match=f"nested too deeply \\(more than {MAX_DEPTH} levels\\)"):
        parse_expression(source, "f")


def test_nesting_up_to_the_cap_works():
    depth = MAX_DEPTH - 1
    assert run("(" * depth + "1" + ")" * depth, n=1).tolist() == [1.0]


def test_evaluation_errors_point_at_the_operator():
    with pytest.raises(TrackSyntaxError, match="division by zero at frame 2") as info:
        run("1 / (frame - 2)", frame=np.arange(5))
    assert info.value.column == 3
    with pytest.raises(TrackSyntaxError, match="'beat' is not available: no beat grid") as info:
        evaluate(parse_expression("pulse(1, 0.5)"), {}, FPS, 3, {"beat": "no beat grid"})
    with pytest.raises(TrackSyntaxError, match="smooth: argument 2 must be at least 0 seconds"):
        run("smooth(1, -1)")
    with pytest.raises(TrackSyntaxError, match="not a finite number"):
        run("10 ^ 400")


def step(n: int = 60, at: int = 10) -> np.ndarray:
    x = np.zeros(n)
    x[at:] = 1.0
    return x


def test_smooth_reaches_one_minus_1_over_e_after_its_time_constant():
    x = step()
    y = one_pole(x, np.full(60, 0.5), np.full(60, 0.5), FPS)
    np.testing.assert_array_equal(run("smooth(onset, 0.5)", n=60, onset=x), y)
    k = int(0.5 * FPS)  # frames in one time constant; the step's own frame is the first of them
    assert y[10 + k - 1] == pytest.approx(1 - math.exp(-1))
    assert y[10 + 3 * k - 1] == pytest.approx(1 - math.exp(-3))
    assert np.all(y[:10] == 0) and np.all(np.diff(y) >= 0)
    np.testing.assert_array_equal(one_pole(x, np.zeros(60), np.zeros(60), FPS), x)  # tau 0 follows x


def test_attack_release_time_constants_on_a_step_up_and_down():
    x = np.zeros(80)
    x[10:40] = 1.0  # up at frame 10 (1 s), down at frame 40 (4 s)
    y = evaluate(parse_expression("attack_release(onset, 0.2, 1.0)"), {"onset": x}, FPS, 80)
    # rising with attack = 0.2 s = 2 frames
    assert y[11] == pytest.approx(1 - math.exp(-1))
    assert y[13] == pytest.approx(1 - math.exp(-2))
    top = y[39]
    assert top == pytest.approx(1.0)
    # falling with release = 1.0 s = 10 frames: after one release constant, 1/e of the height is left
    assert y[49] == pytest.approx(top * math.exp(-1))
    assert y[59] == pytest.approx(top * math.exp(-2))
    # a slow attack rises slower than a fast one: the constants are not swapped
    slow = evaluate(parse_expression("attack_release(onset, 1.0, 0.2)"), {"onset": x}, FPS, 80)
    assert slow[19] == pytest.approx(1 - math.exp(-1)) and slow[41] < slow[39] * math.exp(-0.9)


def test_pulse_is_one_for_the_first_width_of_each_period():
    beat = np.arange(0, 8, 0.25)
    out = pulse(beat, np.full(len(beat), 2.0), np.full(len(beat), 0.25))
    on = beat[out == 1.0]
    np.testing.assert_array_equal(on, [0, 0.25, 2, 2.25, 4, 4.25, 6, 6.25])
    via_parser = evaluate(parse_expression("pulse(2, 0.25)"), {"beat": beat}, FPS, len(beat))
    np.testing.assert_array_equal(via_parser, out)


def test_normalise_uses_the_99th_percentile_and_clips():
    values = np.concatenate([np.linspace(0, 1, 1000), [50.0]])  # one stray spike
    out = normalise(values)
    assert out.max() == 1.0 and out.min() == 0.0
    assert out[500] == pytest.approx(values[500] / np.percentile(values, 99))
    assert np.percentile(values, 99) < 1.0  # the spike does not set the scale
    assert normalise(np.zeros(4)).tolist() == [0.0] * 4


def test_time_and_beat_variables():
    fps, n = 4.0, 17
    times = np.arange(n) / fps
    beats = np.arange(0, 4.5, 0.5)  # 120 bpm from t = 0
    v = frame_variables(times, beats, 120.0, 4, 1, {}, 100.0, fps)
    np.testing.assert_array_equal(v["frame"], np.arange(n))
    np.testing.assert_allclose(v["beat"], times * 2)
    np.testing.assert_allclose(v["beat_phase"], np.mod(times * 2, 1))
    np.testing.assert_allclose(v["bar_phase"], np.mod((times * 2 - 1) / 4, 1))  # bar 0 starts at beat 1
    assert "onset" not in v and "low" not in v  # no audio: left out
    assert "beat" not in frame_variables(times, None, None, 4, 0, {}, 100.0, fps)


def test_onset_peaks_within_one_frame_of_each_kick():
    """Kicks at known times (a synthesized track) make `onset` and `low` peak on them."""
    import librosa

    from latentwalk.audio import ENVELOPE_RATE, HOP_LENGTH, SAMPLE_RATE

    track = drum_track(120.0, 2, lead_in=0.5)  # kick on beats 0, 2, 4, 6 (every second), snare between
    y = track.samples.astype(np.float64)
    onset = librosa.onset.onset_strength(y=y.astype(np.float32), sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    spec = np.abs(librosa.stft(y.astype(np.float32), hop_length=HOP_LENGTH))
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE)
    low = spec[freqs < 200].sum(axis=0)
    fps = 24.0
    n = int(len(y) / SAMPLE_RATE * fps)
    v = frame_variables(np.arange(n) / fps, track.beats, 120.0, 4, 0, {"onset": onset, "low": low}, ENVELOPE_RATE, fps)
    assert v["onset"].max() == 1.0 and v["onset"].min() >= 0.0
    kicks = track.beats[::2]
    for kick in kicks:
        k = round(kick * fps)
        window = slice(max(0, k - 3), k + 4)
        peak = window.start + int(np.argmax(v["onset"][window]))
        assert abs(peak - kick * fps) <= 1.0, (kick, peak)
        assert v["onset"][peak] > 0.5
        low_peak = window.start + int(np.argmax(v["low"][window]))
        assert abs(low_peak - kick * fps) <= 1.0
    # between hits (a quarter beat after each kick) onset is low
    quiet = [round((kick + 0.125) * fps) for kick in kicks]
    assert np.all(v["onset"][quiet] < 0.3)
