"""Perceptually even travel: offline image distances, placement by perceived progress, probing, walk metrics.

Pure NumPy: no torch, no model, no files. Frames are uint8 or float arrays (..., H, W, 3).

A segment's path is rendered at a few probe weights t_0 = 0 < ... < t_m = 1; the distance
between adjacent probes is summed into the cumulative perceived progress P(t), and each
frame's weight is t = P⁻¹(ease(paced progress)), so easing and audio pacing act on what the
viewer sees rather than on the raw interpolation weight (the re-scheduling idea of
DiffMorpher, Zhang et al. 2024, with probes found by bisection as in latentblending).
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from latentwalk.schedule import EASINGS, hold_then, paced_progress

# SSIM constants of Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error
# visibility to structural similarity": an 11x11 Gaussian window of σ = 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

ZERO_FLOOR = 1e-9  # fraction of the total progress every probe interval keeps, so P is strictly increasing
REUSE_ATOL = 1e-12  # a frame whose t is this close to a probe's is that probe


# ---------------------------------------------------------------------------- distances


def as_unit(images: np.ndarray) -> np.ndarray:
    """uint8 frames → float64 in [0, 1]; float frames are taken to be in [0, 1] already."""
    images = np.asarray(images)
    return images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


def pixel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference per image pair, in [0, 1]: a, b (..., H, W, C) → (...)."""
    return np.abs(as_unit(a) - as_unit(b)).mean(axis=(-3, -2, -1))


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """Normalised 1-D Gaussian of 2·radius + 1 taps."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _valid_filter_matrix(n: int, window: np.ndarray) -> np.ndarray:
    """(n - len(window) + 1, n) matrix M with M @ x = the 'valid' correlation of x with window."""
    k = len(window)
    m = np.zeros((n - k + 1, n))
    for i in range(n - k + 1):
        m[i, i : i + k] = window
    return m


def _blur(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter, 'valid' region (as Wang et al.'s reference filter2(..., 'valid')): (..., H, W)."""
    return rows @ x @ cols.T


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean SSIM per image pair (Wang et al. 2004), averaged over colour channels: (..., H, W, C) → (...).

    Channels are compared separately and averaged, as scikit-image does with `channel_axis`,
    so a hue change at equal luma still counts. Dynamic range L = 1.
    """
    x, y = np.moveaxis(as_unit(a), -1, -3), np.moveaxis(as_unit(b), -1, -3)  # (..., C, H, W)
    h, w = x.shape[-2:]
    window = gaussian_window()
    if min(h, w) < len(window):
        raise ValueError(f"ssim: images must be at least {len(window)} pixels per side, got {h}x{w}")
    rows, cols = _valid_filter_matrix(h, window), _valid_filter_matrix(w, window)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _blur(x, rows, cols), _blur(y, rows, cols)
    var_x = _blur(x * x, rows, cols) - mu_x**2
    var_y = _blur(y * y, rows, cols) - mu_y**2
    cov = _blur(x * y, rows, cols) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(axis=(-3, -2, -1))


def ssim_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − SSIM per image pair: 0 for identical images."""
    return 1.0 - ssim(a, b)


def perceptual_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The placement distance: geometric mean of pixel MAD and √(1 − SSIM).

    Both factors grow linearly with a small change (1 − SSIM grows with its square, hence the
    root), so the distance is a length that adds up along a path, which the cumulative progress
    needs; the geometric mean needs no weights (only ratios within a segment matter), and
    follows colour and brightness (MAD) as well as structure (SSIM).
    """
    return np.sqrt(pixel_distance(a, b) * np.sqrt(np.clip(ssim_distance(a, b), 0.0, None)))


def interval_distances(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel MAD, √(1 − SSIM)) between adjacent images: (N, H, W, C) → two (N - 1,); both lengths that add up along a path."""
    images = np.asarray(images)
    return adjacent_distances(images, pixel_distance), np.sqrt(np.clip(adjacent_distances(images, ssim_distance), 0.0, None))


def interval_weights(images: np.ndarray) -> np.ndarray:
    """How much of a path's change each step between adjacent images holds: (N, H, W, C) → (N - 1,).

    A step's weight is the larger of its share of the path's summed pixel MAD and its share of
    the summed √(1 − SSIM): placing frames evenly in these weights gives every step at least its
    share of the brightness-and-colour change *and* of the structural change, so neither distance
    is left uneven where the other is quiet (city lights coming out at night barely move the
    mean pixel but change the structure). Measured against the geometric mean of the two as the
    single distance, same probes: 1 − SSIM max/median 3.18 → 2.43 on the demo's sunset → night walk.
    """
    return shares(*interval_distances(images))


DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "pixel": pixel_distance,
    "ssim": ssim_distance,
    "perceptual": perceptual_distance,
}


def adjacent_distances(frames: np.ndarray, distance: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Distance between each frame and the next: (N, H, W, C) → (N - 1,)."""
    frames = np.asarray(frames)
    return np.asarray(distance(frames[:-1], frames[1:]), dtype=np.float64)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: Pearson correlation of the ranks (ties broken by order, fine for continuous distances)."""
    rx = np.argsort(np.argsort(np.asarray(x))).astype(np.float64)
    ry = np.argsort(np.argsort(np.asarray(y))).astype(np.float64)
    return float(np.corrcoef(rx, ry)[0, 1])


# ---------------------------------------------------------------------------- placement


def cumulative_progress(distances: np.ndarray) -> np.ndarray:
    """P at each probe: 0, d_0, d_0 + d_1, ...; every interval keeps a tiny floor so P strictly increases."""
    d = np.asarray(distances, dtype=np.float64)
    d = np.maximum(d, ZERO_FLOOR * max(d.sum(), ZERO_FLOOR))
    return np.concatenate([[0.0], np.cumsum(d)])


def invert_progress(probe_t: np.ndarray, distances: np.ndarray, progress: np.ndarray) -> np.ndarray:
    """t = P⁻¹(progress · P(1)), P piecewise linear between probes (monotone, exact at the probes)."""
    probe_t = np.asarray(probe_t, dtype=np.float64)
    check_probes(probe_t, distances)
    p = cumulative_progress(distances)
    if np.sum(distances) <= 0:  # nothing changes along the path: placement cannot tell, keep t
        return np.interp(np.asarray(progress, dtype=np.float64), [0.0, 1.0], [probe_t[0], probe_t[-1]])
    return np.interp(np.asarray(progress, dtype=np.float64) * p[-1], p, probe_t)


def check_probes(probe_t: np.ndarray, distances: np.ndarray) -> None:
    """Probes must start at 0, end at 1, strictly increase, and have one distance per interval."""
    if len(probe_t) < 2 or probe_t[0] != 0.0 or probe_t[-1] != 1.0 or np.any(np.diff(probe_t) <= 0):
        raise ValueError(f"probes must run strictly upward from 0 to 1, got {probe_t.tolist()}")
    if len(distances) != len(probe_t) - 1 or np.any(np.asarray(distances) < 0):
        raise ValueError(f"need {len(probe_t) - 1} non-negative distances, got {np.asarray(distances).tolist()}")


def segment_progress(
    n: int, easing: str = "linear", hold: float = 0.0, energy: np.ndarray | None = None, strength: float = 0.0
) -> np.ndarray:
    """Eased, paced progress of a segment's n frames, as `schedule.plan_frames` computes it: (n,), from 0."""
    return EASINGS[easing](hold_then(paced_progress(n, energy, strength), hold))


def place_frames(probe_t: np.ndarray, distances: np.ndarray, progress: np.ndarray) -> np.ndarray:
    """Each frame's t so that its share of the perceived change is its progress: t = P⁻¹(progress)."""
    t = invert_progress(probe_t, distances, progress)
    # Exact endpoints: progress 0 is the keyframe itself, whatever interp's rounding does.
    return np.where(np.asarray(progress) <= 0.0, 0.0, np.where(np.asarray(progress) >= 1.0, 1.0, t))


def snap_to_probes(t: np.ndarray, probe_t: np.ndarray, tolerance: float) -> np.ndarray:
    """Move a frame onto a probe within `tolerance` × its smaller gap to a neighbour (< 0.5 keeps the order).

    The probe's render is then reused as the frame; tolerance 0 only reuses exact coincidences.
    """
    if not 0.0 <= tolerance < 0.5:
        raise ValueError(f"snap tolerance must be in [0, 0.5), got {tolerance}")
    t = np.asarray(t, dtype=np.float64)
    probe_t = np.asarray(probe_t, dtype=np.float64)
    gaps = np.diff(t)
    left = np.concatenate([[np.inf], gaps])
    right = np.concatenate([gaps, [1.0 - t[-1] if len(t) else np.inf]])
    nearest = probe_t[np.abs(probe_t[None, :] - t[:, None]).argmin(axis=1)]
    near = np.abs(nearest - t) <= np.maximum(tolerance * np.minimum(left, right), REUSE_ATOL)
    return np.where(near, nearest, t)


def reused_probes(t: np.ndarray, probe_t: np.ndarray) -> np.ndarray:
    """For each frame, the index of the probe it coincides with, or -1."""
    diff = np.abs(np.asarray(t, dtype=np.float64)[:, None] - np.asarray(probe_t, dtype=np.float64)[None, :])
    return np.where(diff.min(axis=1) <= REUSE_ATOL, diff.argmin(axis=1), -1)


# ---------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class StopRule:
    """When a segment is probed enough: the evenness its probes predict, within a budget of probe frames.

    Probing stops once the adjacent-frame distances predicted from the probes (predict_evenness:
    hidden jumps included) have p95/median ≤ `p95` and max/median ≤ `max` in pixel MAD and in
    1 − SSIM, or once `budget` probes (the coarse batch included) are spent. The targets sit below
    the goal (2, 3) by a margin chosen on benchmarks/bench_smooth.py's tuning walks.
    """

    budget: int = 32  # probe frames per segment, both ends and the coarse batch included
    batch_size: int = 8  # coarse probes, and the most one round adds (a padded batch costs as much as a full one)
    p95: float = 2.0
    max: float = 3.0
    min_width: float = 1e-3  # intervals narrower than this in t are not split again

    def __post_init__(self):
        if self.batch_size < 2 or self.budget < 2:
            raise ValueError(f"probing needs at least 2 probes (both ends), got batch {self.batch_size}, budget {self.budget}")
        if self.p95 < 1.0 or self.max < self.p95:
            raise ValueError(f"targets must satisfy 1 <= p95 <= max, got p95 {self.p95}, max {self.max}")


@dataclass(frozen=True)
class Evenness:
    """Adjacent-frame p95/median and max/median in pixel MAD and in 1 − SSIM."""

    pixel_p95: float
    pixel_max: float
    ssim_p95: float
    ssim_max: float

    def meets(self, p95: float, max_: float) -> bool:
        return max(self.pixel_p95, self.ssim_p95) <= p95 and max(self.pixel_max, self.ssim_max) <= max_


def coarse_probes(rule: StopRule) -> np.ndarray:
    """One batch evenly spread in t, both keyframes included (they are final frames anyway)."""
    return np.linspace(0.0, 1.0, min(rule.batch_size, rule.budget))


def hidden_jumps(probe_t: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Per probe interval, the change its neighbours' rates do not explain: what may be one jump inside it.

    An interval changing at the rate of its faster neighbour (change per unit t) hides nothing;
    the excess over that is taken to fall between two frames. A lone interval is all unknown.
    """
    d = np.asarray(distances, dtype=np.float64)
    widths = np.diff(np.asarray(probe_t, dtype=np.float64))
    if len(d) < 2:
        return d.copy()
    rate = d / widths
    neighbour = np.maximum(np.concatenate([[-np.inf], rate[:-1]]), np.concatenate([rate[1:], [-np.inf]]))
    return np.clip(d - widths * neighbour, 0.0, None)


def predicted_steps(probe_t: np.ndarray, distances: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each frame step's distance (edges: frames' t, the next keyframe's 1 last): (len(edges) - 1,).

    Change is spread evenly in t inside each probe interval, except its hidden jump, which is added
    whole to the step holding the interval's middle.
    """
    probe_t = np.asarray(probe_t, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    jumps = hidden_jumps(probe_t, d)
    smooth = np.concatenate([[0.0], np.cumsum(d - jumps)])
    steps = np.diff(np.interp(edges, probe_t, smooth))
    middle = (probe_t[:-1] + probe_t[1:]) / 2
    np.add.at(steps, np.clip(np.searchsorted(edges, middle, side="right") - 1, 0, len(steps) - 1), jumps)
    return steps


def shares(mad: np.ndarray, root_ssim: np.ndarray) -> np.ndarray:
    """Per probe interval, the larger of its share of the summed MAD and of the summed √(1 − SSIM)."""
    parts = [d / d.sum() if d.sum() > 0 else np.zeros_like(d) for d in (np.asarray(mad, np.float64), np.asarray(root_ssim, np.float64))]
    return np.maximum(*parts)


def ratios(x: np.ndarray) -> tuple[float, float]:
    """(p95/median, max/median); 1 for a still or empty profile."""
    m = walk_metrics(x) if len(x) and np.max(x) > 0 else None
    return (m.p95_over_median, m.max_over_median) if m else (1.0, 1.0)


def predict_evenness(probe_t: np.ndarray, mad: np.ndarray, root_ssim: np.ndarray, progress: np.ndarray) -> tuple[Evenness, np.ndarray]:
    """The evenness of frames placed from these probes, and each interval's risk (the larger it, the sooner split).

    `progress`: the segment's frames' scheduled progress, from 0 (its keyframe), the next keyframe
    (1) left out. A step's distance counts against its progress (pacing may ask for uneven
    steps); steps that do not advance (a hold) are left out. 1 − SSIM is the square of its root
    (small changes), so an interval's root distance of r median steps shows as r² in 1 − SSIM.
    """
    probe_t, progress = np.asarray(probe_t, dtype=np.float64), np.asarray(progress, dtype=np.float64)
    edges = np.append(place_frames(probe_t, shares(mad, root_ssim), progress), 1.0)
    advance = np.diff(np.append(progress, 1.0))
    moving = advance > 0
    figures, risk = [], np.zeros(len(probe_t) - 1)
    for d, power in ((mad, 1), (root_ssim, 2)):
        d = np.asarray(d, dtype=np.float64)
        rate = predicted_steps(probe_t, d, edges)[moving] / advance[moving]
        figures += ratios(rate**power)
        median = np.median(rate) if len(rate) and np.median(rate) > 0 else 0.0
        if median > 0:  # an interval's hidden jump, and its whole change, in median steps
            unit = median * np.mean(advance[moving])
            risk = np.maximum(risk, (hidden_jumps(probe_t, d) / unit) ** power + 1e-3 * (d / unit) ** power)
    return Evenness(*figures), risk


def next_probes(probe_t: np.ndarray, mad: np.ndarray, root_ssim: np.ndarray, progress: np.ndarray, rule: StopRule) -> np.ndarray:
    """The next round's probe weights (sorted), none once the predicted evenness meets the rule or the budget is spent.

    A round bisects the riskiest intervals (largest hidden jump, then largest change; ties to the
    lower t), up to a batch and the budget left. Pure: the same probes and distances give the
    same round, so a resumed render asks for the probes it already stored.
    """
    probe_t = np.asarray(probe_t, dtype=np.float64)
    check_probes(probe_t, mad)
    check_probes(probe_t, root_ssim)
    room = min(rule.batch_size, rule.budget - len(probe_t))
    evenness, risk = predict_evenness(probe_t, mad, root_ssim, progress)
    widths = np.diff(probe_t)
    splittable = np.flatnonzero(widths >= 2 * rule.min_width)
    if room <= 0 or evenness.meets(rule.p95, rule.max) or not len(splittable):
        return np.empty(0)
    risk = np.round(risk, 9)  # equal risks up to rounding (linspace's widths) are ties
    order = splittable[np.lexsort((probe_t[:-1][splittable], -risk[splittable]))]
    chosen = order[:room]
    return np.sort(probe_t[:-1][chosen] + widths[chosen] / 2)


def probe_segment(distances_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], progress: np.ndarray, rule: StopRule) -> np.ndarray:
    """Probe one segment to the end: `distances_of(probe_t)` → (MAD, √(1 − SSIM)) per interval. Returns the probes.

    The loop placement.place runs for every segment at once (one render call per round); here
    for a single segment, for tests and benchmarks on synthetic profiles.
    """
    probe_t = coarse_probes(rule)
    while True:
        new = next_probes(probe_t, *distances_of(probe_t), progress, rule)
        if not len(new):
            return probe_t
        probe_t = np.union1d(probe_t, new)


# ---------------------------------------------------------------------------- walk metrics


@dataclass(frozen=True)
class WalkMetrics:
    """Statistics of the adjacent-frame distance over a walk (DiffMorpher's PPL and PDV, Zhang et al. 2024)."""

    p95_over_median: float
    max_over_median: float
    ppl: float  # perceptual path length: the sum
    pdv: float  # perceptual distance variance


def walk_metrics(distances: np.ndarray) -> WalkMetrics:
    """Jumpiness ratios, sum and variance of adjacent-frame distances."""
    d = np.asarray(distances, dtype=np.float64)
    median = float(np.median(d))
    ratio = (lambda x: x / median) if median > 0 else (lambda x: float("inf") if x > 0 else 1.0)
    return WalkMetrics(
        p95_over_median=float(ratio(np.percentile(d, 95))),
        max_over_median=float(ratio(d.max())),
        ppl=float(d.sum()),
        pdv=float(d.var()),
    )
