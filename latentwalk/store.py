"""The frame store: every rendered frame kept on disk, keyed by a hash of what determines it.

A frame's pixels depend only on the model, the render settings that shape the computation,
and the frame's own noise and conditioning inputs (see render.py). Hashing exactly those
(sha256 of canonical JSON) lets a render reuse any frame an earlier run already made: a run
stopped by Ctrl-C or SIGKILL resumes where it stopped, and editing one keyframe re-renders
only the two segments that touch it. Frames are .npy files written atomically (temp file in
the same folder, fsync, os.replace), so a file under a key's name is always complete.
"""

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from latentwalk.schedule import FrameRecord

# Bump when render.py changes which pixels a key stands for: every old frame is then a miss.
STORE_VERSION = 1
SUFFIX = ".npy"
TEMP_SUFFIX = ".tmp"
KEY = re.compile(r"^[0-9a-f]{64}$")
# Model files at most this big are fingerprinted by content (configs, tokenizer files); bigger
# ones (weights) by size and mtime, which costs a stat instead of reading gigabytes.
CONTENT_HASH_LIMIT = 1 << 20


@dataclass(frozen=True)
class RenderIdentity:
    """What every frame of a render shares and its pixels depend on."""

    model: str  # the resolved source: a folder path or a hub id
    model_fingerprint: str  # of the folder's contents; "" for a hub id
    width: int
    height: int
    steps: int
    scheduler: str
    interpolation: str
    dtype: str  # resolved, e.g. "torch.float16"
    device_type: str  # "cpu", "cuda", "mps"
    # CPU kernels split reductions by thread: 1 vs 2 threads moved 8 of 40 tiny-model frames by
    # one level. 0 on GPUs, where the device does the arithmetic.
    cpu_threads: int
    # Batches are always padded to this many rows: kernels pick algorithms by shape, so the
    # batch size (but not which frames share a batch) can change the last bit of a frame.
    batch_size: int
    options: tuple[tuple[str, bool], ...]  # model options that change numerics (channels_last, ...)
    versions: tuple[tuple[str, str], ...]  # torch and diffusers: kernels change between releases


@dataclass(frozen=True)
class FrameInputs:
    """A frame's own inputs: noise between two seeds, conditioning between two keyframes."""

    seed_a: int
    seed_b: int
    noise_t: float
    prompt_a: str  # canonical prompt text, str(parse_prompt(...))
    prompt_b: str
    negative_a: str
    negative_b: str
    t: float
    guidance: float


def frame_key(identity: RenderIdentity, inputs: FrameInputs) -> str:
    """sha256 hex digest of canonical JSON of the store version, the identity and the inputs."""
    # json writes floats with repr, which round-trips exactly, so distinct floats hash apart.
    payload = {"store": STORE_VERSION, "render": asdict(identity), "frame": asdict(inputs)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def frame_inputs(record: FrameRecord, prompts: Sequence[str], negatives: Sequence[str]) -> FrameInputs:
    """The inputs of one frame record, given every keyframe's canonical prompt and negative prompt."""
    a, b = record.segment, min(record.segment + 1, len(prompts) - 1)  # as render.batch_inputs pairs them
    return FrameInputs(
        seed_a=record.seed_a,
        seed_b=record.seed_b,
        noise_t=record.noise_t,
        prompt_a=prompts[a],
        prompt_b=prompts[b],
        negative_a=negatives[a],
        negative_b=negatives[b],
        t=record.t,
        guidance=record.guidance,
    )


def model_fingerprint(source: str) -> str:
    """sha256 over a model folder: small files by content, weight files by size and mtime."""
    folder = Path(source)
    if not folder.is_dir():
        return ""  # a hub id: the id itself is part of the identity
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        if stat.st_size <= CONTENT_HASH_LIMIT:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class StoreUsage:
    frames: int
    bytes: int  # frames and leftover temp files
    temp_files: int  # left by a run that was killed mid-write; never read as frames


class FrameStore:
    """A folder of `<sha256>.npy` frames, (H, W, 3) uint8 each."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether a complete frame of `shape` is stored under `key` (checked by file size)."""
        try:
            return self.path(key).stat().st_size == npy_size(shape)
        except FileNotFoundError:
            return False

    def load(self, key: str, shape: tuple[int, int, int]) -> np.ndarray:
        frame = np.load(self.path(key), allow_pickle=False)
        if frame.shape != shape or frame.dtype != np.uint8:
            raise ValueError(f"frame store {self.root}: {key}{SUFFIX} holds a {frame.shape} {frame.dtype} array, expected {shape} uint8")
        return frame

    def save(self, key: str, frame: np.ndarray) -> None:
        """Write atomically: a reader sees the whole frame under `key`, or no file at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(frame), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path(key))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def keys(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name[: -len(SUFFIX)] for p in self.root.iterdir() if p.name.endswith(SUFFIX) and KEY.match(p.name[: -len(SUFFIX)])}

    def usage(self) -> StoreUsage:
        frames = temps = size = 0
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.endswith(TEMP_SUFFIX):
                    temps += 1
                elif not (p.name.endswith(SUFFIX) and KEY.match(p.name[: -len(SUFFIX)])):
                    continue
                else:
                    frames += 1
                size += p.stat().st_size
        return StoreUsage(frames, size, temps)

    def prune(self, keep: Iterable[str]) -> StoreUsage:
        """Delete every frame not in `keep`, and leftover temp files; returns what was removed."""
        keep = set(keep)
        frames = temps = size = 0
        if self.root.is_dir():
            for p in self.root.iterdir():
                stem = p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else None
                is_temp = p.name.endswith(TEMP_SUFFIX)
                if not is_temp and (stem is None or not KEY.match(stem) or stem in keep):
                    continue
                size += p.stat().st_size
                p.unlink(missing_ok=True)
                frames, temps = frames + (not is_temp), temps + is_temp
        return StoreUsage(frames, size, temps)


def npy_size(shape: tuple[int, ...]) -> int:
    """Bytes of a uint8 array of `shape` saved with np.save: header plus data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    return buffer.tell() + int(np.prod(shape))
