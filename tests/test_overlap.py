"""Decoding batch k-1 on a worker thread while batch k denoises: same frames, clean failures."""

import threading
import time

import pytest

import latentwalk.engine
from latentwalk.api import render
from latentwalk.engine import run_overlapped
from latentwalk.store import FrameStore

FRAMES = 10  # batches of 4: the last one is padded


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def write_timeline(folder, model) -> object:
    path = folder / "walk.yaml"
    path.write_text(
        f"model: {model}\nwidth: 32\nheight: 32\nfps: 10\nsteps: 2\nbatch_size: 4\ndevice: cpu\n"
        "spacing: t\n"  # counts below are the video frames alone (no placement probes)
        f"end: {{frame: {FRAMES}}}\nkeyframes:\n"
        "  - {frame: 0, prompt: a cat, seed: 1}\n"
        "  - {frame: 5, prompt: a dog at night, seed: 2}\n"
        "  - {frame: 9, prompt: the sea, seed: 3}\n"
    )
    return path


def test_overlapped_render_equals_sequential(tiny_model_dir, tmp_path):
    path = write_timeline(tmp_path, tiny_model_dir)
    on = render(path, tmp_path / "on.mp4", progress=False, overlap=True)
    off = render(path, tmp_path / "off.mp4", progress=False, overlap=False)
    assert on.frames_rendered == off.frames_rendered == FRAMES
    a, b = FrameStore(on.store), FrameStore(off.store)
    assert len(a.keys()) == FRAMES and a.keys() == b.keys()
    for key in a.keys():
        assert a.path(key).read_bytes() == b.path(key).read_bytes()


def test_run_overlapped_keeps_order_and_bounds_the_queue():
    consumed, ahead = [], []
    produced = 0

    def items():
        nonlocal produced
        for i in range(20):
            produced += 1
            ahead.append(produced - len(consumed))
            yield i

    def consume(i):
        time.sleep(0.002)
        consumed.append(i)

    run_overlapped(items(), consume, depth=2)
    assert consumed == list(range(20))
    assert max(ahead) <= 2 + 2  # queued items, plus the one being consumed and the one being made


def test_worker_errors_reach_the_caller():
    def consume(i):
        if i == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_overlapped(iter(range(100)), consume)


def test_interrupt_stops_the_worker():
    def items():
        yield from range(3)
        raise KeyboardInterrupt

    before = threading.active_count()
    consumed = []
    with pytest.raises(KeyboardInterrupt):
        run_overlapped(items(), consumed.append)
    assert threading.active_count() == before


def test_interrupted_render_leaves_no_partial_video_and_keeps_frames(tiny_model_dir, tmp_path, monkeypatch):
    path = write_timeline(tmp_path, tiny_model_dir)
    denoise, calls = latentwalk.engine.denoise, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return denoise(*args, **kwargs)

    monkeypatch.setattr(latentwalk.engine, "denoise", interrupted)
    out = tmp_path / "walk.mp4"
    with pytest.raises(KeyboardInterrupt):
        render(path, out, progress=False, overlap=True)
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*partial*")) == []
    assert len(FrameStore(tmp_path / "walk.frames").keys()) == 4  # batch 1 was decoded and stored
