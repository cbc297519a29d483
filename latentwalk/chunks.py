"""Chunked encoding for farms: contiguous chunks of the video encoded where the frames are, joined without re-encoding.

A farm's driver that reads every frame and runs the only H.264 encoder caps the farm at its own
encode rate (docs/farms.md). Instead, encoder tasks on the cluster each read one contiguous
chunk of `chunk_frames` frames from the shared store, as soon as its frames are stored, and
encode it with the same settings (`ChunkSettings.args`): libx264 at the single-process
encoder's CRF and preset, one closed GOP per chunk (`-g`/`-keyint_min` = chunk_frames,
`-sc_threshold 0`, `open-gop=0`: every chunk starts with an IDR frame and no frame refers
across a chunk boundary), no B-frames, a fixed pixel format, frame rate, mp4 timescale and x264
thread count (x264's output depends on its thread count). Without B-frames every chunk's
decoding times equal its presentation times: with them, x264 delays the decoding clock of a
chunk of 3 or more frames by 2 frames but not of a chunk of 1 or 2 (it has no B-frame), and the
concat demuxer then leaves a gap before such a last chunk (measured: a 16-frame video of chunks
5, 5, 5, 1 lasted 2.25 s instead of 2.0). The price is a somewhat larger file at the same CRF
(benchmarks/bench_farm.py prints both sizes). The driver then joins the chunks with ffmpeg's
concat demuxer and `-c copy` (no re-encoding) and muxes the audio once, in one ffmpeg run
(`join`): the same frame count, frame times and AAC audio as a single-process render, pixels
within the codec's tolerance of a single-encoder video (tests/test_chunks.py measures it).

Chunks are files `<name>.mp4` in a chunk folder beside the store (`chunk_folder`), named by a
hash of their frame keys and the encoder settings, so a resumed or edited render re-encodes only
the chunks whose frames changed. A chunk is checked by counting its packets (no decoding) before
it is kept or reused: a truncated or short chunk is encoded again.
"""

import errno
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from latentwalk.errors import UserError
from latentwalk.locks import create_temp, move_into_place, write_atomic

CHUNK_FRAMES = 120  # default: 5 s at 24 fps, an IDR frame every chunk (x264's own default keyint is 250)
CHUNK_THREADS = 4  # x264 threads per chunk encoder: fixed, since x264's bits depend on the thread count
CHUNK_FORMAT = 1  # bump when the chunk encoding changes: old chunks are then never reused
MARKER = ".latentwalk-chunks"
CHUNK = re.compile(r"^[0-9a-f]{40}\.mp4$")
TEMP = re.compile(r"^\.[0-9a-f]{40}\.mp4\.[0-9a-f]{12}\.tmp$")
# Test hook: "kind@chunk" items, comma-separated, make the encoder of that chunk fail on its first
# attempt ("kind@chunk*": on every attempt). kinds: kill (SIGKILL mid-chunk), fail (ffmpeg exits
# non-zero), truncate (the chunk lacks its last frame), noffmpeg (no ffmpeg on the worker); and
# "store-full@batch": the farm worker rendering that batch finds the store full (executors/ray.py).
FAULT_ENV = "LATENTWALK_TEST_CHUNK_FAULT"


class ChunkError(UserError):
    """A chunk that could not be encoded or joined; the earlier video, if any, is untouched."""


class NoFFmpeg(ChunkError):
    """A worker without ffmpeg."""


