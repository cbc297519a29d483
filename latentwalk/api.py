"""The Python API that the CLI mirrors: load, analyse, plan and render a timeline.

These functions are the edge where files, audio decoding, models, ffmpeg and progress bars
meet the pure stages; each reads as numbered steps.
"""

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latentwalk import audio as audio_stage
from latentwalk.errors import UserError
from latentwalk.schedule import Plan, plan_frames, video_frames
from latentwalk.timeline import Timeline, load_timeline

DEFAULT_OUT_DIR = Path("renders")


def as_timeline(timeline: Timeline | str | Path) -> Timeline:
    return timeline if isinstance(timeline, Timeline) else load_timeline(timeline)


def analyze_audio(path: str | Path, start: float = 0.0, end: float | None = None, bpm: float | None = None) -> audio_stage.AudioAnalysis:
    """Tempo, beat times (seconds from `start`) and percussive envelope of an audio file."""
    if not Path(path).is_file():
        raise UserError(f"audio file not found: {str(path)!r}")
    return audio_stage.analyze(audio_stage.load_audio(path, start, end), bpm=bpm)


def timeline_audio(timeline: Timeline) -> audio_stage.AudioAnalysis | None:
    """The analysis of the timeline's audio clip, or None for a silent timeline."""
    spec = timeline.audio
    if spec is None or spec.path is None:
        return None
    return analyze_audio(spec.path, spec.start, spec.end, spec.bpm)


def plan(timeline: Timeline | str | Path, analysis: audio_stage.AudioAnalysis | None = None) -> Plan:
    """Validate a timeline against its audio and return the per-frame schedule."""
    # 1. Parse and validate the timeline itself.
    timeline = as_timeline(timeline)
    # 2. Beat grid: tracked from the audio, or laid at `bpm` for a silent timeline.
    analysis = analysis if analysis is not None else timeline_audio(timeline)
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
        n_frames = video_frames(timeline, beats, duration)
        energy = audio_stage.envelope_at_fps(analysis.onset_envelope, fps, n_frames)
    # 4. The schedule.
    return plan_frames(timeline, beats, bpm, duration, energy)


@dataclass(frozen=True)
class RenderResult:
    video: Path
    manifest: Path
    plan: Plan
    timings: dict[str, float]


def default_output(timeline: Timeline) -> Path:
    return DEFAULT_OUT_DIR / f"{Path(timeline.source).stem}.mp4"


def render(
    timeline: Timeline | str | Path,
    out: str | Path | None = None,
    *,
    frames_dir: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> RenderResult:
    """Render a timeline to an mp4 with its audio, and a manifest JSON beside it."""
    import imageio.v3 as iio
    from tqdm import tqdm

    from latentwalk.encode import AudioClip, VideoWriter
    from latentwalk.render import encode_keyframes, load_model, render_batches

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # 1. Check inputs: the timeline, the audio and the whole schedule, before any model loads.
    timeline = as_timeline(timeline)
    settings = timeline.settings
    out = Path(out) if out is not None else default_output(timeline)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"--out: the video must be an .mp4 file, got {str(out)!r}")
    schedule = plan(timeline)
    timings["plan_s"] = time.perf_counter() - clock

    # 2. Load the model.
    t0 = time.perf_counter()
    model = load_model(settings.model, device or settings.device, settings.dtype)
    timings["load_model_s"] = time.perf_counter() - t0

    # 3. Encode every keyframe prompt and negative prompt once.
    t0 = time.perf_counter()
    keyframes = timeline.keyframes
    negatives = [k.negative_prompt if k.negative_prompt is not None else settings.negative_prompt for k in keyframes]
    conditioning = encode_keyframes(model, [k.prompt for k in keyframes], negatives)
    timings["encode_prompts_s"] = time.perf_counter() - t0

    # 4. Denoise and decode in batches, streaming frames into ffmpeg.
    t0 = time.perf_counter()
    clip = None
    if timeline.audio is not None and timeline.audio.path is not None:
        clip = AudioClip(timeline.audio.path, timeline.audio.start, schedule.duration)
    if frames_dir is not None:
        Path(frames_dir).mkdir(parents=True, exist_ok=True)
    batches = render_batches(
        model,
        schedule.frames,
        conditioning,
        width=settings.width,
        height=settings.height,
        steps=settings.steps,
        scheduler=settings.scheduler,
        interpolation=settings.interpolation,
        batch_size=batch_size or settings.batch_size,
    )
    bar = tqdm(total=schedule.n_frames, unit="frame", desc="render", disable=not progress, file=sys.stderr)
    with VideoWriter(out, settings.width, settings.height, settings.fps, clip) as writer:
        for records, frames in batches:
            for record, frame in zip(records, frames):
                writer.write(frame)
                if frames_dir is not None:
                    iio.imwrite(Path(frames_dir) / f"frame_{record.frame:06d}.png", frame)
            bar.update(len(records))
    bar.close()
    timings["render_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - clock

    # 5. Leave a manifest of exactly what produced the video.
    manifest = out.with_suffix(".json")
    manifest.write_text(json.dumps(manifest_data(timeline, schedule, model.source, str(model.device), str(model.dtype), timings), indent=1))
    return RenderResult(out, manifest, schedule, timings)


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


def manifest_data(timeline: Timeline, schedule: Plan, model_source: str, device: str, dtype: str, timings: dict) -> dict:
    import diffusers
    import torch
    import transformers

    from latentwalk import __version__

    return {
        "timeline": {"source": timeline.source, "yaml": timeline.raw, "resolved": to_jsonable(asdict(timeline.settings))},
        "audio": to_jsonable(asdict(timeline.audio)) if timeline.audio else None,
        "model": {"spec": timeline.settings.model, "source": model_source, "device": device, "dtype": dtype},
        "plan": plan_data(schedule, timeline),
        "versions": {
            "latentwalk": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
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
