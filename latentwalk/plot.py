"""A picture of a plan: waveform, beats and bars, keyframes, travel progress and every track.

All panels share one time axis in seconds, so a track's pulse can be checked against the kick
it should follow before anything renders. matplotlib is an optional extra (`pip install
latentwalk[plot]`), imported only here and only when a plot is asked for.
"""

from pathlib import Path
from typing import Sequence

import numpy as np

from latentwalk.errors import UserError
from latentwalk.locks import open_output
from latentwalk.schedule import Plan, track_value

WIDTH_INCHES = 14.0
PANEL_INCHES = 1.6  # height of each panel
DPI = 100
SUFFIXES = (".png", ".svg", ".pdf")
WAVEFORM_BINS = 4000  # min/max pairs drawn for the waveform: enough for the width, fast for long songs
PROMPT_CHARS = 40  # keyframe prompts are cut to this length on the plot


def figure_size(n_tracks: int) -> tuple[float, float]:
    """Inches (width, height) of a plot with `n_tracks` track panels; pixels are these × DPI."""
    return WIDTH_INCHES, PANEL_INCHES * (2 + n_tracks)


# Written into every plot's metadata (PNG Software, SVG and PDF Creator): a file that carries it
# was drawn by latentwalk and may be drawn again; any other file at the path is the user's.
PLOT_MARK = "latentwalk plot"
MARK_BYTES = 1 << 16  # the metadata sits near the start (PNG, SVG) or in the trailer-referenced info (PDF)


def check_plot_path(path: str | Path) -> Path:
    """The plot's path: an image suffix, and no file there unless latentwalk drew it."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"--plot: expected a {', '.join(SUFFIXES)} file, got {str(path)!r}")
    if path.exists() and not drawn_by_latentwalk(path):
        raise UserError(f"--plot: {str(path)!r} exists and latentwalk did not draw it; move it away or pick another name")
    return path


def drawn_by_latentwalk(path: Path) -> bool:
    """Whether the file carries PLOT_MARK (a plot of ours, safe to redraw)."""
    try:
        with open(path, "rb") as f:
            head = f.read(MARK_BYTES)
            f.seek(max(0, path.stat().st_size - MARK_BYTES))
            tail = f.read()
    except OSError:
        return False
    return PLOT_MARK.encode() in head or PLOT_MARK.encode() in tail


def save_figure(fig, path: Path) -> None:
    """Save with PLOT_MARK in the metadata."""
    key = "Software" if path.suffix.lower() == ".png" else "Creator"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_output(path, "--plot") as f:  # atomically, never through a link, with the umask's mode
        fig.savefig(f, format=path.suffix[1:].lower(), dpi=DPI, metadata={key: PLOT_MARK})


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'latentwalk[plot]' (or pip install matplotlib)") from None
    return plt


def waveform_envelope(samples: np.ndarray, sample_rate: float, bins: int = WAVEFORM_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, low, high): the min and max of each of `bins` equal slices of the samples."""
    n = len(samples)
    bins = max(1, min(bins, n))
    edges = np.linspace(0, n, bins + 1).astype(int)
    low = np.minimum.reduceat(samples, edges[:-1])
    high = np.maximum.reduceat(samples, edges[:-1])
    return edges[:-1] / sample_rate, low, high


def plot_plan(plan: Plan, path: str | Path, tracks: Sequence[str] | None = None, **options) -> Path:
    """Draw the plan into `path` (png, svg or pdf) and return the path; options as in draw_plan."""
    path = check_plot_path(path)
    fig = draw_plan(plan, tracks, **options)
    save_figure(fig, path)
    _pyplot().close(fig)
    return path


