"""The Python API that the CLI mirrors: load, analyse, plan and render a timeline.

These functions are the edge where files, audio decoding, models, ffmpeg and progress bars
meet the pure stages; each reads as numbered steps.
"""

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from typing import TYPE_CHECKING, Sequence

from latentwalk import audio as audio_stage
from latentwalk.errors import UserError
from latentwalk.schedule import FrameRecord, Plan, plan_frames, video_frames
from latentwalk.store import FrameStore, RenderIdentity, StoreUsage, frame_inputs, frame_key, model_fingerprint
from latentwalk.timeline import RenderSettings, Timeline, load_timeline

if TYPE_CHECKING:  # render.py imports torch, which `import latentwalk` should not
    from latentwalk.render import ModelOptions

DEFAULT_OUT_DIR = Path("renders")


def as_timeline(timeline: Timeline | str | Path) -> Timeline:
    return timeline if isinstance(timeline, Timeline) else load_timeline(timeline)


def analyze_audio(
    path: str | Path,
    start: float = 0.0,
    end: float | None = None,
    bpm: float | None = None,
    tracker: str = "auto",
    beats_per_bar: int = 4,
) -> audio_stage.AudioAnalysis:
    """Tempo, beats and downbeats (seconds from `start`) and features of an audio file; cached by content."""
    if not Path(path).is_file():
        raise UserError(f"audio file not found: {str(path)!r}")
    settings = audio_stage.AnalysisSettings(start, end, bpm, tracker, beats_per_bar)
    return audio_stage.cached_analysis(path, settings)


def timeline_audio(timeline: Timeline) -> audio_stage.AudioAnalysis | None:
    """The analysis of the timeline's audio clip, or None for a silent timeline."""
    spec = timeline.audio
    if spec is None or spec.path is None:
        return None
    try:
        return analyze_audio(spec.path, spec.start, spec.end, spec.bpm, spec.tracker, spec.beats_per_bar)
    except audio_stage.AudioReadError as e:  # blame the timeline's line for the field
        raise UserError(f"{timeline.source}:{spec.lines.get(e.field, 0)}: {e}") from None


def with_tracked_downbeat(timeline: Timeline, analysis: audio_stage.AudioAnalysis | None) -> Timeline:
    """The timeline with bar 0 on the tracked downbeat, unless `audio.downbeat` sets it."""
    if analysis is None or timeline.audio is None or timeline.audio.downbeat is not None:
        return timeline
    return replace(timeline, audio=replace(timeline.audio, downbeat=analysis.downbeat_index or 0))


def plan(timeline: Timeline | str | Path, analysis: audio_stage.AudioAnalysis | None = None) -> Plan:
    """Validate a timeline against its audio and return the per-frame schedule."""
    # 1. Parse and validate the timeline itself.
    timeline = as_timeline(timeline)
    # 2. Beat grid: tracked from the audio, or laid at `bpm` for a silent timeline.
    analysis = analysis if analysis is not None else timeline_audio(timeline)
    timeline = with_tracked_downbeat(timeline, analysis)
    fps = timeline.settings.fps
    if analysis is not None:
        beats, bpm, duration = analysis.beats, analysis.bpm, analysis.duration
    elif timeline.audio is not None:  # silent grid: long enough for any `end`
        beats, bpm, duration = audio_stage.beat_grid(timeline.audio.bpm, 24 * 3600), timeline.audio.bpm, None
    else:
        beats, bpm, duration = np.zeros(0), None, None
    # 3. Percussive energy per video frame, for segments paced by the audio.
    energy = None
    if analysis is not None:
        n_frames = video_frames(timeline, beats, duration, bpm)
        energy = audio_stage.envelope_at_fps(analysis.onset_envelope, fps, n_frames)
    # 4. The schedule.
    return plan_frames(timeline, beats, bpm, duration, energy)


@dataclass(frozen=True)
class RenderResult:
    video: Path
    manifest: Path
    plan: Plan
    timings: dict[str, float]
    frames_reused: int = 0  # video frames taken from the frame store, made by an earlier run
    frames_rendered: int = 0  # distinct frames denoised by this run
    store: Path | None = None


def default_output(timeline: Timeline) -> Path:
    return DEFAULT_OUT_DIR / f"{Path(timeline.source).stem}.mp4"


def default_store(out: Path) -> Path:
    """The frame store beside a video: renders/<name>.frames/."""
    return out.with_suffix(".frames")


@dataclass(frozen=True)
class FramePlan:
    """Every video frame's store key, and which distinct frames must be rendered."""

    identity: RenderIdentity
    keys: tuple[str, ...]  # (n_frames,) in video order; held frames share a key
    missing: tuple[FrameRecord, ...]  # first frame of each key not in the store, in video order
    shape: tuple[int, int, int]  # (H, W, 3)


def model_options(settings: RenderSettings) -> "ModelOptions":
    from latentwalk.render import ModelOptions

    return ModelOptions(
        channels_last=settings.channels_last,
        compile=settings.compile,
        attention_slicing=settings.attention_slicing,
        vae_tiling=settings.vae_tiling,
        cpu_offload=settings.cpu_offload,
    )


