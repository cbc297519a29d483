"""A frame store at a URL, through fsspec: `s3://bucket/prefix`, `gs://...`, `memory://...`.

The same files in the same format as store.FrameStore (checksummed `<key>.frame` files and
the store's marker), so render workers on many machines can share one store and a driver
anywhere can assemble from it. Only the file access differs. Keys stay content addresses, so
two workers writing the same frame write the same bytes. Writes stay atomic: on an object
store one put, which readers see whole or not at all; on other filesystems (sftp, a
`file://` opened here) a unique temp name, then a move.
"""

import contextlib
import json
import uuid

from latentwalk.errors import UserError
from latentwalk.store import FRAME, LEGACY_FRAME, MARKER, STORE_FORMAT, STORE_VERSION, TEMP, TEMP_SUFFIX, FrameStore, frame_size

# Filesystems whose single put is atomic: an object appears whole or not at all.
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "oci", "r2"}


class URL(str):
    """A store root that joins like a Path: URL("s3://b/p") / "x" == "s3://b/p/x"."""

    def __truediv__(self, name: str) -> "URL":
        return URL(f"{self.rstrip('/')}/{name}")


class FsspecFrameStore(FrameStore):
    """A FrameStore whose files live on an fsspec filesystem; `root` is the URL."""

    def __init__(self, url: str):
        import fsspec

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
        """Whether a frame of the right size is stored, from one listing (one request, not one per frame).

        Contents are verified when the frame is loaded; a frame another process stores after the
        listing reads as missing until `refresh()`: at worst it is rendered again, to the same bytes.
        """
        if self._sizes is None:
            self._sizes = {name: size for name, size in self._listing() if FRAME.match(name)}
        return self._sizes.get(self.path(key).rsplit("/", 1)[-1]) == frame_size(shape)

    def refresh(self) -> None:
        self._sizes = None

    def save(self, key, frame) -> None:
        super().save(key, frame)
        if self._sizes is not None:
            self._sizes[self.path(key).rsplit("/", 1)[-1]] = frame_size(frame.shape)

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

    def _read(self, path, limit: int) -> bytes:
        with self.fs.open(self._fs_path(path), "rb") as f:
            return f.read(limit)

    def _starts_with(self, path, prefix: bytes) -> bool:
        try:
            return self._read(path, len(prefix)) == prefix
        except OSError:
            return False

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