def draw_plan(
    plan: Plan,
    tracks: Sequence[str] | None = None,
    samples: np.ndarray | None = None,
    sample_rate: float = 22050.0,
    beats_per_bar: int = 4,
    downbeat: int = 0,
    title: str = "",
    rendered=None,
):
    """The plan's matplotlib Figure: `tracks` (default: those the timeline sets), `samples` mono audio
    from the plan's first frame on (at `sample_rate`), `rendered` (renderstate.State) the frames
    a render of it has written so far, shaded."""
    plt = _pyplot()
    tracks = list(plan.tracks if tracks is None else tracks)
    times = np.array([r.time for r in plan.frames])
    start = float(times[0]) if len(times) else 0.0  # a range of a plan (`--from`) starts later
    end = start + plan.duration

    # 1. One figure, panels stacked over one time axis.
    fig, axes = plt.subplots(2 + len(tracks), 1, figsize=figure_size(len(tracks)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    wave_ax, key_ax, track_axes = axes[0], axes[1], axes[2:]

    # 2. Waveform, beats and bars (downbeats thicker and numbered).
    if samples is not None and len(samples):
        t, low, high = waveform_envelope(np.asarray(samples, dtype=np.float64), sample_rate)
        wave_ax.fill_between(start + t, low, high, color="0.55", linewidth=0, label="waveform")
    beats = np.asarray(plan.beats)
    beats = beats[beats <= end]
    for i, b in enumerate(beats):
        if b < start:
            continue
        is_bar = i >= downbeat and (i - downbeat) % beats_per_bar == 0
        for ax in axes:
            ax.axvline(b, color="tab:red" if is_bar else "0.8", linewidth=1.2 if is_bar else 0.5, zorder=0)
        if is_bar:
            wave_ax.text(b, 1.02, f"bar {(i - downbeat) // beats_per_bar}", transform=wave_ax.get_xaxis_transform(), fontsize=7, color="tab:red")
    wave_ax.set_ylabel("audio")
    wave_ax.set_yticks([])

    # 3. Keyframes with their prompts, and the travel progress of each segment.
    key_ax.plot(times, [r.t for r in plan.frames], color="tab:blue", label="t (prompt)")
    key_ax.plot(times, [r.noise_t for r in plan.frames], color="tab:orange", linestyle="--", label="noise_t")
    for k in plan.keyframes:
        if not start <= k.time <= end:
            continue
        key_ax.axvline(k.time, color="black", linewidth=1.0)
        prompt = k.keyframe.prompt if len(k.keyframe.prompt) <= PROMPT_CHARS else k.keyframe.prompt[: PROMPT_CHARS - 1] + "…"
        key_ax.text(k.time, 1.05, f" {k.index}: {prompt}", rotation=20, fontsize=7, va="bottom", ha="left")
    key_ax.set_ylim(-0.05, 1.05)
    key_ax.set_ylabel("travel")
    key_ax.legend(loc="upper right", fontsize=7)

    # 4. Every parameter track, one panel each, drawn from the plan's own values.
    for ax, name in zip(track_axes, tracks):
        ax.plot(times, [track_value(r, name) for r in plan.frames], color="tab:green", label=name)
        ax.set_ylabel(name)
        ax.legend(loc="upper right", fontsize=7)

    # 5. Where a render of this plan is: the video frames it has written, shaded on every panel.
    if rendered is not None:
        now = render_position(plan, rendered)
        for ax in axes:
            ax.axvspan(start, now, color="tab:green", alpha=0.12, linewidth=0, zorder=0)
        key_ax.axvline(now, color="tab:green", linewidth=1.5)
        key_ax.text(now, -0.02, f" {render_label(rendered)}", fontsize=7, color="tab:green", va="top")

    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(start, end)
    fps = f"{plan.fps:g} fps, {plan.n_frames} frames" + (f", {plan.bpm:.1f} bpm" if plan.bpm else "")
    fig.suptitle(f"{title}  ({fps})" if title else fps, fontsize=9, y=0.995)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.75 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(), hspace=0.35)
    return fig


def render_position(plan: Plan, rendered) -> float:
    """Seconds into the plan up to which a render has written its frames (the end of its last one)."""
    frame = rendered.first_frame + rendered.written  # the next frame to write, at the video's own fps
    return min(frame / (rendered.fps or plan.fps), plan.frames[-1].time + 1 / plan.fps) if plan.frames else 0.0


def render_label(rendered) -> str:
    from latentwalk.progress import duration

    if rendered.finished:
        return f"rendered: {rendered.written}/{rendered.total} frames"
    eta = f", ETA {duration(rendered.eta_s)}" if rendered.eta_s is not None else ""
    return f"rendering: {rendered.written}/{rendered.total} frames ({100 * rendered.share:.0f}%){eta}"


def plot_distances(plan: Plan, distances: Sequence[float], path: str | Path, title: str = "", segments: Sequence[dict] = ()) -> Path:
    """Adjacent-frame distance per frame (a render's manifest), keyframes and beats marked, into `path`.

    `segments`: the manifest's placed segments; each is labelled with its probes and its
    predicted and measured evenness (segment_label).
    """
    plt = _pyplot()
    path = check_plot_path(path)
    d = np.asarray(distances, dtype=np.float64)  # (n_frames - 1,): frame i to frame i + 1
    first = plan.frames[0].frame if plan.frames else 0  # a range of a plan (`--from`) starts later
    last = first + max(plan.n_frames - 1, 1)
    fig, ax = plt.subplots(1, 1, figsize=(WIDTH_INCHES, 2 * PANEL_INCHES))
    for b in np.asarray(plan.beats) * plan.fps:
        if first <= b <= last:
            ax.axvline(b, color="0.85", linewidth=0.5, zorder=0)
    for k in plan.keyframes:
        if not first <= k.frame <= last:
            continue
        ax.axvline(k.frame, color="black", linewidth=1.0)
        ax.text(k.frame, 1.01, f" {k.index}", transform=ax.get_xaxis_transform(), fontsize=7)
    ax.plot(first + np.arange(len(d)) + 0.5, d, color="tab:blue", marker=".", markersize=3, linewidth=0.8)
    for segment in segments:
        start = segment["frames"][0] if segment.get("frames") else None
        if start is not None and first <= start <= last:
            ax.text(start, 0.97, " " + segment_label(segment), transform=ax.get_xaxis_transform(), fontsize=6, va="top", color="0.25")
    median = float(np.median(d)) if len(d) else 0.0
    ax.axhline(median, color="tab:green", linewidth=0.8, linestyle="--", label=f"median {median:.4f}")
    if median > 0:
        ax.set_title(f"{title}  p95/median {np.percentile(d, 95) / median:.2f}, max/median {d.max() / median:.2f}", fontsize=9)
    ax.set_xlabel("frame")
    ax.set_ylabel("distance to next frame")
    ax.set_xlim(first, last)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_beats(analysis, samples: np.ndarray, sample_rate: float, path: str | Path, title: str = "") -> Path:
    """`latentwalk beats --plot`: the waveform with every beat, the downbeats numbered as bars, and
    the local tempo, to check the grid by eye (and correct it: docs/beats.md)."""
    path = check_plot_path(path)
    plt = _pyplot()
    beats, downbeats = np.asarray(analysis.beats), np.asarray(analysis.downbeats)
    fig, (wave_ax, tempo_ax) = plt.subplots(2, 1, figsize=(WIDTH_INCHES, PANEL_INCHES * 2.5), sharex=True, height_ratios=(3, 2))
    if len(samples):
        t, low, high = waveform_envelope(np.asarray(samples, dtype=np.float64), sample_rate)
        wave_ax.fill_between(t, low, high, color="0.55", linewidth=0)
    for b in beats:
        wave_ax.axvline(b, color="0.75", linewidth=0.5, zorder=0)
    for i, d in enumerate(downbeats):
        for ax in (wave_ax, tempo_ax):
            ax.axvline(d, color="tab:red", linewidth=1.2, zorder=0)
        wave_ax.text(d, 1.02, str(i), transform=wave_ax.get_xaxis_transform(), fontsize=7, color="tab:red", ha="center")
    wave_ax.set_ylabel("audio")
    wave_ax.set_yticks([])
    if len(beats) > 1:
        tempo_ax.plot(beats, analysis.tempo, color="tab:blue", marker=".", markersize=3)
    tempo_ax.set_ylabel("bpm")
    tempo_ax.set_xlabel("seconds")
    tempo_ax.set_xlim(0, analysis.duration)
    heading = f"{len(beats)} beats, {len(downbeats)} bars (red, numbered), {analysis.bpm:.1f} bpm, {analysis.tracker}"
    fig.suptitle(f"{title}  ({heading})" if title else heading, fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
    return path


def segment_label(segment: dict) -> str:
    """'24/32 probes (even)', then the predicted and measured evenness (p95/median and max/median of MAD and 1 − SSIM)."""
    def evenness(e: dict | None) -> str:
        if not e:
            return "-"
        return f"MAD {e['pixel_p95']:.2f}/{e['pixel_max']:.2f}, 1-SSIM {e['ssim_p95']:.2f}/{e['ssim_max']:.2f}"

    return (f"{segment['probes']}/{segment['budget']} probes ({segment['stopped']})\npredicted {evenness(segment.get('predicted'))}"
            f"\nmeasured {evenness(segment.get('measured'))} (p95/max over median)")
