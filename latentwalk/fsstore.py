"""A frame store at a URL, through fsspec: `s3://bucket/prefix`, `gs://...`, `memory://...`.

The same files in the same layout as store.FrameStore (`<key>.npy` in np.save format), so
render workers on many machines can share one store and a driver anywhere can assemble from
it. Keys stay content addresses, so two workers writing the same frame write the same bytes.
Writes stay atomic: on an object store one put, which readers see whole or not at all; on
other filesystems (sftp, a `file://` opened here) a unique temp name, then a move.
"""

import io
import uuid

import numpy as np

from latentwalk.errors import UserError
from latentwalk.store import KEY, SUFFIX, TEMP_SUFFIX, FrameStore, StoreUsage, npy_size

# Filesystems whose single put is atomic: an object appears whole or not at all.
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "oci", "r2"}


class FsspecFrameStore(FrameStore):
    """A FrameStore whose files live on an fsspec filesystem; `root` is the URL."""

    def __init__(self, url: str):
        import fsspec

        try:
            self.fs, self.base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:  # an unknown protocol, or its package missing (s3fs, gcsfs)
            raise UserError(f"store: cannot open {url!r}: {e}") from None
        self.base = self.base.rstrip("/")
        self.root = url  # a str, not a Path: messages and manifests show the URL
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        self.atomic_put = bool(protocols & ATOMIC_PUT)
        self._sizes: dict[str, int] | None = None  # a listing, read once: see has()

    def path(self, key: str) -> str:
        return f"{self.base}/{key}{SUFFIX}"

    def has(self, key: str, shape: tuple[int, int, int]) -> bool:
        """Whether a complete frame is stored, from one listing of the store (one request, not one per frame).

        A frame another process stores after the listing reads as missing until `refresh()`:
        at worst it is rendered again, to the same bytes.
        """
        if self._sizes is None:
            self._sizes = {name[: -len(SUFFIX)]: size for name, size in self._listing() if name.endswith(SUFFIX)}
        return self._sizes.get(key) == npy_size(shape)

    def refresh(self) -> None:
        self._sizes = None

    def load(self, key: str, shape: tuple[int, int, int]) -> np.ndarray:
        frame = np.load(io.BytesIO(self.fs.cat_file(self.path(key))), allow_pickle=False)
        if frame.shape != shape or frame.dtype != np.uint8:
            raise ValueError(f"frame store {self.root}: {key}{SUFFIX} holds a {frame.shape} {frame.dtype} array, expected {shape} uint8")
        return frame

    def save(self, key: str, frame: np.ndarray) -> None:
        """Write atomically: a reader sees the whole frame under `key`, or no object at all."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(frame), allow_pickle=False)
        data = buffer.getvalue()
        if self.atomic_put:
            self.fs.pipe_file(self.path(key), data)
        else:
            self.fs.makedirs(self.base, exist_ok=True)
            temp = f"{self.base}/.{key}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
            try:
                self.fs.pipe_file(temp, data)
                self.fs.mv(temp, self.path(key))
            except BaseException:
                if self.fs.exists(temp):
                    self.fs.rm(temp)
                raise
        if self._sizes is not None:
            self._sizes[key] = len(data)

    def keys(self) -> set[str]:
        return {name[: -len(SUFFIX)] for name, _ in self._listing() if name.endswith(SUFFIX) and KEY.match(name[: -len(SUFFIX)])}

    def usage(self) -> StoreUsage:
        frames = temps = size = 0
        for name, bytes_ in self._listing():
            if name.endswith(TEMP_SUFFIX):
                temps += 1
            elif not (name.endswith(SUFFIX) and KEY.match(name[: -len(SUFFIX)])):
                continue
            else:
                frames += 1
            size += bytes_
        return StoreUsage(frames, size, temps)

    def prune(self, keep) -> StoreUsage:
        """Delete every frame not in `keep`, and leftover temp files; returns what was removed."""
        keep = set(keep)
        frames = temps = size = 0
        for name, bytes_ in self._listing():
            stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None
            is_temp = name.endswith(TEMP_SUFFIX)
            if not is_temp and (stem is None or not KEY.match(stem) or stem in keep):
                continue
            self.fs.rm(f"{self.base}/{name}")
            size += bytes_
            frames, temps = frames + (not is_temp), temps + is_temp
        self.refresh()
        return StoreUsage(frames, size, temps)

    def _listing(self) -> list[tuple[str, int]]:
        """(file name, size) of every file directly in the store; none when it does not exist yet."""
        try:
            entries = self.fs.ls(self.base, detail=True)
        except FileNotFoundError:
            return []
        return [(e["name"].rstrip("/").rsplit("/", 1)[-1], int(e.get("size") or 0)) for e in entries if e.get("type") == "file"]
