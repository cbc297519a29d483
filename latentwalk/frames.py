"""Per-frame inputs and the render identity, defined once: what a frame's pixels depend on.

Timelines (one per video frame, from the schedule) and sweeps (one per cell) both become
`FrameInputs`; the engine renders them and the frame store keys them. Hashing exactly these
(sha256 of canonical JSON) lets any run reuse any frame an earlier run made.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from typing import Sequence

from latentwalk.params import CAMERA_TRACKS, IMAGE_STRENGTH
from latentwalk.prompts import parse_prompt

# Bump when the engine changes which pixels a key stands for: every old frame is then a miss.
KEY_VERSION = 2


@dataclass(frozen=True)
class RenderIdentity:
    """What every frame of a render shares and its pixels depend on."""

    model: str  # the resolved source: a folder path, a checkpoint file or a hub id
    model_fingerprint: str  # of the folder's or file's contents (and model_config, vae); "" for a hub id
    family: str  # the backend: "sd", "sdxl"
    width: int
    height: int
    scheduler: str
    timestep_spacing: str
    interpolation: str
    dtype: str  # resolved, e.g. "torch.float16"
    device_type: str  # "cpu", "cuda", "mps"
    # CPU kernels split reductions by thread: 1 vs 2 threads moved 8 of 40 tiny-model frames by
    # one level. 0 on GPUs, where the device does the arithmetic.
    cpu_threads: int
    # Batches are always padded to this many rows: kernels pick algorithms by shape, so the
    # batch size (but not which frames share a batch) can change the last bit of a frame.
    batch_size: int
    options: tuple[tuple[str, bool], ...]  # model options that change numerics (channels_last, ...)
    adapters: tuple[tuple[str, str], ...]  # (name, file fingerprint) of LoRAs and embeddings
    versions: tuple[tuple[str, str], ...]  # torch and diffusers: kernels change between releases


@dataclass(frozen=True)
class ImageSide:
    """An image keyframe as one side of a frame's travel: its picture, inverted under its own frame's inputs.

    The inverted noise and the reconstruction it is corrected by depend on exactly these (and
    the frame's steps), so they are part of every key that uses them (see inversion.py).
    """

    picture: str  # content hash of the picture fitted to the frame size (images.picture_key)
    seed: int  # the keyframe's seed: its noise where image_strength moves away from the picture
    prompt: str  # canonical text of the keyframe's prompt ("" for a picture without one)
    negative: str
    guidance: float  # at the keyframe's own frame
    params: tuple[tuple[str, float], ...] = ()  # the engine params at the keyframe's frame (LoRA weights, ...)


@dataclass(frozen=True)
class FrameInputs:
    """One frame's own inputs: noise between two seeds, conditioning between two prompts, and the rest.

    Prompts are canonical expression text (`str(parse_prompt(...))`), so equal prompts written
    differently share frames.
    """

    seed_a: int
    seed_b: int
    noise_t: float  # noise slerp weight toward seed_b
    prompt_a: str
    prompt_b: str
    negative_a: str
    negative_b: str
    t: float  # conditioning interpolation weight toward prompt_b / negative_b
    guidance: float
    steps: int
    strength: float | None = None  # img2img: how much of `init` is re-imagined; None: text-to-image
    init: str | None = None  # content hash of the init image (see engine.InitImages)
    # Further per-frame quantities by name, sorted: LoRA weights ("lora:<name>"), noise_shift, ...
    params: tuple[tuple[str, float], ...] = ()
    # Shared trajectory (t0, t1, k): the first k denoising steps are not run; the frame starts from
    # the slerp of the step-k latents of the two frames of its path at weights t0 < t < t1 (the
    # probes around it), at weight (t - t0) / (t1 - t0). None: denoised from its own noise.
    share: tuple[float, float, int] | None = None
    # Image keyframes: the picture the a-side (b-side) travels from (toward), None for a prompt's
    # seed noise; how far each picture is re-imagined is the "image_strength" param.
    image_a: ImageSide | None = None
    image_b: ImageSide | None = None
    # ControlNets acting on this frame (control.py), in the order listed; one at weight 0 is left
    # out, so a frame without any is keyed as before ControlNets existed.
    controls: tuple["ControlInput", ...] = ()

    def param(self, name: str, default: float = 0.0) -> float:
        return dict(self.params).get(name, default)

    def along_path(self, s: float) -> "FrameInputs":
        """The frame of this frame's path at prompt and noise weight s, denoised from scratch.

        Its ends are the keyframes' own frames: s = 0 the a-side alone, s = 1 the b-side alone.
        """
        if s == 1.0:
            return replace(
                self, seed_a=self.seed_b, prompt_a=self.prompt_b, negative_a=self.negative_b, image_a=self.image_b, t=0.0, noise_t=0.0,
                share=None,
            )
        return canonical(replace(self, t=float(s), noise_t=float(s), share=None))

    def share_sources(self) -> tuple["FrameInputs", "FrameInputs", float]:
        """A shared frame's two source frames and its slerp weight between their latents."""
        t0, t1, _ = self.share
        return self.along_path(t0), self.along_path(t1), (self.t - t0) / (t1 - t0)


@dataclass(frozen=True)
class ControlInput:
    """One ControlNet on one frame: which weights, which control image, how strongly and over which steps."""

    name: str  # the ControlNet's name in the timeline
    model: str  # fingerprint of its folder (modelspec.file_fingerprint)
    image: str  # the control image's reference: file hash, frame, preprocessing (control.image_ref)
    weight: float  # scale of its residuals
    start: float  # fraction of the noise schedule where it starts acting
    end: float  # and where it stops


def canonical(frame: FrameInputs) -> FrameInputs:
    """At t = noise_t = 0 a frame is its a-side alone: the b-side (prompt, negative, seed) is
    left out, so a keyframe's frame is one frame whichever keyframe follows it.

    Exact, not approximate: conditioning at t = 0 is prompt A's tensor itself (engine.
    interpolate_cond), the noise slerp at weight 0 is seed A's noise bit for bit (weights
    sin θ / sin θ = 1 and 0), and a blend at 0 adds 0·ε_B.
    """
    if frame.t == 0.0 and frame.noise_t == 0.0:
        return replace(frame, seed_b=frame.seed_a, prompt_b=frame.prompt_a, negative_b=frame.negative_a, image_b=frame.image_a)
    return frame


def frame_key(identity: RenderIdentity, inputs: FrameInputs) -> str:
    """sha256 hex digest of canonical JSON of the key version, the identity and the inputs."""
    # json writes floats with repr, which round-trips exactly, so distinct floats hash apart.
    frame = asdict(inputs)
    if frame["share"] is None:  # frames denoised from scratch keep the keys they had before sharing
        del frame["share"]
    for side in ("image_a", "image_b"):  # frames without pictures keep the keys they had before image keyframes
        if frame[side] is None:
            del frame[side]
    if not frame["controls"]:  # frames without ControlNets keep the keys they had before them
        del frame["controls"]
    payload = {"version": KEY_VERSION, "render": asdict(identity), "frame": frame}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def timeline_frames(
    records, keyframes, default_negative: str, steps: int, noise_shift_seed: int | None = None, share_steps: int = 0,
    pictures: Sequence[str | None] = (), keyframe_frames: Sequence[int] = (),
) -> tuple[FrameInputs, ...]:
    """The inputs of every video frame of a schedule (schedule.FrameRecord, timeline.Keyframe).

    A record placed between two probes (`share`) shares their first `share_steps` steps.
    `pictures`: each keyframe's picture key (images.picture_key; None for a prompt keyframe), and
    `keyframe_frames` the frame each keyframe lands on, whose inputs its picture is inverted under.
    """
    prompts = [str(parse_prompt(k.prompt)) for k in keyframes]
    negatives = [str(parse_prompt(k.negative_prompt if k.negative_prompt is not None else default_negative)) for k in keyframes]
    sides = image_sides(records, keyframes, prompts, negatives, pictures, keyframe_frames, noise_shift_seed)

    def params(r) -> tuple[tuple[str, float], ...]:
        own = shift_seed_param(engine_params(r.params), noise_shift_seed)
        if sides[r.segment] is None and sides[r.target] is None:  # no picture on the path: the strength has no effect
            own = tuple(p for p in own if p[0] != IMAGE_STRENGTH)
        return own

    return tuple(
        canonical(FrameInputs(
            seed_a=r.seed_a,
            seed_b=r.seed_b,
            noise_t=r.noise_t,
            prompt_a=prompts[r.segment],
            prompt_b=prompts[r.target],
            negative_a=negatives[r.segment],
            negative_b=negatives[r.target],
            t=r.t,
            guidance=r.guidance,
            steps=steps,
            params=params(r),
            share=(*r.share, share_steps) if r.share is not None and share_steps > 0 else None,
            image_a=sides[r.segment],
            image_b=sides[r.target],
        ))
        for r in records
    )


def image_sides(
    records, keyframes, prompts: Sequence[str], negatives: Sequence[str], pictures: Sequence[str | None],
    keyframe_frames: Sequence[int], noise_shift_seed: int | None,
) -> list[ImageSide | None]:
    """Each keyframe's ImageSide (None without a picture): its picture under its own frame's inputs."""
    if not any(pictures):
        return [None] * len(keyframes)
    by_frame = {r.frame: r for r in records}
    sides: list[ImageSide | None] = []
    for k, (keyframe, picture) in enumerate(zip(keyframes, pictures)):
        if picture is None:
            sides.append(None)
            continue
        # The keyframe's own record (a plan cut to a range may lack it: then its segment's first).
        record = by_frame.get(keyframe_frames[k]) if k < len(keyframe_frames) else None
        record = record or next(r for r in records if r.segment == k)
        own = tuple(p for p in shift_seed_param(engine_params(record.params), noise_shift_seed) if p[0] != IMAGE_STRENGTH)
        sides.append(ImageSide(picture, keyframe.seed, prompts[k], negatives[k], record.guidance, own))
    return sides


def engine_params(params: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
    """The params the denoiser reads: camera tracks and strength belong to a feedback step's key instead."""
    return tuple(p for p in params if p[0] not in CAMERA_TRACKS)


def shift_seed_param(params: tuple[tuple[str, float], ...], seed: int | None) -> tuple[tuple[str, float], ...]:
    """A frame's params with the timeline's noise_shift_seed added where its noise is shifted."""
    if seed is None or not dict(params).get("noise_shift"):
        return params
    return tuple(sorted(params + (("noise_shift_seed", float(seed)),)))
