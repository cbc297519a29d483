"""Stage 1: a YAML timeline → frozen, fully validated `Timeline` objects.

Everything that can be checked without the audio or the model is checked here, and every
error names the field, the value and the YAML line. Checks that need the beat grid
(keyframe order, beats past the end of the audio) happen in `schedule.resolve`.
"""

import difflib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from latentwalk.errors import UserError
from latentwalk.chunks import CHUNK_FRAMES
from latentwalk.executors import EXECUTORS
from latentwalk.modelspec import CHECKPOINT_SUFFIXES, EMBEDDING_SUFFIXES, LORA_SUFFIXES, EmbeddingSpec, LoraSpec, safetensors_names
from latentwalk.audio import TRACKERS
from latentwalk.device import DEVICE_NAMES, DTYPE_NAMES
from latentwalk.manual import section
from latentwalk.params import CAMERA_BORDERS, CAMERA_TRACKS, DEFAULT_FOV, DEFAULT_LORA_WEIGHT, MAX_SEED, MAX_SHARPEN, TRACK_BOUNDS, TRACK_DEFAULTS
from latentwalk.schedulers import SCHEDULERS, SHARE_AUTO_SCHEDULERS, TIMESTEP_SPACINGS
from latentwalk.tracks import Track, parse_expression
from latentwalk import control, video_input

UNITS = ("time", "beat", "bar", "frame")
EASING_NAMES = ("linear", "smoothstep", "cosine", "cubic_in", "cubic_out", "cubic_in_out", "hold")
PACING_NAMES = ("uniform", "audio")
# slerp/lerp travel the text embeddings; blend travels the guided noise predictions of the two
# prompts (engine.BLEND), avoiding the third concept an embedding midpoint can show, at 1.5x UNet work.
INTERPOLATION_NAMES = ("slerp", "lerp", "blend")
# A Ray cluster: "auto" (the one `ray start` left on this machine), its GCS "host:port", or a
# Ray Client "ray://host:port".
RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")
# A hub id is "owner/name"; anything else that is not a folder is a typo, caught before loading.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SCHEDULER_NAMES = tuple(SCHEDULERS)
# A LoRA's name in keyframes and frame params; no '.': the model's LoRA layers are named after it.
LORA_NAME = re.compile(r"^[A-Za-z0-9_][\w-]*$")
# How a segment's frames spread along its travel: `perceptual` places them so the picture changes
# evenly (measured at render time, see placement.py); `t` evenly in the interpolation weight.
SPACING_NAMES = ("perceptual", "t")
# `share_steps: auto`: frames between probes of a perceptual segment share this fraction of the
# steps with the probes around them (with ddim, euler and dpmpp_2m; with few-step samplers none). Measured on the
# embedded model: see docs/smooth-travel.md, "Shared trajectories" and benchmarks/bench_smooth.py --parts sharing.
SHARE_AUTO_FRACTION = 0.8  # 16 of 20 steps
# `placement_budget`: the most probe frames a perceptual segment gets (placement.py stops earlier
# once its probes predict even frames). Chosen on the tuning walks of benchmarks/bench_smooth.py.
MAX_PLACEMENT_BUDGET = 1024
DEFAULT_HOLD = 0.5  # fraction of a segment that `easing: hold` stays on its first keyframe
MODES = ("travel", "feedback")
REFERENCE_NAMES = ("first", "keyframe")  # colour coherence matches each chain's first frame, or its keyframe's own image
COHERENCE_DEFAULTS: dict[str, float] = {"colour": 1.0, "noise": 0.0, "sharpen": 0.0, "max_contrast": 0.0}
# Keys that only mean something in mode: feedback.
FEEDBACK_KEYS = {"cadence", "coherence", "fov", "border"} | set(CAMERA_TRACKS)
LYRICS_KEYS = {"lyrics", "lyrics_snap", "lyrics_template", "lyrics_vars", "lyrics_overrides", "lyrics_seed"}
DEFAULT_LYRICS_TEMPLATE = "{line}"

# Sane ranges, checked before any work: past these a render allocates gigabytes or runs for days
# before failing (width 100000 loaded the model then died; fps 1e9 tried a 1e10-frame array).
MAX_SIZE = 4096  # pixels per side; SDXL's native size is 1024, 4096 already needs vae_tiling
MAX_FPS = 240
MAX_STEPS = 1000  # the training schedules of SD models have 1000 timesteps
MAX_BATCH_SIZE = 256
MAX_BPM = 400  # fastest tempo a beat grid is laid at (speedcore tops out near 300)
MAX_SECONDS = 24 * 3600  # any time position, audio start or end
MAX_BEATS = 1_000_000  # beat/bar positions and the downbeat: 24 hours at 400 bpm is 576,000
MAX_BEATS_PER_BAR = 64
DEFAULT_BEATS_PER_BAR = 4  # or "auto"
MAX_PACING_STRENGTH = 100
MAX_FRAMES = 200_000  # video frames: 1h51m at 30 fps; each planned frame costs ~1 KB before rendering
# YAML bounds: an alias bomb (a few lines that expand to billions of nodes) must fail fast.
MAX_YAML_BYTES = 10_000_000
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000  # after expanding aliases
# Output stages (docs/outputs.md): work on the frames between the store and the encoder.
# `interpolate` denoises every factor-th frame and makes the ones between; rife is left out: no
# well-kept library loads RIFE weights from a local file (see docs/outputs.md).
INTERPOLATE_FACTORS = (2, 3, 4)
INTERPOLATE_METHODS = ("latent", "flow")
INTERPOLATE_DEFAULTS: dict[str, Any] = {"factor": 2, "method": "latent"}
# `upscale` makes every video frame `factor` times larger: `refine` (a hires fix: Lanczos, then a
# few img2img steps with the frame's own conditioning) or `model` (a super-resolution file the
# user supplies, loaded through spandrel). Refine's strength: 0.35 keeps the composition and
# redraws the detail (A1111's hires fix defaults to 0.7 over a latent upscale, which needs more).
UPSCALE_FACTORS = (2, 4)
UPSCALE_METHODS = ("refine", "model")
UPSCALE_DEFAULTS: dict[str, Any] = {"factor": 2, "method": "refine", "steps": None, "strength": 0.35, "model": None}
SR_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")  # what spandrel reads


@dataclass(frozen=True)
class Position:
    """A point on the timeline in exactly one unit: seconds, beats, bars or frames."""

    unit: str  # one of UNITS
    value: float


@dataclass(frozen=True)
class Keyframe:
    prompt: str
    seed: int
    position: Position
    negative_prompt: str | None  # None: the timeline's negative_prompt
    # How the segment leaving this keyframe travels to the next one.
    easing: str
    noise_easing: str  # easing of the noise slerp; defaults to `easing`
    hold: float  # fraction of the segment spent on this keyframe before travelling
    pacing: str
    pacing_strength: float
    line: int  # YAML line of the keyframe, for error messages
    tracks: tuple[tuple[str, Track], ...] = ()  # track values set on this keyframe, sorted by name
    cut: bool = False  # mode: feedback: start a new chain here, rendered from scratch
    snap: str = "none"  # lyric keyframes: snap the time to the nearest "beat" or "bar"
    origin: str = ""  # where a generated keyframe comes from ("song.lrc:12"); "" for the YAML list
    spacing: str = "perceptual"  # one of SPACING_NAMES, for the segment leaving this keyframe

    @property
    def guidance(self) -> Track | None:
        """This keyframe's guidance, or None for the timeline's."""
        return dict(self.tracks).get("guidance")
    # LoRA weights set at this keyframe, (name, weight) in the order written; a LoRA not set
    # here is at its top-level weight. Each travels to the next keyframe's like guidance.
    loras: tuple[tuple[str, float], ...] = ()
    # An image keyframe's picture (resolved path, checked when read; docs/pictures.md): its frame
    # is the picture, and the travel to and from it passes through the picture's inverted noise.
    image: str | None = None
    # ControlNet weights set at this keyframe, (name, weight) in the order written; each travels to
    # the next keyframe's like a LoRA weight (docs/video-and-control.md).
    controls: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class AudioSpec:
    path: Path | None  # None: a silent beat grid at `bpm`
    start: float  # seconds into the file where the video starts
    end: float | None  # seconds into the file where the audio used stops; None: end of file
    bpm: float | None  # override: beats are tracked at this tempo (or laid on a grid without a file)
    beats_per_bar: int
    downbeat: int | None  # beat index of bar 0; None: the tracked downbeat, else beat 0
    tracker: str = "auto"  # beat tracker: audio.TRACKERS
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # YAML line of each audio field, for errors
    # The user's own grid and stems (docs/beats.md): beats and bars exactly from a MIDI file or a
    # tempo map (its time 0 at `offset` seconds into the audio file), stem files whose features
    # become `rms.NAME`-style variables, and overrides of the tracked beats.
    midi: Path | None = None
    tempo_map: Path | None = None
    offset: float = 0.0
    stems: tuple[tuple[str, Path], ...] = ()  # (name, file), in the order written
    beats_from: str | None = None  # a stem name: beats are tracked on that stem
    beats_offset: float = 0.0  # seconds added to every tracked beat
    beats: tuple[float, ...] | None = None  # beat times (seconds into the file) instead of the tracker's
    sections: tuple[tuple[float, float, float], ...] = ()  # (start, end, bpm): a steady grid laid over those seconds of the clip
    # Set from the analysis, not the YAML: beat index of every bar start where the grid knows its
    # bars exactly (a MIDI file's or tempo map's, whose meter may change); empty: beats_per_bar from downbeat.
    bar_starts: tuple[int, ...] = ()
    auto_meter: bool = False  # beats_per_bar: auto: set from the meter inferred over the whole song