@dataclass(frozen=True)
class ChunkSettings:
    """What every chunk of one video is encoded with; part of each chunk's name."""

    width: int
    height: int
    fps: float
    chunk_frames: int

    @property
    def rate(self) -> str:
        """The frame rate as ffmpeg reads `-r` (av_d2q): an exact fraction."""
        return str(Fraction(self.fps).limit_denominator(1001000))

    @property
    def timescale(self) -> int:
        """The mp4 timescale ffmpeg's mov muxer picks for this rate (its numerator, doubled up to >= 10000)."""
        scale = Fraction(self.fps).limit_denominator(1001000).numerator
        while scale < 10000:
            scale *= 2
        return scale

    def args(self) -> list[str]:
        """ffmpeg's output options for one chunk: the single-process encoder's, with a closed GOP per chunk."""
        from latentwalk.encode import CRF, PRESET

        n = str(self.chunk_frames)
        return ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(CRF), "-preset", PRESET, "-r", self.rate,
                "-g", n, "-keyint_min", n, "-sc_threshold", "0", "-bf", "0", "-threads", str(CHUNK_THREADS),
                "-x264-params", "open-gop=0", "-video_track_timescale", str(self.timescale), "-f", "mp4"]

    def name(self, keys: Sequence[str]) -> str:
        """The chunk's file name: a hash of its frame keys, in order, and of the encoder settings."""
        h = hashlib.sha256(f"latentwalk-chunk/{CHUNK_FORMAT}\n{self.width}x{self.height}\n{' '.join(self.args())}\n".encode())
        h.update("\n".join(keys).encode())
        return f"{h.hexdigest()[:40]}.mp4"

    def names(self, video_keys: Sequence[str]) -> set[str]:
        """The file names of a video's chunks."""
        return {self.name(chunk) for chunk in plan_chunks(video_keys, self.chunk_frames)}


def plan_chunks(keys: Sequence[str], chunk_frames: int) -> list[tuple[str, ...]]:
    """The video's keys cut into contiguous chunks of `chunk_frames` (the last one shorter)."""
    return [tuple(keys[i : i + chunk_frames]) for i in range(0, len(keys), chunk_frames)]


def chunk_folder(store_root: "str | Path", video: Path) -> Path:
    """The chunk folder: beside a folder store (`walk.frames` -> `walk.chunks`), beside the video for a store at a URL."""
    if isinstance(store_root, str) and "://" in store_root and not store_root.startswith("file://"):
        return video.with_suffix(".chunks")
    store = Path(str(store_root).removeprefix("file://")).absolute()
    return store.with_name(f"{store.name.removesuffix('.frames')}.chunks")


def parse_faults(text: str | None) -> dict[int, tuple[str, bool]]:
    """FAULT_ENV's items: chunk index -> (kind, on every attempt)."""
    faults: dict[int, tuple[str, bool]] = {}
    for item in filter(None, (text or "").split(",")):
        kind, _, where = item.strip().partition("@")
        faults[int(where.rstrip("*"))] = (kind, where.endswith("*"))
    return faults


# --- on the worker: one chunk from the store ----------------------------------------------------


def worker_ffmpeg() -> str:
    """This machine's ffmpeg, or NoFFmpeg saying how to get one."""
    from latentwalk.encode import ffmpeg_exe

    try:
        exe = ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):
        exe = None
    if exe is None or not os.access(exe, os.X_OK):
        raise NoFFmpeg("no ffmpeg on this machine: `pip install imageio-ffmpeg` (its static binary) or put ffmpeg on PATH")
    return exe


def encode_chunk(store_root: str, keys: Sequence[str], settings: ChunkSettings, fault: str | None = None) -> bytes:
    """Read `keys` from the store (verified) and encode them into one chunk; returns the mp4's bytes.

    `fault` (tests only, see FAULT_ENV) makes this attempt fail in the named way.
    """
    import signal

    from latentwalk.store import open_store

    # 1. ffmpeg and the store, before any frame is read.
    if fault == "noffmpeg":
        raise NoFFmpeg("no ffmpeg on this machine: `pip install imageio-ffmpeg` (its static binary) or put ffmpeg on PATH")
    exe = worker_ffmpeg()
    store = open_store(store_root)
    shape = (settings.height, settings.width, 3)
    args = settings.args()
    if fault == "fail":
        args = ["-no-such-option", *args]
    # 2. Frames in order into ffmpeg's stdin; the chunk into a temp file (mp4 needs a seekable output).
    with tempfile.TemporaryDirectory(prefix="latentwalk-chunk-") as tmp:
        path = Path(tmp) / "chunk.mp4"
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{settings.width}x{settings.height}", "-framerate", settings.rate, "-i", "pipe:", *args, str(path)]
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                for i, key in enumerate(keys[:-1] if fault == "truncate" else keys):
                    if fault == "kill" and i == len(keys) // 2:
                        os.kill(os.getpid(), signal.SIGKILL)  # this worker process, mid-chunk
                    proc.stdin.write(store.load(key, shape).tobytes())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.wait() != 0:
                stderr.seek(0)
                message = stderr.read().decode(errors="replace").strip().splitlines()
                raise ChunkError(f"ffmpeg failed (exit {proc.returncode}) encoding a chunk of {len(keys)} frames: {message[-1] if message else 'no message'}")
        return path.read_bytes()


