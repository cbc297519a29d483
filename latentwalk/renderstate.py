"""Where a render is: how many of its video frames are written, kept beside the video for `plan --plot`.

While a render runs it keeps `.<video name>.progress.json` next to its video (a hidden file
latentwalk owns, like the video's lock): written when it starts streaming frames, at most every
`interval` seconds while frames go into the video, and removed when the render ends or stops.
`latentwalk plan T.yaml --plot F`, run meanwhile, reads the file of the timeline's default video
(or `--video`'s) and shades the frames written so far; `render --plot` redraws its plan picture
from the same numbers as it goes. Frames go into the video in order,
so "written" is a prefix: the render is at video frame `first_frame + written`.
"""

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from latentwalk.errors import UserError
from latentwalk.locks import write_atomic

STATE_FORMAT = 1
INTERVAL = 2.0  # seconds between writes while frames go into the video
MAX_STATE_BYTES = 10_000  # a state is a few fields; anything bigger is not ours


def state_path(video: str | Path) -> Path:
    video = Path(video)
    return video.with_name(f".{video.name}.progress.json")


@dataclass(frozen=True)
class State:
    """A render's position: `written` of `total` video frames from video frame `first_frame` on, at `fps`."""

    total: int
    written: int
    first_frame: int = 0
    fps: float = 0.0  # the video's: a draft's differs from its plan's
    finished: bool = False
    eta_s: float | None = None  # the progress display's ETA of the frames still to denoise
    updated: float = 0.0  # time.time() of the write

    @property
    def share(self) -> float:
        return self.written / self.total if self.total else 1.0


def read_state(video: str | Path) -> State | None:
    """The state of the last render of `video`, or None if there is none (or it is not one of ours)."""
    path = state_path(video)
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_STATE_BYTES:
            return None
        data = json.loads(path.read_text())
        if data.pop("format", None) != STATE_FORMAT:
            return None
        state = State(**data)
    except (OSError, ValueError, TypeError):
        return None
    return state if 0 <= state.written <= state.total else None


class StateWriter:
    """A video writer (what InOrderWriter is given) that counts the frames it writes into the state file."""

    def __init__(
        self, writer, video: Path, total: int, first_frame: int = 0, fps: float = 0.0, eta: Callable[[], float | None] = lambda: None,
        interval: float | None = None, clock: Callable[[], float] = time.monotonic,
    ):
        self.writer, self.video, self.path, self.eta, self.clock = writer, Path(video), state_path(video), eta, clock
        self.interval = INTERVAL if interval is None else interval
        self.state = State(total=total, written=0, first_frame=first_frame, fps=fps)
        self.last = clock()
        # A file there that is not a state of ours (unreadable, a link, the user's) is left alone.
        self.enabled = not (self.path.exists() or self.path.is_symlink()) or read_state(video) is not None
        self.save()

    def write(self, image) -> None:
        self.writer.write(image)
        self.state = replace(self.state, written=self.state.written + 1)
        if self.clock() - self.last >= self.interval:
            self.save()

    def finish(self) -> None:
        self.state = replace(self.state, finished=True)
        self.save()

    def remove(self) -> None:
        """The render is over (done or stopped): its state goes with it, if it is ours."""
        if self.enabled and read_state(self.video) is not None:
            try:
                self.path.unlink()
            except OSError:
                pass

    def save(self) -> None:
        self.last = self.clock()
        if not self.enabled:
            return
        eta = None if self.state.finished else self.eta()
        data = asdict(self.state) | {"format": STATE_FORMAT, "eta_s": eta, "updated": round(time.time(), 3)}
        try:
            write_atomic(self.path, json.dumps(data).encode(), "--out", sync=False)
        except (OSError, UserError):
            pass  # the state only informs a plot: a full disk or a read-only folder must not stop the render

    def __getattr__(self, name):
        return getattr(self.writer, name)
