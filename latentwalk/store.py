"""The frame store: every rendered frame kept on disk, keyed by a hash of what determines it.

A frame's pixels depend only on the render identity and the frame's own inputs (see
frames.py, where the key is made). Keying by those lets a render reuse any frame an earlier run already made: a run
stopped by Ctrl-C or SIGKILL resumes where it stopped, and editing one keyframe re-renders
only the two segments that touch it. Frames are files written atomically (temp file in
the same folder, fsync, os.replace), so a file under a key's name is always complete, and each
carries a sha256 of its pixels, so a damaged or foreign file is re-rendered, never reused.
"""

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from latentwalk.errors import UserError

log = logging.getLogger("latentwalk")

# The file format (written in the store's marker). 2: frames carry a header with their shape and
# a sha256 of their pixels, under <key>.frame (1 was bare <key>.npy, never read now).
STORE_VERSION = 2
SUFFIX = ".frame"
TEMP_SUFFIX = ".tmp"
KEY = re.compile(r"^[0-9a-f]{64}$")
FRAME = re.compile(r"^[0-9a-f]{64}\.frame$")
LEGACY_FRAME = re.compile(r"^[0-9a-f]{64}\.npy$")
TEMP = re.compile(r"^\.[0-9a-f]{64}\.(?:frame|npy)\.[\w-]+\.tmp$|^\.[0-9a-f]{64}\.[\w-]+\.tmp$")
MARKER = ".latentwalk-store"  # written when the store is created; prune refuses a folder without it
LOCK = ".latentwalk-store.lock"
STORE_FORMAT = "latentwalk-frame-store"
MAGIC = b"LWFRAME\x02"
HEADER = struct.Struct("<8sIII32s")  # magic, height, width, channels, sha256(pixels)


@dataclass(frozen=True)
class StoreUsage:
    frames: int
    bytes: int  # frames and leftover temp files
    temp_files: int  # left by a run that was killed mid-write; never read as frames


class CorruptFrame(UserError):
    """A stored file under a key's name whose header or pixel checksum is wrong."""


def encode_frame(frame: np.ndarray) -> bytes:
    """Header (magic, height, width, channels, sha256 of the pixels) followed by the pixels."""
    pixels = np.ascontiguousarray(frame, dtype=np.uint8)
    height, width, channels = pixels.shape
    data = pixels.tobytes()
    return HEADER.pack(MAGIC, height, width, channels, hashlib.sha256(data).digest()) + data


