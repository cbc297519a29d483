"""`latentwalk sweep`: grids of stills over expression weights, seeds, guidance, steps or img2img strength.

A sweep file holds a timeline's render settings, one base `prompt` (which may contain `{name}`
placeholders that stand for numbers in a prompt expression) and one or two axes, `x` and `y`. Each
axis walks one param: a placeholder, `seed`, `guidance`, `steps`, `prompt` or `strength` (img2img,
with `init_image`). `seeds: {count, start}` instead renders one prompt over many seeds, numbered,
to pick seeds for a timeline.

Stages: `parse_sweep` (YAML → frozen `Sweep`, fully validated, no model) → `sweep_cells` (pure:
one `Cell` of plain values per image) → `render_cells` (batched through render.denoise/decode) →
`contact_sheet` (labelled PIL image) → `run_sweep` writes the PNGs, sheet, manifest and video.
"""

import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import yaml

from latentwalk import manifest, outputs
from latentwalk.sheet import SheetLayout, contact_sheet
from latentwalk.errors import UserError
from latentwalk.locks import open_output
from latentwalk.prompts import PromptSyntaxError, parse_prompt
from latentwalk.frames import FrameInputs, ImageSide
from latentwalk.params import IMAGE_STRENGTH, MAX_GUIDANCE, MAX_SEED
from latentwalk.timeline import (
    MAX_STEPS,
    SETTING_DEFAULTS,
    FieldReader,
    RenderSettings,
    format_path,
    parse_settings,
    read_text,
    read_yaml,
)

DEFAULT_OUT_DIR = Path("renders")
# A sweep takes every render setting a timeline takes (same reader, same checks); its video
# shows one cell per frame, so a slower default frame rate.
SWEEP_DEFAULTS: dict[str, Any] = SETTING_DEFAULTS | {"fps": 4}
TOP_KEYS = set(SWEEP_DEFAULTS) | {"seed", "video", "prompt", "x", "y", "init_image", "strength", "seeds", "mode"}
AXIS_KEYS = {"param", "values", "range"}
SEEDS_KEYS = {"count", "start"}
MODES = ("grid", "seeds")
# Besides placeholder names. `image`: pictures (image keyframes' inversion, docs/pictures.md), each
# cell its picture's own frame moved `image_strength` toward its seed's image.
PARAMS = ("seed", "guidance", "steps", "prompt", "strength", "image", "image_strength")
DEFAULT_SEED_COUNT = 16  # `mode: seeds` without a `seeds:` mapping
MAX_SWEEP_CELLS = 10_000  # images in one sweep, over both axes (a range count of 1e9 allocated gigabytes)


Value = float | int | str  # one axis value: a number, a seed or step count, or a prompt


@dataclass(frozen=True)
class Axis:
    param: str  # a placeholder name or one of PARAMS
    values: tuple[Value, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(format_value(v) for v in self.values)


@dataclass(frozen=True)
class Sweep:
    settings: RenderSettings  # `steps` and `guidance`: defaults for cells when they are not an axis
    video: bool  # also write an mp4 along x
    prompt: str | None  # template with {name} placeholders; None when a `prompt` axis sets it
    seed: int
    strength: float | None  # img2img strength when it is not an axis; None without init_image
    init_image: Path | None
    mode: str  # one of MODES
    x: Axis
    y: Axis | None
    source: str  # file name, for messages
    raw: dict = field(compare=False, repr=False)  # the YAML as read, saved in the manifest

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols): y by x, or the most nearly square grid that holds every seed."""
        if self.mode == "seeds":
            cols = math.ceil(math.sqrt(len(self.x.values)))
            return math.ceil(len(self.x.values) / cols), cols
        return (len(self.y.values) if self.y else 1), len(self.x.values)


@dataclass(frozen=True)
class Cell:
    """Everything one image depends on, as plain values."""

    row: int
    col: int
    values: tuple[tuple[str, Value], ...]  # (param, value) of each axis, x first
    label: str  # seeds mode: the seed number; grid: "w=0.5, seed=3"
    prompt: str  # placeholders filled in
    seed: int
    guidance: float
    steps: int
    strength: float | None  # None: text-to-image
    image: str | None = None  # an image axis's picture (a checked path), inverted under the cell's prompt
    image_strength: float = 0.0


# --- reading and checking a sweep file ---------------------------------------------------------


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; a relative init_image is resolved against it."""
    path = Path(path)
    return parse_sweep(read_text(path, "sweep"), source=str(path), base_dir=path.parent)


