"""The README and the manual (docs/*.md) against the code, so that neither can drift from the other.

- The key tables of docs/timeline.md and docs/sweeps.md (each headed `<!-- keys: TAGS -->`) list
  exactly the keys the readers accept (timeline.TOP_KEYS, KEYFRAME_KEYS, ..., sweep.TOP_KEYS,
  AXIS_KEYS, SEEDS_KEYS), with the code's defaults, track ranges and choices.
- Every ```yaml block is read by the timeline reader (a top-level `prompt:` makes it a sweep), and
  whole timelines are planned. A first-line comment marks a block that is only part of a file
  (`# fragment: top|keyframes|audio|sweep`), one that must hold a shipped file's data
  (`# configs/NAME.yaml`), or one the commands use (`# save as: NAME.yaml`); docs/timeline.md
  ("Examples in these pages") says so for readers. Files a block names are made as stand-ins.
- Every `latentwalk ...` command line (in code blocks, `$ ` lines of console blocks, and inline
  code) is parsed by the real argument parser. A concrete line must be a form tests/test_commands.py
  runs (the same subcommand with at least its options); the others are run here, through the
  installed entry point, on small copies of the shipped configs (each block in a fresh folder, its
  lines in order up to the last one not covered). `# not run: why` exempts a line from running.
  Every option a synopsis line shows is used by a concrete line or by test_commands.py.
- Every option of every subcommand is described in docs/commands.md; every relative link resolves.
"""

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from latentwalk import sweep, timeline
from latentwalk.audio import TRACKERS
from latentwalk.cli import build_parser
from latentwalk.device import DEVICE_NAMES, DTYPE_NAMES
from latentwalk.errors import UserError
from latentwalk.executors import EXECUTORS
from latentwalk.lyrics import SNAP_MODES
from latentwalk.modelspec import CHECKPOINT_SUFFIXES, EMBEDDING_SUFFIXES, LORA_SUFFIXES
from latentwalk.params import CAMERA_BORDERS, DEFAULT_FOV, DEFAULT_LORA_WEIGHT, TRACK_BOUNDS, TRACK_DEFAULTS
from latentwalk.schedulers import SCHEDULERS, TIMESTEP_SPACINGS
from latentwalk.tracks import BANDS, FUNCTIONS, VARIABLES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIGS = ROOT / "configs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200
SUBCOMMANDS = tuple(build_parser()._subparsers._group_actions[0].choices)  # render, store, plan, beats, sweep


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- reading markdown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{rel(self.page)}:{self.line}"


FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w-]*)\s*$")


def blocks_and_prose(page: Path) -> tuple[list[Block], str]:
    """The fenced code blocks of a page (indentation removed), and its text outside them."""
    blocks, prose, lines = [], [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        indent, fence, lang = len(m[1]), m[2], m[3]
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^\s*{fence}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n"))
        prose.append("")
        i = j + 1
    return blocks, "\n".join(prose)


ALL_BLOCKS = [b for page in PAGES for b in blocks_and_prose(page)[0]]
YAML_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "yaml"]


