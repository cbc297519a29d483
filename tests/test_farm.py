"""The Ray farm and the fsspec store: a local two-worker cluster renders the bytes one process renders."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from latentwalk.api import render
from latentwalk.chunks import FAULT_ENV, count_packets
from latentwalk.cli import main
from latentwalk.encode import ffmpeg_exe
from latentwalk.errors import UserError
from latentwalk.store import FrameStore, FsspecFrameStore, open_store
from latentwalk.timeline import load_timeline, parse_timeline

ray = pytest.importorskip("ray")

FRAMES = 16  # batches of 2: 8 batches, enough for both workers and for a kill mid-render
CHUNK = 5  # the farm encodes chunks of 5, 5, 5 and 1 frames
WORKER_TITLE = b"ray::FrameWorker.render"  # Ray's process title while an actor runs `render`


@pytest.fixture(autouse=True, scope="module")
def cluster(one_thread):
    """2 CPUs, 2 workers of 1 CPU (1 torch thread each, as the single-process reference uses)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_timeline(folder: Path, model: Path, extra: str = "", audio: Path | None = None) -> Path:
    path = folder / "walk.yaml"
    # A clip from 1 s into the song: a farm's video must carry the same stretch of audio.
    sound = f"audio: {{path: {audio}, start: 1.0, end: 4.0, bpm: 120}}\n" if audio else ""
    path.write_text(
        # spacing: t: these tests count frames rendered, and perceptual placement adds probes
        f"model: {model}\nwidth: 32\nheight: 32\nfps: 8\nsteps: 4\nbatch_size: 2\ndevice: cpu\nspacing: t\nchunk_frames: {CHUNK}\n{extra}{sound}"
        f"end: {{frame: {FRAMES}}}\nkeyframes:\n"
        "  - {frame: 0, prompt: a cat, seed: 1}\n"
        "  - {frame: 7, prompt: a dog at night, seed: 2}\n"
        "  - {frame: 15, prompt: the sea, seed: 3}\n"
    )
    return path


@pytest.fixture(scope="module")
def reference(tiny_model_dir, drum_wav, tmp_path_factory):
    """The single-process render (one streaming encoder, with audio) every farm render must equal."""
    folder = tmp_path_factory.mktemp("reference")
    path = write_timeline(folder, tiny_model_dir, audio=drum_wav[0])
    return path, render(path, folder / "walk.mp4", progress=False)


def stream_facts(video: Path) -> tuple[int, list[str], bytes]:
    """(frames, each frame's time, the AAC packets' bytes) of a video."""
    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(video), "-map", "0:v", "-vf", "showinfo", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    audio = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:a?", "-c", "copy", "-f", "adts", "-"],
                           capture_output=True).stdout
    return count_packets(video), re.findall(r"pts_time:([\d.]+)", err), audio


def pixels(video: Path) -> np.ndarray:
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 32, 32, 3).astype(np.float64)


def assert_same_video(farm: Path, local: Path, frames: int = FRAMES) -> None:
    """A farm's joined chunks against one process's streaming encoder: the same frames, times and audio, pixels within x264's tolerance."""
    ours, theirs = stream_facts(farm), stream_facts(local)
    assert ours[0] == theirs[0] == frames and len(ours[1]) == frames
    assert ours[1] == theirs[1] and ours[2] == theirs[2]
    a, b = pixels(farm), pixels(local)
    mse = np.mean((a - b) ** 2)
    assert a.shape == b.shape and (mse == 0 or 10 * np.log10(255**2 / mse) > 30) and np.abs(a - b).mean() < 4


def frame_bytes(store) -> dict[str, bytes]:
    store = open_store(str(store))
    return {key: Path(store.path(key)).read_bytes() for key in store.keys()}