def parse_sweep(text: str, source: str = "<sweep>", base_dir: Path | None = None) -> Sweep:
    """Parse YAML text into a validated Sweep: every cell's prompt parses before any model loads."""
    # 1. YAML, with the line of every field.
    data, r = read_yaml(text, source, TOP_KEYS)

    # 2. Render settings, as in a timeline.
    settings = parse_settings(r, data, SWEEP_DEFAULTS, base_dir=base_dir)
    if isinstance(settings.guidance, str):
        raise r.fail(("guidance",), "a sweep's guidance is a number (or a guidance axis); audio expressions belong in timelines")
    video = r.flag(data.get("video", False), ("video",))
    seed = _check_value(r, "seed", data.get("seed", 0), ("seed",))

    # 3. Mode and axes.
    mode = r.choice(data.get("mode", "seeds" if "seeds" in data else "grid"), ("mode",), MODES)
    if mode == "seeds":
        for key in ("x", "y"):
            if key in data:
                raise r.fail((key,), "seeds mode renders one prompt over seeds and takes no axes; remove x/y or the seeds mode")
        x, y = _seed_axis(r, data.get("seeds") or {}, seed), None
    else:
        if "seeds" in data:
            raise r.fail(("seeds",), "only used with mode: seeds")
        if "x" not in data:
            raise r.fail(("x",), "missing: a sweep needs an x axis, e.g. x: {param: seed, values: [1, 2, 3]}")
        x = _parse_axis(r, data["x"], ("x",), base_dir)
        y = _parse_axis(r, data["y"], ("y",), base_dir) if data.get("y") is not None else None
        if y is not None and y.param == x.param:
            raise r.fail(("y", "param"), f"{y.param!r} is already the x axis; the two axes need different params")
    axes = (x,) if y is None else (x, y)
    if math.prod(len(axis.values) for axis in axes) > MAX_SWEEP_CELLS:
        shape = " x ".join(str(len(axis.values)) for axis in axes)
        raise r.fail(("y",) if y is not None else ("x",), f"the grid has {shape} cells, more than the limit of {MAX_SWEEP_CELLS:,}")
    by_param = {axis.param: (name, axis) for name, axis in zip(("x", "y"), axes)}

    # 4. Prompts: the base prompt or a prompt axis, placeholders matched to axes.
    prompt = data.get("prompt")
    if "prompt" in by_param and prompt is not None:
        name = by_param["prompt"][0]
        raise r.fail(("prompt",), f"set twice: here and by the {name} axis (param: prompt); remove one")
    if "prompt" not in by_param:
        if prompt is None:
            raise r.fail(("prompt",), "missing field 'prompt'")
        prompt = r.text(prompt, ("prompt",))
    templates = {("prompt",): prompt} if prompt is not None else {}
    if "prompt" in by_param:
        name, axis = by_param["prompt"]
        templates = {(name, "values", i): v for i, v in enumerate(axis.values)}
    used: set[str] = set()
    for path, template in templates.items():
        for name in placeholder_names(template):
            if name in PARAMS:
                raise r.fail(path, f"placeholder {{{name}}} is a reserved param name; rename it (e.g. {{w}})")
            if name not in by_param:
                raise r.fail(path, f"placeholder {{{name}}} has no axis; add e.g. x: {{param: {name}, values: [0, 0.5, 1]}}")
            used.add(name)
        _check_prompt(r, blank_placeholders(template), path)
    for name, axis in zip(("x", "y"), axes):
        if axis.param not in PARAMS and axis.param not in used:
            hint = ", ".join(f"{{{p}}}" for p in sorted(used)) or "none"
            raise r.fail(
                (name, "param"),
                f"unknown param {axis.param!r}: expected one of {', '.join(PARAMS)} or a placeholder "
                f"used in the prompt (placeholders found: {hint})",
            )
        if axis.param in PARAMS:
            continue
        for value in map(_number_text, axis.values):  # a value can still break a prompt: a token-edit weight of 1.5
            for path, template in templates.items():
                filled = fill_placeholders(template, {axis.param: value}, partial=True)
                _check_prompt(r, blank_placeholders(filled), path, f" with {axis.param}={value}")
    _check_prompt(r, settings.negative_prompt, ("negative_prompt",))

    # 5. img2img: an init image and a strength, fixed or swept; image axes are text-to-image from their pictures.
    if "image_strength" in by_param and "image" not in by_param:
        raise r.fail((by_param["image_strength"][0], "param"), "image_strength needs an image axis (x: {param: image, values: [a.png, b.png]})")
    if "image" in by_param and (data.get("init_image") is not None or "strength" in by_param):
        raise r.fail((by_param["image"][0], "param"), "an image axis starts each cell from its picture's inverted noise; "
                     "init_image and strength are img2img: use one or the other")
    init_image, strength = None, data.get("strength")
    if data.get("init_image") is not None:
        init_image = _check_image(r, data["init_image"], base_dir or Path("."))
        if strength is None and "strength" not in by_param:
            raise r.fail(("init_image",), "needs a strength: a 'strength' axis or a 'strength: 0.6' setting")
    if init_image is None and (strength is not None or "strength" in by_param):
        path = ("strength",) if strength is not None else (by_param["strength"][0], "param")
        raise r.fail(path, "img2img strength needs an 'init_image: picture.png'")
    if strength is not None:
        if "strength" in by_param:
            raise r.fail(("strength",), f"set twice: here and by the {by_param['strength'][0]} axis; remove one")
        strength = _check_value(r, "strength", strength, ("strength",))
    return Sweep(settings, video, prompt, seed, strength, init_image, mode, x, y, source, raw=data)


