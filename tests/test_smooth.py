"""Pure math of perceptually even travel: distances, SSIM, placement, probing plan, walk metrics."""

import numpy as np
import pytest

from latentwalk.smooth import (
    SSIM_K1,
    StopRule,
    adjacent_distances,
    coarse_probes,
    cumulative_progress,
    gaussian_window,
    hidden_jumps,
    next_probes,
    perceptual_distance,
    pixel_distance,
    place_frames,
    predict_evenness,
    predicted_steps,
    probe_segment,
    rank_correlation,
    reused_probes,
    segment_progress,
    shares,
    snap_to_probes,
    ssim,
    ssim_distance,
    walk_metrics,
)


def noise_image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (size, size, 3))


# ---------------------------------------------------------------------------- distances


def test_ssim_of_identical_images_is_one():
    x = noise_image(0)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert pixel_distance(x, x) == 0.0


def test_ssim_of_a_constant_brightness_shift_is_its_luminance_term():
    # Flat images: variances and covariance are 0, so SSIM is the luminance term of Wang et al. (2004) eq. 6.
    mu, c = 0.4, 0.2
    a, b = np.full((16, 16, 3), mu), np.full((16, 16, 3), mu + c)
    c1 = SSIM_K1**2
    assert ssim(a, b) == pytest.approx((2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1), rel=1e-9)
    assert pixel_distance(a, b) == pytest.approx(c)


def test_ssim_is_symmetric_batched_and_drops_with_more_noise():
    x = noise_image(1)
    rng = np.random.default_rng(2)
    small, large = x + rng.normal(0, 0.02, x.shape), x + rng.normal(0, 0.1, x.shape)
    batched = ssim(np.stack([x, x]), np.stack([small, large]))
    assert batched.shape == (2,)
    assert batched[0] == pytest.approx(ssim(small, x), abs=1e-12)
    assert 1.0 > batched[0] > batched[1] > 0.0


def test_pixel_distance_of_a_one_pixel_shift_of_a_ramp():
    ramp = np.tile(np.linspace(0, 1, 65)[None, :, None], (8, 1, 3))  # steps of 1/64 across
    shifted = np.concatenate([ramp[:, :1], ramp[:, :-1]], axis=1)  # shift right by one, edge repeated
    assert pixel_distance(ramp, shifted) == pytest.approx((64 / 65) * (1 / 64))


def test_uint8_frames_are_read_in_unit_range():
    a = np.zeros((12, 12, 3), np.uint8)
    b = np.full((12, 12, 3), 51, np.uint8)
    assert pixel_distance(a, b) == pytest.approx(0.2)


def test_gaussian_window_is_normalised_and_centred():
    w = gaussian_window(1.5, 5)
    assert len(w) == 11 and w.sum() == pytest.approx(1.0) and w.argmax() == 5
    assert w[4] / w[5] == pytest.approx(np.exp(-0.5 / 1.5**2))


def test_perceptual_distance_grows_linearly_with_a_small_change():
    # A length along the path: doubling a small change doubles it (1 − SSIM alone would quadruple).
    x = noise_image(3)
    step = np.random.default_rng(4).normal(0, 0.01, x.shape)
    one, two = perceptual_distance(x, x + step), perceptual_distance(x, x + 2 * step)
    assert two / one == pytest.approx(2.0, rel=0.03)
    assert ssim_distance(x, x + 2 * step) / ssim_distance(x, x + step) == pytest.approx(4.0, rel=0.1)


def test_adjacent_distances_of_a_fade():
    frames = np.stack([np.full((12, 12, 3), v) for v in (0.0, 0.1, 0.3, 0.6)])
    assert adjacent_distances(frames, pixel_distance) == pytest.approx([0.1, 0.2, 0.3])


def test_rank_correlation():
    x = np.array([0.3, 0.1, 0.5, 0.2])
    assert rank_correlation(x, x**3 + 1) == pytest.approx(1.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)


