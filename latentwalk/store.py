"""The frame store: every rendered frame kept on disk, keyed by a hash of what determines it.

A frame's pixels depend only on the render identity and the frame's own inputs (see
frames.py, where the key is made). Keying by those lets a render reuse any frame an earlier run already made: a run
stopped by Ctrl-C or SIGKILL resumes where it stopped, and editing one keyframe re-renders
only the two segments that touch it. Frames are files written atomically (temp file in
the same folder, fsync, os.replace; never through a link: see locks.py), so a file under a
key's name is always complete.

Each frame file is bound to its key and holds its pixels compressed losslessly: its fixed-size
header holds the shape, the codec, the compressed length, the key and a sha256 over the header and
the decoded pixels (the file format, version 4):

    offset  size  field
         0     8  magic  b"LWFRAME\x04"  (the last byte is the format version)
         8     4  height    (uint32, little-endian)
        12     4  width     (uint32)
        16     4  channels  (uint32; 3)
        20     4  codec     (uint32: its low byte, then three zero bytes)
                              0  raw: the pixels as they are
                              1  up+zlib: PNG's "Up" filter (each byte minus the byte one row above
                                 it, mod 256; the first row as it is), then one zlib stream (RFC 1950)
        24     8  length    (uint64: bytes of the payload; raw: exactly the pixels' size)
        32    32  key       (the 32 bytes of the 64-hex-digit key)
        64    32  sha256 of bytes 0..63 and the decoded pixels
        96     …  payload, `length` bytes: the pixels (height × width × channels uint8, row-major) encoded by `codec`

Frames are written up+zlib (zlib level 1, strategy Z_RLE), or raw when that would not be smaller
(noise), so a payload is never larger than the pixels. The codec was chosen by measurement
(benchmarks/bench_store.py, 512² and 1024² photos and grainy synthetic frames): 43-59% of the raw
size, as small as PNG at compress_level 1 (smaller on grain) and 2-3x faster to write and to read;
zlib over the unfiltered pixels keeps 66-83%.

Planning checks only sizes and headers (`has`: magic, version, shape, codec, length, key; the
file's size must be the header plus `length`; nothing decompressed), so a frame copied or moved
under another key's name is a miss and is rendered again. The pixels are decompressed and the
checksum verified when a frame is loaded (`load`); a frame whose payload does not decompress to
exactly the pixels' size (zlib's own Adler-32 check included) or whose checksum fails is removed,
so the next render makes it again. Because the checksum is over the decoded pixels, passing it
proves the very pixels returned.

Older formats are still read: version 3 (b"LWFRAME\x03": magic, height, width, channels, key,
sha256 of bytes 0..51 and the pixels; 84 bytes, then raw pixels) and version 2 (b"LWFRAME\x02":
magic, height, width, channels, sha256 of the pixels; 52 bytes, then raw pixels), which predates
the binding to a key. A latentwalk that reads only versions 2 and 3 refuses a version-4 frame by
its magic (a miss, rendered again), so it never misreads compressed bytes as pixels.

The store lives in a folder (`FrameStore`) or, through fsspec, at a URL (`FsspecFrameStore`:
s3://, gs://, memory://, ...): the same files in the same format, only the file access differs.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import stat
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from latentwalk.errors import UserError
from latentwalk.locks import file_lock, link_message, write_atomic

log = logging.getLogger("latentwalk")

# The file format (written in the store's marker). 4: frames are compressed (see the module
# docstring); 3: frames are bound to their key (still read); 2: frames carry their shape and a
# sha256 of their pixels (still read); 1: bare <key>.npy files (never read now).
STORE_VERSION = 4
SUFFIX = ".frame"
TEMP_SUFFIX = ".tmp"
KEY = re.compile(r"^[0-9a-f]{64}$")
FRAME = re.compile(r"^[0-9a-f]{64}\.frame$")
LEGACY_FRAME = re.compile(r"^[0-9a-f]{64}\.npy$")
TEMP = re.compile(r"^\.[0-9a-f]{64}\.(?:frame|npy)\.[\w-]+\.tmp$|^\.[0-9a-f]{64}\.[\w-]+\.tmp$")
MARKER = ".latentwalk-store"  # written when the store is created; prune refuses a folder without it
LOCK = ".latentwalk-store.lock"
STORE_FORMAT = "latentwalk-frame-store"
MAGIC_PREFIX = b"LWFRAME"
MAGIC = MAGIC_PREFIX + bytes([STORE_VERSION])
MAGIC_V3 = MAGIC_PREFIX + b"\x03"
MAGIC_V2 = MAGIC_PREFIX + b"\x02"
# magic, height, width, channels, codec, payload length, key, sha256(header before it + decoded pixels)
HEADER = struct.Struct("<8sIIIIQ32s32s")
HEADER_V3 = struct.Struct("<8sIII32s32s")  # magic, height, width, channels, key, sha256(header before it + pixels)
HEADER_V2 = struct.Struct("<8sIII32s")  # magic, height, width, channels, sha256(pixels)
SIGNED = HEADER.size - 32  # the header bytes the checksum covers
SIGNED_V3 = HEADER_V3.size - 32
RAW, UP_ZLIB = 0, 1  # codecs (format 4)
CODECS = {RAW: "raw", UP_ZLIB: "up+zlib"}
ZLIB_LEVEL, ZLIB_STRATEGY = 1, zlib.Z_RLE  # how frames are written (any level and strategy read)


@dataclass(frozen=True)
class StoreUsage:
    frames: int
    bytes: int  # frames and leftover temp files
    temp_files: int  # left by a run that was killed mid-write; never read as frames


class CorruptFrame(UserError):
    """A stored file under a key's name whose header or pixel checksum is wrong."""


