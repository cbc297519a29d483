"""ControlNet (Zhang et al. 2023) on travel frames: specs, control images, preprocessors and the residuals.

`controlnets:` lists diffusers ControlNetModel folders, each with its control images: one
picture, a folder of pictures (one per video frame: the user's own depth or pose maps), a
video, or the `video:` source's own frames; `preprocess: canny` turns them into edge maps
(OpenCV's Canny, no model weights). Each ControlNet's weight is a per-frame quantity that
travels between keyframes like a LoRA's (`controlnet_weights: {name: w}` on a keyframe).

In the UNet call every batch row gets its own control image and weight: each ControlNet runs
once on the whole batch and its residuals are scaled per row before they are summed (several
ControlNets add up, as diffusers' MultiControlNetModel does). A row at weight 0 adds exactly
0, so a frame whose ControlNets all have weight 0 is the frame without them, key included.
A ControlNet acts on the steps whose timestep t has 1 - t / T in [start, end] (T: the
training timesteps, 1000): the fraction of the noise schedule behind the step, as diffusers'
control_guidance_start/end measure it in steps. Torch is imported inside functions only.
"""

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from latentwalk import video_input
from latentwalk.errors import UserError
from latentwalk.modelspec import file_fingerprint

CONTROL_KEYS = {"path", "name", "image", "video", "from_video", "weight", "start", "end", "preprocess"}
PREPROCESSORS = ("none", "canny")
CANNY_THRESHOLDS = (100, 200)  # OpenCV's hysteresis thresholds, as diffusers' ControlNet examples use
CONTROL_PARAM = "control:"  # a ControlNet's per-frame weight in schedule records: "control:<name>"
DEFAULT_CONTROL_WEIGHT = 1.0
CONTROL_NAME = re.compile(r"^[A-Za-z0-9_][\w-]*$")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CACHE_IMAGES = 64  # decoded, preprocessed control images kept by InputImages
CONTROLNET_CLASS = "ControlNetModel"
# What must agree between a ControlNet's config and the UNet's: its residuals are added to the
# UNet's own block outputs, and it reads the same text (and, for SDXL, size) conditioning.
FAMILY_FIELDS = ("cross_attention_dim", "in_channels", "block_out_channels", "addition_embed_type")


@dataclass(frozen=True)
class ControlSpec:
    """One entry of `controlnets:`: the ControlNet's weights and where its control images come from."""

    name: str  # how keyframes' controlnet_weights refer to it; the folder's name unless given
    path: str  # a diffusers ControlNetModel folder
    fingerprint: str  # of the folder (modelspec.file_fingerprint): in every key the ControlNet acts on
    source: str  # "image": one picture; "images": a folder, one per frame; "video": a file; "from_video": the video: frames
    files: tuple[str, ...]  # the picture(s) or video file; () for from_video
    shas: tuple[str, ...]  # sha256 of each file's bytes
    weight: float  # at every keyframe that does not set its own
    start: float  # fraction of the noise schedule where it starts acting (0..1)
    end: float  # and stops (start < end <= 1)
    preprocess: str  # one of PREPROCESSORS
    video: "video_input.VideoInfo | None" = None  # source "video": the file's rate and frames

    def param(self) -> str:
        return CONTROL_PARAM + self.name


def control_param(name: str) -> str:
    return CONTROL_PARAM + name


# --- reading the timeline (r: timeline.FieldReader) -----------------------------------------------


