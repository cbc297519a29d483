"""Pure math of perceptually even travel: distances, SSIM, placement, probing plan, walk metrics."""

import numpy as np
import pytest

from latentwalk.smooth import (
    SSIM_K1,
    ProbePlan,
    adjacent_distances,
    coarse_probes,
    cumulative_progress,
    gaussian_window,
    perceptual_distance,
    pixel_distance,
    place_frames,
    rank_correlation,
    refine_probes,
    reused_probes,
    segment_progress,
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


# ---------------------------------------------------------------------------- probing plan


def test_coarse_pass_is_one_batch_with_both_keyframes():
    t = coarse_probes(ProbePlan(batch_size=8))
    assert len(t) == 8 and t[0] == 0.0 and t[-1] == 1.0


def test_refinement_bisects_the_largest_gaps_deterministically():
    plan = ProbePlan(batch_size=2)
    probes = np.linspace(0, 1, 5)
    d = np.array([1.0, 5.0, 5.0, 1.0])
    assert refine_probes(probes, d, 8, plan) == pytest.approx([0.375, 0.625])
    d = np.array([5.0, 1.0, 5.0, 5.0])  # a three-way tie: the two lowest t win
    assert refine_probes(probes, d, 8, plan) == pytest.approx([0.125, 0.625])
    assert refine_probes(probes, d, 8, plan).tolist() == refine_probes(probes, d, 8, plan).tolist()


def test_refinement_fills_the_batch_once_any_gap_is_too_big():
    plan = ProbePlan(batch_size=3)
    probes = np.linspace(0, 1, 5)
    d = np.array([1.0, 1.0, 6.0, 1.0])  # only 6 exceeds one frame's share (9 / 4)
    assert refine_probes(probes, d, 4, plan) == pytest.approx([0.125, 0.375, 0.625])


def test_refinement_stops_when_even_or_too_narrow():
    probes = np.linspace(0, 1, 5)
    assert len(refine_probes(probes, np.ones(4), 4, ProbePlan())) == 0  # every gap holds one frame's share
    tight = np.array([0.0, 0.5, 0.5008, 1.0])
    assert len(refine_probes(tight, np.array([0.0, 9.0, 0.0]), 4, ProbePlan(min_width=1e-3))) == 0


def test_probe_plan_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least 2"):
        ProbePlan(batch_size=1)
    with pytest.raises(ValueError, match="rounds"):
        ProbePlan(rounds=-1)


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
