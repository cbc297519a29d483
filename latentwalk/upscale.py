"""Output stage: every video frame made `factor` times larger, between the frame store and the encoder.

Two methods (docs/outputs.md, "Upscaling"):
- `refine`, a hires fix: the stored frame enlarged with Lanczos, then img2img at the large size
  with the same model and the frame's own inputs (seeds, prompts, guidance, LoRA weights) at
  `strength` over a schedule of `steps` (so about steps × strength UNet steps). Rows are padded to
  the render's batch size like every engine batch, so a refined frame does not depend on which
  frames share its batch.
- `model`: a super-resolution network the user supplies (ESRGAN, Real-ESRGAN, SwinIR, ... any
  architecture spandrel detects from the file), one frame at a time in float32.

Upscaled frames go into the frame store like denoised ones, under keys made of the frame's own
key and every upscale setting (and the weights' fingerprint), so a resumed or repeated render
makes none again and changing a setting makes new ones without touching the old.

Torch-free at import: torch, the engine and spandrel load when a frame is upscaled.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from latentwalk.errors import UserError
from latentwalk.frames import FrameInputs, RenderIdentity, frame_key
from latentwalk.timeline import UpscaleSpec

if TYPE_CHECKING:
    from latentwalk.store import FrameStore
    from latentwalk.timeline import Timeline

KEY_VERSION = 1  # bump when an upscaled key stands for other pixels
RESAMPLE = "lanczos"  # refine's pixel enlargement before img2img (PIL's Lanczos-3)
CHUNK = 4  # batches of base frames read, enlarged and refined at a time: bounds memory on long videos
MODEL_FIELD = ("output", "upscale", "model")


@dataclass(frozen=True)
class UpscalePlan:
    """The video's upscaled frames: their keys in video order, their sources, and which the store lacks."""

    spec: UpscaleSpec
    base_shape: tuple[int, int, int]  # (H, W, 3) of the denoised frames
    shape: tuple[int, int, int]  # (H·factor, W·factor, 3)
    keys: tuple[str, ...]  # (n_frames,) in video order; held frames share a key
    sources: dict[str, tuple[str, FrameInputs]]  # upscaled key → (base key, the frame's inputs), each key once
    missing: tuple[str, ...]  # upscaled keys to make, in video order

    def manifest(self) -> dict:
        return {
            "factor": self.spec.factor, "method": self.spec.method,
            "steps": self.spec.steps if self.spec.method == "refine" else None,
            "strength": self.spec.strength if self.spec.method == "refine" else None,
            "model": str(self.spec.model) if self.spec.model else None,
            "width": self.shape[1], "height": self.shape[0], "frames_made": len(self.missing),
            "frames_reused": len(self.sources) - len(self.missing),
        }


def upscaled_identity(identity: RenderIdentity, factor: int) -> RenderIdentity:
    """The render identity at the enlarged size: refined frames are denoised there."""
    return replace(identity, width=identity.width * factor, height=identity.height * factor)


def refine_inputs(inputs: FrameInputs, base_key: str, spec: UpscaleSpec) -> FrameInputs:
    """A frame's own inputs as img2img over its enlarged stored frame (named by the frame's key)."""
    return replace(inputs, steps=spec.steps, strength=spec.strength, init=f"{RESAMPLE}{spec.factor}x:{base_key}", share=None)