def parse_controlnets(r: Any, data: Any, base_dir: Path, video: "video_input.VideoSpec | None") -> tuple[ControlSpec, ...]:
    """`controlnets: [{path, image | video | from_video, weight, start, end, preprocess, name}]`, files checked now."""
    if data is None:
        return ()
    if not isinstance(data, (list, tuple)):
        raise r.fail(("controlnets",), f"expected a list such as [{{path: controlnet-canny, image: edges.png}}], got {data!r}")
    specs: list[ControlSpec] = []
    for i, item in enumerate(data):
        path = ("controlnets", i)
        item = r.check_keys(item, path, CONTROL_KEYS)
        if "path" not in item:
            raise r.fail(path, "missing field 'path' (a diffusers ControlNetModel folder)")
        folder = _resolve(r.text(item["path"], path + ("path",)), base_dir)
        check_controlnet_folder(r, folder, path + ("path",))
        sources = [key for key in ("image", "video", "from_video") if item.get(key) not in (None, False)]
        if len(sources) != 1:
            found = ", ".join(sources) if sources else "none"
            raise r.fail(path, f"needs exactly one of image (a picture or a folder of them), video (a file) or from_video: true (found: {found})")
        source, files, info = _control_source(r, item, path, sources[0], base_dir, video)
        name = r.text(item.get("name", folder.name), path + ("name",))
        if not CONTROL_NAME.match(name):
            raise r.fail(path + ("name",), f"{name!r} is not a usable name: letters, digits, '_' and '-' only (set name: to one)")
        if any(s.name == name for s in specs):
            raise r.fail(path + ("name",) if "name" in item else path, f"a second ControlNet named {name!r}; give each one its own name:")
        start = r.number(item.get("start", 0.0), path + ("start",), minimum=0, maximum=1)
        end = r.number(item.get("end", 1.0), path + ("end",), minimum=0, maximum=1)
        if end <= start:
            raise r.fail(path + ("end",), f"must be greater than start ({start:g}), got {end:g}")
        specs.append(ControlSpec(
            name=name, path=str(folder), fingerprint=file_fingerprint(folder), source=source, files=files,
            shas=tuple(video_input.file_sha256(f) for f in files),
            weight=r.number(item.get("weight", DEFAULT_CONTROL_WEIGHT), path + ("weight",), minimum=0, maximum=MAX_CONTROL_WEIGHT),
            start=start, end=end, preprocess=_preprocess(r, item.get("preprocess", "none"), path + ("preprocess",)), video=info,
        ))
    return tuple(specs)


MAX_CONTROL_WEIGHT = 10.0  # diffusers' pipelines take any scale; past a few the residuals swamp the UNet