@dataclass(frozen=True)
class RenderSettings:
    model: str
    width: int
    height: int
    fps: float
    steps: int
    guidance: float | str  # the top-level guidance track: a number, or an expression's text
    scheduler: str
    timestep_spacing: str  # auto: the model's own; few-step models want trailing
    negative_prompt: str
    interpolation: str  # how text conditioning travels: slerp or lerp
    device: str
    dtype: str
    batch_size: int
    # Options for big models and GPUs; see render.ModelOptions for what each one trades.
    channels_last: bool | str  # or "auto": on for the CPU (measured faster), off elsewhere
    compile: bool
    attention_slicing: bool
    vae_tiling: bool
    cpu_offload: bool
    model_config: str | None  # a local diffusers folder of the same family, for a checkpoint file
    vae: str | None  # a diffusers VAE folder replacing the model's
    loras: tuple[LoraSpec, ...] = ()  # in the order written, which is the order their updates add up
    embeddings: tuple[EmbeddingSpec, ...] = ()
    # Where frames are denoised (see farm.py): this process, or Ray workers. Defaults keep
    # code that builds RenderSettings by hand working.
    executor: str = "local"
    ray_address: str | None = None  # None: start a local cluster; "auto"; "host:port"; "ray://host:port"
    ray_cpus_per_worker: int = 1  # CPU cores each worker reserves (and its torch threads on CPU)
    ray_workers: int | None = None  # None: one per GPU, or as many as the cluster's CPUs allow
    chunk_frames: int = CHUNK_FRAMES  # a farm encodes the video in chunks of this many frames on the cluster; 0: on the driver
    # Denoising steps a perceptually placed frame shares with the probes around it (resolved from
    # `share_steps`; 0: every frame from its own noise). See frames.FrameInputs.share.
    share_steps: int = 0
    placement_budget: int = 32  # probe frames per perceptual segment, at most (placement.BUDGET)
    # Video to video and ControlNets (docs/video-and-control.md): the source clip every frame starts
    # from, and the ControlNets beside the UNet with their control images.
    video: "video_input.VideoSpec | None" = None
    controlnets: tuple["control.ControlSpec", ...] = ()


@dataclass(frozen=True)
class InterpolateSpec:
    """`output.interpolate`: denoise every `factor`-th frame (and every keyframe's), make the rest by `method`."""

    factor: int  # one of INTERPOLATE_FACTORS
    method: str  # one of INTERPOLATE_METHODS


@dataclass(frozen=True)
class UpscaleSpec:
    """`output.upscale`: every video frame made `factor` times larger (see upscale.py)."""

    factor: int  # one of UPSCALE_FACTORS
    method: str  # one of UPSCALE_METHODS
    steps: int  # refine: the img2img schedule's length (it runs about steps × strength); the timeline's steps if not given
    strength: float  # refine: how much of the enlarged frame is re-imagined, in (0, 1]
    model: Path | None  # method model: the super-resolution weights file


@dataclass(frozen=True)
class OutputSpec:
    """The `output:` mapping: stages between the frame store and the encoder; None: stage off."""

    interpolate: InterpolateSpec | None = None
    upscale: UpscaleSpec | None = None


@dataclass(frozen=True)
class Timeline:
    settings: RenderSettings
    audio: AudioSpec | None
    keyframes: tuple[Keyframe, ...]
    end: Position | None  # None: the end of the audio
    source: str  # file name, for messages
    raw: dict = field(compare=False, repr=False)  # the YAML as read, saved in the manifest
    tracks: tuple[tuple[str, Track], ...] = ()  # top-level value of every track in TRACK_DEFAULTS
    lyrics: tuple[Keyframe, ...] = ()  # keyframes from the lyrics file, merged in by the schedule
    noise_shift_seed: int | None = None  # noise_shift's second noise; None: each frame's seed_a + 1
    mode: str = "travel"  # "travel": independent frames; "feedback": each frame is img2img of the last, warped
    feedback: "FeedbackSettings | None" = None  # mode: feedback only
    output: OutputSpec = OutputSpec()
    loop: bool = False  # the last keyframe travels back to the first: the video's end leads into its start

    lines: dict = field(default_factory=dict, compare=False, repr=False)  # field path -> YAML line

    def at(self, *path) -> str:
        """'file:line: field' for messages about a field found wrong after parsing (e.g. against the audio)."""
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)
        where = f"{self.source}:{line}" if line else self.source
        return f"{where}: {format_path(path)}" if path else where


@dataclass(frozen=True)
class FeedbackSettings:
    """What every frame of a feedback video shares (see feedback.py); per-frame motion and strength are tracks."""

    cadence: int  # diffuse every Nth frame of a chain; the ones between are warped cross-fades
    colour: float  # coherence: 0..1, how far each init's LAB mean/std moves to the reference's
    reference: str  # "first": each chain's first frame; "keyframe": the independent render of the frame's keyframe
    noise: float  # std of pixel noise added to each init, in [0, 1] units
    sharpen: float  # unsharp-mask amount, at most MAX_SHARPEN
    max_contrast: float  # lightness std held within ×this of the reference's; 0: off
    fov: float  # degrees across the width, for translate_z and rotations
    border: str  # what warps show past the edges


SETTING_DEFAULTS: dict[str, Any] = {
    "model": "toy",
    "width": 128,
    "height": 128,
    "fps": 12,
    "steps": 20,
    "guidance": 7.5,
    "scheduler": "ddim",
    "timestep_spacing": "auto",
    "negative_prompt": "",
    "interpolation": "slerp",
    "device": "auto",
    "dtype": "auto",
    "batch_size": 8,
    "channels_last": "auto",
    "compile": False,
    "attention_slicing": False,
    "vae_tiling": False,
    "cpu_offload": False,
    "model_config": None,
    "vae": None,
    "loras": (),
    "embeddings": (),
    "executor": "local",
    "ray_address": None,
    "ray_cpus_per_worker": 1,
    "ray_workers": None,
    "chunk_frames": CHUNK_FRAMES,
    "share_steps": "auto",
    "placement_budget": 32,
}
MODEL_OPTION_KEYS = ("channels_last", "compile", "attention_slicing", "vae_tiling", "cpu_offload")
SEGMENT_DEFAULTS: dict[str, Any] = {
    "easing": "linear",
    "noise_easing": None,
    "hold": None,
    "pacing": "uniform",
    "pacing_strength": 0.5,
    "spacing": "perceptual",
}
TOP_KEYS = set(SETTING_DEFAULTS) | set(SEGMENT_DEFAULTS) | set(TRACK_DEFAULTS) | LYRICS_KEYS | FEEDBACK_KEYS | {"audio", "keyframes", "end", "noise_shift_seed", "mode", "output", "loop"}
OUTPUT_KEYS = {"interpolate", "upscale"}
INTERPOLATE_KEYS = set(INTERPOLATE_DEFAULTS)
UPSCALE_KEYS = set(UPSCALE_DEFAULTS)
AUDIO_KEYS = {
    "path", "start", "end", "bpm", "beats_per_bar", "downbeat", "tracker",
    "midi", "tempo_map", "offset", "stems", "beats_from", "beats_offset", "beats", "sections",
}
SECTION_KEYS = {"start", "end", "bpm"}
KEYFRAME_KEYS = set(UNITS) | set(SEGMENT_DEFAULTS) | set(TRACK_DEFAULTS) | {"prompt", "seed", "negative_prompt", "loras", "cut", "image"}
# The prompt of an image keyframe that gives none: the empty prompt, under which the picture is
# inverted and which the travel moves from (docs/pictures.md).
IMAGE_PROMPT = ""
# What a lyrics override may set: a keyframe without its position.
# Video to video and ControlNets (docs/video-and-control.md).
TOP_KEYS |= {"video", "controlnets"}
AUDIO_KEYS |= {"from_video"}
KEYFRAME_KEYS |= {"controlnet_weights"}
VIDEO_KEYS = video_input.VIDEO_KEYS
CONTROLNET_KEYS = control.CONTROL_KEYS
LYRIC_OVERRIDE_KEYS = KEYFRAME_KEYS - set(UNITS)
LORA_KEYS = {"path", "weight", "name"}
EMBEDDING_KEYS = {"path", "token"}