# --- on the driver: the chunk folder, and the join -------------------------------------------------


def count_packets(path: Path) -> int:
    """Video packets (= frames) in an mp4, by stream copy to the null muxer: no decoding; -1 if unreadable."""
    from latentwalk.encode import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-progress", "pipe:1", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    counts = re.findall(r"^frame=(\d+)$", run.stdout, re.M)
    return int(counts[-1]) if run.returncode == 0 and counts else -1


class ChunkFolder:
    """A folder of chunk files `<name>.mp4`, marked by MARKER; nothing else in it is touched."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def check(self) -> None:
        """UserError when the folder exists and is not latentwalk's (before any work)."""
        if self.root.is_symlink() or self.root.exists() and not self.root.is_dir():
            raise UserError(f"--store: the chunk folder {self.root} is a file or a link; move it away")
        if self.root.is_dir() and MARKER not in os.listdir(self.root) and any(os.scandir(self.root)):
            raise UserError(f"--store: {self.root} holds files latentwalk did not write (no {MARKER}); move it or choose another --store")

    def create(self) -> None:
        self.check()
        if not (self.root / MARKER).exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.root / MARKER, b"video chunks written by latentwalk (see latentwalk/chunks.py)\n", "--store")

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str, frames: int) -> bool:
        """Whether a chunk of exactly `frames` frames is kept under `name` (a short or unreadable one is not)."""
        path = self.path(name)
        return path.is_file() and not path.is_symlink() and count_packets(path) == frames

    def save(self, name: str, data: bytes, frames: int) -> Path:
        """Keep a chunk that holds exactly `frames` frames; ChunkError (nothing kept) when it does not."""
        self.create()
        fd, temp = create_temp(self.path(name), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            found = count_packets(temp)
            if found != frames:
                raise ChunkError(f"a chunk of {frames} frames came back with {'no readable video' if found < 0 else f'{found} frames'} (truncated)")
            move_into_place(temp, self.path(name), "--store")
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return self.path(name)

    def prune(self, keep: set[str]) -> int:
        """Delete chunks not in `keep` and leftover temp files; returns how many files were removed."""
        if not (self.root / MARKER).exists():
            return 0
        removed = 0
        for name in os.listdir(self.root):
            if (CHUNK.match(name) and name not in keep or TEMP.match(name)) and not (self.root / name).is_symlink():
                (self.root / name).unlink(missing_ok=True)
                removed += 1
        return removed


def join_command(listing: Path, out: Path, settings: ChunkSettings, audio, tags: dict[str, str] | None = None) -> list[str]:
    """ffmpeg: the chunks through the concat demuxer, copied; the audio clip encoded as the single encoder does; metadata `tags`."""
    from latentwalk.encode import AUDIO_BITRATE, ffmpeg_exe

    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
    maps = ["-map", "0:v:0"]
    codecs = ["-c:v", "copy"]
    if audio is not None:
        cmd += ["-ss", str(audio.start), "-t", str(audio.duration), "-i", str(audio.path)]
        maps += ["-map", "1:a:0"]
        codecs += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
    metadata = [arg for name, value in (tags or {}).items() for arg in ("-metadata", f"{name}={value}")]
    return cmd + maps + codecs + metadata + ["-video_track_timescale", str(settings.timescale), "-movflags", "+faststart", "-f", "mp4", str(out)]


def join(chunks: Sequence[Path], out: Path, settings: ChunkSettings, frames: int, audio=None, tags: dict[str, str] | None = None) -> Path:
    """Join chunks (without re-encoding) and mux the audio once into `out`, moved into place only when whole.

    The video is written to a temp file beside `out` and must hold exactly `frames` frames; a
    failed or short join (a full disk included) leaves the earlier video as it was.
    """
    from latentwalk.encode import FAILURE_LINES

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = create_temp(out, suffix=f".partial{out.suffix}", prefix=f".{out.stem}.")
    os.close(fd)
    fd, listing = create_temp(out, suffix=".chunks.txt", prefix=f".{out.stem}.")
    try:
        with os.fdopen(fd, "w") as f:  # the concat demuxer's list: one quoted absolute path a line
            f.writelines("file '{}'\n".format(str(Path(c).absolute()).replace("'", "'\\''")) for c in chunks)
        run = subprocess.run(join_command(listing, partial, settings, audio, tags), capture_output=True, text=True)
        message = run.stderr.strip()
        if "No space left on device" in message:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
        if run.returncode != 0 or any(line in message for line in FAILURE_LINES):
            raise ChunkError(f"{out}: ffmpeg could not join {len(chunks)} chunks (exit {run.returncode}): {message or 'no message'}; "
                             "the earlier video, if any, is untouched")
        found = count_packets(partial)
        if found != frames:
            raise ChunkError(f"{out}: the joined video has {found} frames, expected {frames}; the earlier video, if any, is untouched")
        move_into_place(partial, out, "--out")
    finally:
        partial.unlink(missing_ok=True)
        listing.unlink(missing_ok=True)
    return out


# --- the render's use of chunks (api.stream_video) ----------------------------------------------------


def chunking_for(runner, chunk_frames: int, width: int, height: int, fps: float, store_root, out: Path, frames_dir, preview):
    """(ChunkSettings, ChunkFolder) when this render's video is encoded in chunks on the cluster, else None.

    Only an executor with encoder tasks (a farm) encodes in chunks, and not when the driver needs
    every frame anyway (`--frames` PNGs, `--preview`). The folder is checked here, before any work.
    """
    if chunk_frames < 1 or not hasattr(runner, "chunk_encoders") or frames_dir is not None or preview is not None:
        return None
    folder = ChunkFolder(chunk_folder(store_root, out))
    folder.check()
    return ChunkSettings(width, height, fps, chunk_frames), folder


def render_chunked(runner, chunking, frames, chains, video_keys: Sequence[str], missing_keys: set[str], audio, out: Path, progress,
                   tags: dict[str, str] | None = None) -> None:
    """Denoise the missing frames through the executor while its encoder tasks encode each completed chunk; join them into `out` (with metadata `tags`)."""
    settings, folder = chunking
    video = set(video_keys)
    # 1. Encoders for the chunks the folder lacks; each is submitted once all its frames are stored.
    encoders = runner.chunk_encoders(video_keys, set(missing_keys), settings, folder)
    progress.stage("frames", total=len(missing_keys))

    def done(keys: Sequence[str], images) -> None:
        encoders.arrived(keys)
        progress.advance(sum(k in video for k in keys))  # a colour reference's own render is no video frame

    # 2. The frames, as in a single-encoder render.
    if chains is not None and missing_keys:
        runner.render_chains(chains, done)
    elif chains is None and frames.missing:
        key_of = frames.key_of()
        runner.render(frames.missing, [key_of[f] for f in frames.missing], done)
    # 3. The last chunks, then one join with the audio.
    progress.stage("encode")
    paths = encoders.finish()
    join(paths, out, settings, len(video_keys), audio, tags)