def upscaled_key(identity: RenderIdentity, base_key: str, inputs: FrameInputs, spec: UpscaleSpec, weights: str = "") -> str:
    """The store key of a frame's upscaled version: its key, the upscale settings, where it is made."""
    if spec.method == "refine":
        return frame_key(upscaled_identity(identity, spec.factor), refine_inputs(inputs, base_key, spec))
    payload = {
        "version": KEY_VERSION, "method": spec.method, "factor": spec.factor, "weights": weights, "base": base_key,
        # float32 on the render's device: other kernels may move a last bit
        "device_type": identity.device_type, "cpu_threads": identity.cpu_threads, "versions": asdict(identity)["versions"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_upscale(
    spec: UpscaleSpec, identity: RenderIdentity, base_keys: Sequence[str], inputs: Sequence[FrameInputs],
    store: "FrameStore", fresh: bool = False,
) -> UpscalePlan:
    """Key every video frame's upscaled version and look the keys up (a header check, no pixels read)."""
    from latentwalk.modelspec import file_fingerprint

    weights = file_fingerprint(spec.model) if spec.model is not None else ""
    base_shape = (identity.height, identity.width, 3)
    shape = (identity.height * spec.factor, identity.width * spec.factor, 3)
    keys, sources = [], {}
    for base, frame in zip(base_keys, inputs):
        key = upscaled_key(identity, base, frame, spec, weights)
        keys.append(key)
        sources.setdefault(key, (base, frame))
    missing = tuple(k for k in sources if fresh or not store.has(k, shape))
    return UpscalePlan(spec, base_shape, shape, tuple(keys), sources, missing)


def lanczos(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 → (H·factor, W·factor, 3) uint8, PIL's Lanczos-3 (deterministic)."""
    from PIL import Image

    height, width = image.shape[:2]
    return np.array(Image.fromarray(image).resize((width * factor, height * factor), Image.LANCZOS))


def refine(backend, settings, spec: UpscaleSpec, frames: Sequence[tuple[str, FrameInputs]], images: Sequence[np.ndarray], conditioning=None) -> np.ndarray:
    """(n, H·f, W·f, 3) uint8: each stored frame enlarged, then img2img with its own inputs.

    `settings`: engine.EngineSettings at the enlarged size; `frames`: (base key, inputs) per image.
    """
    from latentwalk.engine import render_frames

    rows = [refine_inputs(inputs, base, spec) for base, inputs in frames]
    inits = {row.init: lanczos(image, spec.factor) for row, image in zip(rows, images)}
    out: dict[FrameInputs, np.ndarray] = {}
    render_frames(backend, rows, settings, lambda batch, done: out.update(zip(batch, done)), init_images=inits, overlap=False, conditioning=conditioning)
    return np.stack([out[row] for row in rows])


# --- method: model ---------------------------------------------------------------------------------


def load_model(timeline: "Timeline", device: str = "cpu"):
    """The `method: model` network, read by spandrel and checked against `factor` (errors name the YAML line)."""
    spec = timeline.output.upscale
    where = timeline.at(*MODEL_FIELD)
    try:
        import spandrel
    except ImportError as e:
        raise UserError(
            f"{where}: method model reads weights through spandrel, which is not installed here ({e}); "
            "pip install 'latentwalk[upscale]' (it needs a torchvision built for your torch)"
        ) from None
    try:
        descriptor = spandrel.ModelLoader(device).load_from_file(str(spec.model))
    except Exception as e:  # unknown architecture, a damaged or foreign file: spandrel raises several types
        raise UserError(f"{where}: cannot read {str(spec.model)!r} as a super-resolution model: {e}") from None
    return checked_model(timeline, descriptor)


def checked_model(timeline: "Timeline", descriptor):
    """A loaded model that enlarges RGB by `factor`, in eval mode; UserError naming the field otherwise."""
    spec = timeline.output.upscale
    scale = getattr(descriptor, "scale", None)
    channels = (getattr(descriptor, "input_channels", 3), getattr(descriptor, "output_channels", 3))
    if getattr(descriptor, "purpose", "SR") not in ("SR", "Restoration") or channels != (3, 3):
        raise UserError(f"{timeline.at(*MODEL_FIELD)}: {spec.model.name} is not an RGB super-resolution model ({getattr(descriptor, 'purpose', '?')}, channels {channels})")
    if scale != spec.factor:
        raise UserError(f"{timeline.at('output', 'upscale', 'factor')}: {spec.model.name} enlarges {scale}x, but factor is {spec.factor}; set factor: {scale}")
    descriptor.eval()
    return descriptor


def run_model(model, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(H, W, 3) uint8 through a super-resolution model (float32, one frame: no batch to depend on) → uint8."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
    with torch.no_grad():
        y = model(x)  # (1, 3, H·f, W·f)
    return (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# --- the stage -------------------------------------------------------------------------------------


def make_missing(
    plan: UpscalePlan, store: "FrameStore", done: Callable[[Sequence[str], np.ndarray], None], *,
    backend=None, settings=None, model=None, device: str = "cpu", batch_size: int = 1, advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Make the plan's missing upscaled frames from their stored base frames; `done(keys, images)` per chunk.

    refine: `backend` and `settings` (the engine's, at the enlarged size); model: `model`.
    """
    conditioning = None
    if plan.spec.method == "refine" and plan.missing:
        from latentwalk.engine import Conditioning

        conditioning = Conditioning(backend, [plan.sources[k][1] for k in plan.missing])
    step = batch_size * CHUNK
    for start in range(0, len(plan.missing), step):
        keys = plan.missing[start : start + step]
        images = [store.load(plan.sources[k][0], plan.base_shape) for k in keys]
        if plan.spec.method == "refine":
            made = refine(backend, settings, plan.spec, [plan.sources[k] for k in keys], images, conditioning)
        else:
            made = np.stack([run_model(model, image, device) for image in images])
        done(keys, made)
        advance(len(keys))


def write_upscaled(
    plan: UpscalePlan, out: Path, fps: float, clip, tags: dict[str, str] | None, store: "FrameStore", frames_dir: Path | None,
    progress, preview: Path | None = None, first_frame: int = 0, **make,
) -> None:
    """Encode the upscaled video in order as its frames are made (stored ones read), with its audio and tags."""
    from latentwalk.assemble import InOrderWriter
    from latentwalk.encode import VideoWriter

    height, width = plan.shape[:2]
    progress.stage("upscale", total=len(plan.missing))
    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out, width, height, fps, clip, tags=tags) as writer:
        shown = None
        if preview is not None:
            from latentwalk.preview import Preview, PreviewWriter

            shown = Preview(preview, len(plan.keys), first_frame=first_frame)
            writer = PreviewWriter(writer, shown)
        in_order = InOrderWriter(writer, plan.keys, store, plan.shape, set(plan.missing), frames_dir)
        make_missing(plan, store, in_order.add, advance=progress.advance, **make)
        in_order.flush()
        if shown is not None:
            shown.finish()
        progress.stage("encode")