def _parse_axis(r: FieldReader, data: Any, path: tuple, base_dir: Path | None = None) -> Axis:
    data = r.check_keys(data, path, AXIS_KEYS)
    if "param" not in data:
        raise r.fail(path, "missing field 'param' (a placeholder name or one of: " + ", ".join(PARAMS) + ")")
    param = r.text(data["param"], path + ("param",))
    if ("values" in data) == ("range" in data):
        raise r.fail(path, "needs exactly one of 'values' (a list) or 'range' ([start, stop, count])")
    if "values" in data:
        values = data["values"]
        if not isinstance(values, list) or not values:
            raise r.fail(path + ("values",), f"expected a non-empty list, got {values!r}")
        if param == "image":
            return Axis(param, tuple(_picture(r, v, path + ("values", i), base_dir or Path(".")) for i, v in enumerate(values)))
        return Axis(param, tuple(_check_value(r, param, v, path + ("values", i)) for i, v in enumerate(values)))
    if param in ("prompt", "image"):
        raise r.fail(path + ("range",), f"a {param} axis needs 'values' (a list of {param}s), not a range")
    spec = data["range"]
    if not isinstance(spec, list) or len(spec) != 3:
        raise r.fail(path + ("range",), f"expected [start, stop, count], got {spec!r}")
    start = r.number(spec[0], path + ("range", 0))
    stop = r.number(spec[1], path + ("range", 1))
    count = r.number(spec[2], path + ("range", 2), minimum=1, integer=True, maximum=MAX_SWEEP_CELLS)
    # 12 significant digits: linspace's last-ulp noise (0.30000000000000004) would reach the labels.
    points = [float(f"{v:.12g}") for v in np.linspace(start, stop, count)]
    return Axis(param, tuple(_check_value(r, param, v, path + ("range",)) for v in points))


