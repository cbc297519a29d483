"""Stage 6: stream raw RGB frames into one ffmpeg process; mux the matching stretch of audio."""

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from latentwalk.errors import UserError
from latentwalk.locks import create_temp, move_into_place

CRF = 18  # visually lossless-ish H.264; small frames make files tiny anyway
PRESET = "medium"
AUDIO_BITRATE = "192k"
# `--out x.webm`: VP9 in constant-quality mode (crf with b:v 0; 31-33 is the usual range for
# 256-720 px) and Opus, for editors and VJ software that take WebM; row-mt and cpu-used 4 keep
# libvpx's good-quality mode within a few times x264's time.
VP9_CRF = 32
OPUS_BITRATE = "160k"
# Container by the output's suffix: (muxer, video options, audio options).
FORMATS = {
    ".mp4": ("mp4", {"vcodec": "libx264", "crf": CRF, "preset": PRESET, "movflags": "+faststart"}, {"acodec": "aac", "audio_bitrate": AUDIO_BITRATE}),
    ".webm": ("webm", {"vcodec": "libvpx-vp9", "crf": VP9_CRF, "b:v": 0, "row-mt": 1, "deadline": "good", "cpu-used": 4},
              {"acodec": "libopus", "audio_bitrate": OPUS_BITRATE}),
}
# ffmpeg exits 0 after some failures (a full disk while moving the moov atom for +faststart):
# these lines in its stderr mean the file is broken whatever the exit status says.
FAILURE_LINES = ("Error writing trailer", "No space left on device", "Conversion failed", "Error muxing")


class EncodeError(UserError):
    """ffmpeg could not write a video; the earlier video, if any, is untouched."""


def ffmpeg_exe() -> str:
    """ffmpeg on PATH, else the static binary that imageio-ffmpeg ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class AudioClip:
    path: Path
    start: float  # seconds into the file
    duration: float  # seconds to use: the video's duration


def encode_command(path: Path, width: int, height: int, fps: float, audio: AudioClip | None, tags: dict[str, str] | None = None) -> list[str]:
    """The ffmpeg argument list: rawvideo rgb24 on stdin → H.264 yuv420p mp4 + AAC (or VP9 webm + Opus, by the
    suffix of `path` without a trailing .partial), with metadata `tags`."""
    muxer, video_options, audio_options = FORMATS[container(path)]
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
    streams = [video.video]
    options = {"pix_fmt": "yuv420p", "r": fps, **video_options}
    if audio is not None:
        sound = ffmpeg.input(str(audio.path), ss=audio.start, t=audio.duration)
        streams.append(sound.audio)
        options.update(audio_options)
    # yuv420p needs even sizes; sizes are multiples of 8 (checked in the timeline).
    out = ffmpeg.output(*streams, str(path), format=muxer, **options)
    args = out.get_args()
    metadata = [arg for name, value in (tags or {}).items() for arg in ("-metadata", f"{name}={value}")]  # e.g. videometa's comment
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args[:-1], *metadata, args[-1]]


def container(path: str | Path) -> str:
    """'.mp4' or '.webm': the format a video path asks for (anything else is an mp4)."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in FORMATS else ".mp4"


class VideoWriter:
    """Write frames one at a time; memory stays constant however long the video is.

    The file appears at `path` only when encoding succeeded and the result decodes to exactly
    the frames written (it is encoded to a partial file unique to this writer beside it, then
    renamed), so a failed, interrupted or lying encode never replaces an earlier video.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float, audio: AudioClip | None = None, tags: dict[str, str] | None = None):
        self.path = Path(path)
        self.width, self.height = width, height
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A new file (never through a link) with the umask's mode, like any file the user writes.
        fd, partial = create_temp(self.path, suffix=f".partial{self.path.suffix}", prefix=f".{self.path.stem}.")
        os.close(fd)
        self._partial = Path(partial)
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            encode_command(self._partial, width, height, fps, audio, tags),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def write(self, frame: np.ndarray) -> None:
        """frame: (H, W, 3) uint8."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self._fail()
        self.frames_written += 1

    def close(self) -> Path:
        """Finish encoding, check the file decodes to every frame written, and move it into place."""
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        if self._proc.wait() != 0 or any(line in self._stderr_text() for line in FAILURE_LINES):
            self._fail()
        try:
            info = probe(self._partial)
        except Exception as e:  # ffprobe/ffmpeg raise several types on a broken file
            self._fail(f"the encoded file does not decode: {e}")
        if info.frames != self.frames_written or (info.width, info.height) != (self.width, self.height):
            self._fail(f"the encoded file has {info.frames} {info.width}x{info.height} frames, expected {self.frames_written} {self.width}x{self.height}")
        self._stderr.close()
        move_into_place(self._partial, self.path, "--out")
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file; the earlier video, if any, stays."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._partial.unlink(missing_ok=True)
        if not self._stderr.closed:
            self._stderr.close()

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def _fail(self, problem: str | None = None) -> None:
        self._proc.wait()
        message = self._stderr_text()
        self._stderr.close()
        self._partial.unlink(missing_ok=True)
        if "No space left on device" in message:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        detail = problem or f"ffmpeg failed (exit {self._proc.returncode})"
        raise EncodeError(f"{self.path}: {detail}: {message or 'no message'}; the earlier video, if any, is untouched")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:  # Ctrl-C while verifying: still no partial file left behind
                self.abort()
                raise
        else:
            self.abort()


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    duration: float  # of the video stream
    width: int
    height: int
    has_audio: bool
    audio_duration: float | None


def probe(path: str | Path) -> VideoInfo:
    """Count frames and read stream facts: with ffprobe when on PATH, else with ffmpeg itself."""
    if shutil.which("ffprobe"):
        return _probe_ffprobe(Path(path))
    return _probe_ffmpeg(Path(path))


def _probe_ffprobe(path: Path) -> VideoInfo:
    cmd = ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)]
    streams = json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next((s for s in streams if s["codec_type"] == "audio"), None)
    num, den = map(int, video["r_frame_rate"].split("/"))
    return VideoInfo(
        frames=int(video["nb_read_frames"]),
        fps=num / den,
        duration=float(video["duration"]),
        width=int(video["width"]),
        height=int(video["height"]),
        has_audio=audio is not None,
        audio_duration=float(audio["duration"]) if audio else None,
    )


def _probe_ffmpeg(path: Path) -> VideoInfo:
    # Decoding to the null muxer counts every frame; the stream headers give the rest.
    cmd = [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    err = subprocess.run(cmd, capture_output=True, text=True).stderr
    counts = re.findall(r"frame=\s*(\d+)", err)
    if not counts:
        raise RuntimeError(f"ffmpeg could not read {path}: {err.strip()}")
    frames = int(counts[-1])
    video = re.search(r"Stream #0:\d+.*?: Video: .*?, (\d+)x(\d+).*?, ([\d.]+) fps", err)
    if video is None:
        raise RuntimeError(f"no video stream in {path}: {err}")
    fps = float(video.group(3))
    audio = re.search(r"Stream #0:\d+.*?: Audio:", err) is not None
    audio_duration = _ffmpeg_stream_duration(path, "a:0") if audio else None
    return VideoInfo(frames, fps, frames / fps, int(video.group(1)), int(video.group(2)), audio, audio_duration)


def _ffmpeg_stream_duration(path: Path, stream: str) -> float:
    cmd = [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", f"0:{stream}", "-f", "null", "-"]
    err = subprocess.run(cmd, capture_output=True, text=True).stderr
    h, m, s = re.findall(r"time=\s*(\d+):(\d+):([\d.]+)", err)[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)
