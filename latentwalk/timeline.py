"""Stage 1: a YAML timeline → frozen, fully validated `Timeline` objects.

Everything that can be checked without the audio or the model is checked here, and every
error names the field, the value and the YAML line. Checks that need the beat grid
(keyframe order, beats past the end of the audio) happen in `schedule.resolve`.
"""

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from latentwalk.errors import UserError
from latentwalk.sampling import SCHEDULERS, TIMESTEP_SPACINGS

UNITS = ("time", "beat", "bar", "frame")
EASING_NAMES = ("linear", "smoothstep", "cosine", "cubic_in", "cubic_out", "cubic_in_out", "hold")
PACING_NAMES = ("uniform", "audio")
INTERPOLATION_NAMES = ("slerp", "lerp")
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")
EXECUTOR_NAMES = ("local", "ray")  # where frames are denoised: this process, or a Ray cluster's workers
# A Ray cluster: "auto" (the one `ray start` left on this machine), its GCS "host:port", or a
# Ray Client "ray://host:port".
RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")
# A hub id is "owner/name"; anything else that is not a folder is a typo, caught before loading.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SCHEDULER_NAMES = tuple(SCHEDULERS)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
DEFAULT_HOLD = 0.5  # fraction of a segment that `easing: hold` stays on its first keyframe


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
    guidance: float | None  # None: the timeline's guidance
    # How the segment leaving this keyframe travels to the next one.
    easing: str
    noise_easing: str  # easing of the noise slerp; defaults to `easing`
    hold: float  # fraction of the segment spent on this keyframe before travelling
    pacing: str
    pacing_strength: float
    line: int  # YAML line of the keyframe, for error messages


@dataclass(frozen=True)
class AudioSpec:
    path: Path | None  # None: a silent beat grid at `bpm`
    start: float  # seconds into the file where the video starts
    end: float | None  # seconds into the file where the audio used stops; None: end of file
    bpm: float | None  # override: beats are tracked at this tempo (or laid on a grid without a file)
    beats_per_bar: int
    downbeat: int  # beat index of bar 0


@dataclass(frozen=True)
class RenderSettings:
    model: str
    width: int
    height: int
    fps: float
    steps: int
    guidance: float
    scheduler: str
    timestep_spacing: str  # auto: the model's own; few-step models want trailing
    negative_prompt: str
    interpolation: str  # how text conditioning travels: slerp or lerp
    device: str
    dtype: str
    batch_size: int
    # Options for big models and GPUs; see render.ModelOptions for what each one trades.
    channels_last: bool
    compile: bool
    attention_slicing: bool
    vae_tiling: bool
    cpu_offload: bool
    model_config: str | None  # a local diffusers folder of the same family, for a checkpoint file
    vae: str | None  # a diffusers VAE folder replacing the model's
    # Where frames are denoised (see farm.py): this process, or Ray workers. Defaults keep
    # code that builds RenderSettings by hand working.
    executor: str = "local"
    ray_address: str | None = None  # None: start a local cluster; "auto"; "host:port"; "ray://host:port"
    ray_cpus_per_worker: int = 1  # CPU cores each worker reserves (and its torch threads on CPU)
    ray_workers: int | None = None  # None: one per GPU, or as many as the cluster's CPUs allow


@dataclass(frozen=True)
class Timeline:
    settings: RenderSettings
    audio: AudioSpec | None
    keyframes: tuple[Keyframe, ...]
    end: Position | None  # None: the end of the audio
    source: str  # file name, for messages
    raw: dict = field(compare=False, repr=False)  # the YAML as read, saved in the manifest


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
    "channels_last": False,
    "compile": False,
    "attention_slicing": False,
    "vae_tiling": False,
    "cpu_offload": False,
    "model_config": None,
    "vae": None,
    "executor": "local",
    "ray_address": None,
    "ray_cpus_per_worker": 1,
    "ray_workers": None,
}
MODEL_OPTION_KEYS = ("channels_last", "compile", "attention_slicing", "vae_tiling", "cpu_offload")
SEGMENT_DEFAULTS: dict[str, Any] = {
    "easing": "linear",
    "noise_easing": None,
    "hold": None,
    "pacing": "uniform",
    "pacing_strength": 0.5,
}
TOP_KEYS = set(SETTING_DEFAULTS) | set(SEGMENT_DEFAULTS) | {"audio", "keyframes", "end"}
AUDIO_KEYS = {"path", "start", "end", "bpm", "beats_per_bar", "downbeat"}
KEYFRAME_KEYS = set(UNITS) | set(SEGMENT_DEFAULTS) | {"prompt", "seed", "negative_prompt", "guidance"}


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
        return UserError(f"{where}: {format_path(path)}: {message}" if path else f"{where}: {message}")

    def check_keys(self, mapping: Any, path: tuple, allowed: set[str]) -> dict:
        if not isinstance(mapping, dict):
            raise self.fail(path, f"expected a mapping, got {mapping!r}")
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(path + (key,), f"unknown key '{key}'{hint}")
        return mapping

    def number(self, value: Any, path: tuple, *, minimum: float | None = None, exclusive: bool = False, integer: bool = False) -> float | int:
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


