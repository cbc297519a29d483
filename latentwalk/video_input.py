"""Video to video: a source video's frames as every frame's init image (`video:` in a timeline). Torch-free.

Timeline frame f (at f / fps seconds into the video) takes the source frame shown at that
moment, `video.start + f / fps` seconds into the file: frame floor(seconds × source fps), so
any source rate is resampled to the timeline's by holding or skipping frames, as a player
would. The header gives the source rate and ffmpeg counts the frames, so `plan` says which
source frame each frame uses without decoding a picture; frames are decoded by ffmpeg (the
imageio-ffmpeg binary), scaled to cover the frame size and centre-cropped, at render time.

A frame's init is named by the sha256 of the file's bytes and the source frame's index
(`video_ref`), so its store key changes exactly when the file (or the frame it uses) does.
"""

import hashlib
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

VIDEO_KEYS = {"path", "start", "end", "flow", "flow_blend"}
# Deforum's hybrid compositing: in flow mode a frame's init is (1 - blend) · the previous output
# warped by the source's motion + blend · the source frame itself.
DEFAULT_FLOW_BLEND = 0.5
# Decoded frames a reader keeps: a batch reads up to batch_size frames in order; batches of
# other strengths come back to earlier frames, which costs a restart of the decoder.
READER_CACHE = 64
MAX_VIDEO_BYTES = 20_000_000_000  # past this the sha256 of the file alone takes minutes
TIME_EPS = 1e-9  # a frame time exactly on a source frame's start belongs to that frame


class VideoReadError(ValueError):
    """A video file that ffmpeg cannot read as a video; the message says why, in words."""


@dataclass(frozen=True)
class VideoInfo:
    """A video file as its header and ffmpeg's frame count describe it."""

    fps: float  # frames per second of the source (the header's average rate)
    n_frames: int  # decoded frames, counted by ffmpeg
    width: int
    height: int
    duration: float  # seconds: n_frames / fps


@dataclass(frozen=True)
class VideoSpec:
    """The `video:` mapping: the source clip, and whether frames follow its motion (flow)."""

    path: str  # resolved against the timeline's folder
    start: float  # seconds into the file where the timeline's frame 0 is
    end: float | None  # seconds into the file where the clip stops; None: the end of the file
    flow: bool  # warp the previous output by the source's optical flow before blending (a chain)
    flow_blend: float  # in flow mode, how much of the source frame the init holds (0..1)
    sha256: str  # of the file's bytes: part of every frame's init reference
    info: VideoInfo

    @property
    def clip_seconds(self) -> float:
        return (self.end if self.end is not None else self.info.duration) - self.start


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    return _file_sha256(str(path), *_stamp(Path(path)))


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def probe(path: str | Path) -> VideoInfo:
    """Rate, size and frame count of a video file; a VideoReadError for anything that holds no video frames."""
    return _probe(str(path), *_stamp(Path(path)))


@lru_cache(maxsize=64)
def _probe(path: str, mtime_ns: int, size: int) -> VideoInfo:
    import imageio_ffmpeg

    if size > MAX_VIDEO_BYTES:
        raise VideoReadError(f"{path!r} is {size:,} bytes, more than the limit of {MAX_VIDEO_BYTES:,} for a source video")
    reader = imageio_ffmpeg.read_frames(path)
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as e:  # ffmpeg's own words: no video stream, invalid data, ...
        raise VideoReadError(f"cannot read {path!r} as a video: {_ffmpeg_reason(e)}") from None
    finally:
        reader.close()
    fps = meta.get("fps") or 0.0
    width, height = meta.get("source_size") or meta.get("size") or (0, 0)
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise VideoReadError(f"{path!r} gives no frame rate in its header (a still picture or a damaged video?)")
    try:
        n_frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except (OSError, RuntimeError, ValueError) as e:
        raise VideoReadError(f"cannot count the frames of {path!r}: {_ffmpeg_reason(e)}") from None
    if n_frames < 1:
        raise VideoReadError(f"{path!r} holds no video frames")
    return VideoInfo(float(fps), int(n_frames), int(width), int(height), n_frames / float(fps))