def test_farm_render_equals_single_process(reference, tmp_path):
    path, local = reference
    farm = render(path, tmp_path / "walk.mp4", progress=False, executor="ray")
    assert (farm.frames_rendered, farm.frames_reused) == (FRAMES, 0)
    assert frame_bytes(farm.store) == frame_bytes(local.store) and len(frame_bytes(local.store)) == FRAMES
    # Encoded on the cluster in 4 chunks, joined here: the single-process frame count, times and audio.
    assert_same_video(farm.video, local.video)
    assert stream_facts(local.video)[2] and farm.farm["chunks"] | {"encode_s": 0, "folder": ""} == {
        "chunks": 4, "chunk_frames": CHUNK, "encoded": 4, "reused": 0, "encode_s": 0, "retries": [], "folder": ""}
    assert sorted(p.name for p in (tmp_path / "walk.chunks").iterdir())[0] == ".latentwalk-chunks"
    workers = json.loads(farm.manifest.read_text())["farm"]["workers"]
    # Work stealing: both workers took batches, and together they rendered every frame once.
    assert len(workers) == 2 and all(w["frames"] >= 2 and w["frames_per_s"] > 0 for w in workers)
    assert sum(w["frames"] for w in workers) == FRAMES and sum(w["batches"] for w in workers) == FRAMES // 2
    assert farm.farm["retries"] == [] and farm.farm["cpu_threads"] == 1


def test_second_run_reuses_every_frame_and_resumes_what_is_missing(reference, tmp_path):
    path, local = reference
    # The farm's keys are the single-process keys: a farm render of a local store renders nothing.
    again = render(path, tmp_path / "again.mp4", progress=False, executor="ray", store_dir=local.store)
    assert (again.frames_rendered, again.frames_reused) == (0, FRAMES) and again.farm["workers"] == []
    assert again.farm["chunks"]["encoded"] == 4  # from the stored frames, on the cluster
    assert_same_video(again.video, local.video)
    # Resuming re-encodes only the chunks that are not whole: one deleted, one cut short on disk.
    chunks = sorted(Path(again.farm["chunks"]["folder"]).glob("*.mp4"))
    assert len(chunks) == 4
    chunks[0].unlink()
    chunks[1].write_bytes(chunks[1].read_bytes()[:-200])
    third = render(path, tmp_path / "third.mp4", progress=False, executor="ray", store_dir=local.store)
    assert (third.farm["chunks"]["encoded"], third.farm["chunks"]["reused"]) == (2, 2)
    # The same chunks, joined alike: the same stream packet for packet, pixel for pixel.
    assert stream_facts(third.video) == stream_facts(again.video) and np.array_equal(pixels(third.video), pixels(again.video))
    # --prune keeps only this render's chunks (and frames).
    fourth = render(path, tmp_path / "fourth.mp4", progress=False, executor="ray", store_dir=local.store, chunk_frames=8, prune=True)
    assert fourth.farm["chunks"]["encoded"] == 2 and len(list(Path(fourth.farm["chunks"]["folder"]).glob("*.mp4"))) == 2
    assert_same_video(fourth.video, local.video)
    # A driver killed mid-render leaves part of the store: the re-run renders exactly the rest.
    store = tmp_path / "partial.frames"
    store.mkdir()
    keys = sorted(FrameStore(local.store).keys())
    for key in keys[:11]:
        partial = FrameStore(store)
        partial.create()
        partial.path(key).write_bytes(FrameStore(local.store).path(key).read_bytes())
    resumed = render(path, tmp_path / "resumed.mp4", progress=False, executor="ray", store_dir=store)
    assert (resumed.frames_rendered, resumed.frames_reused) == (FRAMES - 11, 11)
    assert frame_bytes(store) == frame_bytes(local.store)
    assert_same_video(resumed.video, local.video)


def kill_first_rendering_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first process Ray titles as running FrameWorker.render: a worker mid-batch."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(WORKER_TITLE):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.005)


