"""Where a render is: the state file beside its video, `plan --plot` shading it, `render --plot` redrawing as it goes."""

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import WALK_FRAMES, walk_timeline

from latentwalk import cli
from latentwalk import renderstate
from latentwalk.cli import main
from latentwalk.renderstate import State, StateWriter, read_state, state_path


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


class Frames:
    def __init__(self):
        self.written = 0

    def write(self, image) -> None:
        self.written += 1


def test_state_counts_written_frames_throttled_and_finishes(tmp_path):
    now = [0.0]
    video = tmp_path / "v.mp4"
    writer = StateWriter(Frames(), video, total=10, first_frame=4, eta=lambda: 12.5, interval=1.0, clock=lambda: now[0])
    assert read_state(video) == State(10, 0, 4, 0.0, False, 12.5, read_state(video).updated)  # written as streaming starts
    for _ in range(3):
        writer.write(None)
    assert read_state(video).written == 0  # within the interval: not rewritten
    now[0] = 1.5
    writer.write(None)
    state = read_state(video)
    assert (state.written, state.eta_s, state.finished, state.share) == (4, 12.5, False, 0.4)
    writer.finish()
    state = read_state(video)
    assert (state.written, state.finished, state.eta_s) == (4, True, None) and writer.writer.written == 4


def test_a_file_of_the_users_at_the_state_path_is_left_alone(tmp_path):
    video = tmp_path / "v.mp4"
    theirs = state_path(video)
    theirs.write_text("my notes\n")
    writer = StateWriter(Frames(), video, total=3)
    writer.write(None)
    writer.finish()
    assert theirs.read_text() == "my notes\n" and read_state(video) is None
    target = tmp_path / "elsewhere.json"
    theirs.unlink()
    theirs.symlink_to(target)
    StateWriter(Frames(), video, total=3).finish()
    assert not target.exists() and theirs.is_symlink()


def shaded(path: Path) -> np.ndarray:
    """Per column of the plot, how green it is (G minus the mean of R and B), averaged down the picture."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return (pixels[..., 1] - (pixels[..., 0] + pixels[..., 2]) / 2).mean(axis=0)


def test_a_render_keeps_its_state_while_it_runs_and_plan_plot_shades_what_is_written(tiny_model_dir, tmp_path, capsys, monkeypatch):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(walk_timeline(tiny_model_dir, extra="spacing: t\n"))
    video = tmp_path / "v.mp4"
    seen: list[State] = []
    finish = StateWriter.finish

    def finishing(self):  # the last state written, just before the render removes it
        finish(self)
        seen.append(read_state(video))

    monkeypatch.setattr(StateWriter, "finish", finishing)
    assert main(["render", str(timeline), "--out", str(video), "--quiet"]) == 0
    state = seen[-1]
    assert (state.total, state.written, state.finished, state.fps) == (WALK_FRAMES, WALK_FRAMES, True, 8.0)
    assert read_state(video) is None and not state_path(video).exists()  # gone with the render
    state_path(video).write_text(json.dumps(asdict(state) | {"format": renderstate.STATE_FORMAT}))

    capsys.readouterr()
    assert main(["plan", str(timeline), "--plot", str(tmp_path / "done.png"), "--video", str(video)]) == 0
    assert f"{WALK_FRAMES}/{WALK_FRAMES} frames written (done)" in capsys.readouterr().err
    # Half written: the left half of the time axis is shaded green, the right half is not.
    data = json.loads(state_path(video).read_text()) | {"written": WALK_FRAMES // 2, "finished": False, "eta_s": 30.0}
    state_path(video).write_text(json.dumps(data))
    assert main(["plan", str(timeline), "--plot", str(tmp_path / "half.png"), "--video", str(video)]) == 0
    assert f"{WALK_FRAMES // 2}/{WALK_FRAMES} frames written (in progress)" in capsys.readouterr().err
    assert main(["plan", str(timeline), "--plot", str(tmp_path / "none.png")]) == 0  # its own video never rendered
    half, none, done = (shaded(tmp_path / f"{n}.png") for n in ("half", "none", "done"))
    width = len(half)
    left, right = slice(int(0.15 * width), int(0.4 * width)), slice(int(0.65 * width), int(0.95 * width))
    assert (half - none)[left].mean() > 3 and abs((half - none)[right].mean()) < 0.5
    assert (done - none)[right].mean() > 3  # a finished render is shaded to the end


def test_video_needs_plot(tiny_model_dir, tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(walk_timeline(tiny_model_dir))
    assert main(["plan", str(timeline), "--video", str(tmp_path / "v.mp4")]) == 2
    assert "--video: only with --plot" in capsys.readouterr().err


def test_render_plot_is_redrawn_with_progress_while_frames_go_in(tiny_model_dir, tmp_path, monkeypatch):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(walk_timeline(tiny_model_dir, extra="spacing: t\n"))
    plot = tmp_path / "live.png"
    drawn: list[State] = []
    write_plot = cli.write_plot

    def recording(schedule, tl, path, rendered=None, quiet=False):
        drawn.append(rendered)
        write_plot(schedule, tl, path, rendered=rendered, quiet=quiet)

    monkeypatch.setattr(cli, "write_plot", recording)
    monkeypatch.setattr(cli, "PLOT_INTERVAL", 0.01)
    monkeypatch.setattr(renderstate, "INTERVAL", 0.0)  # a state write at every frame
    slow = StateWriter.write

    def pace(self, image):  # give the watcher time to see each frame
        slow(self, image)
        import time

        time.sleep(0.05)

    monkeypatch.setattr(StateWriter, "write", pace)
    assert main(["render", str(timeline), "--out", str(tmp_path / "v.mp4"), "--plot", str(plot), "--quiet"]) == 0
    assert drawn and all(s is not None and 0 <= s.written <= WALK_FRAMES for s in drawn)
    assert any(not s.finished and 0 < s.written < WALK_FRAMES for s in drawn)  # drawn mid-render
    assert [s.written for s in drawn] == sorted(s.written for s in drawn)
    with Image.open(plot) as image:  # the finished render's distances plot replaced the live one
        assert image.info["Software"] == "latentwalk plot"