def _ffmpeg_reason(error: BaseException) -> str:
    """The line of ffmpeg's stderr that says what is wrong (imageio-ffmpeg quotes all of it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if any(word in lowered for word in ("no video", "invalid data", "could not find", "no such file", "moov atom", "error")):
            return re.sub(r"^(\[[^\]]*\]\s*)+", "", line)[:300]  # without ffmpeg's "[in#0 @ 0x...]" prefix
    return (lines[-1] if lines else type(error).__name__)[:300]


def parse_video(r: Any, data: Any, base_dir: Path) -> VideoSpec:
    """`video: clip.mp4` or `video: {path, start, end, flow, flow_blend}`, probed now (r: timeline.FieldReader)."""
    if isinstance(data, str):
        data = {"path": data}
    data = r.check_keys(data, ("video",), VIDEO_KEYS)
    if "path" not in data:
        raise r.fail(("video",), "missing field 'path' (the source video file)")
    path = Path(r.text(data["path"], ("video", "path"))).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise r.fail(("video", "path"), f"video file not found: {str(path)!r}")
    try:
        info = probe(path)
    except VideoReadError as e:
        raise r.fail(("video", "path"), str(e)) from None
    start = r.number(data.get("start", 0.0), ("video", "start"), minimum=0)
    if start >= info.duration:
        raise r.fail(("video", "start"), f"{start:g}s is past the end of the video ({info.duration:.3f}s, {info.n_frames} frames)")
    end = data.get("end")
    if end is not None:
        end = r.number(end, ("video", "end"), minimum=start, exclusive=True)
        if end > info.duration + 1e-6:
            raise r.fail(("video", "end"), f"{end:g}s is past the end of the video ({info.duration:.3f}s, {info.n_frames} frames)")
    flow = r.flag(data.get("flow", False), ("video", "flow"))
    blend = r.number(data.get("flow_blend", DEFAULT_FLOW_BLEND), ("video", "flow_blend"), minimum=0, maximum=1)
    if "flow_blend" in data and not flow:
        raise r.fail(("video", "flow_blend"), "only used with flow: true")
    return VideoSpec(str(path), start, end, flow, blend, file_sha256(path), info)


def source_index(seconds: float, fps: float) -> int:
    """The source frame shown `seconds` into a file of `fps` frames per second."""
    return int(math.floor(seconds * fps + TIME_EPS))


def source_frames(spec: VideoSpec, frames: Any, fps: float) -> list[int]:
    """The source frame of every timeline frame number in `frames` at the timeline's `fps`."""
    return [source_index(spec.start + f / fps, spec.info.fps) for f in frames]


def uncovered_frame(spec: VideoSpec, n_frames: int, fps: float) -> int | None:
    """The first timeline frame past the clip's end or the file's last frame, or None when all are covered."""

    def covered(f: int) -> bool:
        seconds = spec.start + f / fps
        return source_index(seconds, spec.info.fps) < spec.info.n_frames and (spec.end is None or seconds < spec.end - TIME_EPS)

    if covered(n_frames - 1):  # frame times only grow: the last one decides
        return None
    return next(f for f in range(n_frames) if not covered(f))


def video_ref(sha256: str, index: int) -> str:
    """The name of one source frame, as FrameInputs.init carries it (see control.InputImages)."""
    return f"video:{sha256}:{index}"


def scale_filter(width: int, height: int) -> str:
    """ffmpeg's filter that scales a frame to cover width x height and crops its centre."""
    return f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=bicubic,crop={width}:{height}"


def fit_note(info: VideoInfo, width: int, height: int) -> str:
    """How the source's frames become the render's, in words ("" when they already are its size)."""
    if (info.width, info.height) == (width, height):
        return ""
    cropped = info.width * height != info.height * width
    return ("scaled and centre-cropped" if cropped else "scaled") + f" to {width}x{height}"


class VideoFrames:
    """Frames of one video at one size, decoded by ffmpeg in order; earlier frames restart the decoder."""

    def __init__(self, path: str, width: int, height: int):
        self.path, self.width, self.height = path, width, height
        self._frames: Iterator[bytes] | None = None
        self._next = 0  # index of the frame the decoder yields next
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def _restart(self) -> None:
        import imageio_ffmpeg

        self.close()
        self._frames = imageio_ffmpeg.read_frames(self.path, output_params=["-vf", scale_filter(self.width, self.height)])
        next(self._frames)  # the header
        self._next = 0

    def get(self, index: int) -> np.ndarray:
        """(height, width, 3) uint8 of frame `index` (read-only)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        if self._frames is None or index < self._next:
            self._restart()
        while self._next <= index:
            data = next(self._frames, None)
            if data is None:
                raise VideoReadError(f"{self.path!r} ends before frame {index} (it decoded {self._next} frames)")
            frame = np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3)
            self._cache[self._next] = frame
            if len(self._cache) > READER_CACHE:
                self._cache.popitem(last=False)
            self._next += 1
        return self._cache[index]

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None