def test_worker_killed_mid_batch_is_recovered(reference, tmp_path, capsys):
    path, local = reference
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_first_rendering_worker, args=(stop, killed), daemon=True)
    watcher.start()
    try:
        farm = render(path, tmp_path / "walk.mp4", progress=True, executor="ray")
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1
    retries = farm.farm["retries"]
    assert len(retries) == 1 and retries[0]["pid"] == killed[0] and retries[0]["frames"] == 2
    assert "died mid-batch" in capsys.readouterr().err  # the driver says so
    # The lost batch was rendered again, and nothing differs from one process.
    assert farm.frames_rendered == FRAMES and sum(w["frames"] for w in farm.farm["workers"]) == FRAMES
    assert frame_bytes(farm.store) == frame_bytes(local.store)
    assert_same_video(farm.video, local.video)


def test_encoder_killed_failed_or_truncated_mid_chunk_is_encoded_again(reference, tmp_path, monkeypatch, capsys):
    path, local = reference
    # Chunk 1's encoder SIGKILLs its own worker half-way through; chunk 2's comes back a frame
    # short; chunk 0's ffmpeg exits non-zero. Each only on its first attempt.
    monkeypatch.setenv(FAULT_ENV, "kill@1,truncate@2,fail@0")
    farm = render(path, tmp_path / "walk.mp4", progress=True, executor="ray")
    retries = {r["chunk"]: r["reason"] for r in farm.farm["chunks"]["retries"]}
    assert sorted(retries) == [0, CHUNK, 2 * CHUNK] and farm.farm["chunks"]["encoded"] == 4
    assert "died mid-chunk" in retries[CHUNK] and "ffmpeg failed" in retries[0] and "came back with 4 frames" in retries[2 * CHUNK]
    err = capsys.readouterr().err
    assert "encoding frames 5-9 again" in err and "encoding frames 10-14 again" in err and "encoding frames 0-4 again" in err
    assert_same_video(farm.video, local.video)
    assert frame_bytes(farm.store) == frame_bytes(local.store)


