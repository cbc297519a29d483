"""Assembly: frames from the store, in video order, into ffmpeg (and optional PNGs).

Rendering fills the store in any order (batches, workers); the assembler writes every frame
whose key is stored and that all earlier frames are written before it, as keys arrive.
"""

from pathlib import Path
from typing import Sequence

import numpy as np

from latentwalk.store import FrameStore


class InOrderWriter:
    """Feeds frames to a video writer (and --frames PNGs) in video order as their keys become stored."""

    def __init__(self, writer, keys: Sequence[str], store: FrameStore, shape: tuple[int, int, int], waiting: set[str], frames_dir: Path | None = None):
        self.writer, self.keys, self.store, self.shape, self.frames_dir = writer, keys, store, shape, frames_dir
        self.waiting = waiting  # keys being rendered, not yet stored
        self.next = 0  # next video frame to write

    def add(self, keys: Sequence[str], images: np.ndarray) -> None:
        """Store a decoded batch, then write every frame that is now ready."""
        fresh = dict(zip(keys, images))
        for key, image in fresh.items():
            self.store.save(key, image)
            self.waiting.discard(key)
        self.flush(fresh)

    def arrived(self, keys: Sequence[str]) -> None:
        """Keys another process stored (a render worker): write what is now ready."""
        self.waiting.difference_update(keys)
        self.flush()

    def flush(self, fresh: dict[str, np.ndarray] | None = None) -> None:
        import imageio.v3 as iio

        while self.next < len(self.keys) and self.keys[self.next] not in self.waiting:
            key = self.keys[self.next]
            image = fresh[key] if fresh and key in fresh else self.store.load(key, self.shape)
            self.writer.write(image)
            if self.frames_dir is not None:
                iio.imwrite(self.frames_dir / f"frame_{self.next:06d}.png", image)
            self.next += 1

    @property
    def done(self) -> bool:
        return self.next == len(self.keys)
