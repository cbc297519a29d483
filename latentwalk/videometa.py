"""A self-describing video: the timeline that made an mp4, and how, inside the mp4's own metadata.

A render writes one `comment` tag, PREFIX followed by base64 of zlib-compressed JSON (the YAML
as written, the resolved settings, the overrides, the store, the batch size and device that key
the frames, latentwalk's version, and every file the timeline reads with its fingerprint), so
a video carries what made it wherever it is copied. `latentwalk show VIDEO.mp4` prints it;
`latentwalk render VIDEO.mp4` renders it again from its store, after checking that every file it
names is still there and unchanged (docs/outputs.md, "A self-describing video").

Relative paths: the timeline's own (audio, lyrics, LoRAs, ...) are resolved against the folder
it was read from, recorded as an absolute path; `model`, `model_config` and `vae`, which the
reader takes relative to the working directory, are made absolute when rendered again.
Torch-free: `show` reads a video's tag with ffmpeg alone.
"""

import base64
import binascii
import json
import os
import re
import subprocess
import zlib
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from latentwalk.errors import UserError
from latentwalk.manifest import to_jsonable
from latentwalk.version import __version__

if TYPE_CHECKING:
    from latentwalk.overrides import Overrides
    from latentwalk.timeline import Timeline

FORMAT = "latentwalk-video/1"
TAG = "comment"  # a tag every player and `ffprobe` shows; a custom key needs -movflags use_metadata_tags
PREFIX = FORMAT + ":"
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
CWD_KEYS = ("model", "model_config", "vae")  # read relative to the working directory, not the timeline's folder
MAX_PAYLOAD_BYTES = 50_000_000  # decompressed: a timeline is at most 10 MB (timeline.MAX_YAML_BYTES)


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# --- writing -------------------------------------------------------------------------------------


def video_tags(timeline: "Timeline", overrides: "Overrides | None", store: str | Path, batch_size: int, device: str) -> dict[str, str]:
    """The metadata tags of a render's video: {TAG: PREFIX + base64(zlib(JSON))}."""
    return {TAG: encode(describe(timeline, overrides, store, batch_size, device))}


def encode(payload: dict) -> str:
    return PREFIX + base64.b64encode(zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 9)).decode()


def describe(timeline: "Timeline", overrides: "Overrides | None", store: str | Path, batch_size: int, device: str) -> dict:
    """What re-renders this video: the timeline (as written), its files, overrides, store and frame-keying options."""
    source = Path(timeline.source)
    if is_video(source) and source.is_file():  # rendered from a video: carry its timeline on
        section, files = _from_video(source)
    else:
        section = {
            "source": str(source.resolve()) if source.is_file() else timeline.source,
            "base_dir": str(source.resolve().parent if source.is_file() else Path.cwd()),
            "cwd": os.getcwd(),
            "yaml": _yaml_text(timeline),
        }
        files = [{"field": name, "path": str(Path(path).resolve()), "fingerprint": fingerprint(path)} for name, path in timeline_files(timeline)]
    section["resolved"] = to_jsonable(asdict(timeline.settings))
    store = store if isinstance(store, str) and "://" in store else str(Path(store).resolve())
    return {
        "format": FORMAT, "latentwalk": __version__,  # no time of making: the same frames give the same bytes
        "timeline": section, "files": files, "overrides": overrides.manifest() if overrides is not None else None,
        "store": store, "batch_size": batch_size, "device": device,
    }


def _yaml_text(timeline: "Timeline") -> str:
    """The timeline file's text when it still reads as the parsed timeline, else the YAML as read, dumped."""
    try:
        text = Path(timeline.source).read_text()
        if yaml.safe_load(text) == timeline.raw:
            return text
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return yaml.safe_dump(to_jsonable(timeline.raw), sort_keys=False, allow_unicode=True)


def _from_video(video: Path) -> tuple[dict, list]:
    payload = read(video)
    return {k: v for k, v in payload["timeline"].items() if k != "resolved"}, payload["files"]


def timeline_files(timeline: "Timeline") -> list[tuple[str, Path]]:
    """(field, path) of every file the timeline reads: the model, adapters, audio and its companions, lyrics, pictures, weights."""
    from latentwalk.device import resolve_model

    settings = timeline.settings
    found: dict[Path, str] = {}
    model = Path(resolve_model(settings.model))
    named = [("model", model if model.exists() else None), ("model_config", settings.model_config), ("vae", settings.vae)]
    named += [(f"loras[{i}].path", lora.path) for i, lora in enumerate(settings.loras)]
    named += [(f"embeddings[{i}].path", e.path) for i, e in enumerate(settings.embeddings)]
    if isinstance(timeline.raw.get("lyrics"), str):
        base = Path(timeline.source).parent
        named.append(("lyrics", Path(timeline.raw["lyrics"]).expanduser() if Path(timeline.raw["lyrics"]).is_absolute() else base / timeline.raw["lyrics"]))
    named += list(_paths(timeline.audio, "audio")) + list(_paths(timeline.keyframes, "keyframes")) + list(_paths(timeline.output, "output"))
    for name, path in named:
        if path is not None and Path(path).exists():
            found.setdefault(Path(path).resolve(), name)
    return [(name, path) for path, name in found.items()]


def _paths(value: Any, name: str) -> Iterator[tuple[str, Path]]:
    """Every Path inside parsed timeline objects, named by its field (audio.path, audio.stems[0], ...)."""
    if isinstance(value, Path):
        yield name, value
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            if f.name not in ("raw", "lines"):
                yield from _paths(getattr(value, f.name), f"{name}.{f.name}")
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _paths(item, f"{name}[{i}]")