def format_path(path: tuple) -> str:
    """('keyframes', 2, 'seed') → 'keyframes[2].seed'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def yaml_line_map(node: yaml.Node, path: tuple = (), lines: dict | None = None) -> dict[tuple, int]:
    """1-based YAML line of every mapping key and sequence item, keyed by its path."""
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = path + (key_node.value,)
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
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None


def read_yaml(text: str, source: str, allowed: set[str]) -> tuple[dict, FieldReader]:
    """The top-level mapping of a YAML document and a reader that knows every field's line."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise UserError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    reader = FieldReader(source, yaml_line_map(node) if node is not None else {})
    return reader.check_keys(data if data is not None else {}, (), allowed), reader


def parse_timeline(text: str, source: str = "<timeline>", base_dir: Path | None = None) -> Timeline:
    """Parse YAML text into a validated Timeline (no audio or model access)."""
    data, reader = read_yaml(text, source, TOP_KEYS)

    settings = parse_settings(reader, data)
    audio = _parse_audio(reader, data["audio"], base_dir or Path(".")) if data.get("audio") is not None else None
    segment_defaults = {k: data.get(k, v) for k, v in SEGMENT_DEFAULTS.items()}
    keyframes = _parse_keyframes(reader, data.get("keyframes"), segment_defaults)
    end = _parse_end(reader, data.get("end", "audio"))
    if end is None and (audio is None or audio.path is None):
        raise reader.fail(("end",), "required when the timeline has no audio file (e.g. end: {time: 10})")
    return Timeline(settings, audio, keyframes, end, source, raw=data)


def parse_settings(r: FieldReader, data: dict, defaults: dict[str, Any] = SETTING_DEFAULTS) -> RenderSettings:
    """The render settings of a timeline or a sweep (sweeps have their own defaults)."""
    get = lambda key: data.get(key, defaults[key])  # noqa: E731
    width, height = frame_size(r, get("width"), get("height"))
    model = r.text(get("model"), ("model",))
    check_model(r, model)
    model_config = _folder(r, get("model_config"), ("model_config",), "model_index.json")
    vae = _folder(r, get("vae"), ("vae",), "config.json")
    if model_config is not None and Path(model).suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise r.fail(("model_config",), f"only used with a checkpoint file (model: x.safetensors); {model!r} brings its own configs")
    options = {key: r.flag(get(key), (key,)) for key in MODEL_OPTION_KEYS}
    device = r.choice(get("device"), ("device",), DEVICE_NAMES)
    if options["cpu_offload"] and device in ("cpu", "mps"):
        raise r.fail(("cpu_offload",), f"offloads to the CPU from a CUDA device, but device is {device!r} (use device: cuda or auto)")
    executor = r.choice(get("executor"), ("executor",), EXECUTOR_NAMES)
    ray_address = None if get("ray_address") is None else r.text(get("ray_address"), ("ray_address",))
    if ray_address is not None and not RAY_ADDRESS.match(ray_address):
        raise r.fail(("ray_address",), f"expected auto, host:port or ray://host:port, got {ray_address!r}")
    if ray_address is not None and executor != "ray":
        raise r.fail(("ray_address",), f"only used with executor: ray, but executor is {executor!r}")
    ray_workers = None if get("ray_workers") is None else r.number(get("ray_workers"), ("ray_workers",), minimum=1, integer=True)
    return RenderSettings(
        model=model,
        width=width,
        height=height,
        fps=r.number(get("fps"), ("fps",), minimum=0, exclusive=True),
        steps=r.number(get("steps"), ("steps",), minimum=1, integer=True),
        guidance=r.number(get("guidance"), ("guidance",), minimum=0),
        scheduler=r.choice(get("scheduler"), ("scheduler",), SCHEDULER_NAMES),
        timestep_spacing=r.choice(get("timestep_spacing"), ("timestep_spacing",), TIMESTEP_SPACINGS),
        negative_prompt=r.text(get("negative_prompt") or "", ("negative_prompt",)),
        interpolation=r.choice(get("interpolation"), ("interpolation",), INTERPOLATION_NAMES),
        device=device,
        dtype=r.choice(get("dtype"), ("dtype",), DTYPE_NAMES),
        batch_size=r.number(get("batch_size"), ("batch_size",), minimum=1, integer=True),
        **options,
        model_config=model_config,
        vae=vae,
        executor=executor,
        ray_address=ray_address,
        ray_cpus_per_worker=r.number(get("ray_cpus_per_worker"), ("ray_cpus_per_worker",), minimum=1, integer=True),
        ray_workers=ray_workers,
    )


def _folder(r: FieldReader, value: Any, path: tuple, marker: str) -> str | None:
    """An optional local diffusers folder, recognised by its `marker` file."""
    if value is None:
        return None
    folder = Path(r.text(value, path)).expanduser()
    if not (folder / marker).is_file():
        raise r.fail(path, f"{str(folder)!r} is not a local diffusers folder (no {marker})")
    return str(folder)


