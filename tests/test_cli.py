"""The command line: JSON outputs, and bad input → one clear message, exit status 2, no traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest

from latentwalk.cli import main
from test_audio import f_measure


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentwalk.cli", *args], capture_output=True, text=True)


def test_beats_json(drum_wav, capsys):
    assert main(["beats", str(drum_wav[0]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"bpm", "tracker", "beats", "downbeats", "tempo", "beats_per_bar", "meter", "meter_confidence", "notes"}
    assert data["bpm"] == pytest.approx(120, rel=0.01)
    assert f_measure(drum_wav[1].beats, np.array(data["beats"])) >= 0.95


def test_plan_json_puts_beat_keyframes_on_rounded_beat_frames(drum_wav, tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(
        f"fps: 25\naudio: {{path: {drum_wav[0]}}}\nend: {{bar: 7}}\nkeyframes:\n"
        "  - {beat: 0, prompt: a}\n  - {beat: 5, prompt: b}\n  - {bar: 3, prompt: c}\n  - {beat: 21.5, prompt: d}\n"
    )
    assert main(["beats", str(drum_wav[0]), "--json"]) == 0
    beats = json.loads(capsys.readouterr().out)["beats"]
    assert main(["plan", str(timeline), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fps"] == 25
    expected = [round(beats[0] * 25), round(beats[5] * 25), round(beats[12] * 25), round((beats[21] + beats[22]) / 2 * 25)]
    assert [k["frame"] for k in plan["keyframes"]] == pytest.approx(expected, abs=1)  # beats --json rounds to 0.1 ms
    assert len(plan["frames"]) == round(beats[28] * 25)
    assert {"frame", "time", "segment", "t"} <= set(plan["frames"][0])
    assert [f["frame"] for f in plan["frames"]] == list(range(len(plan["frames"])))


def test_plan_table_marks_keyframes(tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text("fps: 4\nend: {time: 2}\nkeyframes:\n  - {time: 0, prompt: a}\n  - {time: 1, prompt: b}\n")
    assert main(["plan", str(timeline)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 frames at 4 fps = 2.000s")
    assert sum(line.endswith(" *") for line in out.splitlines()) == 2


@pytest.mark.parametrize(
    "body, needle",
    [
        ("fps: 12\nend: {time: 2}\nkeyframes:\n  - {time: 0, prompt: a, colour: red}\n", "keyframes[0].colour"),
        ("fps: 12\nend: {time: 2}\nkeyframes:\n  - {time: 1, prompt: a}\n  - {time: 0.5, prompt: b}\n", "keyframes[1].time"),
        ("fps: 12\nend: {time: 2}\nkeyframes:\n  - {time: 0, prompt: a}\n  - {frame: 0, prompt: b}\n", "keyframes[1].frame"),
        ("fps: 12\naudio: {path: AUDIO}\nkeyframes:\n  - {beat: 0, prompt: a}\n  - {beat: 99, prompt: b}\n", "keyframes[1].beat"),
        ("fps: 12\naudio: {path: nowhere.wav}\nkeyframes:\n  - {beat: 0, prompt: a}\n", "audio.path"),
        ("fps: 12\nscheduler: lms\nend: {time: 2}\nkeyframes:\n  - {time: 0, prompt: a}\n", "scheduler"),
        ("model: no/such-model\nfps: 12\nend: {time: 1}\nkeyframes:\n  - {time: 0, prompt: a}\n", "model"),
        ("fps: 12\nend: {time: 2}\nkeyframes:\n  - {time: 0, prompt: '\"a\" * \"b\"'}\n", "column"),
    ],
)
def test_bad_timelines_exit_2_without_traceback_or_output(body, needle, drum_wav, tmp_path):
    timeline = tmp_path / "bad.yaml"
    timeline.write_text(body.replace("AUDIO", str(drum_wav[0])))
    out = tmp_path / "old.mp4"
    out.write_bytes(b"an earlier render")
    manifest = json.dumps({"format": "latentwalk-manifest/1"})  # so the video is one latentwalk may replace
    out.with_suffix(".json").write_text(manifest)
    result = run_cli("render", str(timeline), "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_bytes() == b"an earlier render" and out.with_suffix(".json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "old.json", "old.mp4"]


def test_bad_arguments_exit_2(tmp_path):
    assert run_cli("render").returncode == 2
    result = run_cli("beats", str(tmp_path / "missing.wav"))
    assert result.returncode == 2 and "missing.wav" in result.stderr and "Traceback" not in result.stderr
