"""What a render may write: its outputs checked against its inputs and the files already there.

Nothing the user owns is ever replaced. Before any work, `check_render_outputs` refuses a video,
manifest, `--frames` folder or frame store that is (or would overwrite) the timeline, the audio
or any file latentwalk did not make; `claim` then holds the output's and the store's locks for
the render and removes what it created if the render fails before writing anything.

How latentwalk recognises its own files:
- a manifest: JSON whose "format" is MANIFEST_FORMAT (or, from before that field, one with the
  "timeline", "plan" and "versions" sections and a latentwalk version);
- a video: an .mp4 with such a manifest beside it (same name, .json);
- a `--frames` folder: the FRAMES_MARKER file inside it (written when latentwalk made the folder);
- a frame store: store.MARKER (see store.py).

Nothing is written through a link (see locks.py): a video, manifest, lock, `--frames` PNG or
store file whose name is a symbolic link is refused before any work, and every file is written
by `open_output` / `write_atomic` (a new temp file, then a rename onto a target checked to be no
link), with the mode a new file gets under the umask. Other writers (plots, videos) use those.
"""

import json
import os
import re
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from latentwalk.errors import UserError
# The writers for every output file, also for the modules that write theirs (plot.py, encode.py,
# sweep.py): open_output / write_atomic for contents, create_temp + move_into_place for a file
# another program (ffmpeg) fills; all refuse links and follow the umask (see locks.py).
from latentwalk.locks import create_temp, file_lock, move_into_place, open_output, refuse_link, write_atomic  # noqa: F401
from latentwalk.store import MARKER, FrameStore, describe_state, open_store

MANIFEST_FORMAT = "latentwalk-manifest/1"
FRAMES_MARKER = ".latentwalk-frames"
FRAME_PNG = re.compile(r"^frame_\d{6}\.png$")
MAX_MANIFEST_BYTES = 500_000_000  # a manifest holds one record per frame: ~200 bytes × MAX_FRAMES


@dataclass(frozen=True)
class RenderOutputs:
    video: Path
    manifest: Path
    frames_dir: Path | None
    store: Path
    overwrite_frames: bool = False  # `--frames` may write into a folder holding other files

    @property
    def lock(self) -> Path:
        return self.video.with_name(f".{self.video.name}.lock")


def render_inputs(timeline) -> tuple[Path, ...]:
    """Files a render reads and must never write: the timeline file, its audio, model files."""
    paths = [Path(timeline.source)]
    if timeline.audio is not None and timeline.audio.path is not None:
        paths.append(Path(timeline.audio.path))
    settings = timeline.settings  # a single-file checkpoint or a config file is an input too
    paths += [Path(p).expanduser() for p in (settings.model, getattr(settings, "model_config", None), getattr(settings, "vae", None)) if p]
    return tuple(p for p in paths if p.is_file())


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (hard links and symlinks included); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_manifest(path: Path) -> bool:
    """Whether `path` is a manifest latentwalk wrote (see the module docstring)."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    if data.get("format") == MANIFEST_FORMAT:
        return True
    versions = data.get("versions")
    sections = {"timeline", "plan"} <= set(data) or {"sweep", "cells"} <= set(data)  # a render's or a sweep's
    return sections and isinstance(versions, dict) and "latentwalk" in versions


def check_render_outputs(
    inputs: tuple[Path, ...], video: Path, frames_dir: Path | None, store: "Path | str", *,
    overwrite_frames: bool = False, create_folder: bool = False,
) -> RenderOutputs:
    """The render's output paths, each checked against the inputs and what exists; UserError if unsafe.

    `create_folder`: the video's folder may be made (the default renders/); an --out the user
    typed must name an existing folder, so a typo does not scatter folders.
    """
    manifest = video.with_suffix(".json")
    if not create_folder and not video.parent.is_dir():
        what = "is a file, not a folder" if video.parent.exists() else "does not exist"
        raise UserError(f"--out: the folder {video.parent} {what}; create it first or choose another --out")
    # 1. The video, its manifest and lock: never a link, never an input, never a folder, replaced only if latentwalk made them.
    for path in (video, manifest, video.with_name(f".{video.name}.lock")):
        refuse_link(path, "--out")
    for path, flag in ((video, "--out"), (manifest, "--out")):
        what = "video" if path == video else "manifest"
        if path.is_dir():
            raise UserError(f"{flag}: {path} is a folder; give the video's file name, e.g. {path / 'video.mp4'}")
        for source in inputs:
            if same_file(path, source):
                raise UserError(f"{flag}: the {what} {path} would overwrite the input {source}; choose another --out")
    if manifest.exists() and not is_manifest(manifest):
        raise UserError(f"--out: {manifest} exists and is not a latentwalk manifest; move it or choose another --out")
    if video.exists() and not (manifest.exists() and is_manifest(manifest)):
        raise UserError(
            f"--out: {video} exists and was not made by latentwalk (no manifest {manifest.name} beside it); "
            "move it or choose another --out"
        )
    check_writable(video.parent, "--out")
    # 2. The frames folder: empty, made by latentwalk, or explicitly allowed.
    if frames_dir is not None:
        if frames_dir.exists() and not frames_dir.is_dir():
            raise UserError(f"--frames: {frames_dir} is a file, not a folder")
        if not is_url(store) and same_file(frames_dir, store):
            raise UserError(f"--frames: {frames_dir} is also the frame store; give the PNGs their own folder")
        if frames_dir.is_dir():
            names = set(os.listdir(frames_dir))
            if names and FRAMES_MARKER not in names and not overwrite_frames:
                raise UserError(
                    f"--frames: {frames_dir} already holds {len(names)} files latentwalk did not write; "
                    "use an empty or new folder, or pass --overwrite-frames to write frame_NNNNNN.png files into it"
                )
            for source in inputs:
                if same_file(source.parent, frames_dir) and FRAME_PNG.match(source.name):
                    raise UserError(f"--frames: writing {frames_dir} would overwrite the input {source}")
            for name in sorted(names):  # a frame_NNNNNN.png that links to a user's photo
                if FRAME_PNG.match(name) or name == FRAMES_MARKER:
                    refuse_link(frames_dir / name, "--frames")
        check_writable(frames_dir, "--frames")
    # 3. The frame store: new, empty, or latentwalk's.
    state = open_store(store).state()
    if state in ("file", "foreign"):
        raise UserError(
            f"--store: {store} is not a latentwalk frame store ({describe_state(state)}); use an empty or new folder"
        )
    if not is_url(store):
        check_writable(store, "--store")
    return RenderOutputs(video, manifest, frames_dir, store, overwrite_frames)


def check_writable(folder: Path, flag: str) -> None:
    """Create and delete a temp file in `folder`, or in its nearest existing parent if it does not exist yet."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag}: cannot create {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".latentwalk-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag}: cannot write in {existing}: {e.strerror or e}") from None