class FieldReader:
    """Typed access to the parsed YAML that knows each field's line for error messages."""

    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source = source
        self.lines = lines

    def fail(self, path: tuple, message: str) -> UserError:
        line, parent = None, path
        while line is None and parent:  # a missing field has no line: use its parent's
            line = self.lines.get(parent)
            parent = parent[:-1]
        where = f"{self.source}:{line or self.lines.get((), 1)}"
        return UserError(f"{where}: {format_path(path)}: {message}" if path else f"{where}: {message}", docs=section(path))

    def check_keys(self, mapping: Any, path: tuple, allowed: set[str]) -> dict:
        if not isinstance(mapping, dict):
            raise self.fail(path, f"expected a mapping, got {mapping!r}")
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(path + (key,), f"unknown key '{key}'{hint}")
        return mapping

    def number(
        self, value: Any, path: tuple, *, minimum: float | None = None, exclusive: bool = False, integer: bool = False,
        maximum: float | None = None,
    ) -> float | int:
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected {kind}, got {value!r}")
        if integer and not float(value).is_integer():
            raise self.fail(path, f"expected {kind}, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise self.fail(path, f"expected a finite number, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            bound = f"greater than {minimum}" if exclusive else f"at least {minimum}"
            raise self.fail(path, f"must be {bound}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail(path, f"must be at most {maximum:g}, got {value!r}")
        return int(value) if integer else float(value)

    def choice(self, value: Any, path: tuple, names: tuple[str, ...]) -> str:
        if value not in names:
            raise self.fail(path, f"unknown value {value!r}; expected one of: {', '.join(names)}")
        return value

    def flag(self, value: Any, path: tuple) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def text(self, value: Any, path: tuple) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {value!r}")
        return value

    def track(self, value: Any, path: tuple, *, minimum: float | None = None, maximum: float | None = None, exclusive: bool = False) -> Track:
        """A track field: a number (checked against its bounds now) or an expression (parsed now)."""
        if isinstance(value, str):
            line = self.lines.get(path)
            return parse_expression(value, f"{self.source}:{line}: {format_path(path)}" if line else format_path(path))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected a number or an expression string, got {value!r}")
        number = self.number(value, path, minimum=minimum, exclusive=exclusive)
        if maximum is not None and number > maximum:
            raise self.fail(path, f"must be at most {maximum}, got {value!r}")
        return number

    def named_track(self, name: str, value: Any, path: tuple) -> Track:
        """The track `name` with its TRACK_BOUNDS."""
        low, high, exclusive = TRACK_BOUNDS.get(name, (None, None, False))
        return self.track(value, path, minimum=low, maximum=high, exclusive=exclusive)


def format_path(path: tuple) -> str:
    """('keyframes', 2, 'seed') → 'keyframes[2].seed'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


INT_TAG = "tag:yaml.org,2002:int"


def yaml_line_map(node: yaml.Node, path: tuple = (), lines: dict | None = None) -> dict[tuple, int]:
    """1-based YAML line of every mapping key and sequence item, keyed by its path."""
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            # A number key (an LRC line in lyrics_overrides) is an int once loaded: index it so.
            key = int(key_node.value) if key_node.tag == INT_TAG else key_node.value
            key_path = path + (key,)
            lines[key_path] = key_node.start_mark.line + 1
            yaml_line_map(value_node, key_path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yaml_line_map(item, path + (i,), lines)
    return lines


def load_timeline(path: str | Path) -> Timeline:
    """Read and validate a timeline file; relative audio paths are resolved against it."""
    path = Path(path)
    return parse_timeline(read_text(path, "timeline"), source=str(path), base_dir=path.parent)


def read_text(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{path}: the {what} file is {path.stat().st_size:,} bytes, more than the limit {MAX_YAML_BYTES:,}")
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None


class _KeyError(yaml.composer.ComposerError):
    """A mapping key that is well-formed YAML but not a usable field name; `problem` starts with the key."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that rejects alias bombs, duplicate keys and non-text keys while composing."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out", mark)
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[str, int] = {}
        for key, _ in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode) or key.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge", INT_TAG):
                shown = key.value if isinstance(key, yaml.ScalarNode) else "a list or mapping"
                raise _KeyError(None, None, f"{shown}: a key must be text (a field name) or a whole number, not a list or another value", key.start_mark)
            if key.tag == INT_TAG and not key.value.isdigit():  # 0x10, 1_000: not a line number anyone means
                raise _KeyError(None, None, f"{key.value}: a number key must be written in plain digits", key.start_mark)
            if key.value in seen and key.value != "<<":
                problem = f"{key.value}: given twice, on line {seen[key.value]} and line {line}; remove one"
                raise _KeyError(None, None, problem, key.start_mark)
            seen.setdefault(key.value, line)
        return node


def expanded_size(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """Nodes in the document once every alias is expanded, counted without expanding (memoised by node)."""
    memo = {} if memo is None else memo
    if id(node) not in memo:
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        memo[id(node)] = 1 + (sum(expanded_size(n, memo) for n in children) if isinstance(children, list) else 0)
    return memo[id(node)]


def compose_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """Data and node tree of one YAML document, within MAX_YAML_ALIASES and MAX_YAML_NODES."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and expanded_size(node) > MAX_YAML_NODES:
            problem = f"the document expands to more than {MAX_YAML_NODES:,} values (aliases of aliases?)"
            raise yaml.composer.ComposerError(None, None, problem, node.start_mark)
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def read_yaml(text: str, source: str, allowed: set[str]) -> tuple[dict, FieldReader]:
    """The top-level mapping of a YAML document and a reader that knows every field's line."""
    try:
        data, node = compose_yaml(text)
        lines = yaml_line_map(node) if node is not None else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        kind = "" if isinstance(e, _KeyError) else "invalid YAML: "
        raise UserError(f"{where}: {kind}{getattr(e, 'problem', None) or e}") from None
    except RecursionError:  # the composer recurses per nesting level
        raise UserError(f"{source}: invalid YAML: lists or mappings nested too deeply") from None
    reader = FieldReader(source, lines)
    return reader.check_keys(data if data is not None else {}, (), allowed), reader


def parse_timeline(text: str, source: str = "<timeline>", base_dir: Path | None = None) -> Timeline:
    """Parse YAML text into a validated Timeline (no audio or model access)."""
    data, reader = read_yaml(text, source, TOP_KEYS)

    video = video_input.parse_video(reader, data["video"], base_dir or Path(".")) if data.get("video") is not None else None
    given = data if video is None else _video_defaults(reader, data, video)  # fps: video, audio: {from_video: true}
    settings = parse_settings(reader, given, base_dir=base_dir)
    audio = _parse_audio(reader, given["audio"], base_dir or Path(".")) if given.get("audio") is not None else None
    segment_defaults = {k: data.get(k, v) for k, v in SEGMENT_DEFAULTS.items()}
    base = base_dir or Path(".")
    lora_names = {lora.name for lora in settings.loras}
    lyrics = _parse_lyrics(reader, data, segment_defaults, audio, base, lora_names) if data.get("lyrics") is not None else ()
    keyframes = _parse_keyframes(reader, data.get("keyframes"), segment_defaults, optional=bool(lyrics), lora_names=lora_names, base_dir=base)
    end = _parse_end(reader, data.get("end", "audio"))
    if end is None and video is not None and (audio is None or audio.path is None):  # silent: as long as the clip
        end = Position("time", video.clip_seconds)
    if end is None and (audio is None or audio.path is None):
        raise reader.fail(("end",), "required when the timeline has no audio file (e.g. end: {time: 10})")
    tracks = tuple((name, reader.named_track(name, data.get(name, default), (name,))) for name, default in sorted(TRACK_DEFAULTS.items()))
    shift_seed = data.get("noise_shift_seed")
    if shift_seed is not None:
        shift_seed = reader.number(shift_seed, ("noise_shift_seed",), minimum=0, integer=True)
    mode = reader.choice(data.get("mode", "travel"), ("mode",), MODES)
    feedback = None
    if mode == "feedback":
        feedback = _parse_feedback(reader, data)
        if "batch_size" not in data:  # a chain's frames are sequential: pad rounds to 1 row unless asked
            settings = replace(settings, batch_size=1)
    else:
        _check_travel(reader, data)
    output = _parse_output(reader, data.get("output"), feedback)
    output = replace(output, upscale=_parse_upscale(reader, (data.get("output") or {}).get("upscale"), settings, base))
    loop = reader.flag(data.get("loop", False), ("loop",))
    if loop and len(keyframes) + len(lyrics) < 2:
        raise reader.fail(("loop",), "needs at least two keyframes: the last one travels back to the first")
    timeline = Timeline(
        settings, audio, keyframes, end, source, raw=data, tracks=tracks, lyrics=lyrics, noise_shift_seed=shift_seed, mode=mode, feedback=feedback,
        output=output, loop=loop, lines=reader.lines,
    )
    _check_audio_variables(timeline)
    return _with_inputs(reader, timeline, video, base) if video is not None or data.get("controlnets") is not None else timeline


def track_expressions(value: Any):
    """Every track Expression inside parsed timeline objects (dataclasses, tuples)."""
    from dataclasses import fields, is_dataclass

    from latentwalk.tracks import Expression

    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Expression):
            yield item
        elif is_dataclass(item) and not isinstance(item, type):
            stack += [getattr(item, f.name) for f in fields(item) if f.name not in ("raw", "lines")]
        elif isinstance(item, (tuple, list)):
            stack += list(item)


def _check_audio_variables(timeline: Timeline) -> None:
    """A stem's or the MIDI file's variable that a track reads must be given by the timeline's audio."""
    from latentwalk.tracks import MIDI_VARIABLE, STEM_VARIABLE

    spec = timeline.audio
    song = None
    for expr in track_expressions((timeline.tracks, timeline.keyframes, timeline.lyrics, timeline.feedback)):
        field = expr.field or f"{timeline.source}: track"
        for name in sorted(expr.variables):
            stem = STEM_VARIABLE.match(name)
            if stem:
                names = [n for n, _ in spec.stems] if spec else []
                if stem.group(2) not in names:
                    given = f"the timeline's stems are {', '.join(names)}" if names else "the timeline gives no audio.stems"
                    raise UserError(f"{field}: '{name}' reads stem {stem.group(2)!r}, but {given}")
            elif MIDI_VARIABLE.match(name):
                if spec is None or spec.midi is None:
                    raise UserError(f"{field}: '{name}' reads the MIDI notes, but the timeline gives no audio.midi")
                from latentwalk.midi import check_variable, read_midi

                song = song or read_midi(spec.midi)
                reason = check_variable(name, song, spec.midi.name)
                if reason:
                    raise UserError(f"{field}: '{name}': {reason}")


def _parse_output(r: FieldReader, data: Any, feedback: "FeedbackSettings | None") -> OutputSpec:
    """`output: {interpolate: {factor: 2, method: latent}}`; each stage checked before any model loads."""
    if data is None:
        return OutputSpec()
    data = r.check_keys(data, ("output",), OUTPUT_KEYS)
    interpolate = None
    if data.get("interpolate") is not None:
        path = ("output", "interpolate")
        item = r.check_keys(data["interpolate"], path, INTERPOLATE_KEYS)
        factor = r.number(item.get("factor", INTERPOLATE_DEFAULTS["factor"]), path + ("factor",), integer=True)
        if factor not in INTERPOLATE_FACTORS:
            raise r.fail(path + ("factor",), f"must be one of {', '.join(map(str, INTERPOLATE_FACTORS))} (frames per denoised frame), got {item['factor']!r}")
        method = item.get("method", INTERPOLATE_DEFAULTS["method"])
        if method == "rife":
            raise r.fail(path + ("method",), "rife is not available: no well-kept library loads RIFE weights from a local file; use latent or flow (see docs/outputs.md)")
        method = r.choice(method, path + ("method",), INTERPOLATE_METHODS)
        if feedback is not None and feedback.cadence > 1:
            raise r.fail(path, f"cadence {feedback.cadence} already makes the frames between diffused ones; use cadence or interpolate, not both")
        interpolate = InterpolateSpec(factor, method)
    return OutputSpec(interpolate=interpolate)


def _parse_upscale(r: FieldReader, data: Any, settings: RenderSettings, base_dir: Path) -> UpscaleSpec | None:
    """`output: {upscale: {factor: 2, method: refine, steps: 20, strength: 0.35}}` or `{method: model, model: x.pth}`."""
    if data is None:
        return None
    path = ("output", "upscale")
    item = r.check_keys(data, path, UPSCALE_KEYS)
    get = lambda key: item.get(key, UPSCALE_DEFAULTS[key])  # noqa: E731
    method = r.choice(get("method"), path + ("method",), UPSCALE_METHODS)
    factor = r.number(get("factor"), path + ("factor",), integer=True)
    if factor not in UPSCALE_FACTORS:
        raise r.fail(path + ("factor",), f"must be one of {', '.join(map(str, UPSCALE_FACTORS))} (times the width and height), got {item['factor']!r}")
    for side, size in (("width", settings.width), ("height", settings.height)):
        if size * factor > MAX_SIZE:
            raise r.fail(path + ("factor",), f"{side} {size} × {factor} = {size * factor} px is more than {MAX_SIZE}; use a smaller factor or size")
    for key in ("steps", "strength") if method == "model" else ("model",):
        if item.get(key) is not None:
            raise r.fail(path + (key,), f"only used with method: {'refine' if key != 'model' else 'model'}")
    model = None
    if method == "model":
        if item.get("model") is None:
            raise r.fail(path, "method model needs model: a super-resolution weights file (e.g. an ESRGAN .pth)")
        model = Path(r.text(item["model"], path + ("model",))).expanduser()
        model = model if model.is_absolute() else base_dir / model
        if model.suffix.lower() not in SR_SUFFIXES:
            raise r.fail(path + ("model",), f"expected a {', '.join(SR_SUFFIXES)} file, got {str(model)!r}")
        if not model.is_file():
            raise r.fail(path + ("model",), f"weights file not found: {str(model)!r}")
    steps = settings.steps if item.get("steps") is None else r.number(item["steps"], path + ("steps",), minimum=1, integer=True, maximum=MAX_STEPS)
    strength = r.number(get("strength"), path + ("strength",), minimum=0, exclusive=True, maximum=1)
    return UpscaleSpec(factor, method, steps, strength, model)


def _parse_feedback(r: FieldReader, data: dict) -> FeedbackSettings:
    """The shared settings of mode: feedback, each checked against its range."""
    coherence = data.get("coherence") or {}
    coherence = r.check_keys(coherence, ("coherence",), set(COHERENCE_DEFAULTS) | {"reference"})
    amount = {key: r.number(coherence.get(key, default), ("coherence", key), minimum=0) for key, default in COHERENCE_DEFAULTS.items()}
    for key, high in (("colour", 1.0), ("noise", 1.0), ("sharpen", MAX_SHARPEN)):
        if amount[key] > high:
            raise r.fail(("coherence", key), f"must be at most {high}, got {coherence[key]!r}")
    if 0 < amount["max_contrast"] < 1:
        raise r.fail(("coherence", "max_contrast"), f"a factor of at least 1 (or 0: off), got {coherence['max_contrast']!r}")
    fov = r.number(data.get("fov", DEFAULT_FOV), ("fov",), minimum=0, exclusive=True)
    if fov >= 180:
        raise r.fail(("fov",), f"must be below 180 degrees, got {fov!r}")
    return FeedbackSettings(
        cadence=r.number(data.get("cadence", 1), ("cadence",), minimum=1, integer=True),
        reference=r.choice(coherence.get("reference", "first"), ("coherence", "reference"), REFERENCE_NAMES),
        fov=fov,
        border=r.choice(data.get("border", "reflect"), ("border",), tuple(CAMERA_BORDERS)),
        **amount,
    )


def _video_defaults(r: FieldReader, data: dict, video: "video_input.VideoSpec") -> dict:
    """The YAML with `fps: video` as the source's rate and `audio: {from_video: true}` as the video's own
    sound track over the same clip (start and end default to the video's)."""
    given = dict(data)
    if data.get("fps") == "video":
        given["fps"] = video.info.fps
    audio = data.get("audio")
    if isinstance(audio, dict) and audio.get("from_video") is not None:
        if r.flag(audio["from_video"], ("audio", "from_video")):
            if audio.get("path") is not None:
                raise r.fail(("audio", "path"), "give a path or from_video: true, not both")
            clip = {"start": video.start, "end": video.end if video.end is not None else video.info.duration}  # the picture's length
            given["audio"] = clip | {k: v for k, v in audio.items() if k != "from_video"} | {"path": video.path}
        else:
            given["audio"] = {k: v for k, v in audio.items() if k != "from_video"}
    return given


def _with_inputs(r: FieldReader, timeline: Timeline, video: "video_input.VideoSpec | None", base_dir: Path) -> Timeline:
    """The timeline with its video and ControlNets, checked against the model and the keyframes.

    Each frame has its own source frame or control image, so a frame between perceptual probes
    could not start from theirs: segments are spaced in t, and no steps are shared.
    """
    data = timeline.raw
    specs = control.parse_controlnets(r, data.get("controlnets"), base_dir, video)
    from latentwalk.device import resolve_model

    control.check_families(r, specs, resolve_model(timeline.settings.model))
    if timeline.mode == "feedback":
        key = "video" if video is not None else "controlnets"
        raise r.fail((key,), "not yet with mode: feedback (each frame is img2img of the one before); use mode: travel")
    names = {s.name for s in specs}
    for i, keyframe in enumerate(timeline.keyframes + timeline.lyrics):
        for name, _ in keyframe.controls:
            if name not in names:
                path = ("keyframes", i, "controlnet_weights", name) if i < len(timeline.keyframes) else ("lyrics_overrides",)
                raise r.fail(path, f"no ControlNet named {name!r}" + (f"; listed: {', '.join(sorted(names))}" if names else "; list them under controlnets: first"))
    for i, item in enumerate([data] + list(data.get("keyframes") or [])):
        if isinstance(item, dict) and item.get("spacing") == "perceptual":
            raise r.fail(("spacing",) if i == 0 else ("keyframes", i - 1, "spacing"), "not with a video: or controlnets: (each frame has its own input picture); use spacing: t")
    if video is not None and video.flow:
        if timeline.settings.executor != "local":
            raise r.fail(("video", "flow"), "not yet with executor: ray (a flow chain renders frame after frame in one process)")
        if timeline.output.interpolate is not None:
            raise r.fail(("video", "flow"), "not with output.interpolate: every frame of a flow chain follows the one before")
    spaced = lambda keyframes: tuple(replace(k, spacing="t") for k in keyframes)  # noqa: E731
    settings = replace(timeline.settings, video=video, controlnets=specs, share_steps=0)
    if video is not None and video.flow and "batch_size" not in data:  # a chain's frames are sequential: no padded rows
        settings = replace(settings, batch_size=1)
    return replace(timeline, settings=settings, keyframes=spaced(timeline.keyframes), lyrics=spaced(timeline.lyrics))


def _check_travel(r: FieldReader, data: dict) -> None:
    """Feedback keys in a travel timeline would be silently ignored: name the first."""
    inputs = {"strength"} if data.get("video") is not None else set()  # video to video: img2img strength
    for key in sorted((FEEDBACK_KEYS - inputs) & set(data)):
        raise r.fail((key,), "only used with mode: feedback" + (" (or with a video:)" if key == "strength" else ""))
    for i, item in enumerate(data.get("keyframes") or []):
        for key in sorted(((FEEDBACK_KEYS - inputs) | {"cut"}) & set(item)):
            raise r.fail(("keyframes", i, key), "only used with mode: feedback")


def parse_settings(r: FieldReader, data: dict, defaults: dict[str, Any] = SETTING_DEFAULTS, base_dir: Path | None = None) -> RenderSettings:
    """The render settings of a timeline or a sweep (sweeps have their own defaults).

    Relative LoRA and embedding paths are resolved against `base_dir` (the file's folder).
    """
    get = lambda key: data.get(key, defaults[key])  # noqa: E731
    width, height = frame_size(r, get("width"), get("height"))
    model = r.text(get("model"), ("model",))
    check_model(r, model)
    model_config = _folder(r, get("model_config"), ("model_config",), "model_index.json")
    vae = _folder(r, get("vae"), ("vae",), "config.json")
    if vae is not None:
        _check_vae(r, Path(vae))
    if model_config is not None and Path(model).suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise r.fail(("model_config",), f"only used with a checkpoint file (model: x.safetensors); {model!r} brings its own configs")
    options = {key: r.flag(get(key), (key,)) for key in MODEL_OPTION_KEYS if key != "channels_last"}
    channels_last = get("channels_last")
    if channels_last != "auto" and not isinstance(channels_last, bool):
        raise r.fail(("channels_last",), f"expected auto, true or false, got {channels_last!r}")
    options["channels_last"] = channels_last
    device = r.choice(get("device"), ("device",), DEVICE_NAMES)
    if options["cpu_offload"] and device in ("cpu", "mps"):
        raise r.fail(("cpu_offload",), f"offloads to the CPU from a CUDA device, but device is {device!r} (use device: cuda or auto)")
    negative_prompt = r.text(get("negative_prompt") or "", ("negative_prompt",))
    _check_prompt(r, negative_prompt, ("negative_prompt",))  # now, not after the audio analysis
    executor = r.choice(get("executor"), ("executor",), tuple(EXECUTORS))
    ray_address = None if get("ray_address") is None else r.text(get("ray_address"), ("ray_address",))
    if ray_address is not None and not RAY_ADDRESS.match(ray_address):
        raise r.fail(("ray_address",), f"expected auto, host:port or ray://host:port, got {ray_address!r}")
    if ray_address is not None and executor != "ray":
        raise r.fail(("ray_address",), f"only used with executor: ray, but executor is {executor!r}")
    ray_workers = None if get("ray_workers") is None else r.number(get("ray_workers"), ("ray_workers",), minimum=1, integer=True)
    steps = r.number(get("steps"), ("steps",), minimum=1, integer=True, maximum=MAX_STEPS)
    scheduler = r.choice(get("scheduler"), ("scheduler",), SCHEDULER_NAMES)
    return RenderSettings(
        model=model,
        width=width,
        height=height,
        fps=r.number(get("fps"), ("fps",), minimum=0, exclusive=True, maximum=MAX_FPS),
        steps=steps,
        guidance=_setting(r.named_track("guidance", get("guidance"), ("guidance",))),
        scheduler=scheduler,
        timestep_spacing=r.choice(get("timestep_spacing"), ("timestep_spacing",), TIMESTEP_SPACINGS),
        negative_prompt=negative_prompt,
        interpolation=r.choice(get("interpolation"), ("interpolation",), INTERPOLATION_NAMES),
        device=device,
        dtype=r.choice(get("dtype"), ("dtype",), DTYPE_NAMES),
        batch_size=r.number(get("batch_size"), ("batch_size",), minimum=1, integer=True, maximum=MAX_BATCH_SIZE),
        **options,
        model_config=model_config,
        vae=vae,
        loras=_parse_loras(r, get("loras"), base_dir or Path(".")),
        embeddings=_parse_embeddings(r, get("embeddings"), base_dir or Path(".")),
        executor=executor,
        ray_address=ray_address,
        ray_cpus_per_worker=r.number(get("ray_cpus_per_worker"), ("ray_cpus_per_worker",), minimum=1, integer=True),
        ray_workers=ray_workers,
        chunk_frames=int(r.number(get("chunk_frames"), ("chunk_frames",), minimum=0, integer=True)),
        share_steps=_share_steps(r, get("share_steps"), steps, scheduler),
        placement_budget=int(r.number(get("placement_budget"), ("placement_budget",), minimum=2, integer=True, maximum=MAX_PLACEMENT_BUDGET)),
    )


def _share_steps(r: FieldReader, value: Any, steps: int, scheduler: str) -> int:
    """`share_steps`: auto, or a number of steps below `steps` (0: none)."""
    if value == "auto":
        # A shared frame runs at least its last step itself.
        return min(round(SHARE_AUTO_FRACTION * steps), steps - 1) if scheduler in SHARE_AUTO_SCHEDULERS else 0
    if isinstance(value, str):
        raise r.fail(("share_steps",), f"expected auto or a number of steps, got {value!r}")
    shared = r.number(value, ("share_steps",), minimum=0, integer=True, maximum=MAX_STEPS)
    if shared and shared >= steps:
        raise r.fail(("share_steps",), f"must be below steps ({steps}): a shared frame runs at least its last step itself, got {shared}")
    return shared


def _adapter_file(r: FieldReader, value: Any, path: tuple, base_dir: Path, suffixes: tuple[str, ...]) -> Path:
    """An existing adapter file with a known suffix; a .safetensors one must have a readable header with tensors."""
    file = Path(r.text(value, path)).expanduser()
    file = file if file.is_absolute() else base_dir / file
    if file.suffix.lower() not in suffixes:
        raise r.fail(path, f"expected a {' or '.join(suffixes)} file, got {str(file)!r}")
    if not file.is_file():
        raise r.fail(path, f"file not found: {str(file)!r}")
    if file.suffix.lower() == ".safetensors":
        try:
            names = safetensors_names(file)
        except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise r.fail(path, f"cannot read {str(file)!r}: {e}") from None
        if not names:
            raise r.fail(path, f"{str(file)!r} holds no tensors")
    return file


def _items(r: FieldReader, value: Any, path: tuple, example: str) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise r.fail(path, f"expected a list such as {example}, got {value!r}")
    return list(value)


def _parse_loras(r: FieldReader, data: Any, base_dir: Path) -> tuple[LoraSpec, ...]:
    """`loras: [{path: style.safetensors, weight: 0.8, name: style}]`; names unique, used by keyframes."""
    loras: list[LoraSpec] = []
    for i, item in enumerate(_items(r, data, ("loras",), "[{path: style.safetensors, weight: 0.8}]")):
        path = ("loras", i)
        item = r.check_keys({"path": item} if isinstance(item, str) else item, path, LORA_KEYS)
        if "path" not in item:
            raise r.fail(path, "missing field 'path' (a LoRA .safetensors file)")
        file = _adapter_file(r, item["path"], path + ("path",), base_dir, LORA_SUFFIXES)
        names = safetensors_names(file)  # readable: _adapter_file read it
        if not any("lora" in tensor.lower() for tensor in names):  # every layout diffusers reads names its layers so
            shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
            raise r.fail(path + ("path",), (
                f"{str(file)!r} is not a LoRA: none of its {len(names)} tensors is a LoRA layer (found {shown}); "
                "a textual-inversion file goes under embeddings:, a whole model under model:"
            ))
        name = r.text(item.get("name", file.stem), path + ("name",))
        if not LORA_NAME.match(name):
            raise r.fail(path + ("name",), f"{name!r} is not a usable name: letters, digits, '_' and '-' only (set name: to one)")
        if any(lora.name == name for lora in loras):
            raise r.fail(path + ("name",) if "name" in item else path, f"a second LoRA named {name!r}; give each one its own name:")
        weight = r.number(item.get("weight", DEFAULT_LORA_WEIGHT), path + ("weight",))
        loras.append(LoraSpec(name, str(file), weight))
    return tuple(loras)


def _parse_embeddings(r: FieldReader, data: Any, base_dir: Path) -> tuple[EmbeddingSpec, ...]:
    """`embeddings: [{path: style.safetensors, token: "<style>"}]`; tokens unique and one word."""
    embeddings: list[EmbeddingSpec] = []
    for i, item in enumerate(_items(r, data, ("embeddings",), '[{path: style.safetensors, token: "<style>"}]')):
        path = ("embeddings", i)
        item = r.check_keys(item, path, EMBEDDING_KEYS)
        for key in EMBEDDING_KEYS:
            if key not in item:
                raise r.fail(path, f"missing field '{key}'")
        file = _adapter_file(r, item["path"], path + ("path",), base_dir, EMBEDDING_SUFFIXES)
        token = r.text(item["token"], path + ("token",))
        if not token or token != token.strip() or len(token.split()) != 1 or any(c in token for c in '"{}|()'):
            raise r.fail(path + ("token",), f"{token!r} must be one word without quotes, braces, '|' or parentheses, e.g. \"<my-style>\"")
        if any(e.token == token for e in embeddings):
            raise r.fail(path + ("token",), f"token {token!r} is used twice")
        embeddings.append(EmbeddingSpec(str(file), token))
    return tuple(embeddings)


def _folder(r: FieldReader, value: Any, path: tuple, marker: str) -> str | None:
    """An optional local diffusers folder, recognised by its `marker` file."""
    if value is None:
        return None
    folder = Path(r.text(value, path)).expanduser()
    if not (folder / marker).is_file():
        raise r.fail(path, f"{str(folder)!r} is not a local diffusers folder (no {marker})")
    return str(folder)


VAE_CLASS = "AutoencoderKL"  # what `vae:` folders hold (diffusers' class of SD and SDXL VAEs)


def _check_vae(r: FieldReader, folder: Path) -> None:
    """A `vae:` folder's config.json must describe a VAE: a UNet or text-encoder folder fails at load otherwise."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise r.fail(("vae",), f"cannot read {str(folder / 'config.json')!r}: {e}") from None
    found = config.get("_class_name") if isinstance(config, dict) else None
    if not isinstance(config, dict) or found not in (None, VAE_CLASS):
        what = f"a {found}" if isinstance(found, str) else "no diffusers model"
        raise r.fail(("vae",), f"{str(folder)!r} is not a VAE: its config.json describes {what}, not an {VAE_CLASS} (point vae: at a VAE's own folder, such as a model's vae/)")


def _setting(track: Track) -> float | str:
    """A track as a plain setting for manifests: the number, or the expression's text."""
    return track if isinstance(track, float) else str(track)


def frame_size(r: FieldReader, width: Any, height: Any) -> tuple[int, int]:
    """Width and height in pixels: multiples of 8, the VAE's downsampling of SD models."""
    sizes = {key: r.number(value, (key,), minimum=8, integer=True, maximum=MAX_SIZE) for key, value in (("width", width), ("height", height))}
    for key, size in sizes.items():
        if size % 8:
            raise r.fail((key,), f"must be a multiple of 8, got {size}")
    return sizes["width"], sizes["height"]


def check_model(r: FieldReader, model: str) -> None:
    if model == "toy" or HUB_ID.match(model) and not Path(model).exists():
        return
    folder = Path(model).expanduser()
    if folder.suffix.lower() in CHECKPOINT_SUFFIXES:
        if not folder.is_file():
            raise r.fail(("model",), f"checkpoint file not found: {model!r}")
        return
    if not folder.is_dir():
        raise r.fail(("model",), f"unknown model {model!r}: not 'toy', a hub id (owner/name), a checkpoint file or an existing folder")
    if not (folder / "model_index.json").is_file():
        raise r.fail(("model",), f"folder {model!r} is not a diffusers model (no model_index.json)")


def _parse_audio(r: FieldReader, data: Any, base_dir: Path) -> AudioSpec:
    if isinstance(data, str):
        data = {"path": data}
    data = r.check_keys(data, ("audio",), AUDIO_KEYS)
    path = None
    if data.get("path") is not None:
        path = Path(r.text(data["path"], ("audio", "path"))).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise r.fail(("audio", "path"), f"audio file not found: {str(path)!r}")
    start = r.number(data.get("start", 0.0), ("audio", "start"), minimum=0, maximum=MAX_SECONDS)
    end = data.get("end")
    if end is not None:
        end = r.number(end, ("audio", "end"), minimum=start, exclusive=True, maximum=MAX_SECONDS)
    bpm = data.get("bpm")
    if bpm is not None:
        bpm = r.number(bpm, ("audio", "bpm"), minimum=0, exclusive=True, maximum=MAX_BPM)
    grid = _parse_audio_grid(r, data, base_dir, path)
    if path is None and bpm is None and grid["midi"] is None and grid["tempo_map"] is None:
        raise r.fail(("audio",), "needs a 'path' to an audio file, or a 'bpm', 'midi' or 'tempo_map' for a silent beat grid")
    return AudioSpec(
        **grid,
        path=path,
        start=start,
        end=end,
        bpm=bpm,
        # 4 unless told: `auto` (the meter inferred) is still less right than 4/4 on real music (docs/beats.md)
        beats_per_bar=4 if data.get("beats_per_bar", DEFAULT_BEATS_PER_BAR) == "auto" else r.number(
            data.get("beats_per_bar", DEFAULT_BEATS_PER_BAR), ("audio", "beats_per_bar"), minimum=1, integer=True, maximum=MAX_BEATS_PER_BAR
        ),
        # a MIDI file's or tempo map's own bars and meters, unless beats_per_bar says otherwise
        auto_meter=data.get("beats_per_bar", "auto" if grid["midi"] or grid["tempo_map"] else DEFAULT_BEATS_PER_BAR) == "auto",
        downbeat=r.number(data["downbeat"], ("audio", "downbeat"), minimum=0, integer=True) if data.get("downbeat") is not None else None,
        tracker=r.choice(data.get("tracker", "auto"), ("audio", "tracker"), TRACKERS),
        lines={key: r.lines.get(("audio", key), r.lines.get(("audio",), 0)) for key in AUDIO_KEYS},
    )


def _audio_file(r: FieldReader, value: Any, path: tuple, base_dir: Path, what: str) -> Path:
    file = Path(r.text(value, path)).expanduser()
    file = file if file.is_absolute() else base_dir / file
    if not file.is_file():
        raise r.fail(path, f"{what} not found: {str(file)!r}")
    return file


def _parse_audio_grid(r: FieldReader, data: dict, base_dir: Path, path: Path | None) -> dict:
    """The audio keys of the user's own grid, stems and beat overrides (docs/beats.md), checked now."""
    from latentwalk import midi as midi_file
    from latentwalk.tempomap import read_tempo_map

    out: dict[str, Any] = {}
    out["midi"] = _audio_file(r, data["midi"], ("audio", "midi"), base_dir, "MIDI file") if data.get("midi") is not None else None
    out["tempo_map"] = _audio_file(r, data["tempo_map"], ("audio", "tempo_map"), base_dir, "tempo map") if data.get("tempo_map") is not None else None
    if out["midi"] is not None and out["tempo_map"] is not None:
        raise r.fail(("audio", "tempo_map"), "give either midi or tempo_map, not both: each sets every beat and bar")
    if out["midi"] is not None:
        try:
            midi_file.read_midi(out["midi"])
        except UserError as e:
            raise r.fail(("audio", "midi"), str(e).removeprefix("audio.midi: ")) from None
    if out["tempo_map"] is not None:
        read_tempo_map(out["tempo_map"])  # its own errors name the map's file and line
    out["offset"] = r.number(data.get("offset", 0.0), ("audio", "offset"), minimum=-MAX_SECONDS, maximum=MAX_SECONDS)
    if "offset" in data and out["midi"] is None and out["tempo_map"] is None:
        raise r.fail(("audio", "offset"), "aligns a midi file or tempo_map with the audio; give one (or use beats_offset to move tracked beats)")
    stems = data.get("stems")
    out["stems"] = ()
    if stems is not None:
        if path is None:
            raise r.fail(("audio", "stems"), "stems go with the mix: give audio.path too")
        if not isinstance(stems, dict) or not stems:
            raise r.fail(("audio", "stems"), f"expected a mapping of names to files, e.g. {{drums: drums.wav}}, got {stems!r}")
        for name in stems:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise r.fail(("audio", "stems", name), "a stem name is letters, digits and _ (it becomes a variable such as rms.drums)")
        out["stems"] = tuple((name, _audio_file(r, file, ("audio", "stems", name), base_dir, "stem file")) for name, file in stems.items())
    beats_from = data.get("beats_from")
    out["beats_from"] = None
    if beats_from is not None:
        names = [name for name, _ in out["stems"]]
        out["beats_from"] = r.choice(beats_from, ("audio", "beats_from"), tuple(names)) if names else None
        if not names:
            raise r.fail(("audio", "beats_from"), "names a stem to track beats on; give audio.stems")
    out["beats_offset"] = r.number(data.get("beats_offset", 0.0), ("audio", "beats_offset"), minimum=-60, maximum=60)
    out["beats"] = _parse_beat_list(r, data.get("beats"), base_dir) if data.get("beats") is not None else None
    out["sections"] = tuple(_parse_section(r, item, ("audio", "sections", i)) for i, item in enumerate(_sequence(r, data.get("sections"), ("audio", "sections"))))
    for (s0, e0, _), (s1, _, _), i in zip(out["sections"], out["sections"][1:], range(1, len(out["sections"]))):
        if s1 < e0:
            raise r.fail(("audio", "sections", i, "start"), f"{s1:g}s is inside section {i - 1} ({s0:g}s to {e0:g}s); sections must be in order and not overlap")
    given = [k for k in ("midi", "tempo_map", "beats") if out[k] is not None]
    if len(given) > 1:
        raise r.fail(("audio", given[1]), f"give one of midi, tempo_map, beats (found {', '.join(given)}): each sets every beat")
    return out


def _sequence(r: FieldReader, value: Any, path: tuple) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise r.fail(path, f"expected a list, got {value!r}")
    return value


def _parse_section(r: FieldReader, item: Any, path: tuple) -> tuple[float, float, float]:
    item = r.check_keys(item, path, SECTION_KEYS)
    for key in SECTION_KEYS:
        if key not in item:
            raise r.fail(path, f"needs {key} (a section is {{start: s, end: s, bpm: n}}, seconds of the clip)")
    start = r.number(item["start"], path + ("start",), minimum=0, maximum=MAX_SECONDS)
    end = r.number(item["end"], path + ("end",), minimum=start, exclusive=True, maximum=MAX_SECONDS)
    return start, end, r.number(item["bpm"], path + ("bpm",), minimum=0, exclusive=True, maximum=MAX_BPM)


def _parse_beat_list(r: FieldReader, value: Any, base_dir: Path) -> tuple[float, ...]:
    """`beats: [0.5, 1.0, ...]` or `beats: beats.txt` (one time per line, or the first column of a CSV)."""
    path = ("audio", "beats")
    if isinstance(value, str):
        file = _audio_file(r, value, path, base_dir, "beat list")
        times = []
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), start=1):
            cell = line.split("#", 1)[0].replace(",", " ").split()
            if not cell:
                continue
            try:
                times.append((float(cell[0]), number))
            except ValueError:
                if times:  # a header is allowed on the first row only
                    raise UserError(f"{file}:{number}: expected a beat time in seconds, got {cell[0]!r}") from None
        values = [t for t, _ in times]
    else:
        values = [r.number(v, path + (i,), minimum=0, maximum=MAX_SECONDS) for i, v in enumerate(_sequence(r, value, path))]
    if len(values) < 2:
        raise r.fail(path, f"needs at least two beat times, got {len(values)}")
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            reason = f"{values[i]:g}s is not after the beat before it ({values[i - 1]:g}s); beat times must increase"
            raise UserError(f"{file}:{times[i][1]}: beats: {reason}") if isinstance(value, str) else r.fail(path + (i,), reason)
    return tuple(float(v) for v in values)


