"""Chunked encoding (latentwalk/chunks.py): chunks from a store, joined without re-encoding, against one encoder."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from latentwalk.chunks import ChunkError, ChunkFolder, ChunkSettings, NoFFmpeg, count_packets, encode_chunk, join, plan_chunks
from latentwalk.encode import AudioClip, VideoWriter, ffmpeg_exe
from latentwalk.store import FrameStore
from latentwalk.toy.soundtrack import drum_track, write_wav

SIZE, FPS, FRAMES, CHUNK = 48, 8.0, 19, 6  # chunks of 6, 6, 6 and 1 frames: a lone last frame is the hard case


def moving_frames(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """A drifting gradient with grain: content x264 codes like a render's."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    return [np.clip((np.stack([x + i / n, y, (x + y) / 2], -1) % 1.0) * 255 + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
            for i in range(n)]


def decoded(path: Path, size: int) -> np.ndarray:
    """(frames, H, W, 3) uint8 pixels of a video's stream."""
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)


def frame_times(path: Path) -> list[str]:
    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v", "-vf", "showinfo", "-f", "null", "-"], capture_output=True, text=True).stderr
    return re.findall(r"pts_time:([\d.]+)", err)


def audio_packets(path: Path) -> bytes:
    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy", "-f", "adts", "-"], capture_output=True, check=True).stdout


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse else float("inf")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding the frames, their keys in video order (one held frame), an audio clip, and the single-encoder video."""
    folder = tmp_path_factory.mktemp("chunks")
    frames = moving_frames(FRAMES, SIZE)
    frames[10] = frames[9]  # a held frame: the same key twice
    keys = [f"{i:064x}" for i in range(FRAMES)]
    keys[10] = keys[9]
    store = FrameStore(folder / "walk.frames")
    for key, frame in zip(keys, frames):
        store.save(key, frame)
    wav = write_wav(drum_track(120.0, 3), folder / "drums.wav")  # 6 s
    clip = AudioClip(wav, 0.5, FRAMES / FPS)
    with VideoWriter(folder / "single.mp4", SIZE, SIZE, FPS, clip) as writer:
        for frame in frames:
            writer.write(frame)
    return folder, store, keys, np.stack(frames), clip


def chunked_video(folder: Path, store: FrameStore, keys, clip, out: Path, tags=None) -> tuple[Path, list[Path]]:
    settings = ChunkSettings(SIZE, SIZE, FPS, CHUNK)
    chunks = ChunkFolder(folder / "walk.chunks")
    paths = []
    for chunk in plan_chunks(keys, CHUNK):
        name = settings.name(chunk)
        if not chunks.has(name, len(chunk)):
            chunks.save(name, encode_chunk(str(store.root), chunk, settings), len(chunk))
        paths.append(chunks.path(name))
    return join(paths, out, settings, len(keys), clip, tags), paths


def test_joined_chunks_have_the_single_encoders_frames_timing_and_audio(stored):
    folder, store, keys, frames, clip = stored
    single = folder / "single.mp4"
    video, paths = chunked_video(folder, store, keys, clip, folder / "chunked.mp4", tags={"comment": "made by test_chunks"})
    assert [count_packets(p) for p in paths] == [6, 6, 6, 1]
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(video)], capture_output=True, text=True).stderr
    assert re.search(r"comment\s*: made by test_chunks", header)  # the join carries the video's metadata
    # Every frame, at the single encoder's times (and its timescale), with bit-identical AAC packets.
    assert count_packets(video) == count_packets(single) == FRAMES
    times = frame_times(video)
    assert times == frame_times(single) and len(times) == FRAMES and float(times[-1]) == pytest.approx((FRAMES - 1) / FPS)
    audio = audio_packets(video)
    assert len(audio) > 1000 and audio == audio_packets(single)
    # Decoded at the stream's constant rate, exactly the frames: no gap before a chunk stretches the video.
    # The pixels: as close to the source as the single encoder's (the loss is yuv420's chroma on
    # this grain: 28.1 dB both), and within x264's CRF-18 tolerance of them (measured: about 36 dB,
    # mean |difference| about 3, max 23 of 255).
    ours, theirs = decoded(video, SIZE), decoded(single, SIZE)
    assert ours.shape == theirs.shape == frames.shape
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert psnr(ours, frames) > psnr(theirs, frames) - 0.5 and psnr(theirs, frames) > 26
    assert psnr(ours, theirs) > 33 and diff.mean() < 4.5 and diff.max() < 48


def test_resume_reuses_chunks_and_an_edit_reencodes_only_its_chunk(stored, tmp_path):
    folder, store, keys, _, clip = stored
    settings = ChunkSettings(SIZE, SIZE, FPS, CHUNK)
    _, paths = chunked_video(folder, store, keys, clip, tmp_path / "a.mp4")
    stamps = [p.stat().st_mtime_ns for p in paths]
    _, again = chunked_video(folder, store, keys, clip, tmp_path / "b.mp4")
    assert again == paths and [p.stat().st_mtime_ns for p in again] == stamps  # nothing encoded twice
    # One changed frame renames exactly the chunk that holds it.
    edited = list(keys)
    edited[13] = "f" * 64
    names = [settings.name(c) for c in plan_chunks(keys, CHUNK)]
    new = [settings.name(c) for c in plan_chunks(edited, CHUNK)]
    assert [a == b for a, b in zip(names, new)] == [True, True, False, True]
    # Other settings, other names: a chunk of another size or GOP is never reused.
    assert ChunkSettings(SIZE, SIZE, FPS, CHUNK + 1).name(keys[:6]) != names[0] != ChunkSettings(SIZE, SIZE, 12.0, CHUNK).name(keys[:6])


def test_a_truncated_chunk_is_refused_and_encoded_again(stored, tmp_path):
    folder, store, keys, _, _ = stored
    settings = ChunkSettings(SIZE, SIZE, FPS, CHUNK)
    chunks = ChunkFolder(tmp_path / "walk.chunks")
    chunk = tuple(keys[:CHUNK])
    short = encode_chunk(str(store.root), chunk, settings, fault="truncate")
    with pytest.raises(ChunkError, match="a chunk of 6 frames came back with 5 frames"):
        chunks.save(settings.name(chunk), short, len(chunk))
    assert not chunks.has(settings.name(chunk), len(chunk)) and sorted(p.name for p in chunks.root.iterdir()) == [".latentwalk-chunks"]
    # A chunk cut short on disk after it was kept reads as missing, so the render encodes it again.
    whole = encode_chunk(str(store.root), chunk, settings)
    kept = chunks.save(settings.name(chunk), whole, len(chunk))
    kept.write_bytes(whole[: len(whole) // 2])
    assert not chunks.has(settings.name(chunk), len(chunk))
    with pytest.raises(ChunkError, match="ffmpeg failed"):
        encode_chunk(str(store.root), chunk, settings, fault="fail")
    with pytest.raises(NoFFmpeg, match="pip install imageio-ffmpeg"):
        encode_chunk(str(store.root), chunk, settings, fault="noffmpeg")


def test_a_failed_join_keeps_the_earlier_video(stored, tmp_path, monkeypatch):
    import latentwalk.chunks as chunks_module

    folder, store, keys, _, clip = stored
    out = tmp_path / "walk.mp4"
    _, paths = chunked_video(folder, store, keys, clip, out)
    before = out.read_bytes()
    # A join short of frames (a chunk missing) is refused; a full disk is an ENOSPC OSError. Neither replaces the video.
    with pytest.raises(ChunkError, match=f"has {FRAMES - 1} frames, expected {FRAMES}"):
        join(paths[:-1], out, ChunkSettings(SIZE, SIZE, FPS, CHUNK), FRAMES, clip)
    real = chunks_module.join_command
    monkeypatch.setattr(chunks_module, "join_command", lambda *a: real(*a)[:-1] + ["/dev/full"])
    with pytest.raises(OSError) as e:
        join(paths, out, ChunkSettings(SIZE, SIZE, FPS, CHUNK), FRAMES, clip)
    assert e.value.errno == 28
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["walk.mp4"]


def test_a_folder_of_someone_elses_files_is_refused(tmp_path):
    (tmp_path / "walk.chunks").mkdir()
    (tmp_path / "walk.chunks" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="holds files latentwalk did not write"):
        ChunkFolder(tmp_path / "walk.chunks").check()
    assert ChunkFolder(tmp_path / "walk.chunks").prune(set()) == 0 and (tmp_path / "walk.chunks" / "notes.txt").exists()