def _resolve(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def _preprocess(r: Any, value: Any, path: tuple) -> str:
    name = r.choice(value, path, PREPROCESSORS)
    if name == "canny":
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise r.fail(path, "canny needs OpenCV: pip install opencv-python-headless (or latentwalk's video extra)") from None
    return name


def check_controlnet_folder(r: Any, folder: Path, path: tuple) -> dict:
    """A folder whose config.json describes a ControlNetModel; returns the config."""
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise r.fail(path, f"{str(folder)!r} is not a ControlNet folder (no config.json); give a diffusers ControlNetModel folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise r.fail(path, f"cannot read {str(config_file)!r}: {e}") from None
    found = config.get("_class_name") if isinstance(config, dict) else None
    if found != CONTROLNET_CLASS:
        what = f"a {found}" if isinstance(found, str) else "no diffusers model"
        raise r.fail(path, f"{str(folder)!r} is not a ControlNet: its config.json describes {what}, not a {CONTROLNET_CLASS}")
    return config


def _control_source(r: Any, item: dict, path: tuple, key: str, base_dir: Path, video):
    """(source kind, files, video info) of one ControlNet's control images."""
    if key == "from_video":
        r.flag(item["from_video"], path + ("from_video",))
        if video is None:
            raise r.fail(path + ("from_video",), "needs a top-level video: whose frames to use")
        return "from_video", (), None
    target = _resolve(r.text(item[key], path + (key,)), base_dir)
    if key == "video":
        if not target.is_file():
            raise r.fail(path + (key,), f"video file not found: {str(target)!r}")
        try:
            return "video", (str(target),), video_input.probe(target)
        except video_input.VideoReadError as e:
            raise r.fail(path + (key,), str(e)) from None
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)
        if not files:
            raise r.fail(path + (key,), f"the folder {str(target)!r} holds no pictures ({', '.join(PICTURE_SUFFIXES)}); one per video frame, in name order")
        for file in files:
            _check_picture(r, file, path + (key,))
        return "images", tuple(map(str, files)), None
    _check_picture(r, target, path + (key,))
    return "image", (str(target),), None


def _check_picture(r: Any, file: Path, path: tuple) -> None:
    from latentwalk.images import check_picture

    try:
        check_picture(file)
    except ValueError as e:
        raise r.fail(path, str(e)) from None


def keyframe_weights(r: Any, data: Any, path: tuple) -> tuple[tuple[str, float], ...]:
    """`controlnet_weights: {edges: 0.5}`: weights at this keyframe (the names are checked against
    `controlnets:` once the whole timeline is read)."""
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise r.fail(path, f"expected a mapping of ControlNet names to weights, e.g. {{edges: 0.5}}, got {data!r}")
    return tuple((str(name), r.number(w, path + (name,), minimum=0, maximum=MAX_CONTROL_WEIGHT)) for name, w in data.items())


def unet_config(model_source: str) -> dict | None:
    """The UNet config of a local diffusers model folder, or None (a checkpoint file or a hub id: checked at load)."""
    config = Path(model_source) / "unet" / "config.json"
    try:
        return json.loads(config.read_text()) if config.is_file() else None
    except (OSError, ValueError):
        return None  # the model's own load reports it


def family_mismatch(controlnet: dict, unet: dict) -> str | None:
    """Why a ControlNet's config does not fit a UNet's, in words; None when it fits."""
    for name in FAMILY_FIELDS:
        a, b = controlnet.get(name), unet.get(name)
        if isinstance(a, list) or isinstance(b, list):
            a, b = list(a or []), list(b or [])
        if a != b:
            return (
                f"it is a ControlNet for {describe(controlnet)}, but the model is {describe(unet)} "
                f"({name} {a!r} against the UNet's {b!r}); use a ControlNet trained for this model's family"
            )
    return None


def describe(config: dict) -> str:
    """"an SDXL model", "an SD 1.x model (cross_attention_dim 768)", from a UNet or ControlNet config."""
    dim = config.get("cross_attention_dim")
    if config.get("addition_embed_type") == "text_time":
        return f"an SDXL model (cross_attention_dim {dim})"
    family = {768: "an SD 1.x model", 1024: "an SD 2.x model"}.get(dim, "a model")
    return f"{family} (cross_attention_dim {dim})"


def check_families(r: Any, specs: Sequence[ControlSpec], model_source: str) -> None:
    """Every ControlNet against the model's UNet config, torch-free, where the model is a local folder."""
    unet = unet_config(model_source)
    if unet is None:
        return
    for i, spec in enumerate(specs):
        config = json.loads((Path(spec.path) / "config.json").read_text())
        reason = family_mismatch(config, unet)
        if reason:
            raise r.fail(("controlnets", i, "path"), f"{spec.path!r}: {reason}")


# --- per-frame inputs --------------------------------------------------------------------------------


def image_ref(kind: str, sha: str, index: int, preprocess: str = "none") -> str:
    """The name of one input picture at the render's size: kind "video" or "image", the file's sha256,
    the frame index (0 for a picture), and the preprocessing applied."""
    base = video_input.video_ref(sha, index) if kind == "video" else f"image:{sha}:{index}"
    return base if preprocess == "none" else f"{base}+{preprocess}"


def control_image_ref(spec: ControlSpec, frame: int, fps: float, video: "video_input.VideoSpec | None") -> str:
    """The reference of the control image of ControlNet `spec` at timeline frame `frame`."""
    if spec.source == "from_video":
        index = video_input.source_frames(video, [frame], fps)[0]
        return image_ref("video", video.sha256, index, spec.preprocess)
    if spec.source == "video":
        return image_ref("video", spec.shas[0], video_input.source_index(frame / fps, spec.video.fps), spec.preprocess)
    if spec.source == "images":
        return image_ref("image", spec.shas[frame], 0, spec.preprocess)
    return image_ref("image", spec.shas[0], 0, spec.preprocess)


def control_source(spec: ControlSpec, frame: int, fps: float, video: "video_input.VideoSpec | None") -> str | int:
    """What `plan` shows of a frame's control image: the picture's file name, or the video frame's index."""
    if spec.source == "from_video":
        return video_input.source_frames(video, [frame], fps)[0]
    if spec.source == "video":
        return video_input.source_index(frame / fps, spec.video.fps)
    return Path(spec.files[frame if spec.source == "images" else 0]).name


def uncovered(spec: ControlSpec, n_frames: int, fps: float) -> str | None:
    """Why ControlNet `spec`'s images do not reach the timeline's last frame, or None."""
    if spec.source == "images" and len(spec.files) < n_frames:
        return f"the folder holds {len(spec.files)} pictures, but the timeline has {n_frames} frames (one picture per frame, in name order)"
    if spec.source == "video":
        last = video_input.source_index((n_frames - 1) / fps, spec.video.fps)
        if last >= spec.video.n_frames:
            return (
                f"the control video is {spec.video.duration:.3f}s ({spec.video.n_frames} frames), shorter than the timeline's "
                f"{n_frames / fps:.3f}s ({n_frames} frames at {fps:g} fps)"
            )
    return None


def with_inputs(frames: Sequence, records: Sequence, video, specs: Sequence[ControlSpec], fps: float, strength_of) -> tuple:
    """Every FrameInputs with its video init (strength from its record) and its ControlNets.

    `records`: the schedule.FrameRecord of each frame; `strength_of(record)`: its strength track.
    A ControlNet at weight 0 is left out of the frame, so the frame is (and is keyed as) the one
    without it; the weights leave `params` for the frame's ControlInputs.
    """
    from latentwalk.frames import ControlInput

    if video is None and not specs:
        return tuple(frames)
    indices = video_input.source_frames(video, [r.frame for r in records], fps) if video is not None else None
    out = []
    for n, (frame, record) in enumerate(zip(frames, records)):
        params = dict(record.params)
        controls = tuple(
            ControlInput(spec.name, spec.fingerprint, control_image_ref(spec, record.frame, fps, video), weight, spec.start, spec.end)
            for spec in specs
            if (weight := float(params.get(spec.param(), spec.weight))) != 0.0
        )
        changes: dict = {"controls": controls, "params": tuple(p for p in frame.params if not p[0].startswith(CONTROL_PARAM))}
        if video is not None:
            changes |= {"init": image_ref("video", video.sha256, indices[n]), "strength": float(strength_of(record))}
        out.append(replace(frame, **changes))
    return tuple(out)


# --- pixels ------------------------------------------------------------------------------------------


class InputImages:
    """Every input picture a render's frames name (video inits, control images), at the render's size.

    Holds only file paths by content hash, so it travels to other processes (a Ray farm) and reads
    the same files there; decoders and decoded frames are made where pictures are asked for.
    """

    def __init__(self, width: int, height: int, files: dict[str, str]):
        self.width, self.height = width, height
        self.files = dict(files)  # sha256 → path
        self._readers: dict[str, video_input.VideoFrames] = {}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return {"width": self.width, "height": self.height, "files": self.files}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["width"], state["height"], state["files"])

    def load(self, ref: str) -> np.ndarray:
        """(height, width, 3) uint8 pixels of a reference made by image_ref (read-only)."""
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        base, _, preprocess = ref.partition("+")
        kind, sha, index = base.split(":")
        path = self.files[sha]
        if kind == "video":
            reader = self._readers.get(sha) or self._readers.setdefault(sha, video_input.VideoFrames(path, self.width, self.height))
            pixels = reader.get(int(index))
        else:
            from latentwalk.images import fit_picture

            pixels = fit_picture(path, self.width, self.height)
        if preprocess:
            pixels = PREPROCESS_FNS[preprocess](pixels)
        pixels.setflags(write=False)
        self._cache[ref] = pixels
        if len(self._cache) > CACHE_IMAGES:
            self._cache.popitem(last=False)
        return pixels

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def input_images(width: int, height: int, video, specs: Sequence[ControlSpec]) -> InputImages | None:
    """The InputImages of a timeline's video and ControlNets, or None when it has neither."""
    files = {} if video is None else {video.sha256: video.path}
    for spec in specs:
        files |= dict(zip(spec.shas, spec.files))
    return InputImages(width, height, files) if files else None


