"""Hostile input, clobbering outputs, corrupt stores, full disks, concurrent runs and SIGTERM.

Every case goes through the CLI (`main([...])` returns the exit status) and checks the exit
status, a `file:line: field: reason` message, no traceback, and that every file that existed
before is byte-identical afterwards.
"""

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentwalk import budget
from latentwalk.cli import main
from latentwalk.encode import probe
from latentwalk.errors import UserError
from latentwalk.locks import file_lock
from latentwalk.outputs import check_render_outputs
from latentwalk.store import MARKER, FrameStore, encode_frame

FRAMES = 12


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def tiny_timeline(model: Path, frames: int = FRAMES, extra: str = "") -> str:
    return (
        # spacing: t: tests here count frames rendered, and perceptual placement adds probes
        f"model: {model}\nwidth: 32\nheight: 32\nfps: 4\nsteps: 2\nbatch_size: 4\ndevice: cpu\nspacing: t\n{extra}"
        f"end: {{frame: {frames}}}\nkeyframes:\n  - {{frame: 0, prompt: a cat, seed: 1}}\n  - {{frame: {frames - 1}, prompt: the sea, seed: 2}}\n"
    )


def cli_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))


# --- 1. outputs never clobber inputs or foreign files --------------------------------------


def test_out_equal_to_the_audio_file_or_the_timeline_json_is_refused(tmp_path, capsys):
    song = tmp_path / "song.mp4"  # a music video used as the soundtrack
    song.write_bytes(b"the user's own video with a soundtrack")
    timeline = tmp_path / "walk.json"  # JSON is YAML
    timeline.write_text(json.dumps({"audio": {"path": "song.mp4", "bpm": 120}, "end": {"time": 2}, "keyframes": [{"time": 0, "prompt": "a"}]}))
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "render", str(timeline), "--out", str(song))
    assert status == 2 and "would overwrite the input" in err and str(song) in err
    status, _, err = run(capsys, "render", str(timeline), "--out", str(tmp_path / "walk.mp4"))
    assert status == 2 and "manifest" in err and "walk.json" in err
    assert snapshot(tmp_path) == before


def test_foreign_files_folders_and_unwritable_places_are_refused(tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text("end: {time: 1}\nkeyframes:\n  - {time: 0, prompt: a}\n")
    (tmp_path / "theirs.mp4").write_bytes(b"not ours")
    (tmp_path / "folder.mp4").mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "frame_000000.png").write_bytes(b"a holiday photo")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (tmp_path / "a-file").write_text("x")
    before = snapshot(tmp_path)
    cases = [
        (["--out", str(tmp_path / "theirs.mp4")], "was not made by latentwalk"),
        (["--out", str(tmp_path / "folder.mp4")], "is a folder"),
        (["--out", str(tmp_path / "v.mp4"), "--frames", str(photos)], "--overwrite-frames"),
        (["--out", str(tmp_path / "v.mp4"), "--frames", str(tmp_path / "a-file")], "--frames: "),
        (["--out", str(tmp_path / "v.mp4"), "--store", str(tmp_path / "a-file")], "--store: "),
        (["--out", str(tmp_path / "v.mp4"), "--store", str(mine)], "not a latentwalk frame store"),
        (["--out", str(tmp_path / "a-file" / "v.mp4")], "is a file, not a folder"),
        (["--out", str(tmp_path / "typo" / "v.mp4")], "does not exist"),
    ]
    for args, needle in cases:
        status, _, err = run(capsys, "render", str(timeline), *args)
        assert status == 2 and needle in err, (args, err)
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "folder.mp4", "mine", "photos", "t.yaml", "theirs.mp4"]
    # --overwrite-frames is the explicit way to write into a folder holding other files.
    targets = check_render_outputs((timeline,), tmp_path / "v.mp4", photos, tmp_path / "s", overwrite_frames=True)
    assert targets.frames_dir == photos and targets.manifest == tmp_path / "v.json"