class DamagedFrame(CorruptFrame):
    """A frame of this store under its own key whose checksum fails, or whose compressed pixels do not
    decompress to exactly the frame's size: its bytes changed after writing."""


class MisfiledFrame(CorruptFrame):
    """A frame of this store bound to another key: a file moved, renamed or copied within the store."""


def key_bytes(key: str) -> bytes:
    """The 32 bytes a frame's header holds for `key` (its hex digits; a hash for any other name)."""
    return bytes.fromhex(key) if KEY.match(key) else hashlib.sha256(key.encode()).digest()


def encode_frame(frame: np.ndarray, key: str, codec: int = UP_ZLIB) -> bytes:
    """The version-4 header (magic, shape, codec, payload length, key, sha256 of header and pixels),
    then the pixels encoded by `codec` (raw when up+zlib would not be smaller)."""
    pixels = np.ascontiguousarray(frame, dtype=np.uint8)
    height, width, channels = pixels.shape
    data = pixels.tobytes()
    payload = compress_pixels(pixels) if codec == UP_ZLIB else data
    if len(payload) >= len(data):
        codec, payload = RAW, data
    signed = HEADER.pack(MAGIC, height, width, channels, codec, len(payload), key_bytes(key), b"")[:SIGNED]
    digest = hashlib.sha256(signed)
    digest.update(data)
    return signed + digest.digest() + payload


def compress_pixels(pixels: np.ndarray) -> bytes:
    """The up+zlib payload of (H, W, C) uint8 pixels: each row minus the row above (mod 256), deflated."""
    filtered = pixels.copy()
    np.subtract(pixels[1:], pixels[:-1], out=filtered[1:])
    packer = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, 15, 8, ZLIB_STRATEGY)
    return packer.compress(filtered) + packer.flush()