def canny(image: np.ndarray, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> np.ndarray:
    """(H, W, 3) uint8 white edges on black: OpenCV's Canny (Canny 1986) of the picture's grey levels."""
    import cv2

    edges = cv2.Canny(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), *thresholds)
    return np.repeat(edges[:, :, None], 3, axis=2)


PREPROCESS_FNS = {"canny": canny}


# --- the model side ----------------------------------------------------------------------------------


@dataclass
class ControlUnit:
    """A loaded ControlNet and the part of the noise schedule it acts on."""

    model: Any  # diffusers.ControlNetModel on the render's device and dtype
    start: float
    end: float


def load_controlnets(specs: Sequence[ControlSpec], unet_config: dict, device, dtype) -> dict[str, ControlUnit]:
    """Each ControlNet folder as a ControlNetModel, checked against the UNet; errors name controlnets[i].path."""
    from diffusers import ControlNetModel

    from latentwalk.backends.adapters import diffusers_quiet, first_line

    units = {}
    for i, spec in enumerate(specs):
        try:
            with diffusers_quiet():
                model = ControlNetModel.from_pretrained(spec.path)
        except Exception as e:  # missing or foreign weights: many types
            raise UserError(f"controlnets[{i}].path: cannot load the ControlNet in {spec.path!r}: {first_line(e)}") from None
        reason = family_mismatch(dict(model.config), dict(unet_config))
        if reason:
            raise UserError(f"controlnets[{i}].path: {spec.path!r}: {reason}")
        units[spec.name] = ControlUnit(model.to(device, dtype).eval().requires_grad_(False), spec.start, spec.end)
    return units


CONTROL_IMAGE = "control_image:"  # Cond entries of a batch: (B, 3, H, W) control images in [0, 1]
CONTROL_WEIGHT = "control_weight:"  # and (B,) weights, per ControlNet name