def _parse_position(r: FieldReader, data: dict, path: tuple) -> Position:
    units = [u for u in UNITS if u in data]
    if len(units) != 1:
        found = ", ".join(units) if units else "none"
        raise r.fail(path, f"needs exactly one of {', '.join(UNITS)} (found: {found})")
    unit = units[0]
    limit = {"time": MAX_SECONDS, "frame": MAX_FRAMES}.get(unit, MAX_BEATS)
    value = r.number(data[unit], path + (unit,), minimum=0, integer=unit == "frame", maximum=limit)
    return Position(unit, value)


def _parse_end(r: FieldReader, data: Any) -> Position | None:
    if data == "audio":
        return None
    if not isinstance(data, dict):
        raise r.fail(("end",), f"expected 'audio' or a mapping such as {{bar: 8}}, got {data!r}")
    r.check_keys(data, ("end",), set(UNITS))
    return _parse_position(r, data, ("end",))


def _parse_keyframes(
    r: FieldReader, data: Any, defaults: dict, optional: bool = False, lora_names: set[str] = frozenset(), base_dir: Path | None = None
) -> tuple[Keyframe, ...]:
    if data is None and optional:
        return ()
    if data is None:
        raise r.fail(("keyframes",), "missing: a timeline needs at least one keyframe (or lyrics)")
    if not isinstance(data, list) or not data:
        raise r.fail(("keyframes",), f"expected a non-empty list of keyframes, got {data!r}")
    keyframes: list[Keyframe] = []
    seed = 0  # a keyframe without a seed keeps the previous keyframe's noise
    for i, item in enumerate(data):
        path = ("keyframes", i)
        item = r.check_keys(item, path, KEYFRAME_KEYS)
        if "prompt" not in item and "image" not in item:
            raise r.fail(path, "missing field 'prompt' (or 'image': a picture of your own)")
        keyframe = _parse_keyframe(r, item, path, defaults, seed, _parse_position(r, item, path), lora_names, base_dir=base_dir)
        seed = keyframe.seed
        keyframes.append(keyframe)
    return tuple(keyframes)