def decompress_pixels(payload, shape: tuple[int, int, int]) -> np.ndarray:
    """The pixels of an up+zlib payload; DamagedFrame unless it is one whole zlib stream of exactly the pixels' size."""
    size = int(np.prod(shape))
    inflater = zlib.decompressobj()
    try:
        filtered = inflater.decompress(payload, size + 1)  # never much more than the pixels, whatever the stream says
    except zlib.error as e:
        raise DamagedFrame(f"checksum mismatch (the compressed pixels do not decompress: {e}; the file was changed or damaged)") from None
    if len(filtered) != size or not inflater.eof:
        if len(filtered) > size:
            problem = f"decompress to more than the frame's {size} bytes"
        elif len(filtered) < size:
            problem = f"end after {len(filtered)} of the frame's {size} bytes"
        else:
            problem = "lack the end of their zlib stream"
        raise DamagedFrame(f"checksum mismatch (the compressed pixels {problem}; the file was changed or damaged)")
    if inflater.unused_data:
        raise DamagedFrame(f"checksum mismatch ({len(inflater.unused_data)} bytes after the compressed pixels; the file was changed or damaged)")
    pixels = np.frombuffer(filtered, np.uint8).reshape(shape).copy()
    for row in range(1, shape[0]):  # undo the Up filter; row by row is 20x faster than np.cumsum(axis=0)
        np.add(pixels[row - 1], pixels[row], out=pixels[row])
    return pixels


@dataclass(frozen=True)
class Layout:
    """What a checked header says about the file: its format's header, the codec and the payload's length."""

    header: struct.Struct
    codec: int
    length: int


def check_header(head: bytes, size: int, key: str, shape: tuple[int, int, int]) -> Layout:
    """The layout of a file of `size` bytes starting with `head`, once it is a frame of `shape`
    stored under `key` (or a version-2 frame of `shape`); CorruptFrame (MisfiledFrame) if not."""
    if size < len(MAGIC) or len(head) < len(MAGIC):
        raise CorruptFrame(f"{size} bytes: shorter than a frame header (a truncated file)")
    magic = head[: len(MAGIC)]
    header = {MAGIC: HEADER, MAGIC_V3: HEADER_V3, MAGIC_V2: HEADER_V2}.get(magic)
    if header is None:
        if magic.startswith(MAGIC_PREFIX):
            raise CorruptFrame(f"a frame in store format version {magic[-1]}, which this latentwalk does not read (it reads 2, 3 and 4)")
        raise CorruptFrame("not a latentwalk frame file (wrong magic bytes)")
    if size < header.size or len(head) < header.size:
        raise CorruptFrame(f"{size} bytes: shorter than a frame header (a truncated file)")
    fields = header.unpack_from(head)
    if tuple(fields[1:4]) != tuple(shape):
        raise CorruptFrame(f"holds a {tuple(fields[1:4])} frame, expected {tuple(shape)}")
    pixels = int(np.prod(shape))
    if header is HEADER:
        codec, length, bound = fields[4:7]
    else:  # versions 2 and 3: raw pixels; version 2 is bound to no key
        codec, length, bound = RAW, pixels, fields[4] if header is HEADER_V3 else None
    if codec not in CODECS:
        raise CorruptFrame(f"unknown pixel codec {codec} in the header (a damaged file)")
    if not (length == pixels if codec == RAW else 0 < length < pixels):
        raise CorruptFrame(f"a {CODECS[codec]} payload of {length} bytes for a {tuple(shape)} frame (a damaged header)")
    expected = header.size + length
    if size != expected:
        raise CorruptFrame(f"{size} bytes, expected {expected} for a {tuple(shape)} frame" + (" (a truncated file)" if size < expected else ""))
    if bound is not None and bound != key_bytes(key):
        raise MisfiledFrame(
            f"holds the frame of another key ({bound.hex()[:16]}...): a frame file was moved, renamed or copied within the store"
        )
    return Layout(header, codec, length)