def control_cond(rows: Sequence, names: Sequence[str], images: InputImages, size: tuple[int, int]):
    """Cond entries of a batch's control images and weights; rows without a ControlNet get zeros and weight 0."""
    import torch

    height, width = size
    entries = {}
    for name in names:
        pictures, weights = [], []
        for row in rows:
            control = next((c for c in row.controls if c.name == name), None)
            if control is None:
                pictures.append(torch.zeros(1, 3, height, width))
                weights.append(0.0)
            else:
                pixels = torch.from_numpy(np.array(images.load(control.image))).permute(2, 0, 1)[None].float() / 255.0
                pictures.append(pixels)
                weights.append(control.weight)
        if any(weights):
            entries[CONTROL_IMAGE + name] = torch.cat(pictures)  # (B, 3, H, W)
            entries[CONTROL_WEIGHT + name] = torch.tensor(weights, dtype=torch.float32)  # (B,)
    return entries


def split_cond(cond: dict) -> tuple[dict, dict]:
    """(text conditioning, control entries) of a batch's Cond."""
    text = {k: v for k, v in cond.items() if not k.startswith((CONTROL_IMAGE, CONTROL_WEIGHT))}
    return text, {k: v for k, v in cond.items() if k not in text}


def residuals(units: dict[str, ControlUnit], controls: dict, x, t, unet_kwargs: dict, progress: float):
    """(down residuals, mid residual) summed over the ControlNets acting at this step, each row scaled
    by its own weight; (None, None) when none acts."""
    down, mid = None, None
    for name, unit in units.items():
        if CONTROL_IMAGE + name not in controls or not unit.start <= progress <= unit.end:
            continue
        image = controls[CONTROL_IMAGE + name].to(x.device, x.dtype)
        weight = controls[CONTROL_WEIGHT + name].to(x.device, x.dtype).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        d, m = unit.model(x, t, controlnet_cond=image, conditioning_scale=1.0, return_dict=False, **unet_kwargs)
        d, m = [r * weight for r in d], m * weight
        down = d if down is None else [a + b for a, b in zip(down, d)]
        mid = m if mid is None else mid + m
    return down, mid


# --- what `plan` shows ----------------------------------------------------------------------------


def plan_inputs(schedule, settings) -> dict:
    """JSON-ready: the source video and every ControlNet, with each frame's source frame or control image."""
    video, specs, fps = settings.video, settings.controlnets, schedule.fps
    frames = [r.frame for r in schedule.frames]
    out: dict = {}
    if video is not None:
        out["video"] = {
            "path": video.path, "fps": video.info.fps, "n_frames": video.info.n_frames, "size": [video.info.width, video.info.height],
            "start": video.start, "end": video.end, "flow": video.flow,
            "fit": video_input.fit_note(video.info, settings.width, settings.height) or None,
            "source_frames": video_input.source_frames(video, frames, fps),
        }
    if specs:
        out["controlnets"] = [
            {
                "name": s.name, "path": s.path, "source": s.source, "preprocess": s.preprocess, "weight": s.weight,
                "start": s.start, "end": s.end, "images": [control_source(s, f, fps, video) for f in frames],
            }
            for s in specs
        ]
    return out


def plan_notes(schedule, settings) -> list[str]:
    """Lines for `plan`'s table: which source frame and control image each frame uses."""
    data, lines = plan_inputs(schedule, settings), []
    first = schedule.frames[0].frame if schedule.frames else 0

    def mapping(values: list) -> str:
        shown = [f"{first + i}->{v}" for i, v in enumerate(values[:6])]
        return ", ".join(shown) + (f", ..., {first + len(values) - 1}->{values[-1]}" if len(values) > 6 else "")

    if "video" in data:
        v = data["video"]
        fit = f"; {v['fit']}" if v["fit"] else ""
        lines.append(
            f"video: {Path(v['path']).name} ({v['n_frames']} frames at {v['fps']:g} fps, {v['size'][0]}x{v['size'][1]}{fit}) from "
            f"{v['start']:g}s; frame -> source frame: {mapping(v['source_frames'])}" + ("; flow: each frame follows the previous output" if v["flow"] else "")
        )
    for c in data.get("controlnets", []):
        what = {"from_video": "the video's frames", "video": "its video's frames", "images": "one picture per frame", "image": "one picture"}[c["source"]]
        prep = f", {c['preprocess']} edges" if c["preprocess"] != "none" else ""
        lines.append(
            f"controlnet {c['name']}: {what}{prep}, acting over {c['start']:.0%}-{c['end']:.0%} of the noise schedule, weight track "
            f"control:{c['name']}; "
            f"frame -> control image: {mapping(c['images'])}"
        )
    return lines