def frame_plan(
    timeline: Timeline,
    schedule: Plan,
    store: FrameStore,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    fresh: bool = False,
) -> FramePlan:
    """Key every frame by what determines its pixels and look the keys up; loads no model."""
    import diffusers
    import torch

    from latentwalk.prompts import parse_prompt
    from latentwalk.render import pick_device, pick_dtype, resolve_model

    settings = timeline.settings
    torch_device = pick_device(device or settings.device)
    source = resolve_model(settings.model)
    identity = RenderIdentity(
        model=source,
        model_fingerprint=model_fingerprint(source),
        width=settings.width,
        height=settings.height,
        steps=settings.steps,
        scheduler=settings.scheduler,
        interpolation=settings.interpolation,
        dtype=str(pick_dtype(settings.dtype, torch_device)),
        device_type=torch_device.type,
        cpu_threads=torch.get_num_threads() if torch_device.type == "cpu" else 0,
        batch_size=batch_size or settings.batch_size,
        options=model_options(settings).numerics(),
        versions=(("diffusers", diffusers.__version__), ("torch", torch.__version__)),
    )
    prompts = [str(parse_prompt(k.prompt)) for k in timeline.keyframes]
    negatives = [str(parse_prompt(n)) for n in keyframe_negatives(timeline)]
    keys = tuple(frame_key(identity, frame_inputs(r, prompts, negatives)) for r in schedule.frames)
    shape = (settings.height, settings.width, 3)
    first: dict[str, FrameRecord] = {}
    for key, record in zip(keys, schedule.frames):
        first.setdefault(key, record)
    missing = tuple(r for key, r in first.items() if fresh or not store.has(key, shape))
    return FramePlan(identity, keys, missing, shape)


def keyframe_negatives(timeline: Timeline) -> list[str]:
    default = timeline.settings.negative_prompt
    return [k.negative_prompt if k.negative_prompt is not None else default for k in timeline.keyframes]


class _InOrderWriter:
    """Feeds frames to ffmpeg (and --frames PNGs) in video order as their keys become stored."""

    def __init__(self, writer, frames: FramePlan, store: FrameStore, frames_dir: Path | None, waiting: set[str]):
        self.writer, self.frames, self.store, self.frames_dir = writer, frames, store, frames_dir
        self.waiting = waiting  # keys being rendered by this run, not yet stored
        self.next = 0  # next video frame to write

    def add(self, keys: Sequence[str], images: np.ndarray) -> None:
        """Store a decoded batch, then write every frame that is now ready."""
        fresh = dict(zip(keys, images))
        for key, image in fresh.items():
            self.store.save(key, image)
            self.waiting.discard(key)
        self.flush(fresh)

    def flush(self, fresh: dict[str, np.ndarray] | None = None) -> None:
        import imageio.v3 as iio

        keys = self.frames.keys
        while self.next < len(keys) and keys[self.next] not in self.waiting:
            key = keys[self.next]
            image = fresh[key] if fresh and key in fresh else self.store.load(key, self.frames.shape)
            self.writer.write(image)
            if self.frames_dir is not None:
                iio.imwrite(self.frames_dir / f"frame_{self.next:06d}.png", image)
            self.next += 1


