"""The plan's picture: size, panels, and that every plotted number comes from the plan."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from latentwalk.cli import main  # noqa: E402
from latentwalk.errors import UserError  # noqa: E402
from latentwalk.plot import DPI, check_plot_path, draw_plan, figure_size, plot_plan  # noqa: E402
from latentwalk.schedule import plan_frames  # noqa: E402
from latentwalk.timeline import parse_timeline  # noqa: E402

BEATS = np.arange(0, 40) * 0.5


def small_plan():
    tl = parse_timeline(
        "fps: 8\nend: {beat: 16}\naudio: {bpm: 120}\nguidance: 6 + 2 * beat_phase\nnoise_shift: 0.3 * pulse(1, 0.25)\n"
        "keyframes:\n  - {beat: 0, prompt: a cat}\n  - {bar: 2, prompt: a dog, easing: smoothstep}\n"
    )
    return plan_frames(tl, BEATS, 120.0, None)


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_plotted_numbers_are_the_plans():
    import matplotlib.pyplot as plt

    plan = small_plan()
    samples = np.sin(np.arange(22050 * 8) / 10.0)
    fig = draw_plan(plan, samples=samples, sample_rate=22050)
    wave, travel, guidance, shift = fig.axes
    times = [r.time for r in plan.frames]
    t_line = lines_by_label(travel)["t (prompt)"]
    np.testing.assert_array_equal(t_line.get_xdata(), times)
    np.testing.assert_array_equal(t_line.get_ydata(), [r.t for r in plan.frames])
    np.testing.assert_array_equal(lines_by_label(guidance)["guidance"].get_ydata(), [r.guidance for r in plan.frames])
    np.testing.assert_array_equal(lines_by_label(shift)["noise_shift"].get_ydata(), [dict(r.params).get("noise_shift", 0.0) for r in plan.frames])
    # keyframes: a vertical line at each keyframe time, its prompt written beside it
    key_x = sorted({line.get_xdata()[0] for line in travel.get_lines() if line.get_label().startswith("_") and line.get_color() == "black"})
    assert key_x == [k.time for k in plan.keyframes]
    assert {"0: a cat", "1: a dog"} <= {text.get_text().strip() for text in travel.texts}
    # beats and bars: every beat up to the end drawn, the bars (every 4th) labelled
    assert [t.get_text() for t in wave.texts] == ["bar 0", "bar 1", "bar 2", "bar 3", "bar 4"]
    assert len(wave.collections) == 1  # the waveform
    plt.close(fig)


def test_png_has_the_expected_size(tmp_path):
    plan = small_plan()
    path = plot_plan(plan, tmp_path / "plan.png")
    image = imread(path)
    width, height = figure_size(len(plan.tracks))
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plot_path_must_be_an_image(tmp_path):
    with pytest.raises(UserError, match="--plot: expected a .png, .svg, .pdf file"):
        check_plot_path(tmp_path / "timeline.yaml")


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_a_plot_is_redrawn_but_a_file_latentwalk_did_not_draw_is_never_overwritten(tmp_path, suffix):
    plan = small_plan()
    ours = plot_plan(plan, tmp_path / f"plan{suffix}")
    assert plot_plan(plan, ours) == ours  # our own plot: drawn again
    theirs = tmp_path / f"holiday{suffix}"
    theirs.write_bytes(b"someone's picture")
    with pytest.raises(UserError, match="exists and latentwalk did not draw it"):
        plot_plan(plan, theirs)
    assert theirs.read_bytes() == b"someone's picture"


def test_cli_plan_plot_and_tracks_in_json_and_text(tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(
        "fps: 4\nend: {beat: 8}\naudio: {bpm: 120}\nnoise_shift: 0.5 * pulse(2, 0.5)\n"
        "keyframes:\n  - {beat: 0, prompt: a, guidance: 2}\n  - {beat: 4, prompt: b, guidance: 6}\n"
    )
    assert main(["plan", str(timeline), "--json", "--plot", str(tmp_path / "p.png")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert data["tracks"] == ["guidance", "noise_shift"]
    assert [f["noise_shift"] for f in data["frames"]] == [0.5, 0.5, 0, 0] * 4
    assert [f["guidance"] for f in data["frames"][:10]] == [2 + 0.5 * f for f in range(8)] + [6, 6]  # beat 4 = frame 8
    assert main(["plan", str(timeline)]) == 0
    table = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[:1] == ["frame"])
    assert table[header].split()[-1] == "noise_shift"
    assert [float(row.split()[8]) for row in table[header + 1 : header + 5]] == [0.5, 0.5, 0, 0]
    assert main(["plan", str(timeline), "--plot", str(tmp_path / "bad.txt")]) == 2