def decode_frame(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """The (H, W, C) uint8 pixels of an encoded frame of `shape`; CorruptFrame if anything is off."""
    if len(data) != frame_size(shape):
        raise CorruptFrame(f"{len(data)} bytes, expected {frame_size(shape)} for a {shape} frame")
    magic, height, width, channels, digest = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptFrame("not a latentwalk frame file (wrong magic bytes)")
    if (height, width, channels) != tuple(shape):
        raise CorruptFrame(f"holds a {(height, width, channels)} frame, expected {shape}")
    pixels = memoryview(data)[HEADER.size :]
    if hashlib.sha256(pixels).digest() != digest:
        raise CorruptFrame("pixel checksum mismatch (the file was changed or damaged)")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(shape).copy()


def frame_size(shape: tuple[int, ...]) -> int:
    """Bytes of an encoded frame of `shape`: header plus pixels."""
    return HEADER.size + int(np.prod(shape))


class FrameStore:
    """A folder of `<sha256>.frame` files, (H, W, 3) uint8 each, marked by a MARKER file.

    File access goes through `_read`, `_write`, `_entries` and `_remove`, so another backend
    (fsspec) only replaces those. Nothing but this store's own file patterns is ever deleted.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.rejected: list[str] = []  # keys whose stored file failed verification in `has`
        self._created = False

    def path(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    # --- the folder and its marker ------------------------------------------------------

    def state(self) -> str:
        """'missing', 'empty', 'store' (marked), 'legacy' (only version-1 store files), 'foreign' or 'file'."""
        if not self.root.exists():
            return "missing"
        if not self.root.is_dir():
            return "file"
        names = self._entries()
        if MARKER in names:
            return "store"
        if not names:
            return "empty"
        return "legacy" if all(LEGACY_FRAME.match(n) or TEMP.match(n) for n in names) else "foreign"

    def create(self) -> None:
        """Make the folder and its marker; refuses a folder that holds anything else."""
        if self._created:
            return
        state = self.state()
        if state in ("file", "foreign"):
            raise UserError(f"--store: {self.root} is not a latentwalk frame store ({describe_state(state)})")
        if state != "store":
            self.root.mkdir(parents=True, exist_ok=True)
            self._write(self.root / MARKER, json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}).encode())
        self._created = True

    def lock(self, wait: bool = False):
        """An exclusive lock on the store for one render or prune (a context manager)."""
        from latentwalk.locks import file_lock

        self.create()
        return file_lock(self.root / LOCK, f"the frame store {self.root}", wait)

    # --- frames ---------------------------------------------------------------------------

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether a verified frame of `shape` is stored under `key`; a corrupt one is logged and a miss."""
        try:
            self.load(key, shape)
            return True
        except FileNotFoundError:
            return False
        except (CorruptFrame, OSError) as e:  # OSError: a folder or unreadable file under the key's name
            self.rejected.append(key)
            log.warning("%s; rendering it again", e)
            return False

    def load(self, key: str, shape: tuple[int, int, int]) -> np.ndarray:
        try:
            return decode_frame(self._read(self.path(key), frame_size(shape) + 1), shape)
        except FileNotFoundError:
            raise
        except (CorruptFrame, OSError) as e:
            raise CorruptFrame(f"frame store {self.root}: {key}{SUFFIX}: {e}") from None

    def save(self, key: str, frame: np.ndarray) -> None:
        """Write atomically: a reader sees the whole frame under `key`, or no file at all."""
        self.create()
        self._write(self.path(key), encode_frame(frame))

    def keys(self) -> set[str]:
        return {n[: -len(SUFFIX)] for n in self._entries() if FRAME.match(n)}

    def usage(self) -> StoreUsage:
        frames = temps = size = 0
        for name in self._entries():
            if TEMP.match(name):
                temps += 1
            elif not FRAME.match(name):
                continue
            else:
                frames += 1
            size += self._size(self.root / name)
        return StoreUsage(frames, size, temps)

    def prune(self, keep: Iterable[str]) -> StoreUsage:
        """Delete own frames not in `keep` and leftover temp files; returns what was removed.

        Only a marked store (or a version-1 store, which is then marked) is pruned, and only
        files of its own patterns whose header is a frame's: a user's `notes.tmp` or a file
        merely named like a key stays.
        """
        state = self.state()
        if state not in ("store", "legacy"):
            raise UserError(f"--prune: {self.root} is not a latentwalk frame store ({describe_state(state)}); nothing was deleted")
        self.create()
        keep = set(keep)
        frames = temps = size = 0
        for name in self._entries():
            path = self.root / name
            is_temp = TEMP.match(name) is not None
            if is_temp or FRAME.match(name) and name[: -len(SUFFIX)] not in keep and self._starts_with(path, MAGIC):
                pass
            elif LEGACY_FRAME.match(name) and self._starts_with(path, b"\x93NUMPY"):  # version 1: never a hit now
                pass
            else:
                continue
            size += self._size(path)
            self._remove(path)
            frames, temps = frames + (not is_temp), temps + is_temp
        return StoreUsage(frames, size, temps)

    # --- file access: the only methods that touch the file system ----------------------------

    def _entries(self) -> list[str]:
        try:
            return os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _read(self, path: Path, limit: int) -> bytes:
        """At most `limit` bytes: a huge foreign file is wrong without being read whole."""
        with open(path, "rb") as f:
            return f.read(limit)

    def _starts_with(self, path: Path, prefix: bytes) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(len(prefix)) == prefix
        except OSError:
            return False

    def _size(self, path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def _write(self, path: Path, data: bytes) -> None:
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def describe_state(state: str) -> str:
    return {"file": "it is a file", "foreign": "a folder holding other files and no marker"}.get(state, state)


def open_store(root: str | Path) -> FrameStore:
    """The frame store at a folder, or at a URL through fsspec (s3://, gs://, memory://; file:// is a folder)."""
    if isinstance(root, str) and "://" in root:
        if root.startswith("file://"):
            return FrameStore(root[len("file://") :])
        from latentwalk.fsstore import FsspecFrameStore

        return FsspecFrameStore(root)
    return FrameStore(root)