def render(
    timeline: Timeline | str | Path,
    out: str | Path | None = None,
    *,
    frames_dir: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
    store_dir: str | Path | None = None,
    fresh: bool = False,
    overlap: bool = True,
    prune: bool = False,
) -> RenderResult:
    """Render a timeline to an mp4 with its audio, and a manifest JSON beside it.

    Frames already in the frame store (default: beside the video, `<name>.frames/`) are
    reused; only missing ones are denoised. `fresh` re-renders and overwrites every frame;
    `prune` then drops stored frames this render does not use.
    """
    from tqdm import tqdm

    from latentwalk.encode import AudioClip, VideoWriter
    from latentwalk.render import decode, decode_denoised, denoised_batches, encode_keyframes, load_model, run_overlapped

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # 1. Check inputs: the timeline, the audio and the whole schedule, before any model loads.
    timeline = as_timeline(timeline)
    settings = timeline.settings
    out = Path(out) if out is not None else default_output(timeline)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"--out: the video must be an .mp4 file, got {str(out)!r}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}")
    schedule = plan(timeline)
    timings["plan_s"] = time.perf_counter() - clock

    # 2. Key every frame and look it up in the frame store.
    t0 = time.perf_counter()
    store = FrameStore(store_dir if store_dir is not None else default_store(out))
    frames = frame_plan(timeline, schedule, store, device=device, batch_size=batch_size, fresh=fresh)
    key_of = dict(zip((r.frame for r in schedule.frames), frames.keys))
    missing_keys = {key_of[r.frame] for r in frames.missing}
    timings["store_lookup_s"] = time.perf_counter() - t0

    # 3. Load the model and encode every keyframe prompt once, unless every frame is stored.
    model = conditioning = None
    options = model_options(settings)
    if frames.missing:
        t0 = time.perf_counter()
        model = load_model(settings.model, device or settings.device, settings.dtype, options)
        timings["load_model_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conditioning = encode_keyframes(model, [k.prompt for k in timeline.keyframes], keyframe_negatives(timeline))
        timings["encode_prompts_s"] = time.perf_counter() - t0

    # 4. Denoise the missing frames; a worker thread decodes batch k-1 meanwhile, stores its
    # frames and streams every ready frame, stored or new, into ffmpeg in video order.
    t0 = time.perf_counter()
    clip = None
    if timeline.audio is not None and timeline.audio.path is not None:
        clip = AudioClip(timeline.audio.path, timeline.audio.start, schedule.duration)
    if frames_dir is not None:
        frames_dir = Path(frames_dir)
        frames_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(frames.missing), unit="frame", desc="render", disable=not progress, file=sys.stderr)
    # Offload hooks move whole components between devices per call: a concurrent decode would race them.
    overlap = overlap and not options.cpu_offload
    with VideoWriter(out, settings.width, settings.height, settings.fps, clip) as writer:
        in_order = _InOrderWriter(writer, frames, store, frames_dir, set(missing_keys))

        def finish(item) -> None:
            images = decode_denoised(model, item) if overlap else decode(model, item.latents)
            in_order.add([key_of[r.frame] for r in item.records], images)
            bar.update(len(item.records))

        if frames.missing:
            batches = denoised_batches(
                model,
                frames.missing,
                conditioning,
                width=settings.width,
                height=settings.height,
                steps=settings.steps,
                scheduler=settings.scheduler,
                interpolation=settings.interpolation,
                batch_size=frames.identity.batch_size,
            )
            if overlap:
                run_overlapped(batches, finish)
            else:
                for item in batches:
                    finish(item)
        in_order.flush()
    bar.close()
    timings["render_s"] = time.perf_counter() - t0

    # 5. Optionally drop stored frames this render no longer uses.
    pruned = store.prune(frames.keys) if prune else None
    usage = store.usage()
    timings["total_s"] = time.perf_counter() - clock

    # 6. Leave a manifest of exactly what produced the video.
    reused = sum(k not in missing_keys for k in frames.keys)
    store_info = {
        "path": str(store.root),
        "frames_reused": reused,
        "frames_rendered": len(frames.missing),
        "fresh": fresh,
        "frames_stored": usage.frames,
        "bytes": usage.bytes,
        "pruned_frames": pruned.frames if pruned else 0,
        "identity": to_jsonable(asdict(frames.identity)),
    }
    if model is not None:
        source, device_name, dtype_name = model.source, str(model.device), str(model.dtype)
    else:
        source, device_name, dtype_name = frames.identity.model, frames.identity.device_type, frames.identity.dtype
    data = manifest_data(timeline, schedule, source, device_name, dtype_name, timings)
    data["store"] = store_info
    data["model"]["options"] = to_jsonable(asdict(options))
    manifest = out.with_suffix(".json")
    manifest.write_text(json.dumps(data, indent=1))
    return RenderResult(out, manifest, schedule, timings, reused, len(frames.missing), store.root)


def plan_data(schedule: Plan, timeline: Timeline) -> dict:
    """The plan as JSON-ready data: fps, the per-frame records and the resolved keyframes."""
    return {
        "fps": schedule.fps,
        "n_frames": schedule.n_frames,
        "duration": schedule.duration,
        "bpm": schedule.bpm,
        "keyframes": [
            {
                "index": k.index,
                "frame": k.frame,
                "time": k.time,
                "unit": k.keyframe.position.unit,
                "position": k.keyframe.position.value,
                "prompt": k.keyframe.prompt,
                "seed": k.keyframe.seed,
            }
            for k in schedule.keyframes
        ],
        "frames": [{k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(r).items()} for r in schedule.frames],
    }


def library_versions() -> dict[str, str]:
    """Versions that can change a render's numbers, for manifests."""
    import diffusers
    import torch
    import transformers

    from latentwalk import __version__

    return {
        "latentwalk": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }


def manifest_data(timeline: Timeline, schedule: Plan, model_source: str, device: str, dtype: str, timings: dict) -> dict:
    return {
        "timeline": {"source": timeline.source, "yaml": timeline.raw, "resolved": to_jsonable(asdict(timeline.settings))},
        "audio": to_jsonable(asdict(timeline.audio)) if timeline.audio else None,
        "model": {"spec": timeline.settings.model, "source": model_source, "device": device, "dtype": dtype},
        "plan": plan_data(schedule, timeline),
        "versions": library_versions(),
        "timings": timings,
        "command": sys.argv,
    }


def to_jsonable(value):
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def prune_store(
    timeline: Timeline | str | Path,
    out: str | Path | None = None,
    *,
    store_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> tuple[FrameStore, StoreUsage]:
    """Delete the stored frames a render of `timeline` would not use; returns what was removed."""
    timeline = as_timeline(timeline)
    out = Path(out) if out is not None else default_output(timeline)
    store = FrameStore(store_dir if store_dir is not None else default_store(out))
    frames = frame_plan(timeline, plan(timeline), store, device=device, batch_size=batch_size)
    return store, store.prune(frames.keys)