# ---------------------------------------------------------------------------- placement


def test_placement_inverts_a_known_cumulative_distance_exactly():
    # P: 0 → 3 over t ∈ [0, 0.5], 3 → 4 over [0.5, 1]: three quarters of the change in the first half.
    probes, d = np.array([0.0, 0.5, 1.0]), np.array([3.0, 1.0])
    assert cumulative_progress(d) == pytest.approx([0, 3, 4])
    t = place_frames(probes, d, np.array([0.0, 0.375, 0.5, 0.75, 0.875]))
    assert t == pytest.approx([0.0, 0.25, 1 / 3, 0.5, 0.75])


def test_placed_frames_keep_the_keyframe_count_and_even_the_distance():
    # Change concentrated around t = 0.6: frames crowd there; progress is even in P.
    probes = np.linspace(0, 1, 11)
    d = np.array([1, 1, 1, 1, 1, 10, 1, 1, 1, 1], dtype=float)
    n = 19
    t = place_frames(probes, d, segment_progress(n, "linear"))
    assert len(t) == n and t[0] == 0.0 and np.all(np.diff(t) > 0) and t[-1] < 1.0
    in_jump = np.sum((t >= 0.5) & (t < 0.6))
    assert in_jump == 10  # 10/19 of the change, so 10 of the 19 frames
    p = np.interp(np.append(t, 1.0), probes, cumulative_progress(d))
    assert np.diff(p) == pytest.approx(np.full(n, 19 / n))


def test_easing_acts_on_perceived_progress():
    probes, d = np.array([0.0, 0.5, 1.0]), np.array([3.0, 1.0])
    progress = segment_progress(8, "smoothstep")
    t = place_frames(probes, d, progress)
    p = np.interp(t, probes, cumulative_progress(d)) / 4.0
    assert p == pytest.approx(progress)


def test_no_change_keeps_uniform_t():
    probes = np.linspace(0, 1, 5)
    t = place_frames(probes, np.zeros(4), segment_progress(10))
    assert t == pytest.approx(np.arange(10) / 10)


def test_bad_probes_are_rejected():
    with pytest.raises(ValueError, match="strictly upward"):
        place_frames(np.array([0.0, 0.7, 0.5, 1.0]), np.ones(3), np.array([0.5]))
    with pytest.raises(ValueError, match="distances"):
        place_frames(np.array([0.0, 1.0]), np.ones(2), np.array([0.5]))


def test_snapping_moves_only_close_frames_and_keeps_order():
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    probes = np.array([0.0, 0.105, 0.26, 1.0])
    snapped = snap_to_probes(t, probes, 0.1)  # within 0.01 of a probe
    assert snapped == pytest.approx([0.0, 0.105, 0.2, 0.3, 0.4])
    assert reused_probes(snapped, probes).tolist() == [0, 1, -1, -1, -1]
    assert np.all(np.diff(snap_to_probes(t, probes, 0.45)) > 0)


# ---------------------------------------------------------------------------- probing

PROGRESS = np.arange(48) / 48  # 12 fps x 4 s, linear: the frames' scheduled progress, next keyframe left out


def profile(value):
    """distances_of for probe_segment: MAD and √(1 − SSIM) both |Δ value(t)| between adjacent probes, and a log of calls."""
    calls = []

    def distances_of(probe_t):
        calls.append(np.array(probe_t))
        d = np.abs(np.diff(value(np.asarray(probe_t))))
        return d, d

    return distances_of, calls


def placed_evenness(value, probe_t):
    """(p95/median, max/median) of |Δ value| between the frames placed from these probes (the next keyframe included)."""
    d = np.abs(np.diff(value(probe_t)))
    t = np.append(place_frames(probe_t, shares(d, d), PROGRESS), 1.0)
    steps = np.abs(np.diff(value(t)))
    return np.percentile(steps, 95) / np.median(steps), steps.max() / np.median(steps)


