"""`render --preview FILE.png`: the latest finished frame and a contact sheet of the ones before, as the render goes.

The PNG shows the newest frame at full size with, on its right, the last RECENT frames (newest
last) at a quarter of each side, two columns by four rows. It is replaced atomically (a new temp
file beside it, then a rename; never through a link: outputs.write_atomic), so a viewer or OBS
watching the path always reads a complete image. Updates are at most every `interval` seconds,
and once more when the video is finished.

Every preview carries PREVIEW_MARK in its PNG metadata (Software); a file at the path without it
is the user's and is never replaced.
"""

import io
import os
import time
from collections import deque
from pathlib import Path

import numpy as np

from latentwalk.errors import UserError
from latentwalk.outputs import refuse_link, write_atomic

PREVIEW_MARK = "latentwalk preview"
RECENT = 8  # frames on the contact sheet
COLUMNS = 2  # the sheet's columns (rows: RECENT / COLUMNS)
INTERVAL = 0.5  # seconds: the most often the file is replaced
BACKGROUND = 24  # grey of empty sheet cells
FLAG = "--preview"


def written_by_latentwalk(path: Path) -> bool:
    """Whether `path` is a PNG carrying PREVIEW_MARK (a preview of ours, safe to replace)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            f.seek(0)
            with Image.open(f) as image:
                return image.format == "PNG" and image.info.get("Software") == PREVIEW_MARK
    except (OSError, ValueError, SyntaxError):
        return False


def check_preview_path(path: str | Path) -> Path:
    """The preview's path: a .png in an existing folder, no link, no folder, and no file there unless latentwalk wrote it."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"{FLAG}: expected a .png file, got {str(path)!r}")
    refuse_link(path, FLAG)
    if path.is_dir():
        raise UserError(f"{FLAG}: {path} is a folder; give the preview's file name, e.g. {path / 'preview.png'}")
    folder = path.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{FLAG}: the folder {folder} {what}; create it first or choose another {FLAG}")
    if path.exists() and not written_by_latentwalk(path):
        raise UserError(f"{FLAG}: {path} exists and is not a preview latentwalk wrote; move it away or pick another name")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{FLAG}: cannot write in {folder}")
    return path


class Preview:
    """Keeps the latest frame and the last RECENT thumbnails; writes them to `path` as frames are added."""

    def __init__(self, path: str | Path, total: int | None = None, interval: float | None = None, first_frame: int = 0):
        self.path, self.total = Path(path), total
        self.interval = INTERVAL if interval is None else interval
        self.recent: deque[np.ndarray] = deque(maxlen=RECENT)
        self.latest: np.ndarray | None = None
        self.count = 0  # frames added
        self.first_frame = first_frame  # the video frame number of the first frame added (a range's start)
        self.written_at: float | None = None
        self.pending = False  # frames added since the last write

    def add(self, image: np.ndarray) -> None:
        self.latest = image
        self.recent.append(image)
        self.count += 1
        self.pending = True
        now = time.monotonic()
        if self.written_at is None or now - self.written_at >= self.interval:
            self.write()

    def finish(self) -> None:
        """Write the last frames if the interval held them back."""
        if self.pending:
            self.write()

    def image(self) -> np.ndarray:
        """(H, W + W/2, 3) uint8: the latest frame, and the recent ones in a 2 × 4 grid beside it."""
        h, w = self.latest.shape[:2]
        rows = -(-RECENT // COLUMNS)
        th, tw = max(1, h // rows), max(1, w // (2 * COLUMNS))
        canvas = np.full((h, w + tw * COLUMNS, 3), BACKGROUND, dtype=np.uint8)
        canvas[:, :w] = self.latest
        for i, frame in enumerate(self.recent):
            r, c = divmod(i, COLUMNS)
            canvas[r * th : (r + 1) * th, w + c * tw : w + (c + 1) * tw] = shrink(frame, th, tw)
        return canvas

    def png(self) -> bytes:
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Software", PREVIEW_MARK)
        frame = self.first_frame + self.count - 1
        info.add_text("Comment", f"frame {frame}" + (f" ({self.count} of {self.total})" if self.total else ""))
        buffer = io.BytesIO()
        Image.fromarray(self.image()).save(buffer, format="PNG", pnginfo=info, compress_level=1)
        return buffer.getvalue()

    def write(self) -> None:
        write_atomic(self.path, self.png(), FLAG, sync=False)
        self.written_at, self.pending = time.monotonic(), False


def shrink(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


class PreviewWriter:
    """A video writer that also shows each frame it writes in a Preview (what InOrderWriter is given)."""

    def __init__(self, writer, preview: Preview):
        self.writer, self.preview = writer, preview

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)
        self.preview.add(image)

    def __getattr__(self, name):
        return getattr(self.writer, name)
