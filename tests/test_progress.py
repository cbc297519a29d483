"""The one progress display of a render: stages, counts and the overall ETA (latentwalk/progress.py)."""

import io

import pytest

from conftest import walk_timeline
from latentwalk.progress import Progress, duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(clock, **kwargs) -> tuple[Progress, io.StringIO]:
    stream = io.StringIO()
    return Progress(stream=stream, clock=clock, tty=False, **kwargs), stream


def test_eta_is_remaining_planned_work_over_the_rate_since_the_first_batch():
    clock = FakeClock()
    shown, _ = plain(clock)
    shown.stage("plan")
    clock.now += 1
    shown.stage("placement probes", unit="probe")
    shown.add_total(8)  # round 1
    clock.now += 30  # the model loads: not denoising time
    shown.advance(4)
    assert shown.eta() is None  # one batch: no rate yet
    clock.now += 2
    shown.advance(4)  # 4 frames in 2 s since the first batch: 2 frames/s
    assert shown.rate(clock.now) == pytest.approx(2.0)
    assert shown.eta() == 0.0  # all planned work done
    shown.stage("placement probes", total=4)  # round 2, in the same stage
    assert shown.eta() == pytest.approx(2.0)
    clock.now += 2
    shown.advance(4)  # 8 frames in 4 s
    shown.stage("frames", total=20)
    assert shown.planned == 32 and shown.done == 12
    assert shown.eta() == pytest.approx(20 / 2.0)
    clock.now += 5
    shown.advance(10)  # 18 frames in 9 s: still 2 frames/s
    assert shown.eta() == pytest.approx(10 / 2.0)
    assert duration(shown.eta()) == "5s" and duration(125) == "2m05s" and duration(None) == "?"


def test_plain_lines_per_stage_and_throttled_progress_without_carriage_returns():
    clock = FakeClock()
    shown, stream = plain(clock)
    shown.stage("audio analysis")
    clock.now += 1.5
    shown.stage("frames", total=100)
    for _ in range(100):  # a frame every 0.1 s: lines at each further 10 %, not per frame
        clock.now += 0.1
        shown.advance(1)
    shown.stage("encode")
    clock.now += 0.5
    shown.finish()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[:3] == ["[latentwalk] audio analysis: started", "[latentwalk] audio analysis: done in 2s",
                         "[latentwalk] frames: started, 100 frames to make"]
    progress_lines = [l for l in lines if "overall" in l]
    assert 9 <= len(progress_lines) <= 11
    assert progress_lines[-1].startswith("[latentwalk] frames: 100/100 frames (100%); overall 100/100 frames")
    assert progress_lines[-1].endswith("ETA 0s")
    assert "[latentwalk] frames: 50/100 frames (50%); overall 50/100 frames, 10.00 frames/s, ETA 5s" in lines
    assert lines[-3:] == ["[latentwalk] frames: done in 10s, 100/100 frames", "[latentwalk] encode: started",
                          "[latentwalk] encode: done in 0s"]


def test_plain_lines_come_every_interval_when_the_count_moves_slowly():
    clock = FakeClock()
    shown, stream = plain(clock)
    shown.stage("frames", total=1000)
    for _ in range(20):  # a frame per second, 2 % of the stage in all
        clock.now += 1
        shown.advance(1)
    assert sum("overall" in l for l in stream.getvalue().splitlines()) == 4  # every 5 s


def test_a_terminal_gets_one_redrawn_line():
    clock = FakeClock()
    stream = io.StringIO()
    shown = Progress(stream=stream, clock=clock, tty=True)
    shown.stage("frames", total=4)
    clock.now += 1
    shown.advance(2)
    shown.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 3


def test_a_render_stopped_before_any_batch_prints_no_stage_lines():
    clock = FakeClock()
    shown, stream = plain(clock)
    shown.stage("audio analysis")
    clock.now += 3
    shown.finish(failed=True)  # an input error: the error is the only line
    assert stream.getvalue() == ""
    shown, stream = plain(clock)
    shown.stage("frames", total=8)
    shown.advance(4)
    shown.finish(failed=True)
    assert stream.getvalue().splitlines()[0] == "[latentwalk] frames: started, 8 frames to make"


def test_a_silent_display_prints_only_notes():
    clock = FakeClock()
    stream = io.StringIO()
    shown = Progress(enabled=False, stream=stream, clock=clock, tty=False)
    shown.stage("frames", total=4)
    shown.advance(4)
    shown.note("warning: something")
    shown.finish()
    assert stream.getvalue() == "warning: something\n"


@pytest.fixture
def walk_yaml(tiny_model_dir, tmp_path, one_thread):
    path = tmp_path / "walk.yaml"
    path.write_text(walk_timeline(tiny_model_dir))
    return path


def test_a_render_shows_its_stages_in_order_on_plain_stderr(walk_yaml, tmp_path, capsys):
    from latentwalk.cli import main

    main(["render", str(walk_yaml), "--out", str(tmp_path / "w.mp4")])
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    starts = [l.split(": started")[0] for l in captured.err.splitlines() if ": started" in l]
    assert starts == ["[latentwalk] plan", "[latentwalk] placement probes", "[latentwalk] frames", "[latentwalk] encode"]
    assert "ETA" in captured.err
    assert " frames reused, " in captured.out and " rendered" in captured.out

    main(["render", str(walk_yaml), "--out", str(tmp_path / "w.mp4"), "--quiet"])  # all reused, nothing shown
    captured = capsys.readouterr()
    assert "[latentwalk]" not in captured.err and "\r" not in captured.err
    assert "0 rendered" in captured.out
