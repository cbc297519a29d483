"""Error messages point into the manual: every page and anchor manual.py names exists, and the CLI shows it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from latentwalk import manual
from latentwalk.timeline import KEYFRAME_KEYS, TOP_KEYS

ROOT = Path(__file__).resolve().parents[1]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors, as tests/test_docs.py makes them (code blocks' lines are no headings)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


TARGETS = sorted({manual.TIMELINE, *manual.TOP_LEVEL.values(), *manual.KEYFRAME.values(), "docs/feedback.md#camera-tracks", "docs/tracks.md#tracks"})


@pytest.mark.parametrize("target", TARGETS)
def test_every_section_named_exists(target):
    page, _, anchor = target.partition("#")
    assert (ROOT / page).is_file(), f"{target}: no such page"
    if anchor:
        assert anchor in anchors(ROOT / page), f"{target}: no such heading"


def test_the_keys_named_are_keys_the_reader_knows():
    assert set(manual.TOP_LEVEL) <= TOP_KEYS
    assert set(manual.KEYFRAME) <= KEYFRAME_KEYS


@pytest.mark.parametrize(
    "path, target",
    [
        (("audio", "bpm"), "docs/beats.md"),
        (("keyframes", 2, "image"), "docs/pictures.md#the-keys"),
        (("keyframes", 0, "loras", 1), "docs/models.md#lora-and-lora-travel"),
        (("keyframes", 1, "seed"), "docs/timeline.md#keyframes-and-segments"),
        (("guidance",), "docs/tracks.md#tracks"),
        (("zoom",), "docs/feedback.md#camera-tracks"),
        (("width",), "docs/timeline.md"),
        ((), "docs/timeline.md"),
    ],
)
def test_the_closest_section_wins(path, target):
    assert manual.section(path) == target


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latentwalk.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_timeline_error_points_to_its_section(tmp_path):
    (tmp_path / "t.yaml").write_text("audio: {path: song.wav}\nkeyframes:\n  - {time: 0, prompt: a sea}\n")
    result = run("plan", "t.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()  # still one line: the pointer ends it
    assert line.startswith("latentwalk: error: t.yaml:1: audio.path: audio file not found") and line.endswith(" (see docs/beats.md)"), line


def test_a_flag_error_points_to_its_command(tmp_path):
    (tmp_path / "t.yaml").write_text("keyframes:\n  - {time: 0, prompt: a sea}\n")
    result = run("render", "t.yaml", "--batch-size", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["latentwalk: error: --batch-size: must be at least 1, got 0 (see docs/commands.md#render)"]