def split_row(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


@dataclass(frozen=True)
class KeyTable:
    page: Path
    tags: frozenset[str]
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def keys(self, row: tuple[str, ...]) -> list[str]:
        return re.findall(r"`([^`]+)`", row[0])

    def all_keys(self) -> set[str]:
        return {k for row in self.rows for k in self.keys(row)}

    def cell(self, row: tuple[str, ...], column: str) -> str | None:
        return row[self.header.index(column)] if column in self.header else None


def key_tables(page: Path) -> list[KeyTable]:
    """Tables headed `<!-- keys: tag tag -->`: first column the keys (in backticks), then default, ..."""
    lines, tables = page.read_text().splitlines(), []
    for i, line in enumerate(lines):
        m = re.match(r"^<!-- keys: ([\w ]+) -->$", line.strip())
        if not m:
            continue
        table = []
        for row in lines[i + 1 :]:
            if not row.startswith("|"):
                break
            table.append(split_row(row))
        assert len(table) > 2 and set(table[1][0]) <= set("-: "), f"{rel(page)}:{i + 1}: a keys marker without a table under it"
        tables.append(KeyTable(page, frozenset(m[1].split()), tuple(table[0]), tuple(tuple(r) for r in table[2:])))
    return tables


TIMELINE_TABLES = key_tables(DOCS / "timeline.md")
SWEEP_TABLES = key_tables(DOCS / "sweeps.md")


def tagged(tables: list[KeyTable], tag: str) -> list[KeyTable]:
    return [t for t in tables if tag in t.tags]


def documented(tables: list[KeyTable], tag: str) -> set[str]:
    found = tagged(tables, tag)
    assert found, f"no table is marked `<!-- keys: ... {tag} ... -->`"
    return set().union(*(t.all_keys() for t in found))


# --- the key tables -------------------------------------------------------------------------------

COHERENCE_KEYS = set(timeline.COHERENCE_DEFAULTS) | {"reference"}
TIMELINE_SETS = {
    "top": timeline.TOP_KEYS,
    "settings": set(timeline.SETTING_DEFAULTS),
    "audio": timeline.AUDIO_KEYS,
    "keyframe": timeline.KEYFRAME_KEYS,
    "segment": set(timeline.SEGMENT_DEFAULTS),
    "tracks": set(TRACK_DEFAULTS),
    "feedback": timeline.FEEDBACK_KEYS,
    "lyrics": timeline.LYRICS_KEYS,
    "lora": timeline.LORA_KEYS,
    "embedding": timeline.EMBEDDING_KEYS,
    "coherence": COHERENCE_KEYS,
    "output": timeline.OUTPUT_KEYS,
    "interpolate": timeline.INTERPOLATE_KEYS,
    "upscale": timeline.UPSCALE_KEYS,
    "video": timeline.VIDEO_KEYS,
    "controlnet": timeline.CONTROLNET_KEYS,
}
SWEEP_SETS = {"axis": sweep.AXIS_KEYS, "seeds": sweep.SEEDS_KEYS}


@pytest.mark.parametrize("tag", sorted(TIMELINE_SETS))
def test_timeline_page_lists_exactly_the_keys_the_reader_accepts(tag):
    shown, accepted = documented(TIMELINE_TABLES, tag), TIMELINE_SETS[tag]
    assert not accepted - shown, f"docs/timeline.md does not document {sorted(accepted - shown)} (tables marked {tag})"
    assert not shown - accepted, f"docs/timeline.md documents {sorted(shown - accepted)}, which the reader refuses (tables marked {tag})"


def test_sweep_page_lists_exactly_the_keys_the_sweep_reader_accepts():
    shown = documented(SWEEP_TABLES, "sweep") | documented(TIMELINE_TABLES, "settings")  # "every render setting of a timeline"
    assert shown == sweep.TOP_KEYS, f"undocumented: {sorted(sweep.TOP_KEYS - shown)}; refused: {sorted(shown - sweep.TOP_KEYS)}"
    for tag, accepted in SWEEP_SETS.items():
        assert documented(SWEEP_TABLES, tag) == accepted, tag


def test_every_key_table_is_marked_with_known_tags():
    for table in TIMELINE_TABLES + SWEEP_TABLES:
        known = TIMELINE_SETS if table.page.name == "timeline.md" else {**SWEEP_SETS, "sweep": None}
        assert table.tags <= set(known), f"{rel(table.page)}: unknown tags {sorted(table.tags - set(known))}"
        assert table.header[0] == "key", f"{rel(table.page)}: a key table's first column is `key`, got {table.header}"


# Code defaults each tagged table's `default` column is compared with (None and () mean "none":
# the page says what happens instead, e.g. "the segment's easing").
DEFAULTS = {
    "settings": timeline.SETTING_DEFAULTS,
    "segment": timeline.SEGMENT_DEFAULTS,
    "tracks": TRACK_DEFAULTS,
    "coherence": timeline.COHERENCE_DEFAULTS,
    "lora": {"weight": DEFAULT_LORA_WEIGHT},
    "feedback": {"fov": DEFAULT_FOV},
    "lyrics": {"lyrics_template": timeline.DEFAULT_LYRICS_TEMPLATE},
    "sweep": {"fps": sweep.SWEEP_DEFAULTS["fps"]},
    "seeds": {"count": sweep.DEFAULT_SEED_COUNT},
    "interpolate": timeline.INTERPOLATE_DEFAULTS,
    "upscale": timeline.UPSCALE_DEFAULTS,
}


def shown_default(cell: str) -> str:
    """The literal a default cell starts with: `auto`, 7.5, false, `""`, "8 (1 with ...)" → 8."""
    m = re.match(r"^`([^`]*)`", cell)
    return m[1] if m else re.split(r"[\s(]", cell, maxsplit=1)[0]


def same_value(literal: str, code) -> bool:
    if isinstance(code, bool):
        return literal == str(code).lower()
    if isinstance(code, (int, float)):
        return re.fullmatch(r"-?[\d.]+", literal) is not None and float(literal) == float(code)
    return (literal[1:-1] if literal in ('""', "''") else literal) == code


def test_documented_defaults_are_the_codes():
    checked = 0
    for table in TIMELINE_TABLES + SWEEP_TABLES:
        for tag in table.tags & set(DEFAULTS):
            for row in table.rows:
                for key in table.keys(row):
                    code = DEFAULTS[tag].get(key)
                    if code is None or code == () or "default" not in table.header:
                        continue
                    shown = shown_default(table.cell(row, "default"))
                    assert same_value(shown, code), f"{rel(table.page)}: {key}: the page says {shown!r}, the code's default is {code!r}"
                    checked += 1
    assert checked >= 40, checked  # the tables were found and read


def shown_range(bounds: tuple[float | None, float | None, bool] | None) -> str:
    if bounds is None:
        return "any"
    low, high, exclusive = bounds
    if high is None:
        return f"{'>' if exclusive else '≥'} {low:g}"
    return f"{low:g} to {high:g}"


def test_track_ranges_are_the_codes():
    rows = [(t, row) for t in tagged(TIMELINE_TABLES, "tracks") for row in t.rows]
    for table, row in rows:
        for key in table.keys(row):
            assert table.cell(row, "range") == shown_range(TRACK_BOUNDS.get(key)), f"docs/timeline.md: {key}'s range"
    assert {k for t, row in rows for k in t.keys(row)} == set(TRACK_DEFAULTS)


# Names each row must show (in backticks), from the tables the code validates against.
CHOICES = {
    ("settings", "scheduler"): SCHEDULERS,
    ("settings", "timestep_spacing"): TIMESTEP_SPACINGS,
    ("settings", "interpolation"): timeline.INTERPOLATION_NAMES,
    ("settings", "device"): DEVICE_NAMES,
    ("settings", "dtype"): DTYPE_NAMES,
    ("settings", "executor"): tuple(EXECUTORS),
    ("settings", "model"): CHECKPOINT_SUFFIXES,
    ("segment", "easing"): timeline.EASING_NAMES,
    ("segment", "pacing"): timeline.PACING_NAMES,
    ("segment", "spacing"): timeline.SPACING_NAMES,
    ("audio", "tracker"): TRACKERS,
    ("top", "mode"): timeline.MODES,
    ("feedback", "border"): tuple(CAMERA_BORDERS),
    ("coherence", "reference"): timeline.REFERENCE_NAMES,
    ("lyrics", "lyrics_snap"): SNAP_MODES,
    ("lora", "path"): LORA_SUFFIXES,
    ("embedding", "path"): EMBEDDING_SUFFIXES,
    ("sweep", "mode"): sweep.MODES,
    ("axis", "param"): sweep.PARAMS,
    ("interpolate", "method"): timeline.INTERPOLATE_METHODS,
    ("interpolate", "factor"): tuple(map(str, timeline.INTERPOLATE_FACTORS)),
}


@pytest.mark.parametrize("tag, key", sorted(CHOICES))
def test_documented_choices_are_the_codes(tag, key):
    rows = [" | ".join(row) for t in tagged(TIMELINE_TABLES + SWEEP_TABLES, tag) for row in t.rows if key in t.keys(row)]
    assert rows, f"no row for {key} in the tables marked {tag}"
    missing = [name for name in CHOICES[tag, key] if not any(f"`{name}`" in row for row in rows)]
    assert not missing, f"the {key} row does not name {missing}"


def test_tracks_page_names_every_variable_and_function():
    text = (DOCS / "tracks.md").read_text()
    assert not [v for v in VARIABLES if f"`{v}`" not in text]
    assert not [f for f in FUNCTIONS if f"`{f}(" not in text]
    bands = next(line for line in text.splitlines() if line.startswith("| `low`, `mid`, `high`"))
    limits = {f"{hz:g} Hz" for band in BANDS.values() for hz in band if 0 < hz < float("inf")}
    assert all(limit in bands.replace("–", " Hz, ") for limit in limits), (bands, limits)


# --- YAML examples --------------------------------------------------------------------------------

MARK = re.compile(r"^#\s*(fragment:\s*(?P<fragment>\w+)|(?P<file>configs/[\w.-]+\.yaml)|save as:\s*(?P<save>[\w.-]+\.yaml))")
FRAGMENTS = ("top", "keyframes", "audio", "sweep")
FILLER_KEYFRAMES = "keyframes:\n  - {time: 0, prompt: a clear day over the mountains}\n"


@dataclass(frozen=True)
class Example:
    text: str  # a whole file
    is_sweep: bool
    whole: bool  # as written, not completed
    same_as: Path | None = None
    save_as: str | None = None


def example(block: Block) -> Example:
    m = MARK.match(block.text)
    data = yaml.safe_load(block.text)
    if m and m["fragment"]:
        kind = m["fragment"]
        assert kind in FRAGMENTS, f"{block.id}: unknown fragment kind {kind!r} (one of {FRAGMENTS})"
        if kind == "keyframes":
            return Example("keyframes:\n" + indent(block.text) + "end: {time: 8}\n", False, False)
        if kind == "audio":
            text = "audio:\n" + indent(block.text) + FILLER_KEYFRAMES
            return Example(text + ("" if data.get("path") else "end: {time: 4}\n"), False, False)
        text = block.text
        if kind == "sweep":
            if "prompt" not in data and not any(data.get(a, {}).get("param") == "prompt" for a in ("x", "y")):
                text += "prompt: a clear day over the mountains\n"
            if "x" not in data and "seeds" not in data and data.get("mode") != "seeds":
                text += "x: {param: seed, values: [1, 2]}\n"
            return Example(text, True, False)
        if "keyframes" not in data and "lyrics" not in data:
            text += FILLER_KEYFRAMES
        audio = data.get("audio")
        if "end" not in data and not (isinstance(audio, str) or isinstance(audio, dict) and audio.get("path")):
            text += "end: {time: 4}\n"
        return Example(text, False, False)
    is_sweep = isinstance(data, dict) and "prompt" in data  # timelines have prompts only in keyframes
    if m and m["file"]:
        return Example(block.text, is_sweep, True, same_as=ROOT / m["file"])
    return Example(block.text, is_sweep, True, save_as=m["save"] if m else None)


def indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def write_safetensors(path: Path, names: list[str]) -> None:
    from safetensors.numpy import save_file

    save_file({name: np.zeros((4, 4), dtype=np.float32) for name in names}, str(path))


def make_stand_ins(data: dict, folder: Path, wav: Path) -> None:
    """The files a documented example names, made in `folder` (its base dir and cwd)."""
    def touch(name: str) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    for key, marker, config in (("model", "model_index.json", {"_class_name": "StableDiffusionPipeline"}),
                                ("model_config", "model_index.json", {"_class_name": "StableDiffusionPipeline"}),
                                ("vae", "config.json", {"_class_name": "AutoencoderKL"})):
        value = data.get(key)
        if not isinstance(value, str) or not value.startswith("models/"):  # toy, or a hub id
            continue
        if Path(value).suffix.lower() in CHECKPOINT_SUFFIXES:
            touch(value).write_bytes(b"stand-in checkpoint")
        else:
            touch(f"{value}/{marker}").write_text(json.dumps(config))
    for item in data.get("loras") or []:
        write_safetensors(touch(item if isinstance(item, str) else item["path"]), ["lora_unet_down_blocks_0.lora_down.weight"])
    for item in data.get("embeddings") or []:
        path = touch(item["path"])
        write_safetensors(path, ["emb_params"]) if path.suffix == ".safetensors" else path.write_bytes(b"stand-in")
    audio = data.get("audio")
    audio = audio if isinstance(audio, str) else audio.get("path") if isinstance(audio, dict) else None
    if audio:
        shutil.copy(wav, touch(audio))
    if data.get("lyrics"):
        shutil.copy(CONFIGS / "demo.lrc", touch(data["lyrics"]))
    audio_spec = data.get("audio") if isinstance(data.get("audio"), dict) else {}
    if audio_spec.get("midi"):
        write_stand_in_midi(touch(audio_spec["midi"]))
    if audio_spec.get("tempo_map"):
        touch(audio_spec["tempo_map"]).write_text("time,bpm,meter\n0,120,4/4\n")
    if isinstance(audio_spec.get("beats"), str):
        touch(audio_spec["beats"]).write_text("".join(f"{0.5 * k}\n" for k in range(32)))
    for stem in (audio_spec.get("stems") or {}).values():
        shutil.copy(wav, touch(stem))
    write_stand_in_inputs(data, touch, wav)
    upscale = (data.get("output") or {}).get("upscale") if isinstance(data.get("output"), dict) else None
    if isinstance(upscale, dict) and isinstance(upscale.get("model"), str):  # a super-resolution weights file
        touch(upscale["model"]).write_bytes(b"stand-in weights")
    if data.get("init_image"):
        import imageio.v3 as iio

        iio.imwrite(touch(data["init_image"]), np.full((16, 16, 3), 128, dtype=np.uint8))
    pictures = [item["image"] for item in data.get("keyframes") or [] if isinstance(item, dict) and isinstance(item.get("image"), str)]
    pictures += [v for axis in ("x", "y") if isinstance(data.get(axis), dict) and data[axis].get("param") == "image"
                 for v in data[axis].get("values") or []]  # a sweep's image axis
    for picture in pictures:  # image keyframes' pictures
        from PIL import Image

        Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(touch(picture))


def write_stand_in_inputs(data: dict, touch, wav: Path) -> None:
    """Stand-ins for `video:` (an 8 s clip at 12 fps with the soundtrack) and `controlnets:` (a ControlNet
    folder whose config fits the embedded model, its pictures, folders of 64 pictures, or a clip)."""
    import imageio.v3 as iio

    from latentwalk.control import FAMILY_FIELDS, PICTURE_SUFFIXES
    from latentwalk.toy import MODEL_DIR

    def clip(path: Path) -> None:
        from test_video_input import clip_frames, write_clip

        write_clip(path, clip_frames(96, 16, 16), 12, audio=wav)

    video = data.get("video")
    video = video if isinstance(video, str) else video.get("path") if isinstance(video, dict) else None
    if video:
        clip(touch(video))
    unet = json.loads((MODEL_DIR / "unet" / "config.json").read_text())
    for item in data.get("controlnets") or []:
        config = {"_class_name": "ControlNetModel"} | {k: unet.get(k) for k in FAMILY_FIELDS}
        touch(f"{item['path']}/config.json").write_text(json.dumps(config))
        if item.get("video"):
            clip(touch(item["video"]))
        elif item.get("image") and Path(item["image"]).suffix.lower() in PICTURE_SUFFIXES:
            iio.imwrite(touch(item["image"]), np.full((16, 16, 3), 128, dtype=np.uint8))
        elif item.get("image"):
            for k in range(64):
                iio.imwrite(touch(f"{item['image']}/{k:04d}.png"), np.full((8, 8, 3), 4 * k, dtype=np.uint8))


def write_stand_in_midi(path: Path) -> None:
    """A MIDI file for examples that name one: 120 bpm 4/4, a note on channels 1 and 10 every beat for 16 bars."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000), mido.MetaMessage("time_signature", numerator=4, denominator=4)])
    for _ in range(64):
        track += [mido.Message("note_on", channel=0, note=60, velocity=100), mido.Message("note_on", channel=9, note=36, velocity=90),
                  mido.Message("note_off", channel=0, note=60, time=240), mido.Message("note_off", channel=9, note=36), mido.Message("note_off", channel=0, note=0, time=240)]
    mid.tracks.append(track)
    mid.save(str(path))


@pytest.fixture(scope="module")
def demo_wav(tmp_path_factory) -> Path:
    """configs/demo.wav as `make demo` writes it."""
    wav = tmp_path_factory.mktemp("soundtrack") / "demo.wav"
    subprocess.run([sys.executable, "-m", "latentwalk.toy.soundtrack", str(wav)], check=True, capture_output=True)
    return wav


def test_there_are_yaml_examples_of_every_kind():
    kinds = {MARK.match(b.text)["fragment"] or ("file" if MARK.match(b.text)["file"] else "save") for b in YAML_BLOCKS if MARK.match(b.text)}
    assert kinds >= {*FRAGMENTS, "file", "save"}, kinds
    assert len(YAML_BLOCKS) >= 20


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.id)
def test_yaml_example_is_read_by_latentwalk(block, tmp_path, monkeypatch, demo_wav):
    from latentwalk.api import plan

    ex = example(block)
    data = yaml.safe_load(ex.text)
    make_stand_ins(data, tmp_path, demo_wav)
    monkeypatch.chdir(tmp_path)  # model folders are relative to the working directory
    source = f"{block.id} (as completed)" if not ex.whole else block.id
    try:
        if ex.is_sweep:
            sweep.parse_sweep(ex.text, source=source, base_dir=tmp_path)
        else:
            parsed = timeline.parse_timeline(ex.text, source=source, base_dir=tmp_path)
            if ex.whole:
                assert plan(parsed).n_frames > 0
    except UserError as e:
        pytest.fail(f"{block.id}: {e}\n---\n{ex.text}")
    if ex.same_as is not None:
        assert data == yaml.safe_load(ex.same_as.read_text()), f"{block.id} no longer holds the data of {rel(ex.same_as)}"


# --- command lines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    block: Block | None  # None: inline code in prose
    page: Path
    index: int  # position in its block
    text: str  # without `$ ` and the trailing comment
    comment: str
    expect: int  # exit status (console blocks: 2 when the output shown is an error)

    @property
    def tokens(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def synopsis(self) -> bool:
        """A usage form with placeholders (TIMELINE.yaml, [--out FILE], a|b, ...), not a runnable line."""
        return bool(re.search(r"[\[\]|…]|\.\.\.|\b[A-Z][A-Z_]+\b", self.text))

    @property
    def subcommand(self) -> str:
        words = self.text.split()
        return words[1] if len(words) > 1 and not words[1].startswith("-") else ""

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(f.split("=")[0] for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*", self.text))

    @property
    def not_run(self) -> bool:
        return "not run" in self.comment

    def where(self) -> str:
        return f"{self.block.id if self.block else rel(self.page)}: {self.text}"


def split_comment(line: str) -> tuple[str, str]:
    m = re.search(r"\s+#\s", line)
    return (line[: m.start()], line[m.end() :]) if m else (line, "")


def commands_of(page: Path) -> list[Command]:
    blocks, prose = blocks_and_prose(page)
    found = []
    for block in blocks:
        if block.lang in ("yaml", "python", "text"):  # text: output, not commands
            continue
        lines = block.text.splitlines()
        for i, line in enumerate(lines):
            if block.lang == "console":
                if not line.startswith("$ latentwalk "):
                    continue
                line = line[2:]
                following = lines[i + 1] if i + 1 < len(lines) else ""
                expect = 2 if following.startswith("latentwalk: error:") else 0
            elif line.startswith("latentwalk "):
                expect = 0
            else:
                continue
            text, comment = split_comment(line)
            found.append(Command(block, page, i, text.strip(), comment, expect))
    for span in re.findall(r"`([^`]+)`", prose):
        text = " ".join(span.split())
        if text.startswith("latentwalk ") and len(text.split()) > 2:  # `latentwalk plan` alone is a name
            found.append(Command(None, page, 0, text, "", 0))
    return found


COMMANDS = [c for page in PAGES for c in commands_of(page)]


def subparser(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]


def test_there_are_command_lines_of_every_subcommand():
    assert {c.subcommand for c in COMMANDS if not c.synopsis} >= set(SUBCOMMANDS)
    assert {c.subcommand for c in COMMANDS if c.synopsis} >= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.where()[:80])
def test_command_line_is_accepted_by_the_parser(command):
    if command.synopsis:
        assert command.subcommand in SUBCOMMANDS, command.where()
        options = set(subparser(command.subcommand)._option_string_actions)
        assert command.flags <= options, f"{command.where()}: no such option {sorted(command.flags - options)}"
        return
    try:
        build_parser().parse_args(command.tokens[1:])
    except UserError as e:
        pytest.fail(f"{command.where()}: {e}")
    except SystemExit as e:  # --help
        assert e.code == 0 and "--help" in command.tokens, command.where()


def runs_in(source: Path) -> set[tuple[str, frozenset[str]]]:
    """(subcommand, options) of every `run("sub", ..., "--flag", ...)` call in a test file."""
    forms = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and first.value in SUBCOMMANDS:
            words = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            forms.add((first.value, frozenset(w for w in words if w.startswith("--"))))
    return forms


# test_show.py and test_upscale.py run `show` and the self-describing video's and upscale's commands the same way.
TEST_COMMANDS_RUNS = set().union(*(runs_in(ROOT / "tests" / name) for name in ("test_commands.py", "test_show.py", "test_upscale.py")))


def covered(command: Command) -> bool:
    return any(sub == command.subcommand and command.flags <= flags for sub, flags in TEST_COMMANDS_RUNS)


CONCRETE = [c for c in COMMANDS if not c.synopsis]
TO_RUN = [c for c in CONCRETE if not c.not_run and not covered(c)]
# A block runs in order up to its last line that test_commands.py does not run (earlier lines set
# the scene: a render before a prune); a line in prose runs alone.
RUN_GROUPS: dict[str, list[Command]] = {}
for c in TO_RUN:
    if c.block is None:
        RUN_GROUPS[c.where()] = [c]
    else:
        same = [d for d in CONCRETE if d.block == c.block and d.index <= c.index and not d.not_run]
        RUN_GROUPS[c.block.id] = same


def test_test_commands_runs_were_read():
    assert len(TEST_COMMANDS_RUNS) >= 10 and {sub for sub, _ in TEST_COMMANDS_RUNS} == set(SUBCOMMANDS)


def test_every_option_a_synopsis_shows_is_run():
    concrete = {(c.subcommand, f) for c in CONCRETE for f in c.flags}
    from_tests = {(sub, f) for sub, flags in TEST_COMMANDS_RUNS for f in flags}
    shown = {(c.subcommand, f) for c in COMMANDS if c.synopsis for f in c.flags}
    missing = sorted(shown - concrete - from_tests)
    assert not missing, f"the docs show options no documented command line and no test runs: {missing}"


def test_every_option_is_described_in_the_commands_page():
    text = (DOCS / "commands.md").read_text()
    for name in SUBCOMMANDS:
        assert f"\n## {name}\n" in text, f"docs/commands.md has no section `## {name}`"
        options = {o for o in subparser(name)._option_string_actions if o.startswith("--") and o != "--help"}
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
        missing = sorted(o for o in options if not re.search(rf"`{o}[` ]", table))
        assert not missing, f"docs/commands.md, {name}: options with no row in its table: {missing}"


# Small copies of the shipped configs for the commands run here: the embedded model at 64 px, few
# steps, 1 fps where no keyframe counts frames (the configs' keyframes are bars apart), `spacing: t` (no probes: a render takes seconds,
# and a store can be pruned without one).
SMALL_TIMELINE = {"width": 64, "height": 64, "steps": 4, "spacing": "t"}
SMALL_SWEEP = {"width": 64, "height": 64, "steps": 2}


def small(data: dict) -> dict:
    if "prompt" in data:  # a sweep
        data = {**data, **SMALL_SWEEP}
        if "seeds" in data or data.get("mode") == "seeds":
            data["seeds"] = {**(data.get("seeds") or {}), "count": 2}
        for axis in ("x", "y"):
            if isinstance(data.get(axis), dict):
                values = data[axis].get("values")
                data[axis] = {"param": data[axis]["param"], "values": values[:2]} if values else {**data[axis], "range": [*data[axis]["range"][:2], 2]}
        return data
    data = {**data, **SMALL_TIMELINE}
    if not any("frame" in k for k in data.get("keyframes") or []) and (data.get("end") or {}) != "audio" and "frame" not in (data.get("end") or {}):
        data["fps"] = 1
    return data


@pytest.fixture(scope="module")
def command_folder(tmp_path_factory, demo_wav) -> Path:
    """A folder laid out as the repository (configs/ with its audio) plus the files the docs save, all small."""
    work = tmp_path_factory.mktemp("doc-commands")
    (work / "configs").mkdir()
    for path in CONFIGS.glob("*.yaml"):
        (work / "configs" / path.name).write_text(yaml.safe_dump(small(yaml.safe_load(path.read_text())), sort_keys=False))
    shutil.copy(CONFIGS / "demo.lrc", work / "configs")
    for folder in (p for p in CONFIGS.iterdir() if p.is_dir()):  # the shipped inputs of configs (video/clip.mp4, ...)
        shutil.copytree(folder, work / "configs" / folder.name, dirs_exist_ok=True)
    shutil.copy(demo_wav, work / "configs" / "demo.wav")
    shutil.copy(demo_wav, work / "song.wav")
    write_stand_in_midi(work / "song.mid")
    for block in YAML_BLOCKS:
        ex = example(block)
        if ex.save_as:
            (work / ex.save_as).write_text(yaml.safe_dump(small(yaml.safe_load(ex.text)), sort_keys=False))
    return work


def latentwalk_command() -> list[str]:
    script = Path(sys.executable).parent / "latentwalk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "latentwalk.cli"]


@pytest.mark.slow
@pytest.mark.parametrize("group", sorted(RUN_GROUPS), ids=str)
def test_documented_command_runs(group, command_folder, tmp_path, _audio_cache_root):
    work = tmp_path / "work"
    shutil.copytree(command_folder, work)
    env = {**os.environ, "LATENTWALK_CACHE": str(_audio_cache_root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for command in RUN_GROUPS[group]:
        result = subprocess.run([*latentwalk_command(), *command.tokens[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == command.expect, f"{command.where()}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, command.where()


# --- pages ----------------------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    _, prose = blocks_and_prose(page)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", prose, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_resolve(page):
    _, prose = blocks_and_prose(page)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{rel(page)}: a link to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(file), f"{rel(page)}: a link to {target}: no such heading in {file.name}"


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"docs/{page.name}" in text or f"({page.name}" in (DOCS / "index.md").read_text(), page.name
    assert "no GPU was available" in text
    assert "make demo" in text and "make test" in text and "constraints.txt" in text