def decode_frame(data: bytes, key: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The (H, W, C) uint8 pixels of an encoded frame of `shape` stored under `key`; CorruptFrame if anything is off."""
    layout = check_header(data[: HEADER.size], len(data), key, shape)
    view = memoryview(data)
    payload = view[layout.header.size :]
    pixels = decompress_pixels(payload, shape) if layout.codec == UP_ZLIB else np.frombuffer(payload, dtype=np.uint8).reshape(shape)
    if layout.header is HEADER_V2:
        digest = hashlib.sha256(pixels)
        stored = view[HEADER_V2.size - 32 : HEADER_V2.size]
    else:
        signed = SIGNED if layout.header is HEADER else SIGNED_V3
        digest = hashlib.sha256(view[:signed])
        digest.update(pixels)
        stored = view[signed : layout.header.size]
    if digest.digest() != bytes(stored):
        raise DamagedFrame("checksum mismatch (the file was changed or damaged)")
    return pixels if layout.codec == UP_ZLIB else pixels.copy()


def max_frame_size(shape: tuple[int, ...]) -> int:
    """The most bytes a stored frame of `shape` takes in any format read: a version-4 header plus the raw pixels."""
    return HEADER.size + int(np.prod(shape))


def plausible_size(size: int, shape: tuple[int, ...]) -> bool:
    """Whether a file of `size` bytes can be a frame of `shape`: raw in format 2 or 3, or any payload in format 4."""
    pixels = int(np.prod(shape))
    return size in (HEADER_V2.size + pixels, HEADER_V3.size + pixels) or HEADER.size < size <= HEADER.size + pixels


class FrameStore:
    """A folder of `<sha256>.frame` files, (H, W, 3) uint8 each, marked by a MARKER file.

    File access goes through `_head`, `_read`, `_write`, `_entries`, `_is_link` and `_remove`, so
    another backend (fsspec) only replaces those. Nothing but this store's own file patterns is
    ever deleted, and nothing is written or deleted through a symbolic link.
    """

    flag = "--store"  # the option messages name

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.rejected: list[str] = []  # keys whose stored file failed verification in `has` or `load`
        self._created = False

    def path(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    # --- the folder and its marker ------------------------------------------------------

    def state(self) -> str:
        """'missing', 'empty', 'store' (marked), 'legacy' (only version-1 store files), 'foreign' or 'file'.

        A marker that is a symbolic link is refused (UserError): the folder is not shown to be ours.
        """
        if not self.root.exists():
            return "missing"
        if not self.root.is_dir():
            return "file"
        names = self._entries()
        if MARKER in names:
            if self._is_link(self.root / MARKER):
                raise UserError(link_message(self.root / MARKER, self.flag))
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
        self.create()
        return file_lock(self.root / LOCK, f"the frame store {self.root}", wait, flag=self.flag)

    # --- frames ---------------------------------------------------------------------------

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether a frame of `shape` bound to `key` is stored: its size and header, no pixels read or decompressed.

        A file that is no such frame (truncated, foreign, another format or shape, another key's
        frame, a size other than its header's length says) is logged, remembered in `rejected`
        and a miss, so it is rendered again. The pixels are decompressed and their checksum
        verified by `load`.
        """
        path = self.path(key)
        try:
            head, size = self._head(path, HEADER.size)
            check_header(head, size, key, shape)
            return True
        except FileNotFoundError:
            return False
        except (CorruptFrame, OSError) as e:  # OSError: a folder or unreadable file under the key's name
            self._reject(key, f"frame store {self.root}: {key}{SUFFIX}: {describe_error(e)}; rendering it again")
            return False

    def load(self, key: str, shape: tuple[int, int, int]) -> np.ndarray:
        """The verified pixels stored under `key`; FileNotFoundError, or CorruptFrame naming the file.

        A frame of this store that fails its checksum, or is another key's, is removed before
        CorruptFrame is raised, so the next render (or `has`) sees it missing and renders it again.
        """
        path = self.path(key)
        try:
            return decode_frame(self._read(path, max_frame_size(shape) + 1), key, shape)
        except FileNotFoundError:
            raise
        except (DamagedFrame, MisfiledFrame) as e:
            self._remove(path)
            self.rejected.append(key)
            raise type(e)(f"frame store {self.root}: {key}{SUFFIX}: {e}; removed it, so the next render makes it again") from None
        except (CorruptFrame, OSError) as e:
            self.rejected.append(key)
            raise CorruptFrame(f"frame store {self.root}: {key}{SUFFIX}: {describe_error(e)}") from None

    def save(self, key: str, frame: np.ndarray) -> int:
        """Write atomically: a reader sees the whole frame under `key`, or no file at all. Returns the file's size."""
        self.create()
        data = encode_frame(frame, key)
        self._write(self.path(key), data)
        return len(data)

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
        files of its own patterns whose header is a frame's: a user's `notes.tmp`, a file
        merely named like a key, or a link stays.
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
            if self._is_link(path):
                continue
            if is_temp or FRAME.match(name) and name[: -len(SUFFIX)] not in keep and self._starts_with(path, MAGIC_PREFIX):
                pass
            elif LEGACY_FRAME.match(name) and self._starts_with(path, b"\x93NUMPY"):  # version 1: never a hit now
                pass
            else:
                continue
            size += self._size(path)
            self._remove(path)
            frames, temps = frames + (not is_temp), temps + is_temp
        return StoreUsage(frames, size, temps)

    def _reject(self, key: str, message: str) -> None:
        self.rejected.append(key)
        log.warning("%s", message)

    # --- file access: the only methods that touch the file system ----------------------------

    def _entries(self) -> list[str]:
        try:
            return os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _open(self, path: Path):
        """A binary file object on the plain file at `path`; a link is refused, a FIFO or folder is an OSError."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(link_message(path, self.flag)) from None
            raise
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise IsADirectoryError(errno.EISDIR, "not a plain file", str(path))
        return f

    def _head(self, path: Path, limit: int) -> tuple[bytes, int]:
        """The first `limit` bytes of a file and its size."""
        with self._open(path) as f:
            return f.read(limit), os.fstat(f.fileno()).st_size

    def _read(self, path: Path, limit: int) -> bytes:
        """At most `limit` bytes: a huge foreign file is wrong without being read whole."""
        with self._open(path) as f:
            return f.read(limit)

    def _starts_with(self, path: Path, prefix: bytes) -> bool:
        try:
            with self._open(path) as f:
                return f.read(len(prefix)) == prefix
        except (OSError, UserError):
            return False

    def _is_link(self, path: Path) -> bool:
        return os.path.islink(path)

    def _size(self, path: Path) -> int:
        try:
            return path.lstat().st_size
        except FileNotFoundError:
            return 0

    def _write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, self.flag, suffix=TEMP_SUFFIX)

    def _remove(self, path: Path) -> None:
        if not self._is_link(path):
            path.unlink(missing_ok=True)


def describe_state(state: str) -> str:
    return {"file": "it is a file", "foreign": "a folder holding other files and no marker"}.get(state, state)


def describe_error(e: Exception) -> str:
    """An OSError as its reason alone ('Is a directory'), other errors as their message."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


# --- the store at a URL, through fsspec ---------------------------------------------------------
#
# `s3://bucket/prefix`, `gs://...`, `memory://...`: the same files in the same format, so render
# workers on many machines can share one store and a driver anywhere can assemble from it. Keys
# stay content addresses, so two workers writing the same frame write the same pixels (and, with
# the same zlib, the same bytes). Writes stay atomic: on an object store one put, which readers
# see whole or not at all; on other filesystems (sftp, a `file://` opened here) a unique temp
# name, then a move.

# Filesystems whose single put is atomic: an object appears whole or not at all.
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "oci", "r2"}