def test_out_on_a_read_only_file_system_is_refused(tmp_path, capsys):
    ro = mount_tmpfs(tmp_path / "ro", "size=64k,ro")
    timeline = tmp_path / "t.yaml"
    timeline.write_text("end: {time: 1}\nkeyframes:\n  - {time: 0, prompt: a}\n")
    try:
        status, _, err = run(capsys, "render", str(timeline), "--out", str(ro / "v.mp4"))
        assert status == 2 and "--out: cannot write in" in err and "Read-only" in err
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# --- 2. the store marks itself; prune deletes only its own frames ---------------------------


def test_prune_refuses_an_unmarked_folder_and_spares_lookalikes(tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text("model: toy\ndevice: cpu\nend: {time: 1}\nkeyframes:\n  - {time: 0, prompt: a}\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.tmp").write_text("my notes")
    (mine / f"{'ab' * 32}.frame").write_text("a file that only looks like a key")
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "store", str(timeline), "--prune", "--out", str(tmp_path / "x.mp4"))
    assert status == 2 and "not a latentwalk frame store" in err  # the default store does not exist
    assert main(["render", str(timeline), "--store", str(mine), "--out", str(tmp_path / "x.mp4")]) == 2
    assert snapshot(tmp_path) == before
    # Once marked, prune removes frames and its own temp files, never lookalikes.
    store = FrameStore(tmp_path / "store")
    frame = np.full((8, 8, 3), 7, np.uint8)
    store.save("c" * 64, frame)
    (store.root / "notes.tmp").write_text("mine too")
    (store.root / f"{'d' * 64}.frame").write_text("not a frame")
    (store.root / f".{'e' * 64}.frame.abc123.tmp").write_bytes(b"a killed write")
    removed = store.prune(set())
    assert (removed.frames, removed.temp_files) == (1, 1)
    assert sorted(p.name for p in store.root.iterdir()) == sorted([MARKER, "notes.tmp", f"{'d' * 64}.frame"])


# --- 3. stored frames are verified -------------------------------------------------------------


def test_corrupt_or_foreign_frames_are_misses_never_reused(tmp_path, caplog):
    store = FrameStore(tmp_path / "store")
    shape = (16, 24, 3)
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    store.save("0" * 64, frame)
    good = store.path("0" * 64).read_bytes()
    header = bytearray(good)
    header[9] ^= 1  # the stored height
    np_pickle = pickle.dumps(frame)
    misfiled = encode_frame(frame, "f" * 64)  # another key's frame
    corruptions = {"header": bytes(header), "random": os.urandom(len(good)), "pickle": np_pickle, "misfiled": misfiled, "short": good[:40]}
    assert store.has("0" * 64, shape) and np.array_equal(store.load("0" * 64, shape), frame)
    for i, (name, data) in enumerate(corruptions.items(), start=1):
        key = str(i) * 64
        store.path(key).write_bytes(data)
        assert not store.has(key, shape), name  # the header tells, no pixels read
        with pytest.raises(UserError, match=f"{key}.frame"):
            store.load(key, shape)
    keys = [str(i) * 64 for i in range(1, len(corruptions) + 1)]
    assert store.rejected == [k for k in keys for _ in range(2)]  # once by has, once by load
    assert len([r for r in caplog.records if "rendering it again" in r.getMessage()]) == len(corruptions)
    assert not store.path(keys[3]).exists()  # the misfiled frame is ours: load removed it
    assert all(store.path(k).exists() for k in keys[:3] + keys[4:])  # foreign files stay


def test_damaged_pixels_pass_planning_and_fail_loading(tmp_path):
    store = FrameStore(tmp_path / "store")
    shape = (16, 24, 3)
    frame = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    store.save("a" * 64, frame)
    flipped = bytearray(store.path("a" * 64).read_bytes())
    flipped[-1] ^= 0xFF  # same size, same header, one pixel changed
    store.path("a" * 64).write_bytes(bytes(flipped))
    assert store.has("a" * 64, shape)  # planning reads headers only
    with pytest.raises(UserError, match=r"a{64}\.frame: checksum mismatch .*removed it, so the next render makes it again"):
        store.load("a" * 64, shape)
    assert not store.path("a" * 64).exists() and not store.has("a" * 64, shape)


