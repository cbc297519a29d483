"""The frame store: keys, atomic writes, reuse, pruning, and resuming a render killed mid-way."""

import dataclasses
import hashlib
import json
import os
import struct
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from latentwalk.api import frame_plan, plan, prune_store, render
from latentwalk.errors import UserError
from latentwalk.store import (
    HEADER,
    HEADER_V2,
    HEADER_V3,
    MARKER,
    RAW,
    UP_ZLIB,
    CorruptFrame,
    DamagedFrame,
    FrameStore,
    encode_frame,
    open_store,
)
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
    assert store.path("a" * 64).read_bytes()[20] == UP_ZLIB  # compressed: has() must not decompress it
    limits = []
    head = FrameStore._head
    monkeypatch.setattr(FrameStore, "_head", lambda self, path, limit: limits.append(limit) or head(self, path, limit))
    monkeypatch.setattr(FrameStore, "_read", lambda *a: pytest.fail("has() read a whole frame"))
    monkeypatch.setattr("latentwalk.store.hashlib.sha256", lambda *a: pytest.fail("has() hashed pixels"))
    monkeypatch.setattr("latentwalk.store.zlib.decompressobj", lambda *a: pytest.fail("has() decompressed pixels"))
    monkeypatch.setattr("latentwalk.store.zlib.decompress", lambda *a: pytest.fail("has() decompressed pixels"))
    monkeypatch.setattr("latentwalk.store.decompress_pixels", lambda *a: pytest.fail("has() decoded pixels"))
    assert store.has("a" * 64, frame.shape) and not store.has("b" * 64, frame.shape)
    assert limits == [HEADER.size, HEADER.size]


# --- format 4: compressed frames ------------------------------------------------------------------


def smooth_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A natural-looking frame: gradients, a soft blob, a hard-edged disc and grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    base = 60 + 120 * x + 50 * np.sin(3 * y) + 40 * np.exp(-((x - 0.4) ** 2 + (y - 0.6) ** 2) * 20)
    base = np.where((x - 0.7) ** 2 + (y - 0.3) ** 2 < 0.02, 220.0, base)
    image = base[..., None] + np.arange(channels) * 15 + rng.normal(0, 2, (height, width, channels))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


IMAGES = {
    "random": lambda shape: np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8),
    "zeros": lambda shape: np.zeros(shape, np.uint8),
    "white": lambda shape: np.full(shape, 255, np.uint8),
    "stripes": lambda shape: (np.indices(shape).sum(axis=0) * 37 % 256).astype(np.uint8),
    "smooth": lambda shape: smooth_image(*shape, seed=3),
}


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (9, 1, 3), (2, 3, 3), (17, 31, 3), (64, 48, 3), (128, 96, 3), (33, 20, 1), (16, 16, 4)])
@pytest.mark.parametrize("kind", list(IMAGES))
def test_round_trip_is_bit_exact(tmp_path, shape, kind):
    frame = IMAGES[kind](shape)
    store, key = FrameStore(tmp_path), "ab" * 32
    size = store.save(key, frame)
    data = store.path(key).read_bytes()
    assert size == len(data) and len(data) <= HEADER.size + frame.size  # a payload is never larger than the pixels
    assert data[20] in (RAW, UP_ZLIB) and data[21:24] == bytes(3)
    if kind == "random":
        assert data[20] == RAW  # noise does not compress: stored as it is
    if kind in ("zeros", "white", "stripes") and frame.size >= 1000:
        assert data[20] == UP_ZLIB and len(data) < HEADER.size + frame.size // 4
    if kind == "smooth" and frame.size >= 1000:
        assert data[20] == UP_ZLIB and len(data) < HEADER.size + frame.size * 0.8
    assert store.has(key, shape)
    loaded = store.load(key, shape)
    assert loaded.dtype == np.uint8 and loaded.shape == shape and np.array_equal(loaded, frame)
    assert loaded.flags.writeable and loaded.flags.c_contiguous


def test_the_format_4_header_binds_key_codec_length_and_checksum(tmp_path):
    store, key = FrameStore(tmp_path / "s"), "cd" * 32
    frame = smooth_image(40, 56)
    store.save(key, frame)
    data = store.path(key).read_bytes()
    magic, h, w, c, codec, length, bound, digest = struct.unpack_from("<8sIIIIQ32s32s", data)
    assert HEADER.size == 96 and (magic, h, w, c, codec, bound) == (b"LWFRAME\x04", 40, 56, 3, UP_ZLIB, bytes.fromhex(key))
    assert len(data) == 96 + length and length < frame.size
    assert digest == hashlib.sha256(data[:64] + frame.tobytes()).digest()  # over the header and the decoded pixels
    filtered = frame.copy()
    filtered[1:] -= frame[:-1]  # PNG's Up filter, mod 256
    assert zlib.decompress(data[96:]) == filtered.tobytes()
    assert data[:8] != b"LWFRAME\x03"  # a latentwalk that reads formats 2 and 3 refuses it by its magic
    assert json.loads((tmp_path / "s" / MARKER).read_text()) == {"format": "latentwalk-frame-store", "version": 4}