def fingerprint(path: str | Path) -> str:
    from latentwalk.modelspec import file_fingerprint

    return file_fingerprint(path)


# --- reading -------------------------------------------------------------------------------------


def read(video: str | Path) -> dict:
    """The payload a latentwalk render left in `video`; UserError if there is none."""
    from latentwalk.encode import ffmpeg_exe

    video = Path(video)
    if not video.is_file():
        raise UserError(f"no such video: {str(video)!r}")
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(video), "-f", "ffmetadata", "-"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        raise UserError(f"{video}: not a video ffmpeg can read: {result.stderr.decode(errors='replace').strip() or 'no message'}")
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.lower().startswith(f"{TAG}=") and _unescape(line[len(TAG) + 1 :]).startswith(PREFIX):  # webm: COMMENT=
            return decode(_unescape(line[len(TAG) + 1 :]), video)
    raise UserError(f"{video}: holds no latentwalk timeline (no {TAG} tag starting {PREFIX!r}): it was made by another program or an older latentwalk")


def _unescape(value: str) -> str:
    """ffmetadata escapes '=', ';', '#', '\\' and newlines with a backslash."""
    return re.sub(r"\\(.)", r"\1", value, flags=re.S)


def decode(text: str, video: Path) -> dict:
    try:
        raw = zlib.decompressobj().decompress(base64.b64decode(text[len(PREFIX) :], validate=True), MAX_PAYLOAD_BYTES)
        payload = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError) as e:
        raise UserError(f"{video}: its latentwalk tag is damaged ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("timeline"), dict):
        raise UserError(f"{video}: its latentwalk tag is not a {FORMAT} description")
    return payload


def file_status(entry: dict) -> str:
    """'ok', 'changed' or 'gone': a recorded file against what is there now."""
    path = Path(entry["path"])
    if not path.exists():
        return "gone"
    return "ok" if fingerprint(path) == entry["fingerprint"] else "changed"


def check_files(payload: dict, video: Path) -> None:
    """Every file the video's timeline read must still be there, unchanged: else its frames would differ."""
    for entry in payload["files"]:
        status = file_status(entry)
        if status != "ok":
            what = "is gone" if status == "gone" else "has changed since the video was made"
            raise UserError(
                f"{video}: {entry['field']}: {entry['path']} {what}; put the original back, or save the timeline "
                f"(latentwalk show {video} --yaml > timeline.yaml) and render that"
            )


def timeline_text(payload: dict) -> str:
    """The embedded YAML with `model`, `model_config` and `vae` made absolute against the working directory they were read in."""
    section = payload["timeline"]
    data = yaml.safe_load(section["yaml"])
    changed = False
    for key in CWD_KEYS:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value != "toy" and not Path(value).expanduser().is_absolute() and (Path(section["cwd"]) / value).exists():
            data[key], changed = str(Path(section["cwd"]) / value), True
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True) if changed else section["yaml"]


def timeline_from_video(video: str | Path) -> tuple["Timeline", "Overrides | None", dict]:
    """The video's timeline (its source: the video), its overrides, and {store, batch_size, device} it was keyed with."""
    from latentwalk.overrides import Overrides, parse_position
    from latentwalk.timeline import parse_timeline

    video = Path(video)
    payload = read(video)
    check_files(payload, video)
    timeline = parse_timeline(timeline_text(payload), source=str(video), base_dir=Path(payload["timeline"]["base_dir"]))
    given = payload.get("overrides")
    overrides = None
    if given:
        overrides = Overrides(
            draft=bool(given.get("draft")), size=tuple(given["size"]) if given.get("size") else None, steps=given.get("steps"),
            fps=given.get("fps"), start=parse_position(given["from"], "--from") if given.get("from") else None,
            stop=parse_position(given["to"], "--to") if given.get("to") else None,
        )
    return timeline, overrides, {key: payload.get(key) for key in ("store", "batch_size", "device")}


def again_name(video: Path) -> Path:
    """Where `render VIDEO.mp4` writes without --out: beside it, never over it (x.mp4 → x.again.mp4, x.webm → x.again.webm)."""
    return video.with_name(f"{video.stem}.again{'.webm' if video.suffix.lower() == '.webm' else '.mp4'}")


# --- showing -------------------------------------------------------------------------------------


def format_payload(payload: dict, video: Path) -> str:
    """What `latentwalk show` prints: who made the video, from what, and the timeline as written."""
    section, settings = payload["timeline"], payload["timeline"].get("resolved", {})
    lines = [
        f"{video}: made by latentwalk {payload.get('latentwalk', '?')}",
        f"timeline: {section.get('source')} (relative paths from {section.get('base_dir')})",
        f"store: {payload.get('store')} (batch size {payload.get('batch_size')}, device {payload.get('device')})",
    ]
    given = {k: v for k, v in (payload.get("overrides") or {}).items() if v not in (None, False)}
    lines.append("overrides: " + (", ".join(f"{k} {v}" for k, v in given.items()) if given else "none"))
    if settings:
        shown = ("model", "width", "height", "fps", "steps", "guidance", "scheduler", "batch_size", "share_steps")
        lines.append("settings: " + ", ".join(f"{k} {settings[k]}" for k in shown if k in settings))
    if payload.get("files"):
        lines.append("files:")
        width = max(len(e["field"]) for e in payload["files"])
        lines += [f"  {e['field']:<{width}}  {file_status(e):<7}  {e['path']}" for e in payload["files"]]
    lines += ["", "timeline (YAML as written):", section["yaml"].rstrip("\n")]
    return "\n".join(lines)