def _seed_axis(r: FieldReader, data: Any, seed: int) -> Axis:
    data = r.check_keys(data, ("seeds",), SEEDS_KEYS)
    count = r.number(data.get("count", DEFAULT_SEED_COUNT), ("seeds", "count"), minimum=1, integer=True, maximum=MAX_SWEEP_CELLS)
    start = _check_value(r, "seed", data.get("start", seed), ("seeds", "start"))
    if start + count > MAX_SEED:
        raise r.fail(("seeds",), f"seeds {start}..{start + count - 1} go past the largest seed {MAX_SEED - 1}")
    return Axis("seed", tuple(range(start, start + count)))


def _check_value(r: FieldReader, param: str, value: Any, path: tuple) -> Value:
    """One value of `param`, checked: seeds and steps are integers, strength lies in [0, 1]."""
    if param == "prompt":
        return r.text(value, path)
    if param == "seed":
        seed = r.number(value, path, minimum=0, integer=True)
        if seed >= MAX_SEED:
            raise r.fail(path, f"seed must be below 2**63, got {seed}")
        return seed
    if param == "steps":
        return r.number(value, path, minimum=1, integer=True, maximum=MAX_STEPS)
    if param == "guidance":
        return r.number(value, path, minimum=0, maximum=MAX_GUIDANCE)
    number = r.number(value, path)
    if param in ("strength", "image_strength") and not 0 <= number <= 1:
        raise r.fail(path, f"{param} must lie in [0, 1], got {value!r}")
    return number


def _picture(r: FieldReader, value: Any, path: tuple, base_dir: Path) -> str:
    """An image axis's value: a picture file, read whole and checked as a keyframe's `image` is."""
    from latentwalk.timeline import _keyframe_image

    return _keyframe_image(r, value, path, base_dir)


def _check_prompt(r: FieldReader, prompt: str, path: tuple, suffix: str = "") -> None:
    line = r.lines.get(path) or r.lines.get(path[:1])
    where = f"{r.source}:{line}: {format_path(path)}{suffix}" if line else f"{format_path(path)}{suffix}"
    try:
        parse_prompt(prompt)
    except PromptSyntaxError as error:
        raise error.with_field(where) from None
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


def _check_image(r: FieldReader, value: Any, base_dir: Path) -> Path:
    from PIL import Image

    path = Path(r.text(value, ("init_image",))).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise r.fail(("init_image",), f"image file not found: {str(path)!r}")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as e:  # PIL raises many types for unreadable files
        raise r.fail(("init_image",), f"cannot read {str(path)!r} as an image: {e}") from None
    return path


# --- placeholders (pure) -----------------------------------------------------------------------