def test_a_smooth_512_frame_is_stored_compressed(tmp_path):
    frame = smooth_image(512, 512)
    store = FrameStore(tmp_path)
    size = store.save("e" * 64, frame)
    assert size < 0.6 * frame.size, size / frame.size
    assert np.array_equal(store.load("e" * 64, frame.shape), frame)


def v3_frame(frame: np.ndarray, key: str) -> bytes:
    """A frame in store format 3 (bound to its key, raw pixels)."""
    pixels = frame.tobytes()
    signed = HEADER_V3.pack(b"LWFRAME\x03", *frame.shape, bytes.fromhex(key), b"")[:52]
    return signed + hashlib.sha256(signed + pixels).digest() + pixels


def test_version_3_frames_are_read_by_folder_and_url_stores(tmp_path):
    frame = smooth_image(24, 40)
    key, other = "3" * 64, "4" * 64
    memory = open_store("memory://latentwalk-test/v3")
    try:
        for store in (FrameStore(tmp_path), memory):
            store.create()
            store._write(store.path(key), v3_frame(frame, key))
            damaged = bytearray(v3_frame(frame, other))
            damaged[84 + 100] ^= 4
            store._write(store.path(other), bytes(damaged))
            assert store.has(key, frame.shape) and np.array_equal(store.load(key, frame.shape), frame)
            with pytest.raises(CorruptFrame, match=r"holds a \(24, 40, 3\) frame, expected \(24, 40, 4\)"):
                store.load(key, (24, 40, 4))
            assert store.has(other, frame.shape)  # header (or, at a URL, size) only
            with pytest.raises(DamagedFrame, match="checksum mismatch"):
                store.load(other, frame.shape)
            assert other not in store.keys()
    finally:
        memory.fs.rm(memory.base, recursive=True)


def compressed(tmp_path, key: str = "5" * 64, shape=(64, 80, 3)) -> tuple[FrameStore, bytes, np.ndarray]:
    store, frame = FrameStore(tmp_path), smooth_image(*shape, seed=1)
    store.save(key, frame)
    data = store.path(key).read_bytes()
    assert data[20] == UP_ZLIB
    return store, data, frame


