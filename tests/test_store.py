"""The frame store: keys, atomic writes, reuse, pruning, and resuming a render killed mid-way."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentwalk.api import frame_plan, plan, prune_store, render
from latentwalk.errors import UserError
from latentwalk.store import HEADER, HEADER_V2, FrameStore, open_store
from latentwalk.timeline import parse_timeline

FRAMES = 40


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def test_writes_are_atomic_and_partial_files_never_read(tmp_path, monkeypatch):
    store = FrameStore(tmp_path)
    frame = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    key, other = "a" * 64, "b" * 64
    store.save(key, frame)
    assert store.has(key, frame.shape) and np.array_equal(store.load(key, frame.shape), frame)
    assert not store.has(key, (48, 64, 4))  # a frame of another size is a miss
    # A killed writer leaves a temp file: it is neither a key nor a frame, and prune removes it.
    (tmp_path / f".{other}.x1y2.tmp").write_bytes(store.path(key).read_bytes()[:100])
    assert store.keys() == {key} and not store.has(other, frame.shape)
    # A truncated file under a key's own name (a crashed filesystem) is a miss, so it is re-rendered.
    store.path(other).write_bytes(store.path(key).read_bytes()[:-1])
    assert not store.has(other, frame.shape)
    # A write that fails half-way leaves neither the key nor a temp file.
    monkeypatch.setattr(os, "fsync", lambda fd: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        store.save("c" * 64, frame)
    assert not store.path("c" * 64).exists()
    assert store.usage().temp_files == 1  # only the one planted above
    removed = store.prune({key})
    assert (removed.frames, removed.temp_files) == (1, 1) and store.keys() == {key}


def test_planning_reads_frame_headers_only(tmp_path, monkeypatch):
    store = FrameStore(tmp_path)
    frame = np.full((256, 256, 3), 9, np.uint8)
    store.save("a" * 64, frame)
    limits = []
    head = FrameStore._head
    monkeypatch.setattr(FrameStore, "_head", lambda self, path, limit: limits.append(limit) or head(self, path, limit))
    monkeypatch.setattr(FrameStore, "_read", lambda *a: pytest.fail("has() read a whole frame"))
    monkeypatch.setattr("latentwalk.store.hashlib.sha256", lambda *a: pytest.fail("has() hashed pixels"))
    assert store.has("a" * 64, frame.shape) and not store.has("b" * 64, frame.shape)
    assert limits == [HEADER.size, HEADER.size]


def v2_frame(frame: np.ndarray) -> bytes:
    """A frame in store format 2 (before frames were bound to their key)."""
    pixels = frame.tobytes()
    return HEADER_V2.pack(b"LWFRAME\x02", *frame.shape, hashlib.sha256(pixels).digest()) + pixels


def test_version_2_frames_are_read_by_folder_and_url_stores(tmp_path):
    frame = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    memory = open_store("memory://latentwalk-test/v2")
    try:
        for store in (FrameStore(tmp_path), memory):
            store.create()
            store._write(store.path("c" * 64), v2_frame(frame))
            assert store.has("c" * 64, frame.shape) and np.array_equal(store.load("c" * 64, frame.shape), frame)
            damaged = bytearray(v2_frame(frame))
            damaged[-1] ^= 1
            store._write(store.path("d" * 64), bytes(damaged))
            with pytest.raises(UserError, match="checksum mismatch"):
                store.load("d" * 64, frame.shape)
            assert "d" * 64 not in store.keys()  # removed: the next render makes it again
    finally:
        memory.fs.rm(memory.base, recursive=True)


def test_a_url_store_checks_keys_when_loading(tmp_path):
    frame = np.full((8, 8, 3), 3, np.uint8)
    memory = open_store("memory://latentwalk-test/misfiled")
    try:
        memory.save("a" * 64, frame)
        memory.fs.pipe_file(memory._fs_path(memory.path("b" * 64)), memory.fs.cat_file(memory._fs_path(memory.path("a" * 64))))
        memory.refresh()
        assert memory.has("b" * 64, frame.shape)  # a listing: sizes only
        with pytest.raises(UserError, match=r"b{64}\.frame: holds the frame of another key \(aaaa"):
            memory.load("b" * 64, frame.shape)
        assert memory.keys() == {"a" * 64}
    finally:
        memory.fs.rm(memory.base, recursive=True)


def timeline_yaml(model: Path, prompts: list[str], batch_size: int = 4) -> str:
    lines = [
        f"model: {model}",
        "width: 32",
        "height: 32",
        "fps: 10",
        "steps: 2",
        f"batch_size: {batch_size}",
        "spacing: t",  # frame counts below are video frames alone (placement probes: test_placement.py)
        "device: cpu",
        f"end: {{frame: {FRAMES}}}",
        "keyframes:",
    ]
    step = (FRAMES - 1) / (len(prompts) - 1)
    for i, prompt in enumerate(prompts):
        lines.append(f"  - {{frame: {round(i * step)}, prompt: {prompt}, seed: {i + 1}}}")
    return "\n".join(lines) + "\n"


PROMPTS = ["a cat", "a dog at night", "the sea", "a city in snow", "a forest"]


def test_editing_one_keyframe_rerenders_only_its_segments(tiny_model_dir, tmp_path):
    store = FrameStore(tmp_path / "store")
    before = parse_timeline(timeline_yaml(tiny_model_dir, PROMPTS))
    schedule = plan(before)
    keys = frame_plan(before, schedule, store).keys
    for key in keys:
        store.save(key, np.zeros((32, 32, 3), np.uint8))
    assert frame_plan(before, schedule, store).missing == ()
    edited = parse_timeline(timeline_yaml(tiny_model_dir, PROMPTS[:2] + ["the sea at sunset"] + PROMPTS[3:]))
    after = frame_plan(edited, plan(edited), store)
    missing = set(after.missing)
    # Keyframe 2 sits at frame 20 (of 0, 10, 20, 29, 39): segments 1 and 2 are frames 10-28, but
    # keyframe 1's own frame (10) does not depend on the keyframe it travels to (frames.canonical).
    assert [i for i, f in enumerate(after.inputs) if f in missing] == list(range(11, 29))
    assert len(frame_plan(before, schedule, store, fresh=True).missing) == FRAMES


@pytest.fixture(scope="module")
def full_render(tiny_model_dir, tmp_path_factory):
    """An uninterrupted render of the 40-frame timeline."""
    folder = tmp_path_factory.mktemp("full")
    path = folder / "walk.yaml"
    path.write_text(timeline_yaml(tiny_model_dir, PROMPTS))
    return render(path, folder / "walk.mp4", progress=False)


def test_render_reuses_stored_frames(full_render, tmp_path):
    assert (full_render.frames_rendered, full_render.frames_reused) == (FRAMES, 0)
    again = render(full_render.manifest.with_suffix(".yaml"), full_render.video, progress=False)
    assert (again.frames_rendered, again.frames_reused) == (0, FRAMES)
    store = json.loads(again.manifest.read_text())["store"]
    assert (store["frames_rendered"], store["frames_reused"], store["frames_stored"]) == (0, FRAMES, FRAMES)


def test_resume_after_sigkill_matches_an_uninterrupted_run(full_render, tiny_model_dir, tmp_path):
    path = tmp_path / "walk.yaml"
    path.write_text(timeline_yaml(tiny_model_dir, PROMPTS))
    out, store = tmp_path / "walk.mp4", FrameStore(tmp_path / "walk.frames")
    cmd = [sys.executable, "-m", "latentwalk.cli", "render", str(path), "--out", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while len(store.keys()) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = store.keys()
    assert 8 <= len(stored) < FRAMES, proc.stderr.read().decode()
    assert not out.exists()

    resumed = render(path, out, progress=False)
    assert (resumed.frames_rendered, resumed.frames_reused) == (FRAMES - len(stored), len(stored))
    full = FrameStore(full_render.store)
    assert store.keys() == full.keys()
    for key in full.keys():
        assert store.path(key).read_bytes() == full.path(key).read_bytes()


def test_prune_keeps_only_the_current_plan(full_render, tiny_model_dir, tmp_path):
    path = tmp_path / "walk.yaml"
    path.write_text(timeline_yaml(tiny_model_dir, PROMPTS[:4]))  # drop the last keyframe
    store_dir = tmp_path / "store"
    FrameStore(store_dir).create()
    for key in FrameStore(full_render.store).keys():
        os.link(FrameStore(full_render.store).path(key), FrameStore(store_dir).path(key))
    store, removed = prune_store(path, store_dir=store_dir)
    # Keyframes move from 0, 10, 20, 29, 39 to 0, 13, 26, 39: only the four kept keyframes' own
    # frames (t = 0, which leaves out the keyframe they travel to) keep their inputs, so their images.
    assert removed.frames == FRAMES - 4
    keys = frame_plan(parse_timeline(path.read_text()), plan(path), store).keys
    assert store.keys() == {keys[0], keys[13], keys[26], keys[39]}


def test_model_options_are_validated_and_keyed(tiny_model_dir, tmp_path):
    text = timeline_yaml(tiny_model_dir, PROMPTS)
    with pytest.raises(UserError, match=r"<timeline>:\d+: vae_tiling: expected true or false, got 'yes'"):
        parse_timeline(text + "vae_tiling: 'yes'\n")
    with pytest.raises(UserError, match="cpu_offload: .*device is 'cpu'"):
        parse_timeline(text + "cpu_offload: true\n")
    store = FrameStore(tmp_path)
    plain = parse_timeline(text)
    tiled = parse_timeline(text + "vae_tiling: true\n")
    offloaded = parse_timeline(text.replace("device: cpu", "device: auto") + "cpu_offload: true\n")
    keys = [frame_plan(t, plan(t), store, device="cpu").keys[0] for t in (plain, tiled, offloaded)]
    assert keys[0] != keys[1] and keys[0] == keys[2]  # offloading moves weights, not numbers
