"""Assembly: frames from the store, in video order, into ffmpeg (and optional PNGs).

Rendering fills the store in any order (batches, workers); the assembler writes every frame
whose key is stored and that all earlier frames are written before it, as keys arrive.

A stored frame is verified when it is read here (store.load: its checksum; planning only read
its header). One found damaged is removed from the store; by default the CorruptFrame naming it
stops the render (the earlier video stays; the next render makes the frame again). A caller that
can render frames again passes `retry_lost=True`: the key is then put back among those being
rendered and listed in `lost`, and writing waits until it is stored again (see `take_lost`).
"""

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from latentwalk.locks import write_atomic
from latentwalk.store import CorruptFrame, FrameStore

log = logging.getLogger("latentwalk")


class InOrderWriter:
    """Feeds frames to a video writer (and --frames PNGs) in video order as their keys become stored."""

    def __init__(
        self, writer, keys: Sequence[str], store: FrameStore, shape: tuple[int, int, int], waiting: set[str],
        frames_dir: Path | None = None, retry_lost: bool = False,
    ):
        self.writer, self.keys, self.store, self.shape, self.frames_dir = writer, keys, store, shape, frames_dir
        self.waiting = waiting  # keys being rendered, not yet stored
        self.next = 0  # next video frame to write
        self.retry_lost = retry_lost
        self.lost: list[str] = []  # stored keys found corrupt on reading (with retry_lost), to render again

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
            if fresh and key in fresh:
                image = fresh[key]
            else:
                try:
                    image = self.store.load(key, self.shape)
                except CorruptFrame as e:
                    if not self.retry_lost:
                        raise
                    log.warning("%s; rendering it again", e)
                    self.lost.append(key)
                    self.waiting.add(key)
                    return
            self.writer.write(image)
            if self.frames_dir is not None:
                png = iio.imwrite("<bytes>", image, extension=".png")
                write_atomic(self.frames_dir / f"frame_{self.next:06d}.png", png, "--frames", sync=False)
            self.next += 1

    def take_lost(self) -> list[str]:
        """The keys found corrupt since the last call (still waiting: render and `add` them)."""
        lost, self.lost = self.lost, []
        return lost

    @property
    def done(self) -> bool:
        return self.next == len(self.keys)