def test_a_chunk_that_always_fails_or_a_worker_without_ffmpeg_keeps_the_earlier_video(reference, tmp_path, monkeypatch, capsys):
    path, local = reference
    out = tmp_path / "walk.mp4"
    first = render(path, out, progress=False, executor="ray", store_dir=local.store, chunk_frames=8)
    before = out.read_bytes()
    # A chunk whose encode fails every time: retried, then one clear error (exit 2, no traceback).
    monkeypatch.setenv(FAULT_ENV, "fail@1*")
    args = ["render", str(path), "--out", str(out), "--store", str(local.store), "--ray", "--chunk-frames", "4", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the chunk of frames 4-7 failed 3 times" in err and "ffmpeg failed" in err and "Traceback" not in err
    # A worker without ffmpeg: said at once, with what to install.
    monkeypatch.setenv(FAULT_ENV, "noffmpeg@0*")
    assert main(args[:-2] + ["6", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no ffmpeg on this machine" in err and "pip install imageio-ffmpeg" in err and "node" in err
    assert out.read_bytes() == before and first.frames_rendered == 0
    assert not list(tmp_path.glob(".walk.*"))  # no partial video or chunk list left


def test_a_full_store_stops_the_render_and_keeps_the_frames_and_the_earlier_video(reference, tmp_path, monkeypatch, capsys):
    import shutil

    path, local = reference
    out = tmp_path / "walk.mp4"
    shutil.copy(local.video, out)  # an earlier video, with its manifest
    shutil.copy(local.manifest, out.with_suffix(".json"))
    before = out.read_bytes()
    # The worker that renders batch 3 finds the store full (ENOSPC) when it saves its frames.
    monkeypatch.setenv(FAULT_ENV, "store-full@3")
    assert main(["render", str(path), "--out", str(out), "--ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "frames already stored are kept" in err and "Traceback" not in err
    assert out.read_bytes() == before and not list(tmp_path.glob(".walk.*partial*"))
    # What the other workers stored stands, verified: the next run renders only the rest.
    kept = FrameStore(tmp_path / "walk.frames")
    assert 0 < len(kept.keys()) < FRAMES and all(kept.load(k, (32, 32, 3)).shape == (32, 32, 3) for k in kept.keys())
    assert frame_bytes(tmp_path / "walk.frames").items() <= frame_bytes(local.store).items()


def test_a_farm_that_starts_its_own_cluster_prints_only_latentwalk_lines(reference, tmp_path):
    """No Ray banner (local instance, token authentication), worker log or coloured retry line in a farm render's stderr."""
    path, local = reference
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "latentwalk.cli", "render", str(path), "--out", str(tmp_path / "walk.mp4"), "--store", str(local.store),
           "--ray", "--ray-workers", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith(("[latentwalk]", "latentwalk:")) for line in lines), lines
    assert "\x1b[" not in run.stderr and "wrote" in run.stdout
    assert re.search(r"^video: 4 chunks of 5 frames, \d encoded on the cluster, \d reused$", run.stdout, re.M)


def test_configuration_errors_fail_before_work(reference, tmp_path, capsys):
    path, _ = reference
    out = tmp_path / "bad.mp4"
    # Nothing listens on port 1: the probe fails in milliseconds, with exit 2 and no traceback.
    assert main(["render", str(path), "--out", str(out), "--quiet", "--ray", "127.0.0.1:1"]) == 2
    assert "no Ray cluster answers at '127.0.0.1:1'" in capsys.readouterr().err
    assert main(["render", str(path), "--out", str(out), "--quiet", "--ray", "not an address"]) == 2
    assert "expected auto, host:port or ray://host:port" in capsys.readouterr().err
    with pytest.raises(UserError, match="ray_workers: 3 workers need 3 CPUs, but the cluster has 0 GPUs and 2 CPUs"):
        render(path, out, progress=False, executor="ray", ray_workers=3)
    with pytest.raises(UserError, match="lives in one process's memory"):
        render(path, out, progress=False, executor="ray", store_dir="memory://frames")
    assert not out.exists() and not (tmp_path / "bad.frames").exists()


def test_timeline_settings_choose_the_executor(tiny_model_dir, tmp_path):
    settings = parse_timeline(write_timeline(tmp_path, tiny_model_dir, "executor: ray\nray_address: auto\nray_cpus_per_worker: 2\n").read_text()).settings
    assert (settings.executor, settings.ray_address, settings.ray_cpus_per_worker, settings.ray_workers) == ("ray", "auto", 2, None)
    with pytest.raises(UserError, match=r"<timeline>:10: ray_address: only used with executor: ray"):
        parse_timeline(write_timeline(tmp_path, tiny_model_dir, "ray_address: auto\n").read_text())
    with pytest.raises(UserError, match=r"<timeline>:10: executor: unknown value 'dask'"):
        parse_timeline(write_timeline(tmp_path, tiny_model_dir, "executor: dask\n").read_text())


# --- the store through fsspec ----------------------------------------------------------------------


def test_memory_store_round_trips_the_bytes_of_a_folder_store(tmp_path):
    rng = np.random.default_rng(0)
    frames = {f"{i:064x}": rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for i in range(3)}
    folder, memory = FrameStore(tmp_path), open_store("memory://latentwalk-test/frames")
    assert isinstance(memory, FsspecFrameStore) and memory.atomic_put
    assert not memory.has(next(iter(frames)), (24, 40, 3)) and memory.keys() == set()
    for key, frame in frames.items():
        folder.save(key, frame)
        memory.save(key, frame)
    assert memory.keys() == set(frames) and memory.usage() == folder.usage()
    for key, frame in frames.items():
        # At a URL, has() works from the listing's sizes: a file bigger than any frame of the shape is a miss
        # (a smaller shape); a compressed frame of a bigger shape could have this size, so load() checks the header.
        assert memory.has(key, frame.shape) and not memory.has(key, (8, 8, 3))
        assert np.array_equal(memory.load(key, frame.shape), frame)
        assert memory.fs.cat_file(memory.path(key)) == folder.path(key).read_bytes()  # the same files
    # A fresh handle sees what another one stored; prune keeps exactly what it is told to.
    keep = sorted(frames)[:1]
    removed = open_store("memory://latentwalk-test/frames").prune(keep)
    assert (removed.frames, removed.temp_files) == (2, 0) and memory.keys() == set(keep)
    memory.fs.rm(memory.base, recursive=True)


def test_non_object_filesystems_write_through_a_temp_name(tmp_path, monkeypatch):
    store = FsspecFrameStore(f"file://{tmp_path}/frames")  # open_store would use a plain folder store
    assert not store.atomic_put
    frame = np.full((8, 16, 3), 7, dtype=np.uint8)
    store.save("a" * 64, frame)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [".latentwalk-store", "a" * 64 + ".frame"]
    assert np.array_equal(FrameStore(tmp_path / "frames").load("a" * 64, frame.shape), frame)
    # A move that fails leaves neither the key nor the temp file.
    monkeypatch.setattr(store.fs, "mv", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        store.save("b" * 64, frame)
    assert store.keys() == {"a" * 64} and store.usage().temp_files == 0


def test_local_render_into_a_memory_store_then_reuses_it(reference, tmp_path):
    path, local = reference
    url = "memory://latentwalk-render/walk.frames"
    first = render(path, tmp_path / "a.mp4", progress=False, store_dir=url)
    second = render(path, tmp_path / "b.mp4", progress=False, store_dir=url)
    assert first.store == url and (first.frames_rendered, second.frames_rendered, second.frames_reused) == (FRAMES, 0, FRAMES)
    memory = open_store(url)
    assert {k: memory.fs.cat_file(memory.path(k)) for k in memory.keys()} == frame_bytes(local.store)
    # The same stream, packet for packet and pixel for pixel (the videos' metadata names their store).
    assert stream_facts(second.video) == stream_facts(local.video) and np.array_equal(pixels(second.video), pixels(local.video))
    memory.fs.rm(memory.base, recursive=True)


# --- feedback timelines: one chain per worker ------------------------------------------------------

FB_FRAMES = 12  # two chains of 6: frames 0-5 and, after the cut, 6-11
FB_CHAIN = 6


def write_feedback_timeline(folder: Path, model: Path) -> Path:
    """Two chains of the same strength: one process denoises their rows side by side in one batch of 2.

    Cadence 2 diffuses frames 0, 2, 4, 5 of each chain and fills the rest; the colour reference of
    frame 11 is keyframe 2's own image (a reference index the farm re-bases to its chain).
    """
    path = folder / "fb.yaml"
    path.write_text(
        f"mode: feedback\nmodel: {model}\nwidth: 32\nheight: 32\nfps: 8\nsteps: 2\nbatch_size: 2\ndevice: cpu\nchunk_frames: 4\n"
        "strength: 0.6\nzoom: 1.05\nangle: 2\ncadence: 2\ncoherence: {colour: 0.5, reference: keyframe}\n"
        f"end: {{frame: {FB_FRAMES}}}\nkeyframes:\n"
        "  - {frame: 0, prompt: a cat, seed: 1}\n"
        f"  - {{frame: {FB_CHAIN}, prompt: the sea at night, seed: 2, cut: true}}\n"
        "  - {frame: 11, prompt: a city in snow, seed: 3}\n"
    )
    return path


@pytest.fixture(scope="module")
def feedback_reference(tiny_model_dir, tmp_path_factory):
    """The single-process feedback render the farm must equal, and the seeds of each batch's rows."""
    import latentwalk.engine as engine

    folder = tmp_path_factory.mktemp("feedback")
    path = write_feedback_timeline(folder, tiny_model_dir)
    batch_inputs, seeds = engine.batch_inputs, []

    def spy(rows, *args, **kwargs):
        seeds.append({r.seed_a for r in rows})
        return batch_inputs(rows, *args, **kwargs)

    engine.batch_inputs = spy
    try:
        result = render(path, folder / "fb.mp4", progress=False)
    finally:
        engine.batch_inputs = batch_inputs
    return path, result, seeds


def test_feedback_chains_render_one_per_worker_to_the_single_process_bytes(feedback_reference, tmp_path):
    path, local, local_seeds = feedback_reference
    farm = render(path, tmp_path / "fb.mp4", progress=False, executor="ray")
    assert (farm.frames_rendered, farm.frames_reused) == (FB_FRAMES, 0) == (local.frames_rendered, local.frames_reused)
    # Locally a round's rows of both chains share one padded batch (chain one travels from seed 1,
    # chain two from seed 2); on the farm each chain's rows are padded alone. Rows are independent,
    # so the pixels are the same.
    assert sum(seeds == {1, 2} for seeds in local_seeds) >= 3
    # The store: the 12 video frames and frame 11's independent render (its colour reference).
    assert frame_bytes(farm.store) == frame_bytes(local.store) and len(frame_bytes(local.store)) == FB_FRAMES + 1
    assert_same_video(farm.video, local.video, FB_FRAMES)
    # One chain per worker, streamed back round by round: 4 diffused frames, their in-betweens with them.
    workers = farm.farm["workers"]
    assert sorted(w["frames"] for w in workers) == [FB_CHAIN, FB_CHAIN]
    assert sorted(w["batches"] for w in workers) == [4, 4] and farm.farm["retries"] == []
    chains = json.loads(farm.manifest.read_text())["feedback"]["chains"]
    assert [(c["first_frame"], c["diffused"], c["rendered"]) for c in chains] == [(0, 4, FB_CHAIN), (FB_CHAIN, 4, FB_CHAIN)]
    video_keys = set(sum(chain_keys(path, local), []))
    assert len(video_keys) == FB_FRAMES and len(frame_bytes(local.store).keys() - video_keys) == 1


def chain_keys(path: Path, result) -> list[list[str]]:
    """Each chain's video keys, as the single-process render stored them."""
    from latentwalk.api import chain_plan, frame_plan

    timeline, store = load_timeline(path), FrameStore(result.store)
    work = chain_plan(timeline, result.plan, frame_plan(timeline, result.plan, store), store).work
    return [[work.keys[i] for i in chain] for chain in work.chains]


def kill_chain_worker_after(store: Path, chains: list[list[str]], n_stored: int, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL a worker running a feedback chain once every chain has `n_stored` frames in the store."""
    while not stop.is_set() and min(sum((store / f"{k}.frame").exists() for k in keys) for keys in chains) < n_stored:
        time.sleep(0.005)
    while not stop.is_set() and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(WORKER_TITLE + b"_chain"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.005)


def test_worker_killed_mid_chain_resumes_the_chain_from_its_last_stored_frame(feedback_reference, tmp_path, capsys):
    path, local, _ = feedback_reference
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_chain_worker_after, args=(tmp_path / "fb.frames", chain_keys(path, local), 3, stop, killed), daemon=True)
    watcher.start()
    try:
        farm = render(path, tmp_path / "fb.mp4", progress=True, executor="ray")
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1
    [retry] = farm.farm["retries"]
    assert retry["pid"] == killed[0] and retry["chain"] in (0, FB_CHAIN)
    # The chain resumed after the frames it had stored, not from its first frame.
    assert retry["chain"] < retry["resumed_at"] < retry["chain"] + FB_CHAIN
    assert retry["frames"] == retry["chain"] + FB_CHAIN - retry["resumed_at"]
    assert "died mid-chain" in capsys.readouterr().err
    # No frame rendered twice: a restart from the chain's first frame would count more than 12. (The
    # killed worker's last round, a diffused frame and its in-between, may be stored but unreported.)
    assert FB_FRAMES - 2 <= sum(w["frames"] for w in farm.farm["workers"]) <= FB_FRAMES
    assert frame_bytes(farm.store) == frame_bytes(local.store)
    assert_same_video(farm.video, local.video, FB_FRAMES)