def test_coarse_pass_is_one_batch_with_both_keyframes_within_the_budget():
    t = coarse_probes(StopRule(batch_size=8))
    assert len(t) == 8 and t[0] == 0.0 and t[-1] == 1.0
    assert coarse_probes(StopRule(batch_size=8, budget=5)).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_an_even_path_stops_after_the_coarse_pass():
    distances_of, calls = profile(lambda t: 0.3 * t)
    probes = probe_segment(distances_of, PROGRESS, StopRule(budget=32))
    assert len(probes) == 8 and len(calls) == 1  # today's fixed rounds spent 32 probes on it


def test_hidden_jumps_are_the_change_the_neighbours_do_not_explain():
    probes = np.linspace(0, 1, 5)
    assert hidden_jumps(probes, np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(np.zeros(4))
    assert hidden_jumps(probes, np.array([1.0, 1.0, 5.0, 1.0])) == pytest.approx([0, 0, 4, 0])
    assert hidden_jumps(np.array([0.0, 1.0]), np.array([2.0])) == pytest.approx([2.0])  # a lone interval: all unknown
    # The jump lands whole in the frame step holding the interval's middle, the rest spreads evenly.
    steps = predicted_steps(probes, np.array([1.0, 1.0, 5.0, 1.0]), np.linspace(0, 1, 9))
    assert steps == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, 4.5, 0.5, 0.5])


def test_a_hidden_jump_is_found_within_the_budget():
    """All of a third of the change at t = 0.53, between two coarse probes (0.43 and 0.57)."""
    value = lambda t: 0.5 * t + 0.25 * (t >= 0.53)  # noqa: E731
    rule = StopRule(budget=40, p95=1.6, max=2.2)
    distances_of, calls = profile(value)
    probes = probe_segment(distances_of, PROGRESS, rule)
    assert len(probes) <= rule.budget
    i = np.searchsorted(probes, 0.53)
    assert probes[i] - probes[i - 1] < 0.01  # bracketed to a hundredth of the segment
    uniform = np.abs(np.diff(value(np.append(PROGRESS, 1.0))))
    assert uniform.max() / np.median(uniform) > 20  # one frame step holds the jump
    # A true jump cannot be spread over frames: probing runs to its budget and says so.
    assert len(probes) == rule.budget
    predicted, _ = predict_evenness(probes, *distances_of(probes), PROGRESS)
    assert not predicted.meets(rule.p95, rule.max) and predicted.pixel_max > 3.0


def test_a_steep_smooth_switch_is_probed_until_even():
    value = lambda t: 1 / (1 + np.exp(-120 * (t - 0.61)))  # noqa: E731  a structure switch inside one coarse interval
    rule = StopRule(budget=48, p95=1.6, max=2.2)
    distances_of, _ = profile(value)
    probes = probe_segment(distances_of, PROGRESS, rule)
    assert 8 < len(probes) <= 48
    p95, worst = placed_evenness(value, probes)
    assert p95 <= 2.0 and worst <= 3.0
    coarse = coarse_probes(rule)
    assert placed_evenness(value, coarse)[1] > 3.0  # the coarse pass alone is not enough
    predicted, _ = predict_evenness(probes, *distances_of(probes), PROGRESS)
    assert predicted.meets(rule.p95, rule.max)


def test_probing_respects_its_budget_and_fills_batches():
    value = lambda t: 0.5 * t + 0.25 * (t >= 0.53)  # noqa: E731  never even: probing runs to the budget
    for budget in (2, 8, 13, 24):
        distances_of, calls = profile(value)
        probes = probe_segment(distances_of, PROGRESS, StopRule(budget=budget, batch_size=8))
        sizes = [len(c) for c in calls]
        assert len(probes) == budget and sizes[0] == min(8, budget) and sizes[-1] == budget
        # A round adds a full batch where there are that many intervals to split (the coarse pass has 7).
        assert np.diff(sizes).tolist() == [min(8, n - 1, budget - n) for n in sizes[:-1]]


