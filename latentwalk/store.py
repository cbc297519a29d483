"""The frame store: every rendered frame kept on disk, keyed by a hash of what determines it.

A frame's pixels depend only on the render identity and the frame's own inputs (see
frames.py, where the key is made). Keying by those lets a render reuse any frame an earlier run already made: a run
stopped by Ctrl-C or SIGKILL resumes where it stopped, and editing one keyframe re-renders
only the two segments that touch it. Frames are .npy files written atomically (temp file in
the same folder, fsync, os.replace), so a file under a key's name is always complete.
"""

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np


SUFFIX = ".npy"
TEMP_SUFFIX = ".tmp"
KEY = re.compile(r"^[0-9a-f]{64}$")


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


def open_store(root: str | Path) -> FrameStore:
    """The frame store at a folder, or at a URL through fsspec (s3://, gs://, memory://; file:// is a folder)."""
    if isinstance(root, str) and "://" in root:
        if root.startswith("file://"):
            return FrameStore(root[len("file://") :])
        from latentwalk.fsstore import FsspecFrameStore

        return FsspecFrameStore(root)
    return FrameStore(root)
