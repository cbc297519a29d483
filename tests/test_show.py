"""The self-describing video (latentwalk/videometa.py) through the `latentwalk` entry point: a render
embeds its timeline, `show` prints it, `render VIDEO.mp4` renders it again from its store, and
the files it names are checked first."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import WALK_FRAMES, walk_timeline
from latentwalk.encode import ffmpeg_exe, probe


# `run` (the installed latentwalk command in a subprocess) is conftest.py's.


def decode(video: Path) -> np.ndarray:
    """(n, H, W, 3) uint8: every frame of a video."""
    info = probe(video)
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentwalk: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir, drum_wav, run):
    """A tiny travel render with its audio beside the timeline (a relative path): folder, timeline text, video."""
    work = tmp_path_factory.mktemp("show")
    shutil.copy(drum_wav[0], work / "drums.wav")
    text = walk_timeline(tiny_model_dir, extra="# the audio is relative to this file\naudio: {path: drums.wav, end: 4}\n")
    (work / "walk.yaml").write_text(text)
    run("render", "walk.yaml", "--out", "walk.mp4", "--quiet", cwd=work)
    return work, text, work / "walk.mp4"


def test_show_prints_the_timeline_as_written_and_where_it_came_from(made, run):
    work, text, video = made
    shown = run("show", video, cwd=work).stdout
    assert text.rstrip("\n") in shown  # the YAML as written, its comment included
    assert "made by latentwalk 0.1.0" in shown and str(work / "walk.frames") in shown
    assert f"audio.path  ok       {work / 'drums.wav'}" in shown
    assert "width 32, height 32, fps 8.0, steps 2" in shown
    assert run("show", video, "--yaml", cwd=work).stdout == text


def test_show_json_is_the_whole_description(made, run):
    work, text, video = made
    data = json.loads(run("show", video, "--json", cwd=work).stdout)
    assert data["format"] == "latentwalk-video/1" and data["latentwalk"] == "0.1.0"
    assert data["timeline"]["yaml"] == text and data["timeline"]["base_dir"] == str(work)
    assert data["timeline"]["resolved"]["width"] == 32 and data["batch_size"] == 4 and data["store"] == str(work / "walk.frames")
    fields = {f["field"]: f for f in data["files"]}
    assert set(fields) == {"model", "audio.path"} and fields["audio.path"]["path"] == str(work / "drums.wav")
    assert len(fields["audio.path"]["fingerprint"]) == 64


def test_render_video_again_from_another_folder_reuses_every_frame(made, run, tmp_path):
    work, text, video = made
    before = video.read_bytes()
    result = run("render", video, "--out", tmp_path / "again.mp4", "--quiet", cwd=tmp_path)  # relative paths resolve all the same
    assert f"{WALK_FRAMES} frames reused, 0 rendered" in result.stdout
    again = tmp_path / "again.mp4"
    assert np.array_equal(decode(again), decode(video)) and probe(again).has_audio
    assert video.read_bytes() == before
    # The new video carries the same timeline on, and names the same store.
    data = json.loads(run("show", again, "--json", cwd=tmp_path).stdout)
    assert data["timeline"]["yaml"] == text and data["store"] == str(work / "walk.frames")


def test_render_video_without_out_writes_beside_it_never_over_it(made, run):
    work, _, video = made
    before = video.read_bytes()
    result = run("render", video, "--quiet", cwd=work)
    assert f"wrote {work / 'walk.again.mp4'}" in result.stdout and "0 rendered" in result.stdout
    assert video.read_bytes() == before and probe(work / "walk.again.mp4").frames == WALK_FRAMES
    refused = one_error(run("render", video, "--out", video, cwd=work, expect=None))
    assert "would overwrite the input" in refused and video.read_bytes() == before


def test_a_changed_or_missing_file_is_refused_before_any_work(made, run, tmp_path):
    work, _, video = made
    copy = tmp_path / "walk.mp4"
    shutil.copy(video, copy)
    audio = work / "drums.wav"
    original = audio.read_bytes()
    try:
        audio.write_bytes(original[:-4] + b"\0\0\0\1")
        changed = one_error(run("render", copy, "--out", tmp_path / "x.mp4", cwd=tmp_path, expect=None))
        assert f"audio.path: {audio} has changed since the video was made" in changed
        assert "changed" in run("show", copy, cwd=tmp_path).stdout
        audio.unlink()
        gone = one_error(run("render", copy, "--out", tmp_path / "x.mp4", cwd=tmp_path, expect=None))
        assert f"audio.path: {audio} is gone" in gone
    finally:
        audio.write_bytes(original)
    assert not (tmp_path / "x.mp4").exists()
    flags = one_error(run("render", copy, "--draft", cwd=tmp_path, expect=None))
    assert "not with a video" in flags


def test_videos_without_a_timeline_are_refused(run, tmp_path):
    plain = tmp_path / "plain.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=4", "-t", "1", str(plain)], check=True)
    assert "holds no latentwalk timeline" in one_error(run("show", plain, cwd=tmp_path, expect=None))
    assert "holds no latentwalk timeline" in one_error(run("render", plain, cwd=tmp_path, expect=None))
    assert "no such video" in one_error(run("show", tmp_path / "missing.mp4", cwd=tmp_path, expect=None))


def test_webm_out_is_vp9_with_the_same_frames_and_the_timeline(made, run, tmp_path):
    work, text, video = made
    result = run("render", video, "--out", tmp_path / "walk.webm", "--quiet", cwd=tmp_path)
    assert "0 rendered" in result.stdout
    webm = tmp_path / "walk.webm"
    info = probe(webm)
    assert (info.frames, info.width, info.height, info.has_audio) == (WALK_FRAMES, 32, 32, True)
    codec = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(webm)], capture_output=True, text=True).stderr
    assert "Video: vp9" in codec and "Audio: opus" in codec
    # Both are lossy encodings of the same stored frames.
    assert np.abs(decode(webm).astype(int) - decode(video).astype(int)).mean() < 12
    assert json.loads(run("show", webm, "--json", cwd=tmp_path).stdout)["timeline"]["yaml"] == text