def test_stopping_rule_is_deterministic_and_resumes_on_its_own_probes():
    """Same probes and distances, same round; a second run asks for exactly the probes the first measured."""
    value = lambda t: np.sin(7 * t) ** 2 + 0.3 * (t > 0.3)  # noqa: E731
    rule = StopRule(budget=40, p95=1.6, max=2.2)
    first, calls = profile(value)
    probes = probe_segment(first, PROGRESS, rule)
    again, calls_again = profile(value)
    assert probe_segment(again, PROGRESS, rule).tolist() == probes.tolist()
    assert [c.tolist() for c in calls_again] == [c.tolist() for c in calls]
    t, d = calls[1], np.abs(np.diff(value(calls[1])))
    assert next_probes(t, d, d, PROGRESS, rule).tolist() == next_probes(t, d.copy(), d.copy(), PROGRESS, rule).tolist()


def test_ties_split_the_lower_interval_first():
    probes = np.linspace(0, 1, 6)
    d = np.array([5.0, 1.0, 5.0, 1.0, 5.0])  # three equal peaks, room for two
    assert next_probes(probes, d, d, np.arange(8) / 8, StopRule(batch_size=2, budget=8, p95=1.0, max=1.0)) == pytest.approx([0.1, 0.5])


def test_stop_rule_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least 2"):
        StopRule(batch_size=1)
    with pytest.raises(ValueError, match="at least 2"):
        StopRule(budget=1)
    with pytest.raises(ValueError, match="targets"):
        StopRule(p95=3.0, max=2.0)


def test_holds_are_left_out_of_the_predicted_evenness():
    probes, d = np.linspace(0, 1, 5), np.ones(4)
    held = np.concatenate([np.zeros(6), np.arange(10) / 10])  # 6 frames on the keyframe, then 10 moving
    evenness, _ = predict_evenness(probes, d, d, held)
    assert evenness.pixel_max == pytest.approx(1.0) and evenness.ssim_max == pytest.approx(1.0)


# ---------------------------------------------------------------------------- metrics


def test_walk_metrics():
    d = np.array([1.0, 1.0, 1.0, 2.0, 10.0])
    m = walk_metrics(d)
    assert m.max_over_median == 10.0
    assert m.p95_over_median == pytest.approx(np.percentile(d, 95))
    assert m.ppl == 15.0 and m.pdv == pytest.approx(np.var(d))
    even = walk_metrics(np.full(6, 0.2))
    assert (even.p95_over_median, even.max_over_median, even.pdv) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(0.0))


def test_interval_weights_give_each_step_its_share_of_either_distance():
    """A path whose first half changes brightness and second half changes structure at a constant mean."""
    from latentwalk.smooth import interval_weights

    rng = np.random.default_rng(0)
    texture = rng.random((32, 32, 3))
    flat = [np.full((32, 32, 3), v) for v in np.linspace(0.3, 0.5, 5)]  # brightness only
    grain = [0.5 + a * (texture - texture.mean()) * 0.02 for a in range(1, 5)]  # structure, mean kept
    weights = interval_weights(np.stack(flat + grain))
    mad = np.abs(np.diff(np.stack(flat + grain), axis=0)).mean(axis=(1, 2, 3))
    assert weights.shape == (8,)
    # The brightness steps carry nearly all the MAD, the grain steps most of the structural change:
    # each half gets a real share, where MAD alone would leave the grain steps almost nothing.
    assert weights[:4].min() > 0.2 and weights[4:].min() > 0.05
    assert (mad[4:] / mad.sum()).max() < weights[4:].min()
    assert np.allclose(interval_weights(np.stack(flat[:1] * 3)), 0.0)  # a still path: no change anywhere