def test_a_corrupt_stored_frame_is_reported_and_rendered_again_in_the_same_run(tiny_model_dir, tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(tiny_timeline(tiny_model_dir, frames=4))
    out = tmp_path / "t.mp4"
    assert main(["render", str(timeline), "--out", str(out), "--quiet"]) == 0
    store = FrameStore(tmp_path / "t.frames")
    key = sorted(store.keys())[0]
    good = store.path(key).read_bytes()
    video = out.read_bytes()
    damaged = bytearray(good)
    damaged[100] ^= 0x01  # a pixel: the header still matches, so planning reuses the frame
    store.path(key).write_bytes(bytes(damaged))
    capsys.readouterr()
    status, out_text, err = run(capsys, "render", str(timeline), "--out", str(out), "--quiet")
    assert status == 0 and key in err and "checksum" in err and "rendering it again" in err  # found when read, made again
    assert "3 frames reused, 1 rendered" in out_text
    assert store.path(key).read_bytes() == good  # re-rendered bit-identically
    assert out.read_bytes() == video  # the same frames, so the same video


# --- 4. atomic and exclusive outputs ------------------------------------------------------------


def test_a_held_lock_names_its_holder(tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text("end: {time: 1}\nkeyframes:\n  - {time: 0, prompt: a}\n")
    out = tmp_path / "t.mp4"
    with file_lock(tmp_path / ".t.mp4.lock", "the video"):
        status, _, err = run(capsys, "render", str(timeline), "--out", str(out))
    assert status == 2 and f"pid {os.getpid()}" in err and "--wait" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]  # no store, no lock file left


def test_two_concurrent_renders_of_one_timeline(tiny_model_dir, tmp_path):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(tiny_timeline(tiny_model_dir, frames=24))
    out = tmp_path / "t.mp4"
    cmd = [sys.executable, "-m", "latentwalk.cli", "render", str(timeline), "--out", str(out), "--quiet"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    lock = tmp_path / ".t.mp4.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = subprocess.run(cmd, capture_output=True, text=True, env=cli_env())
    assert first.poll() is None, "the first render ended before the second started: the lock was not tested"
    waiting = subprocess.Popen(cmd + ["--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    assert first.wait() == 0 and first.stderr.read() == ""  # --quiet: no library chatter either
    assert [line.split()[:2] for line in first.stdout.read().splitlines()] == [["wrote", str(out)], ["0", "frames"], ["manifest", str(out.with_suffix(".json"))]]
    assert waiting.wait() == 0, waiting.stderr.read()
    assert busy.returncode == 2 and f"pid {first.pid}" in busy.stderr and "Traceback" not in busy.stderr
    assert "24 frames reused, 0 rendered" in waiting.stdout.read()  # the waiter found every frame stored
    assert probe(out).frames == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.frames", "t.json", "t.mp4", "t.yaml"]


def test_a_full_disk_never_replaces_the_earlier_video(tiny_model_dir, tmp_path, capsys):
    disk = mount_tmpfs(tmp_path / "disk", "size=1m")
    try:
        timeline = disk / "t.yaml"
        timeline.write_text(tiny_timeline(tiny_model_dir, frames=40))
        out = disk / "t.mp4"
        assert main(["render", str(timeline), "--out", str(out), "--quiet"]) == 0
        capsys.readouterr()
        size = out.stat().st_size
        assert size > 8192, "the video must be bigger than the space left below"
        stat = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 8192))  # two pages left
        before = snapshot(disk)
        status, _, err = run(capsys, "render", str(timeline), "--out", str(out), "--quiet")
        assert status == 2 and "no space left on device" in err and "untouched" in err
        assert snapshot(disk) == before  # the video, manifest and frames as they were; no partial file
        assert probe(out).frames == 40
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def mount_tmpfs(folder: Path, options: str) -> Path:
    """A small tmpfs at `folder`, or skip the test saying why (needs root and mount rights)."""
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'})"
        print(reason)
        pytest.skip(reason)
    return folder


# --- 5. bounds before work -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, needle",
    [
        ("width: 100000\n", r"t.yaml:1: width: must be at most 4096, got 100000"),
        ("fps: 1.0e+9\n", r"t.yaml:1: fps: must be at most 240"),
        ("steps: 1.0e+9\n", r"t.yaml:1: steps: must be at most 1000"),
        ("batch_size: 100000000\n", r"t.yaml:1: batch_size: must be at most 256"),
        ("audio: {bpm: 1.0e+9}\n", r"t.yaml:1: audio.bpm: must be at most 400"),
        ("fps: 240\naudio: {bpm: 400}\nend: {bar: 2000000}\n", r"t.yaml:3: end.bar: must be at most 1e\+06"),
        ("fps: 240\naudio: {bpm: 400}\nend: {bar: 100000}\n", r"t.yaml:3: end.bar: the video would have 14,400,000 frames"),
    ],
)
def test_numbers_out_of_range_are_refused_with_field_and_limit(line, needle, tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    body = "keyframes:\n  - {time: 0, prompt: a}\n"
    timeline.write_text(line + ("" if "end:" in line else "end: {time: 1}\n") + body)
    status, _, err = run(capsys, "render", str(timeline), "--out", str(tmp_path / "t.mp4"))
    assert status == 2 and re.search(needle, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_sweep_counts_are_bounded(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("prompt: a {w}\nx: {param: w, range: [0, 1, 1.0e+9]}\n")
    status, _, err = run(capsys, "sweep", str(sweep))
    assert status == 2 and "s.yaml:2: x.range[2]: must be at most 10000" in err
    sweep.write_text("prompt: a\nseeds: {count: 1000000000}\n")
    status, _, err = run(capsys, "sweep", str(sweep))
    assert status == 2 and "s.yaml:2: seeds.count: must be at most 10000" in err


def test_memory_estimate_says_what_fits():
    e = budget.estimate(512, 512, 8)
    assert e.latents == 8 * 6 * 4 * 64 * 64 * 4
    assert e.decode == 8 * 2 * 128 * 512 * 512 * 4
    assert budget.estimate(512, 512, 8, dtype_bytes=2).decode == e.decode // 2
    assert budget.estimate(4096, 4096, 1, vae_tiling=True).decode == 2 * 128 * 512 * 512 * 4
    per_frame = budget.estimate(512, 512, 1).total
    available = int(3.5 * per_frame / budget.HEADROOM)  # room for 3 frames, not 4
    budget.check_fits(512, 512, 3, available, "t.yaml:5: batch_size")
    with pytest.raises(UserError, match=r"^t.yaml:5: batch_size: 512x512 frames in batches of 4 need .* GiB .*; batch_size: 3 fits"):
        budget.check_fits(512, 512, 4, available, "t.yaml:5: batch_size")
    with pytest.raises(UserError, match="not even batch_size: 1 fits"):
        budget.check_fits(4096, 4096, 1, 2**30, "t.yaml:1: width")


# --- 6. YAML and prompt expressions -----------------------------------------------------------


def test_yaml_alias_bombs_duplicate_and_numeric_keys(tmp_path, capsys):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        laughs += f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    cases = {
        laughs + "end: {time: 1}\n": r"t.yaml:\d+: invalid YAML: the document expands to more than 100,000 values",
        "fps: 4\nend: {time: 1}\nfps: 400\n": r"t.yaml:3: fps: given twice, on line 1 and line 3; remove one",
        "fps: 4\n12: 5\nend: {time: 1}\n": r"t.yaml:2: \[12\]: unknown key '12'",  # on its own line, not line 1
        "fps: 4\n[a, b]: 5\nend: {time: 1}\n": r"t.yaml:2: .*a key must be text",
        "fps: 4\n0x1f: 5\nend: {time: 1}\n": r"t.yaml:2: .*plain digits",
    }
    for text, needle in cases.items():
        (tmp_path / "t.yaml").write_text(text + "keyframes:\n  - {time: 0, prompt: a}\n")
        start = time.perf_counter()
        status, _, err = run(capsys, "plan", str(tmp_path / "t.yaml"))
        assert status == 2 and re.search(needle, err), err
        assert time.perf_counter() - start < 10  # a bomb fails without expanding (it would take minutes)


@pytest.mark.parametrize(
    "prompt, needle",
    [
        ("(" * 10_000 + '"a"' + ")" * 10_000, "nested more than 100 levels deep at column 101"),
        ("-" * 5_000 + '"a" * 1 + 1', "cannot add a number and a prompt at column 5009"),
    ],
)
def test_deep_prompt_expressions_fail_cleanly(prompt, needle, tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(f"end: {{time: 1}}\nkeyframes:\n  - time: 0\n    prompt: '{prompt}'\n")
    status, _, err = run(capsys, "plan", str(tmp_path / "t.yaml"))
    assert status == 2 and "t.yaml:4: keyframes[0].prompt: " in err and needle in err


def test_five_thousand_minus_signs_parse():
    from latentwalk.prompts import parse_prompt

    assert parse_prompt("-" * 5_000 + '"a"') == parse_prompt('"a"')
    assert parse_prompt("-" * 5_001 + '"a"') == parse_prompt('-"a"')


# --- 7. messages name the field and line ------------------------------------------------------


def test_messages_blame_the_right_field(drum_wav, tmp_path, capsys):
    audio = drum_wav[0]  # 17 s
    cases = {
        "negative_prompt: '(\"a\" +'\nend: {time: 1}\n": "t.yaml:1: negative_prompt: unexpected end of expression",
        f"audio: {{path: {audio}, start: 30}}\n": "t.yaml:1: audio.start: 30s is past the end of the audio file",
        f"audio:\n  path: {audio}\n  end: 40\n": "t.yaml:3: audio.end: 40s is past the end of the audio file",
        "end:\n  frame: 0\n": "t.yaml:2: end.frame: the video would have no frames",
        f"audio:\n  path: {audio}\n  start: 16.99\n": "t.yaml:3: audio.start: the audio clip is 0.010s long, shorter than one frame",
    }
    for text, needle in cases.items():
        (tmp_path / "t.yaml").write_text(text + "keyframes:\n  - {time: 0, prompt: a}\n")
        status, _, err = run(capsys, "plan", str(tmp_path / "t.yaml"))
        assert status == 2 and needle in err, err


# --- 8. SIGTERM behaves like Ctrl-C ---------------------------------------------------------------


def test_sigterm_cleans_up_and_the_render_resumes(tiny_model_dir, tmp_path, capsys):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(tiny_timeline(tiny_model_dir, frames=40))
    out, store = tmp_path / "t.mp4", FrameStore(tmp_path / "t.frames")
    cmd = [sys.executable, "-m", "latentwalk.cli", "render", str(timeline), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + 120
    while len(store.keys()) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    err = proc.stderr.read()
    assert "terminated (SIGTERM)" in err and "run again to resume" in err and "Traceback" not in err
    stored = store.keys()
    assert 4 <= len(stored) < 40
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"t.yaml", "t.frames"}, names  # no partial video, no lock file
    assert not [n for n in os.listdir(store.root) if n.endswith(".tmp") or n.endswith(".lock")]
    status, text, _ = run(capsys, "render", str(timeline), "--out", str(out), "--quiet")
    assert status == 0 and f"{len(stored)} frames reused, {40 - len(stored)} rendered" in text
    assert probe(out).frames == 40


def test_a_sweep_never_writes_into_a_folder_of_other_files(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("prompt: a\nseeds: {count: 2}\n")
    (tmp_path / "holiday.jpg").write_bytes(b"a photo")
    before = snapshot(tmp_path)
    status, _, err = run(capsys, "sweep", str(sweep), "--out", str(tmp_path))
    assert status == 2 and "no latentwalk sweep.json" in err
    status, _, err = run(capsys, "sweep", str(sweep), "--out", str(tmp_path / "holiday.jpg"))
    assert status == 2 and "is a file" in err
    assert snapshot(tmp_path) == before