def frame_size(r: FieldReader, width: Any, height: Any) -> tuple[int, int]:
    """Width and height in pixels: multiples of 8, the VAE's downsampling of SD models."""
    sizes = {key: r.number(value, (key,), minimum=8, integer=True) for key, value in (("width", width), ("height", height))}
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
    start = r.number(data.get("start", 0.0), ("audio", "start"), minimum=0)
    end = data.get("end")
    if end is not None:
        end = r.number(end, ("audio", "end"), minimum=start, exclusive=True)
    bpm = data.get("bpm")
    if bpm is not None:
        bpm = r.number(bpm, ("audio", "bpm"), minimum=0, exclusive=True)
    if path is None and bpm is None:
        raise r.fail(("audio",), "needs a 'path' to an audio file, or a 'bpm' for a silent beat grid")
    return AudioSpec(
        path=path,
        start=start,
        end=end,
        bpm=bpm,
        beats_per_bar=r.number(data.get("beats_per_bar", 4), ("audio", "beats_per_bar"), minimum=1, integer=True),
        downbeat=r.number(data.get("downbeat", 0), ("audio", "downbeat"), minimum=0, integer=True),
    )


def _parse_position(r: FieldReader, data: dict, path: tuple) -> Position:
    units = [u for u in UNITS if u in data]
    if len(units) != 1:
        found = ", ".join(units) if units else "none"
        raise r.fail(path, f"needs exactly one of {', '.join(UNITS)} (found: {found})")
    unit = units[0]
    value = r.number(data[unit], path + (unit,), minimum=0, integer=unit == "frame")
    return Position(unit, value)


def _parse_end(r: FieldReader, data: Any) -> Position | None:
    if data == "audio":
        return None
    if not isinstance(data, dict):
        raise r.fail(("end",), f"expected 'audio' or a mapping such as {{bar: 8}}, got {data!r}")
    r.check_keys(data, ("end",), set(UNITS))
    return _parse_position(r, data, ("end",))


def _parse_keyframes(r: FieldReader, data: Any, defaults: dict) -> tuple[Keyframe, ...]:
    if data is None:
        raise r.fail(("keyframes",), "missing: a timeline needs at least one keyframe")
    if not isinstance(data, list) or not data:
        raise r.fail(("keyframes",), f"expected a non-empty list of keyframes, got {data!r}")
    keyframes: list[Keyframe] = []
    seed = 0  # a keyframe without a seed keeps the previous keyframe's noise
    for i, item in enumerate(data):
        path = ("keyframes", i)
        item = r.check_keys(item, path, KEYFRAME_KEYS)
        if "prompt" not in item:
            raise r.fail(path, "missing field 'prompt'")
        prompt = r.text(item["prompt"], path + ("prompt",))
        _check_prompt(r, prompt, path + ("prompt",))
        negative = item.get("negative_prompt")
        if negative is not None:
            _check_prompt(r, r.text(negative, path + ("negative_prompt",)), path + ("negative_prompt",))
        if "seed" in item:
            seed = r.number(item["seed"], path + ("seed",), minimum=0, integer=True)
            if seed >= 2**63:
                raise r.fail(path + ("seed",), f"must be below 2**63, got {seed}")
        guidance = item.get("guidance")
        if guidance is not None:
            guidance = r.number(guidance, path + ("guidance",), minimum=0)
        seg = {k: item.get(k, defaults[k]) for k in SEGMENT_DEFAULTS}
        where = lambda key: path + (key,) if key in item else (key,)  # noqa: E731
        easing = r.choice(seg["easing"], where("easing"), EASING_NAMES)
        noise_easing = easing if seg["noise_easing"] is None else r.choice(seg["noise_easing"], where("noise_easing"), EASING_NAMES)
        hold = seg["hold"]
        hold = (DEFAULT_HOLD if "hold" in (easing, noise_easing) else 0.0) if hold is None else hold
        hold = r.number(hold, where("hold"), minimum=0)
        if hold >= 1:
            raise r.fail(where("hold"), f"must be below 1 (a fraction of the segment), got {hold}")
        keyframes.append(
            Keyframe(
                prompt=prompt,
                seed=seed,
                position=_parse_position(r, item, path),
                negative_prompt=negative,
                guidance=guidance,
                easing=easing,
                noise_easing=noise_easing,
                hold=hold,
                pacing=r.choice(seg["pacing"], where("pacing"), PACING_NAMES),
                pacing_strength=r.number(seg["pacing_strength"], where("pacing_strength"), minimum=0),
                line=r.lines.get(path, 0),
            )
        )
    return tuple(keyframes)


def _check_prompt(r: FieldReader, prompt: str, path: tuple) -> None:
    """Parse a prompt expression now, so a typo fails before any model loads."""
    from latentwalk.prompts import parse_prompt

    line = r.lines.get(path)
    parse_prompt(prompt, field=f"{r.source}:{line}: {format_path(path)}" if line else format_path(path))