def is_url(root: "str | Path") -> bool:
    """A store at a URL (s3://, memory://, ...) rather than a folder here."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


@contextmanager
def claim(outputs: RenderOutputs, wait: bool = False) -> Iterator[FrameStore]:
    """Hold the video's and the store's locks for a render; yields the (created, marked) store.

    Folders this created are removed again on failure if nothing but markers ended up in them,
    and partial files of earlier runs of this video killed mid-write are deleted.
    """
    local_store = None if is_url(outputs.store) else outputs.store
    created = [p for p in (outputs.video.parent, local_store, outputs.frames_dir) if p is not None and not p.exists()]
    with ExitStack() as stack:
        stack.callback(_remove_if_unused, created)  # runs last, after the locks are released
        outputs.video.parent.mkdir(parents=True, exist_ok=True)
        stack.enter_context(file_lock(outputs.lock, f"the video {outputs.video}", wait))
        store = open_store(outputs.store)
        stack.enter_context(store.lock(wait))
        _remove_stale_partials(outputs.video)
        if outputs.frames_dir is not None:
            if not outputs.frames_dir.exists() or not any(outputs.frames_dir.iterdir()):
                outputs.frames_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(outputs.frames_dir / FRAMES_MARKER, b"frame_NNNNNN.png files written by latentwalk render --frames\n", "--frames")
        yield store
        created.clear()  # success: keep every folder made


def _remove_stale_partials(video: Path) -> None:
    """Delete partial videos and manifests that runs of this video left when killed (we hold its lock)."""
    stem = re.escape(f".{video.stem}.")
    pattern = re.compile(rf"^{stem}[\w-]+\.partial(?:\.mp4|\.webm|\.json)$")
    for name in os.listdir(video.parent):
        if pattern.match(name) and not os.path.islink(video.parent / name):  # a link is not a partial file of ours
            (video.parent / name).unlink(missing_ok=True)


def _remove_if_unused(folders: list[Path]) -> None:
    """Remove folders a failed render created, if they hold nothing but latentwalk's markers."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            names = set(os.listdir(folder))
            if names <= {MARKER, FRAMES_MARKER}:
                for name in names:
                    (folder / name).unlink()
                folder.rmdir()
        except OSError:
            pass  # not ours to force


def write_manifest(path: Path, data: dict[str, Any]) -> Path:
    """Write a render's manifest atomically (never through a link), marked with MANIFEST_FORMAT as latentwalk's own."""
    text = json.dumps({"format": MANIFEST_FORMAT, **data}, indent=1)
    return write_atomic(path, text.encode(), "--out", prefix=f".{path.stem}.", suffix=".partial.json")


SWEEP_FILE = re.compile(r"^(?:cell_\d+_\d+\.png|sheet\.png|sweep\.json|sweep(?:_row\d+)?\.mp4)$")


def check_sweep_folder(folder: Path, inputs: tuple[Path, ...]) -> None:
    """A sweep's --out folder: new, empty, or an earlier sweep's (its sweep.json); never over an input."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out: {folder} is a file; a sweep writes a folder of images")
    if folder.is_dir():
        names = os.listdir(folder)
        if names and not is_manifest(folder / "sweep.json"):
            raise UserError(
                f"--out: {folder} already holds {len(names)} files and no latentwalk sweep.json; use an empty or new folder"
            )
        for source in inputs:
            if same_file(source.parent, folder) and SWEEP_FILE.match(source.name):
                raise UserError(f"--out: the sweep would overwrite the input {source}; choose another --out")
    check_writable(folder, "--out")