@pytest.mark.parametrize("cut", [1, 4, 7, 500, "half", "header"])
def test_a_truncated_compressed_frame_is_a_miss_and_corrupt(tmp_path, cut):
    store, data, frame = compressed(tmp_path)
    key = "6" * 64
    keep = {"half": (len(data) + HEADER.size) // 2, "header": HEADER.size}.get(cut, len(data) - cut if isinstance(cut, int) else 0)
    store.path(key).write_bytes(data[:keep])
    assert not store.has(key, frame.shape) and store.rejected == [key]
    with pytest.raises(CorruptFrame, match=rf"{key}\.frame: {keep} bytes, expected {len(data)} .*\(a truncated file\)"):
        store.load(key, frame.shape)
    assert store.path(key).exists()  # not shown to be ours: left for the next render to replace


@pytest.mark.parametrize("where", [0, 1, 2, 100, "middle", -7, -5, -4, -1])
def test_a_flipped_compressed_byte_passes_planning_and_fails_loading(tmp_path, where):
    store, data, frame = compressed(tmp_path)
    payload = len(data) - HEADER.size
    offset = HEADER.size + (payload // 2 if where == "middle" else where if where >= 0 else payload + where)
    damaged = bytearray(data)
    damaged[offset] ^= 0x01 if where == -5 else 0x40  # -5: the stream's last byte may end in padding bits
    store.path("5" * 64).write_bytes(bytes(damaged))
    assert store.has("5" * 64, frame.shape)  # planning reads the header only
    with pytest.raises(DamagedFrame, match=r"5{64}\.frame: checksum mismatch \(.*removed it, so the next render makes it again"):
        store.load("5" * 64, frame.shape)
    assert not store.path("5" * 64).exists() and not store.has("5" * 64, frame.shape)


def signed_frame(frame: np.ndarray, key: str, codec: int, payload: bytes) -> bytes:
    """A version-4 frame with any payload and a header (checksum included) consistent with it."""
    signed = HEADER.pack(b"LWFRAME\x04", *frame.shape, codec, len(payload), bytes.fromhex(key), b"")[:64]
    return signed + hashlib.sha256(signed + frame.tobytes()).digest() + payload


def test_a_payload_that_is_not_exactly_the_pixels_is_damaged(tmp_path):
    """The zlib stream itself must decompress, end, and give exactly the frame's bytes (checked before the checksum)."""
    store, data, frame = compressed(tmp_path)
    key = "7" * 64
    stream = data[HEADER.size :]
    cases = {
        "do not decompress": b"\x78\x01" + bytes(200),  # a zlib header, then an invalid block
        "end after 100 of the frame's": zlib.compress(bytes(100), 1),  # a whole stream of too few bytes
        "decompress to more than the frame's": zlib.compress(bytes(frame.size + 1), 1),
        "lack the end of their zlib stream": stream[:-4],  # no Adler-32 trailer
        "bytes after the compressed pixels": stream + b"\x00" * 5,
        "incorrect data check": stream[:-1] + bytes([stream[-1] ^ 1]),  # zlib's own Adler-32
    }
    for message, payload in cases.items():
        assert len(payload) < frame.size
        store.path(key).write_bytes(signed_frame(frame, key, UP_ZLIB, payload))
        assert store.has(key, frame.shape), message
        with pytest.raises(DamagedFrame, match=rf"checksum mismatch \(.*{message}"):
            store.load(key, frame.shape)
        assert not store.path(key).exists(), message
    # A raw payload and a stream that decompresses well both pass only with the right checksum.
    store.path(key).write_bytes(signed_frame(frame, key, RAW, frame.tobytes()))
    assert np.array_equal(store.load(key, frame.shape), frame)
    store.path(key).write_bytes(signed_frame(frame, key, UP_ZLIB, zlib.compress(frame.tobytes(), 9)))  # not Up-filtered
    with pytest.raises(DamagedFrame, match=r"checksum mismatch \(the file was changed or damaged\)"):
        store.load(key, frame.shape)


def test_damaged_codec_and_length_fields_are_misses(tmp_path):
    store, data, frame = compressed(tmp_path)
    key = "8" * 64
    length = len(data) - HEADER.size
    cases = {
        "unknown pixel codec 7": data[:20] + bytes([7]) + data[21:],
        "unknown pixel codec 257": data[:21] + b"\x01" + data[22:],  # a reserved byte set
        f"a raw payload of {length} bytes": data[:20] + bytes([RAW]) + data[21:],
        f"a up\\+zlib payload of {frame.size} bytes": data[:24] + struct.pack("<Q", frame.size) + data[32:],
        f"a up\\+zlib payload of 0 bytes": data[:24] + struct.pack("<Q", 0) + data[32:96],
        f"{len(data)} bytes, expected {len(data) + 1}": data[:24] + struct.pack("<Q", length + 1) + data[32:],
    }
    for message, damaged in cases.items():
        store.path(key).write_bytes(damaged)
        assert not store.has(key, frame.shape), message
        with pytest.raises(CorruptFrame, match=message):
            store.load(key, frame.shape)


def test_a_url_store_reads_compressed_frames_and_checks_sizes(tmp_path):
    frame = smooth_image(48, 64)
    memory = open_store("memory://latentwalk-test/v4")
    try:
        size = memory.save("a" * 64, frame)
        assert size < HEADER.size + frame.size and memory.has("a" * 64, frame.shape)
        data = memory.fs.cat_file(memory._fs_path(memory.path("a" * 64)))
        for key, body in {"b" * 64: data[:HEADER.size], "c" * 64: data + bytes(frame.size), "d" * 64: data}.items():
            memory.fs.pipe_file(memory._fs_path(memory.path(key)), body)
        memory.refresh()
        assert memory.has("a" * 64, frame.shape) and np.array_equal(memory.load("a" * 64, frame.shape), frame)
        assert not memory.has("b" * 64, frame.shape) and not memory.has("c" * 64, frame.shape)  # sizes no frame can have
        assert memory.has("d" * 64, frame.shape)  # a listing: sizes only; the key is checked on loading
        with pytest.raises(CorruptFrame, match="another key"):
            memory.load("d" * 64, frame.shape)
        damaged = bytearray(data)
        damaged[-10] ^= 0x40
        memory.fs.pipe_file(memory._fs_path(memory.path("a" * 64)), bytes(damaged))
        with pytest.raises(DamagedFrame, match="checksum mismatch"):
            memory.load("a" * 64, frame.shape)
        assert "a" * 64 not in memory.keys() and not memory.has("a" * 64, frame.shape)
    finally:
        memory.fs.rm(memory.base, recursive=True)


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