def _placeholder_spans(template: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of each `{name}`; backslash escapes are skipped, as the prompt parser does."""
    spans, i = [], 0
    while i < len(template):
        if template[i] == "\\":
            i += 2
            continue
        if template[i] == "{":
            end = template.find("}", i)
            name = template[i + 1 : end] if end > 0 else ""
            if name.isidentifier():
                spans.append((i, end + 1, name))
                i = end + 1
                continue
        i += 1
    return spans


def placeholder_names(template: str) -> list[str]:
    """Names of the `{name}` placeholders in a prompt, in order of first use."""
    return list(dict.fromkeys(name for _, _, name in _placeholder_spans(template)))


def fill_placeholders(template: str, values: dict[str, str], partial: bool = False) -> str:
    """The template with each `{name}` replaced by values[name] (text, e.g. a number's repr)."""
    out, last = [], 0
    for start, end, name in _placeholder_spans(template):
        if name in values or not partial:
            out += [template[last:start], values[name]]
            last = end
    return "".join(out) + template[last:]


def blank_placeholders(template: str) -> str:
    """Each `{name}` replaced by a number of the same width ('0.0', '0.00'), so parse errors keep their column."""
    return fill_placeholders(template, {n: "0." + "0" * (len(n)) for n in placeholder_names(template)})


def _number_text(value: float) -> str:
    """A weight as expression text; repr round-trips the float exactly."""
    return repr(float(value))


def format_value(value: Value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- cells (pure) ------------------------------------------------------------------------------


def sweep_cells(sweep: Sweep) -> tuple[Cell, ...]:
    """One Cell per image, row by row; seeds mode fills its grid row by row."""
    rows, cols = sweep.grid_shape
    if sweep.mode == "seeds":
        points = [(i // cols, i % cols, ((sweep.x.param, v),)) for i, v in enumerate(sweep.x.values)]
    else:
        y_values = sweep.y.values if sweep.y else (None,)
        points = [
            (row, col, ((sweep.x.param, xv),) + (((sweep.y.param, yv),) if sweep.y else ()))
            for row, yv in enumerate(y_values)
            for col, xv in enumerate(sweep.x.values)
        ]
    cells = []
    for row, col, values in points:
        chosen = dict(values)
        template = chosen.get("prompt", sweep.prompt)
        weights = {k: _number_text(v) for k, v in chosen.items() if k not in PARAMS}
        if sweep.mode == "seeds":
            label = str(chosen["seed"])
        else:
            label = ", ".join(f"{k}={Path(v).name if k == 'image' else format_value(v)}" for k, v in values)
        cells.append(
            Cell(
                row=row,
                col=col,
                values=values,
                label=label,
                prompt=fill_placeholders(template, weights),
                seed=chosen.get("seed", sweep.seed),
                guidance=chosen.get("guidance", sweep.settings.guidance),
                steps=chosen.get("steps", sweep.settings.steps),
                strength=chosen.get("strength", sweep.strength),
                image=chosen.get("image"),
                image_strength=float(chosen.get("image_strength", 0.0)),
            )
        )
    return tuple(cells)


def cell_inputs(cell: Cell, negative_prompt: str, init: str | None = None, picture: str | None = None) -> FrameInputs:
    """A cell as the engine's per-frame inputs: one seed and one prompt, nothing travelling.

    `picture`: the key of the cell's fitted picture (images.picture_key), for an image axis.
    """
    prompt, negative = str(parse_prompt(cell.prompt)), str(parse_prompt(negative_prompt))
    side = None if picture is None else ImageSide(picture, cell.seed, prompt, negative, float(cell.guidance))
    return FrameInputs(
        seed_a=cell.seed,
        seed_b=cell.seed,
        noise_t=0.0,
        prompt_a=prompt,
        prompt_b=prompt,
        negative_a=negative,
        negative_b=negative,
        t=0.0,
        guidance=float(cell.guidance),
        steps=int(cell.steps),
        strength=cell.strength,
        init=init if cell.strength is not None else None,
        params=((IMAGE_STRENGTH, cell.image_strength),) if side is not None and cell.image_strength else (),
        image_a=side,
        image_b=side,
    )


def cell_batches(cells: Sequence[Cell], batch_size: int) -> list[list[Cell]]:
    """Cells as the engine batches them: by shared timestep schedule and guidance mode, first-seen
    order; cells with identical inputs are one frame, rendered once."""
    from latentwalk.engine import plan_batches

    cells_of: dict[FrameInputs, list[Cell]] = {}
    for cell in cells:
        cells_of.setdefault(cell_inputs(cell, ""), []).append(cell)
    return [[c for f in batch for c in cells_of[f]] for batch in plan_batches(list(cells_of), batch_size)]


def render_cells(
    backend, sweep: Sweep, cells: Sequence[Cell], batch_size: int, init_image: np.ndarray | None = None
) -> Iterator[tuple[list[Cell], np.ndarray]]:
    """Yield (cells, images (B, H, W, 3) uint8) batch by batch through the shared engine."""
    from latentwalk.stages import engine_settings
    from latentwalk.engine import denoised_batches, image_key
    from latentwalk.images import fit_picture, picture_key

    init_images = {image_key(init_image): init_image} if init_image is not None else None
    init = image_key(init_image) if init_image is not None else None
    width, height = sweep.settings.width, sweep.settings.height
    pictures = {c.image: fit_picture(c.image, width, height) for c in cells if c.image is not None}  # path → pixels
    keys = {path: picture_key(pixels) for path, pixels in pictures.items()}
    inputs = [cell_inputs(c, sweep.settings.negative_prompt, init, keys.get(c.image)) for c in cells]
    cells_of: dict[FrameInputs, list[Cell]] = {}
    for frame, cell in zip(inputs, cells):
        cells_of.setdefault(frame, []).append(cell)
    settings = replace(engine_settings(sweep.settings, batch_size), pictures={keys[p]: pixels for p, pixels in pictures.items()})
    for item in denoised_batches(backend, list(cells_of), settings, init_images):
        images = backend.decode(item.latents)[: len(item.frames)]
        batch = [(cell, image) for frame, image in zip(item.frames, images) for cell in cells_of[frame]]
        yield [c for c, _ in batch], np.stack([i for _, i in batch])


def load_init_image(path: Path, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8; resized (Lanczos) when the file has another size, as diffusers' img2img does."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        return np.asarray(image, dtype=np.uint8).copy()


def encode_image(backend, image: np.ndarray):
    """(H, W, 3) uint8 → scaled latents (1, C, h, w): the posterior mean, so no generator is needed."""
    return backend.encode_images(image[None])


# --- the edge: files, model, video -------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    sweep: Sweep
    cells: tuple[Cell, ...]
    images: np.ndarray  # (rows, cols, H, W, 3) uint8; a seeds grid's unused last cells stay black
    cell_paths: tuple[Path, ...]  # one per cell, in the order of `cells`
    sheet: Path
    manifest: Path
    videos: tuple[Path, ...]  # along x: one mp4 per row (seeds mode: one); empty without --video
    layout: SheetLayout
    timings: dict[str, float]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.cells)

    def image(self, row: int, col: int) -> np.ndarray:
        return self.images[row, col]


def as_sweep(spec: "Sweep | str | Path | dict") -> Sweep:
    """A Sweep from a parsed sweep, a file, or a mapping shaped like the YAML (validated alike)."""
    if isinstance(spec, Sweep):
        return spec
    if isinstance(spec, dict):
        return parse_sweep(yaml.safe_dump(spec, sort_keys=False))
    return load_sweep(spec)


def default_out_dir(sweep: Sweep) -> Path:
    stem = Path(sweep.source).stem if sweep.source != "<sweep>" else "sweep"
    return DEFAULT_OUT_DIR / stem


def run_sweep(
    path_or_spec: "Sweep | str | Path | dict",
    out_dir: str | Path | None = None,
    *,
    video: bool | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    model=None,
    progress: bool = False,
) -> SweepResult:
    """Render a sweep: cell PNGs, a labelled sheet.png, sweep.json and optionally an mp4 per row.

    `model` (a loaded backends.Backend) skips loading `model:`, e.g. to render several sweeps with one load.
    """
    from PIL import Image
    from tqdm import tqdm

    from latentwalk.stages import model_options, model_spec
    from latentwalk.backends import load_backend

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # 1. Check inputs: the whole sweep and every cell's prompt, before any model loads.
    sweep = as_sweep(path_or_spec)
    settings = sweep.settings
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}")
    cells = sweep_cells(sweep)
    out = Path(out_dir) if out_dir is not None else default_out_dir(sweep)
    pictures = tuple(Path(c.image) for c in cells if c.image is not None)  # an image axis's files are inputs too
    outputs.check_sweep_folder(out, tuple(p for p in (Path(sweep.source), sweep.init_image, *dict.fromkeys(pictures)) if p is not None and p.is_file()))
    init_image = load_init_image(sweep.init_image, settings.width, settings.height) if sweep.init_image else None

    # 2. Load the model.
    t0 = time.perf_counter()
    if model is None:
        from latentwalk.device import pick_device

        options = model_options(settings, pick_device(device or settings.device).type)
        model = load_backend(model_spec(settings), device or settings.device, settings.dtype, options)
    timings["load_model_s"] = time.perf_counter() - t0

    # 3. Render in batches, writing each cell as it arrives.
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rows, cols = sweep.grid_shape
    images = np.zeros((rows, cols, settings.height, settings.width, 3), np.uint8)  # (R, C, H, W, 3)
    paths: dict[Cell, Path] = {}
    bar = tqdm(total=len(cells), unit="cell", desc="sweep", disable=not progress, file=sys.stderr)
    for batch, frames in render_cells(model, sweep, cells, batch_size or settings.batch_size, init_image):
        for cell, frame in zip(batch, frames):
            images[cell.row, cell.col] = frame
            paths[cell] = out / f"cell_{cell.row}_{cell.col}.png"
            with open_output(paths[cell], "--out") as f:  # never through a link
                Image.fromarray(frame).save(f, format="PNG")
        bar.update(len(batch))
    bar.close()
    timings["render_s"] = time.perf_counter() - t0

    # 4. The labelled contact sheet.
    sheet, layout = contact_sheet(sweep, cells, images)
    sheet_path = out / "sheet.png"
    with open_output(sheet_path, "--out") as f:
        Image.fromarray(sheet).save(f, format="PNG")

    # 5. Optional video along x: one cell per frame, one file per row.
    videos: tuple[Path, ...] = ()
    if sweep.video if video is None else video:
        videos = write_videos(sweep, cells, images, out)

    # 6. Leave a manifest of exactly what produced the sweep.
    timings["total_s"] = time.perf_counter() - clock
    data = manifest_data(sweep, cells, [paths[c] for c in cells], sheet_path, videos, model, timings)
    written = manifest.write(out / "sweep.json", data)
    return SweepResult(sweep, cells, images, tuple(paths[c] for c in cells), sheet_path, written, videos, layout, timings)


def write_videos(sweep: Sweep, cells: Sequence[Cell], images: np.ndarray, out: Path) -> tuple[Path, ...]:
    from latentwalk.encode import VideoWriter

    # A seeds grid is one list laid out in rows, so its video is one file of every seed in order.
    rows = 1 if sweep.mode == "seeds" else sweep.grid_shape[0]
    paths = []
    for row in range(rows):
        path = out / ("sweep.mp4" if rows == 1 else f"sweep_row{row}.mp4")
        with VideoWriter(path, sweep.settings.width, sweep.settings.height, sweep.settings.fps) as writer:
            for cell in cells:
                if rows == 1 or cell.row == row:
                    writer.write(images[cell.row, cell.col])
        paths.append(path)
    return tuple(paths)


def manifest_data(sweep: Sweep, cells: Sequence[Cell], paths: Sequence[Path], sheet: Path, videos: Sequence[Path], model, timings: dict) -> dict:
    def axis_data(axis: Axis | None) -> dict | None:
        return None if axis is None else {"param": axis.param, "values": list(axis.values), "labels": list(axis.labels)}

    return {
        "sweep": {"source": sweep.source, "yaml": sweep.raw, "resolved": asdict(sweep.settings) | {"video": sweep.video}},
        "mode": sweep.mode,
        "prompt": sweep.prompt,
        "seed": sweep.seed,
        "init_image": str(sweep.init_image) if sweep.init_image else None,
        "strength": sweep.strength,
        "grid": {"rows": sweep.grid_shape[0], "cols": sweep.grid_shape[1]},
        "axes": {"x": axis_data(sweep.x), "y": axis_data(sweep.y)},
        "cells": [
            asdict(c) | {"values": dict(c.values), "file": p.name} for c, p in zip(cells, paths)
        ],
        "files": {"sheet": sheet.name, "videos": [v.name for v in videos]},
        "model": {"spec": sweep.settings.model, "source": model.source, "family": model.family, "device": str(model.device), "dtype": str(model.dtype)},
    } | manifest.provenance(timings)