class URL(str):
    """A store root that joins like a Path: URL("s3://b/p") / "x" == "s3://b/p/x"."""

    def __truediv__(self, name: str) -> "URL":
        return URL(f"{self.rstrip('/')}/{name}")


class FsspecFrameStore(FrameStore):
    """A FrameStore whose files live on an fsspec filesystem; `root` is the URL."""

    def __init__(self, url: str):
        import fsspec  # an optional dependency, loaded only for a store at a URL

        super().__init__(".")
        try:
            self.fs, base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:  # an unknown protocol, or its package missing (s3fs, gcsfs)
            raise UserError(f"store: cannot open {url!r}: {e}") from None
        self.base = base.rstrip("/")
        self.root = URL(url)  # messages and manifests show the URL
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        self.atomic_put = bool(protocols & ATOMIC_PUT)
        self._sizes: dict[str, int] | None = None  # a listing, read once: see has()

    def _fs_path(self, path: str) -> str:
        return f"{self.base}/{str(path).rsplit('/', 1)[-1]}"

    # --- the store and its marker, on a filesystem without folders or locks ------------------

    def state(self) -> str:
        names = self._entries()
        if MARKER in names:
            return "store"
        if not names:
            return "missing"
        return "legacy" if all(LEGACY_FRAME.match(n) or TEMP.match(n) for n in names) else "foreign"

    def create(self) -> None:
        """Write the marker (objects need no folder); refuses a prefix that holds anything else."""
        if self._created:
            return
        state = self.state()
        if state == "foreign":
            raise UserError(f"--store: {self.root} is not a latentwalk frame store (it holds other files and no marker)")
        if state != "store":
            self._write(self.root / MARKER, json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}).encode())
        self._created = True

    def lock(self, wait: bool = False):
        """Object stores have no file locks: keys are content addresses, so concurrent writers agree."""
        self.create()
        return contextlib.nullcontext()

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether a frame of a size it can have is stored, from one listing (one request, not one per frame).

        A compressed frame's size is known only from its header, so any size from a version-4
        header plus one byte to a header plus the raw pixels passes (and version 2's and 3's exact
        sizes). Headers, keys and checksums are verified when the frame is loaded; a frame another
        process stores after the listing reads as missing until `refresh()`: at worst it is
        rendered again, to the same pixels.
        """
        if self._sizes is None:
            self._sizes = {name: size for name, size in self._listing() if FRAME.match(name)}
        size = self._sizes.get(self.path(key).rsplit("/", 1)[-1])
        return size is not None and plausible_size(size, shape)

    def refresh(self) -> None:
        self._sizes = None

    def save(self, key, frame) -> int:
        size = super().save(key, frame)
        if self._sizes is not None:
            self._sizes[self.path(key).rsplit("/", 1)[-1]] = size
        return size

    # --- file access ---------------------------------------------------------------------

    def _listing(self) -> list[tuple[str, int]]:
        """(file name, size) of every file directly in the store; none when it does not exist yet."""
        try:
            entries = self.fs.ls(self.base, detail=True)
        except FileNotFoundError:
            return []
        return [(e["name"].rstrip("/").rsplit("/", 1)[-1], int(e.get("size") or 0)) for e in entries if e.get("type") == "file"]

    def _entries(self) -> list[str]:
        return [name for name, _ in self._listing()]

    def _head(self, path, limit: int) -> tuple[bytes, int]:
        with self.fs.open(self._fs_path(path), "rb") as f:
            return f.read(limit), int(self.fs.size(self._fs_path(path)))

    def _read(self, path, limit: int) -> bytes:
        with self.fs.open(self._fs_path(path), "rb") as f:
            return f.read(limit)

    def _starts_with(self, path, prefix: bytes) -> bool:
        try:
            return self._read(path, len(prefix)) == prefix
        except OSError:
            return False

    def _is_link(self, path) -> bool:
        return False  # object stores have no links; other filesystems' are theirs to resolve

    def _size(self, path) -> int:
        try:
            return int(self.fs.size(self._fs_path(path)))
        except FileNotFoundError:
            return 0

    def _write(self, path, data: bytes) -> None:
        target = self._fs_path(path)
        if self.atomic_put:
            self.fs.pipe_file(target, data)
            return
        self.fs.makedirs(self.base, exist_ok=True)
        temp = f"{self.base}/.{target.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            self.fs.pipe_file(temp, data)
            self.fs.mv(temp, target)
        except BaseException:
            if self.fs.exists(temp):
                self.fs.rm(temp)
            raise

    def _remove(self, path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._fs_path(path))
        self.refresh()


def open_store(root: str | Path) -> FrameStore:
    """The frame store at a folder, or at a URL through fsspec (s3://, gs://, memory://; file:// is a folder)."""
    if isinstance(root, str) and "://" in root:
        if root.startswith("file://"):
            return FrameStore(root[len("file://") :])
        return FsspecFrameStore(root)
    return FrameStore(root)