def _parse_keyframe(
    r: FieldReader, item: dict, path: tuple, defaults: dict, seed: int | None, position: Position, lora_names: set[str] = frozenset(),
    base_dir: Path | None = None, **extra: Any
) -> Keyframe:
    """One keyframe's fields; a missing seed is `seed` (the previous keyframe's, or None: decided later)."""
    image = _keyframe_image(r, item["image"], path + ("image",), base_dir or Path(".")) if "image" in item else None
    prompt = r.text(item.get("prompt", IMAGE_PROMPT), path + ("prompt",))
    _check_prompt(r, prompt, path + ("prompt",))
    negative = item.get("negative_prompt")
    if negative is not None:
        _check_prompt(r, r.text(negative, path + ("negative_prompt",)), path + ("negative_prompt",))
    if "seed" in item:
        seed = r.number(item["seed"], path + ("seed",), minimum=0, integer=True)
        if seed >= MAX_SEED:
            raise r.fail(path + ("seed",), f"must be below 2**63, got {seed}")
    tracks = tuple((name, r.named_track(name, item[name], path + (name,))) for name in sorted(TRACK_DEFAULTS) if item.get(name) is not None)
    seg = {k: item.get(k, defaults[k]) for k in SEGMENT_DEFAULTS}
    where = lambda key: path + (key,) if key in item else (key,)  # noqa: E731
    easing = r.choice(seg["easing"], where("easing"), EASING_NAMES)
    noise_easing = easing if seg["noise_easing"] is None else r.choice(seg["noise_easing"], where("noise_easing"), EASING_NAMES)
    hold = seg["hold"]
    hold = (DEFAULT_HOLD if "hold" in (easing, noise_easing) else 0.0) if hold is None else hold
    hold = r.number(hold, where("hold"), minimum=0)
    if hold >= 1:
        raise r.fail(where("hold"), f"must be below 1 (a fraction of the segment), got {hold}")
    return Keyframe(
        prompt=prompt,
        seed=seed,
        position=position,
        negative_prompt=negative,
        easing=easing,
        noise_easing=noise_easing,
        hold=hold,
        pacing=r.choice(seg["pacing"], where("pacing"), PACING_NAMES),
        pacing_strength=r.number(seg["pacing_strength"], where("pacing_strength"), minimum=0),
        spacing=r.choice(seg["spacing"], where("spacing"), SPACING_NAMES),
        line=r.lines.get(path, 0),
        tracks=tracks,
        loras=_keyframe_loras(r, item.get("loras"), path + ("loras",), lora_names),
        cut=r.flag(item.get("cut", False), path + ("cut",)),
        image=image,
        controls=control.keyframe_weights(r, item.get("controlnet_weights"), path + ("controlnet_weights",)),
        **extra,
    )


def _keyframe_image(r: FieldReader, value: Any, path: tuple, base_dir: Path) -> str:
    """`image: picture.png`: an existing, whole picture within the size limits (read now, torch-free)."""
    from latentwalk.images import check_picture

    file = Path(r.text(value, path)).expanduser()
    file = file if file.is_absolute() else base_dir / file
    try:
        check_picture(file)
    except ValueError as e:
        raise r.fail(path, str(e)) from None
    return str(file)


def _parse_lyrics(
    r: FieldReader, data: dict, defaults: dict, audio: AudioSpec | None, base_dir: Path, lora_names: set[str] = frozenset()
) -> tuple[Keyframe, ...]:
    """Keyframes from `lyrics: song.lrc`: one per timed line inside the audio clip, in video seconds."""
    from latentwalk.lyrics import SNAP_MODES, fill_template, parse_lrc, template_names

    # 1. The file, its lines, and the settings that turn lines into prompts.
    path = Path(r.text(data["lyrics"], ("lyrics",))).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise r.fail(("lyrics",), f"lyrics file not found: {str(path)!r}")
    lines = parse_lrc(read_text(path, "lyrics"), str(path))
    snap = r.choice(data.get("lyrics_snap", "none"), ("lyrics_snap",), SNAP_MODES)
    template = r.text(data.get("lyrics_template", DEFAULT_LYRICS_TEMPLATE), ("lyrics_template",))
    variables = data.get("lyrics_vars") or {}
    if not isinstance(variables, dict):
        raise r.fail(("lyrics_vars",), f"expected a mapping of template words, e.g. {{style: ink wash}}, got {variables!r}")
    values = {str(key): r.text(value, ("lyrics_vars", key)) for key, value in variables.items()}
    for name in template_names(template):
        if name not in values and name not in ("line", "n"):
            raise r.fail(("lyrics_template",), f"unknown placeholder {{{name}}}: use {{line}}, {{n}} or a key of lyrics_vars")
    seed = data.get("lyrics_seed")
    if seed is not None:
        seed = r.number(seed, ("lyrics_seed",), minimum=0, integer=True)
    # 2. Overrides, keyed by the LRC file's line number or by the line's exact text.
    overrides = data.get("lyrics_overrides") or {}
    if not isinstance(overrides, dict):
        raise r.fail(("lyrics_overrides",), f"expected a mapping from LRC line numbers or lyric text to prompts, got {overrides!r}")
    known = {e.line for e in lines} | {e.text for e in lines}
    for key in overrides:
        if key not in known:
            raise r.fail(("lyrics_overrides", key), f"no lyric line {key!r} in {str(path)!r} (use its line number in the file, or its exact text)")
    # 3. One keyframe per sung line inside the clip; gap markers (empty lines) make none.
    start = audio.start if audio else 0.0
    stop = audio.end if audio and audio.end is not None else float("inf")
    keyframes = []
    for n, entry in enumerate(lines, start=1):
        if not entry.text or not start <= entry.time < stop:
            continue
        key = entry.line if entry.line in overrides else entry.text if entry.text in overrides else None
        item = overrides[key] if key is not None else {}
        opath = ("lyrics_overrides", key) if key is not None else ("lyrics",)
        item = {"prompt": item} if isinstance(item, str) else r.check_keys(item, opath, LYRIC_OVERRIDE_KEYS)
        if "prompt" not in item:  # the template's prompt: a mistake in it is the template's, met at this line
            prompt = fill_template(template, values | {"line": entry.text, "n": str(n)})
            _check_prompt(r, prompt, ("lyrics_template",), f" (filled with {path.name}:{entry.line})")
            item = {"prompt": prompt} | item
        # Errors name the override's own field and YAML line (the LRC file only says when).
        keyframe = _parse_keyframe(r, item, opath, defaults, seed, Position("time", entry.time - start), lora_names, base_dir=base_dir, snap=snap, origin=f"{path.name}:{entry.line}")
        keyframes.append(keyframe)
    if not keyframes and data.get("keyframes") is None:
        sung = [e for e in lines if e.text]
        clip = f"the audio clip ({start:g}s to {stop:g}s into the file)" if stop != float("inf") else f"the audio clip (from {start:g}s)"
        reason = (
            f"{str(path)!r} has no sung line, only metadata and gaps" if not sung else
            f"none of the {len(sung)} sung lines of {path.name} ({sung[0].time:.3f}s to {sung[-1].time:.3f}s into the audio) "
            f"falls inside {clip}"
        )
        raise r.fail(("lyrics",), f"{reason}, so the timeline has no keyframe; add keyframes, or move audio.start/end")
    return tuple(keyframes)


def _keyframe_loras(r: FieldReader, data: Any, path: tuple, names: set[str]) -> tuple[tuple[str, float], ...]:
    """`loras: {style: 0.2}`: weights of top-level LoRAs at this keyframe."""
    if data is None:
        return ()
    data = r.check_keys(data, path, set(names)) if names else data
    if not names:
        raise r.fail(path, "no LoRA to weight: list the files at the top level first (loras: [{path: style.safetensors}])")
    return tuple((name, r.number(weight, path + (name,))) for name, weight in data.items())


def _check_prompt(r: FieldReader, prompt: str, path: tuple, context: str = "") -> None:
    """Parse a prompt expression now, so a typo fails before any model loads.

    The message names the field's line (else its nearest parent's, as for a prompt given as a
    plain string where a mapping could be); `context` follows the field's name.
    """
    from latentwalk.prompts import parse_prompt

    line = next((r.lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in r.lines), None)
    field = format_path(path) + context
    parse_prompt(prompt, field=f"{r.source}:{line}: {field}" if line else field)
