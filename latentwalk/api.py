"""The Python API that the CLI mirrors: load, analyse, plan and render a timeline.

These functions are the edge where files, audio decoding, models, ffmpeg and the progress display
meet the pure stages; each reads as numbered steps.
"""

import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from typing import TYPE_CHECKING, Sequence

from latentwalk import audio as audio_stage
from latentwalk import budget, manifest, outputs
from latentwalk.manifest import to_jsonable
from latentwalk.errors import UserError
from latentwalk.executors import EXECUTORS, Job
from latentwalk.schedule import FrameRecord, Plan, check_clip, plan_frames, video_frames
from latentwalk.frames import FrameInputs, RenderIdentity, frame_key, timeline_frames
from latentwalk.modelspec import ModelSpec, adapter_identity, file_fingerprint
from latentwalk.overrides import outside_range
from latentwalk.placement import place
from latentwalk.stages import engine_settings, model_options, model_spec
from latentwalk.store import FrameStore, StoreUsage, open_store
from latentwalk.timeline import RenderSettings, Timeline, load_timeline

if TYPE_CHECKING:  # these import torch, which `import latentwalk` should not
    from latentwalk.feedback import FeedbackFrame, FeedbackWork
    from latentwalk.interpolate import Fills, Outline
    from latentwalk.overrides import Overrides

DEFAULT_OUT_DIR = Path("renders")


def as_timeline(timeline: Timeline | str | Path) -> Timeline:
    return timeline if isinstance(timeline, Timeline) else load_timeline(timeline)


def analyze_audio(
    path: str | Path,
    start: float = 0.0,
    end: float | None = None,
    bpm: float | None = None,
    tracker: str = "auto",
    beats_per_bar: int = 0,
) -> audio_stage.AudioAnalysis:
    """Tempo, beats and downbeats (seconds from `start`) and features of an audio file; cached by content.
    `beats_per_bar` 0: the meter is inferred (audio.infer_meter)."""
    if not Path(path).is_file():
        raise UserError(f"audio file not found: {str(path)!r}")
    settings = audio_stage.AnalysisSettings(start, end, bpm, tracker, beats_per_bar)
    return audio_stage.cached_analysis(path, settings)


def midi_analysis(
    path: str | Path, midi: str | Path, offset: float | None = None, start: float = 0.0, end: float | None = None
) -> audio_stage.AudioAnalysis:
    """The audio's features with the MIDI file's beats and bars; `offset` (seconds into the audio of
    the file's time 0) is estimated from the audio's onsets when None (midi.estimate_offset)."""
    from latentwalk.midi import estimate_offset, onset_times, read_midi
    from latentwalk.timeline import AudioSpec
    from latentwalk.usergrid import given_beats

    midi = Path(midi)
    if not midi.is_file():
        raise UserError(f"--midi: MIDI file not found: {str(midi)!r}")
    song = read_midi(midi, "--midi")
    analysis = analyze_audio(path, start, end, None, "none")
    note = []
    if offset is None:
        clip_offset, confidence = estimate_offset(onset_times(song), analysis.onset_envelope, audio_stage.ENVELOPE_RATE)
        offset = round(clip_offset + start, 3)
        note = [f"offset {offset:g}s estimated from the audio's onsets (peak {confidence:.2f}x the next best; set audio.offset: {offset:g})"]
    spec = AudioSpec(Path(path), start, end, None, 4, None, midi=midi, offset=offset)
    analysis = given_beats(spec, analysis)
    return replace(analysis, notes=analysis.notes + tuple(note))


def timeline_audio(timeline: Timeline) -> audio_stage.AudioAnalysis | None:
    """The analysis of the timeline's audio clip, or None for a silent timeline (a MIDI file's or
    tempo map's grid without audio is an analysis without features)."""
    from latentwalk import stems as stem_stage
    from latentwalk.usergrid import given_beats, silent_grid

    spec = timeline.audio
    if spec is None or (spec.path is None and spec.midi is None and spec.tempo_map is None):
        return None
    if spec.path is None:
        return silent_grid(spec)
    # 1. Check the clip and the stems against the mix, before any decoding.
    check_clip(timeline, audio_stage.file_duration(spec.path))  # blames audio.start/end with its line
    stem_stage.check_stems(spec.path, spec.stems, {name: timeline.at("audio", "stems", name) for name, _ in spec.stems})
    # 2. Features of the mix; beats tracked on it or on the chosen stem, unless the timeline gives them.
    given = spec.midi is not None or spec.tempo_map is not None or spec.beats is not None
    stems = dict(spec.stems)
    tracked_on = stems[spec.beats_from] if spec.beats_from and not given else None
    tracker = "none" if given or tracked_on is not None else spec.tracker
    try:
        bpb = 0 if spec.auto_meter else spec.beats_per_bar  # 0: inferred
        analysis = analyze_audio(spec.path, spec.start, spec.end, spec.bpm, tracker, bpb)
        if tracked_on is not None:
            on_stem = analyze_audio(tracked_on, spec.start, spec.end, spec.bpm, spec.tracker, bpb)
            analysis = replace(
                on_stem, duration=analysis.duration, features=analysis.features,
                notes=(f"beats tracked on the {spec.beats_from} stem ({tracked_on.name})",),
            )
        settings = audio_stage.AnalysisSettings(spec.start, spec.end, spec.bpm, tracker, bpb)
        frames = len(analysis.features["rms"])
        analysis = replace(analysis, features={**analysis.features, **stem_stage.stem_features(spec.stems, settings, frames)})
    except audio_stage.AudioReadError as e:  # blame the timeline's line for the field
        raise UserError(f"{timeline.source}:{spec.lines.get(e.field, 0)}: {e}") from None
    rms = analysis.features.get("rms")
    if not given and spec.bpm is None and len(analysis.beats) and rms is not None and (len(rms) == 0 or float(np.max(rms)) < SILENT_RMS):
        # A tracker lays a grid over silence too; those beats are heard nowhere: none were found.
        empty = np.zeros(0)
        analysis = replace(analysis, beats=empty, downbeats=empty, tempo=empty)
    if spec.auto_meter and analysis.meter:
        note = f"meter {analysis.meter} inferred over the whole song (confidence {analysis.meter_confidence:.2f}; audio.beats_per_bar sets it)"
        analysis = replace(analysis, notes=analysis.notes + (note,))
    # 3. The timeline's own beats (MIDI, tempo map, beat list) and corrections (offset, sections).
    return given_beats(spec, analysis)


SILENT_RMS = 1e-4  # -80 dBFS: a clip whose loudest moment is quieter than this is silence


def with_tracked_downbeat(timeline: Timeline, analysis: audio_stage.AudioAnalysis | None) -> Timeline:
    """The timeline with bar 0 on the tracked downbeat, unless `audio.downbeat` sets it; where the
    analysis knows every bar (a MIDI file, a tempo map), with those bars and their meter."""
    if analysis is None or timeline.audio is None:
        return timeline
    spec = timeline.audio
    if spec.auto_meter and analysis.meter:  # beats_per_bar: auto, inferred over the whole song
        spec = replace(spec, beats_per_bar=analysis.beats_per_bar)
    if spec.downbeat is not None:
        return replace(timeline, audio=spec)
    spec = replace(spec, downbeat=analysis.downbeat_index or 0)
    bars = analysis.bar_starts
    if len(bars) and spec.auto_meter:
        lengths = np.diff(bars)
        bpb = int(np.bincount(lengths).argmax()) if len(lengths) else spec.beats_per_bar
        spec = replace(spec, downbeat=int(bars[0]), beats_per_bar=bpb, bar_starts=tuple(int(b) for b in bars))
    return replace(timeline, audio=spec)


def plan(timeline: Timeline | str | Path, analysis: audio_stage.AudioAnalysis | None = None) -> Plan:
    """Validate a timeline against its audio and return the per-frame schedule."""
    # 1. Parse and validate the timeline itself.
    timeline = as_timeline(timeline)
    # 2. Beat grid: tracked from the audio, or laid at `bpm` for a silent timeline.
    analysis = analysis if analysis is not None else timeline_audio(timeline)
    timeline = with_tracked_downbeat(timeline, analysis)
    fps = timeline.settings.fps
    if analysis is not None:  # a silent MIDI file's or tempo map's grid has no audio duration
        beats, bpm, duration = analysis.beats, analysis.bpm, analysis.duration if timeline.audio.path is not None else None
    elif timeline.audio is not None:  # silent grid: long enough for any `end`
        beats, bpm, duration = audio_stage.beat_grid(timeline.audio.bpm, 24 * 3600), timeline.audio.bpm, None
    else:
        beats, bpm, duration = np.zeros(0), None, None
    # 3. Percussive energy per video frame, for segments paced by the audio; features for tracks.
    energy, features, notes = None, None, {}
    if analysis is not None and analysis.features:
        n_frames = video_frames(timeline, beats, duration, bpm)
        energy = audio_stage.pacing_energy(analysis.onset_envelope, beats, fps, n_frames)  # the change lands on the beat
        features = audio_features(analysis)
    if timeline.audio is not None and timeline.audio.midi is not None:  # the MIDI notes that tracks read
        from latentwalk.usergrid import timeline_note_variables

        notes = timeline_note_variables(timeline, video_frames(timeline, beats, duration, bpm))
    # 4. The schedule.
    schedule = plan_frames(timeline, beats, bpm, duration, energy, {**(features or {}), **notes} or None)
    # 5. The source video and control images reach the last frame.
    check_inputs(timeline, schedule.n_frames)
    return replace(schedule, tracker=analysis.tracker, beat_notes=analysis.notes) if analysis is not None else schedule


def audio_features(analysis: audio_stage.AudioAnalysis) -> dict[str, np.ndarray]:
    """Track variables' audio features at ENVELOPE_RATE: the analysis's own, else its onset envelope."""
    return dict(getattr(analysis, "features", None) or {"onset": analysis.onset_envelope})


@dataclass(frozen=True)
class RenderResult:
    video: Path
    manifest: Path
    plan: Plan
    timings: dict[str, float]
    frames_reused: int = 0  # video frames taken from the frame store, made by an earlier run
    frames_rendered: int = 0  # distinct frames denoised by this run
    store: Path | str | None = None  # a folder, or a URL (s3://...) for a store through fsspec
    farm: dict | None = None  # with executor ray: workers, their throughput, and batches retried
    probes_rendered: int = 0  # of frames_rendered, those denoised as probes of perceptual placement
    upscale: dict | None = None  # output.upscale: its settings, size and frames made and reused (UpscalePlan.manifest)


def default_output(timeline: Timeline) -> Path:
    return DEFAULT_OUT_DIR / f"{Path(timeline.source).stem}.mp4"


def default_store(out: Path) -> Path:
    """The frame store beside a video: renders/<name>.frames/."""
    return out.with_suffix(".frames")


@dataclass(frozen=True)
class FramePlan:
    """Every video frame's inputs and store key, and which distinct frames must be rendered."""

    identity: RenderIdentity
    inputs: tuple[FrameInputs, ...]  # (n_frames,) in video order
    keys: tuple[str, ...]  # (n_frames,) in video order; held frames share a key
    missing: tuple[FrameInputs, ...]  # first frame of each key not in the store, in video order
    shape: tuple[int, int, int]  # (H, W, 3)

    def key_of(self) -> dict[FrameInputs, str]:
        return dict(zip(self.inputs, self.keys))


def render_identity(
    settings: RenderSettings, *, device: str | None = None, batch_size: int | None = None, placement: tuple[str, int] | None = None
) -> RenderIdentity:
    """What every frame of a render shares; reads the model's family from its files, loads no weights.

    `placement`: (device type, CPU threads) of workers that render elsewhere (a Ray farm),
    instead of what this process would use.
    """
    from importlib import metadata

    import torch

    from latentwalk.backends import model_family
    from latentwalk.device import pick_device, pick_dtype, resolve_model

    spec = model_spec(settings)
    family = model_family(spec)
    torch_device = torch.device(placement[0]) if placement else pick_device(device or settings.device)
    source = resolve_model(settings.model)
    fingerprints = [file_fingerprint(source)] + [file_fingerprint(p) for p in (settings.model_config, settings.vae) if p]
    return RenderIdentity(
        model=source,
        model_fingerprint=":".join(fingerprints),
        family=family.family,
        width=settings.width,
        height=settings.height,
        scheduler=settings.scheduler,
        timestep_spacing=settings.timestep_spacing,
        interpolation=settings.interpolation,
        dtype=str(pick_dtype(settings.dtype, torch_device)),
        device_type=torch_device.type,
        cpu_threads=placement[1] if placement else torch.get_num_threads() if torch_device.type == "cpu" else 0,
        batch_size=batch_size or settings.batch_size,
        options=model_options(settings, torch_device.type).numerics(),
        adapters=adapter_identity(settings.loras, settings.embeddings),
        # diffusers by its metadata: a render whose frames are all stored never imports it
        versions=(("diffusers", metadata.version("diffusers")), ("torch", torch.__version__)),
    )


# Settings whose errors are found when the model is read (family, device, dtype, adapters), after parsing.
MODEL_FIELDS = ("model_config", "model", "device", "dtype", "cpu_offload", "vae", "loras", "embeddings", "controlnets")
# A message's leading field: `vae:`, `loras[0]:`, `embeddings[1].token:` (format_path's form).
FIELD_PREFIX = r"^([A-Za-z_]\w*)((?:\[\d+\]|\.[A-Za-z_]\w*)*):"


@contextmanager
def blamed_on_field(timeline: Timeline):
    """Give a model, device, dtype or adapter error the timeline's `file:line:` of the field it names.

    The backends raise UserError("loras[0].path: ...") and the like; the path is looked up in
    the timeline's lines, indexes included (a field without a line of its own takes its parent's).
    """
    import re

    from latentwalk.manual import section

    try:
        yield
    except UserError as error:
        message = str(error)
        match = re.match(FIELD_PREFIX, message)
        if match is None or match.group(1) not in MODEL_FIELDS or not hasattr(timeline, "at"):
            raise
        path = (match.group(1),) + tuple(
            int(index) if index else key for index, key in re.findall(r"\[(\d+)\]|\.(\w+)", match.group(2))
        )
        raise UserError(f"{timeline.at(*path)}{message[match.end(2):]}", docs=section(path)) from None


def frame_plan(
    timeline: Timeline,
    schedule: Plan,
    store: FrameStore,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    fresh: bool = False,
    placement: tuple[str, int] | None = None,
) -> FramePlan:
    """Key every frame of a schedule by what determines its pixels and look the keys up; loads no model."""
    with blamed_on_field(timeline):
        identity = render_identity(timeline.settings, device=device, batch_size=batch_size, placement=placement)
    return keyed_frames(identity, schedule_inputs(timeline, schedule), store, frame_shape(timeline.settings), fresh)


def frame_shape(settings: RenderSettings) -> tuple[int, int, int]:
    return (settings.height, settings.width, 3)


def schedule_inputs(timeline: Timeline, schedule: Plan) -> tuple[FrameInputs, ...]:
    """Every video frame's inputs, from its schedule record (placed records start from their probes)."""
    from latentwalk.images import keyframe_picture_keys

    settings = timeline.settings
    keyframes = [k.keyframe for k in schedule.keyframes]
    frames = timeline_frames(
        schedule.frames, keyframes, settings.negative_prompt, settings.steps, timeline.noise_shift_seed, settings.share_steps,
        pictures=keyframe_picture_keys(keyframes, settings.width, settings.height), keyframe_frames=[k.frame for k in schedule.keyframes],
    )
    return video_and_controls(timeline, schedule, frames)


def video_and_controls(timeline: Timeline, schedule: Plan, frames: tuple[FrameInputs, ...]) -> tuple[FrameInputs, ...]:
    """The frames with their source video frame as init (at their strength) and their ControlNets."""
    from latentwalk.control import with_inputs
    from latentwalk.schedule import track_value

    settings = timeline.settings
    strength = lambda record: track_value(record, "strength")  # noqa: E731
    return with_inputs(frames, schedule.frames, settings.video, settings.controlnets, schedule.fps, strength)


def check_inputs(timeline: Timeline, n_frames: int) -> None:
    """A source video or control images that end before the timeline's last frame: blamed on their field."""
    from latentwalk.control import uncovered
    from latentwalk.video_input import uncovered_frame

    settings, fps = timeline.settings, timeline.settings.fps
    video = settings.video
    if video is not None and (f := uncovered_frame(video, n_frames, fps)) is not None:
        field = "end" if "end" in timeline.raw else "video"
        raise UserError(
            f"{timeline.at(field)}: the timeline has {n_frames} frames ({n_frames / fps:.3f}s at {fps:g} fps), but the video clip "
            f"{video.path!r} from {video.start:g}s is {video.clip_seconds:.3f}s ({video.info.n_frames} frames at {video.info.fps:g} fps): "
            f"frame {f} ({f / fps:.3f}s) has no source frame; end the timeline sooner or use a longer clip"
        )
    for i, spec in enumerate(settings.controlnets):
        reason = uncovered(spec, n_frames, fps)
        if reason:
            raise UserError(f"{timeline.at('controlnets', i, 'image' if spec.source == 'images' else 'video')}: {reason}")


def keyed_frames(
    identity: RenderIdentity, inputs: Sequence[FrameInputs], store: FrameStore, shape: tuple[int, int, int],
    fresh: bool = False, rendered: set[str] = frozenset(),
) -> FramePlan:
    """The frames keyed, and which distinct ones the store lacks (a header check, no pixels read).

    `rendered`: keys this run has already made (placement probes that are video frames).
    """
    keys = tuple(frame_key(identity, i) for i in inputs)
    first: dict[str, FrameInputs] = {}
    for key, frame in zip(keys, inputs):
        first.setdefault(key, frame)
    missing = tuple(f for key, f in first.items() if key not in rendered and (fresh or not store.has(key, shape)))
    return FramePlan(identity, tuple(inputs), keys, missing, shape)


def _render_claimed(
    timeline: Timeline,
    out: Path,
    *,
    frames_dir: Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
    store_dir: str | Path | None = None,
    fresh: bool = False,
    overlap: bool | None = None,
    prune: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    overrides: "Overrides | None" = None,
    preview: Path | None = None,
    chunk_frames: int | None = None,
) -> RenderResult:
    """`render` once its outputs are checked and locked."""
    from latentwalk.progress import Progress

    shown = Progress(enabled=progress)
    try:
        result = _render_shown(timeline, out, shown, frames_dir=frames_dir, batch_size=batch_size, device=device, store_dir=store_dir,
                               fresh=fresh, overlap=overlap, prune=prune, executor=executor, ray_address=ray_address,
                               ray_workers=ray_workers, overrides=overrides, preview=preview, chunk_frames=chunk_frames)
    except BaseException:
        shown.finish(failed=True)
        raise
    shown.finish()
    return result


def _render_shown(
    timeline: Timeline, out: Path, progress, *, frames_dir, batch_size, device, store_dir, fresh, overlap, prune,
    executor, ray_address, ray_workers, overrides, preview, chunk_frames,
) -> RenderResult:
    """`render` once its outputs are checked and locked, its stages shown on `progress` (progress.Progress)."""
    clock = Clock()
    settings = timeline.settings

    # 1. Check inputs: the timeline, the audio and the whole schedule, before any model loads.
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}")
    if chunk_frames is not None and chunk_frames < 0:
        raise UserError(f"--chunk-frames: must be 0 (encode on this machine) or more, got {chunk_frames}")
    name = executor_name(timeline, executor, ray_address, ray_workers)
    upscaler = check_upscale(timeline, name, device)  # a super-resolution model read and checked now, or None
    progress.stage("audio analysis" if timeline.audio is not None and timeline.audio.path is not None else "plan")
    schedule, span = overridden_plan(timeline, overrides)  # span: the range's video frames (first, stop), or None
    outline = interpolation_outline(timeline, schedule, span)  # output.interpolate: the frames to denoise, or None
    clock.lap("plan_s")

    # 2. The store, and the executor that denoises what it lacks: where frames are made names their keys.
    store = open_store(store_dir if store_dir is not None else default_store(out))
    from latentwalk.videometa import video_tags

    tags = video_tags(timeline, overrides, store.root, batch_size or settings.batch_size, device or settings.device)
    job = render_job(timeline, store, device, batch_size, fresh, overlap, ray_address, ray_workers, progress.note)
    if name == "ray":
        progress.stage("farm start")  # joining (or starting) a Ray cluster takes seconds to a minute
    with blamed_on_field(timeline):  # a device the machine lacks, a cluster that is not there
        runner = EXECUTORS[name](job)
    try:
        from latentwalk.chunks import chunking_for

        chunking = chunking_for(runner, settings.chunk_frames if chunk_frames is None else chunk_frames, settings.width, settings.height,
                                settings.fps, store.root, out, frames_dir, preview)
        with blamed_on_field(timeline):
            identity = render_identity(settings, batch_size=batch_size, placement=(runner.device_type, runner.cpu_threads))
        inputs = schedule_inputs(timeline, schedule)

        # 3. Perceptual placement (travel mode): probes, stored or rendered, re-place the frames of
        # `spacing: perceptual` segments; then the placed frames are keyed and looked up, once.
        probes = probe_images(runner, identity, store, frame_shape(settings), fresh, progress, settings.share_steps)
        placement = None
        flow = settings.video is not None and settings.video.flow  # a chain, like feedback: nothing to place
        if timeline.mode == "travel" and not flow:  # a range probes only its own segments, each placed as in the whole video
            placement = place(outside_range(schedule, *span) if span else schedule, inputs, probes, settings.share_steps, settings.placement_budget)
            schedule, inputs = replace(placement.schedule, keyframes=schedule.keyframes), placement.inputs
            clock.lap("placement_s")
        denoised = inputs if outline is None or timeline.mode == "feedback" else [inputs[f] for f in outline.anchors]
        frames = keyed_frames(identity, denoised, store, frame_shape(settings), fresh, probes.rendered)
        chains = chain_plan(timeline, schedule, frames, store, fresh, outline) if timeline.mode == "feedback" else flow_chains(timeline, frames, store, fresh)
        video_keys, missing_keys = (chains.work.keys, chains.missing_keys()) if chains else (frames.keys, {frames.key_of()[f] for f in frames.missing})
        fills = None
        if outline is not None:  # the output stage makes the frames between the denoised ones (interpolate.py)
            fills = interpolation_fills(timeline, outline, video_keys, missing_keys, store, frames.shape, fresh)
            video_keys, missing_keys = fills.video_keys, fills.missing_keys
        if span:  # a range: only its frames are streamed, and (but for feedback chains' pasts) rendered
            schedule, frames, video_keys, missing_keys = in_range(schedule, frames, chains, video_keys, missing_keys, *span)
        clock.lap("store_lookup_s")

        # 4. Render the missing frames into the store; as keys arrive, stream every ready frame,
        # stored or new, into ffmpeg in video order.
        if missing_keys - (fills.made if fills else set()):  # in-betweens alone need no model (latent loads it when one does)
            with blamed_on_field(timeline):
                runner.start(identity)
            clock.lap("load_model_s")
        if probes.rendered:  # the probes started the model: its load is not placement's time
            clock.timings["placement_s"] -= runner.load_s
        clock.timings["load_model_s"] = runner.load_s
        upscale = timeline.output.upscale
        damaged = stream_video(
            timeline, schedule, out, frames, chains, runner, video_keys, missing_keys, store, None if upscale else frames_dir, progress,
            None if upscale else preview, None if upscale or out.suffix.lower() != ".mp4" else chunking, fills=fills, job=job, tags=tags,
            encode=upscale is None,
        )
        clock.lap("render_s")
        up = None
        if upscale is not None:  # 4b. The stored frames made larger (stored too), into the video
            inputs_of = inputs[span[0] : span[1]] if span else inputs  # each video frame's own inputs, interpolated ones too
            up = upscale_video(timeline, schedule, out, identity, video_keys, inputs_of, runner, upscaler, store, fresh, frames_dir, progress, preview, tags)
            clock.lap("upscale_s")
        farm_info, model = runner.report(), runner.model_info(identity)
    finally:
        runner.close()

    # 5. Optionally drop stored frames this render no longer uses (its probes it does use).
    probe_keys = [frame_key(identity, p) for p in placement.probes] if placement else []
    fill_keys = list(fills.video_keys) if fills else []  # in-betweens stay with their anchors
    pruned = store.prune((chains.keep() if chains else list(frames.keys) + probe_keys) + fill_keys) if prune else None
    if prune and chunking is not None:  # and a farm's chunks of earlier versions of the video
        chunking[1].prune(chunking[0].names(video_keys))
    clock.total()

    # 6. Leave a manifest of exactly what produced the video.
    # Reused: made by an earlier run; this run's probes that are video frames were rendered here.
    reused = sum(k not in missing_keys and k not in probes.rendered and k not in damaged for k in video_keys)
    interpolated = fills.made if fills else set()  # in-betweens made by this run: interpolated, not denoised
    rendered = len(missing_keys - interpolated) + len(probes.rendered) + len(damaged - interpolated)
    measured = replace(frames, inputs=tuple(inputs), keys=tuple(video_keys)) if fills and not chains else frames
    data = render_manifest(timeline, schedule, measured, chains, placement, store, model, clock.timings, farm_info)
    if fills:
        data["output"] = {"interpolate": fills.manifest(len(interpolated))}
    data["store"]["frames_interpolated"] = len(interpolated)
    data["store"] |= {"frames_reused": reused, "frames_rendered": rendered, "probes_rendered": len(probes.rendered), "fresh": fresh,
                      "pruned_frames": pruned.frames if pruned else 0}
    if overrides is not None:
        data["overrides"] = overrides.manifest(span)
    if up is not None:
        data["upscale"] = up.manifest()
    written = manifest.write(out.with_suffix(".json"), data)
    return RenderResult(
        out, written, schedule, clock.timings, reused, rendered, store.root, farm_info, len(probes.rendered), up.manifest() if up else None
    )


def check_upscale(timeline: Timeline, executor: str, device: str | None):
    """`output.upscale` checked before any diffusion model loads: refine needs this process's model; `model` is read now.

    Returns (super-resolution model, its device) for method model, else None.
    """
    spec = timeline.output.upscale
    if spec is None:
        return None
    if spec.method == "refine":
        if executor != "local":
            raise UserError(f"{timeline.at('output', 'upscale', 'method')}: refine runs on this process's model; not with executor {executor} yet")
        return None
    from latentwalk.device import pick_device
    from latentwalk.upscale import load_model

    with blamed_on_field(timeline):
        where = str(pick_device(device or timeline.settings.device))
    return load_model(timeline, where), where


def upscale_video(timeline, schedule, out, identity, video_keys, inputs, runner, upscaler, store, fresh, frames_dir, progress, preview, tags):
    """The video's frames made larger from the store (made ones stored), encoded with the audio; returns the UpscalePlan."""
    from latentwalk.upscale import plan_upscale, write_upscaled

    spec, settings = timeline.output.upscale, timeline.settings
    plan = plan_upscale(spec, identity, video_keys, inputs, store, fresh)
    make = {"batch_size": identity.batch_size}
    if spec.method == "model":
        make |= {"model": upscaler[0], "device": upscaler[1]}
    elif plan.missing:
        with blamed_on_field(timeline):
            runner.start(identity)
        large = replace(settings, width=plan.shape[1], height=plan.shape[0])
        make |= {"backend": runner.backend, "settings": engine_settings(large, identity.batch_size)}
    first = schedule.frames[0].frame if schedule.frames else 0
    write_upscaled(plan, out, settings.fps, audio_clip(timeline, schedule), tags, store, frames_dir, progress, preview, first, **make)
    return plan


def audio_clip(timeline: Timeline, schedule: Plan):
    """The stretch of the timeline's audio under the plan's frames (a range's plan starts at its first frame's time), or None."""
    from latentwalk.encode import AudioClip

    if timeline.audio is None or timeline.audio.path is None:
        return None
    offset = schedule.frames[0].time if schedule.frames else 0.0
    return AudioClip(timeline.audio.path, timeline.audio.start + offset, schedule.duration)


def interpolation_outline(timeline: Timeline, schedule: Plan, span: tuple[int, int] | None) -> "Outline | None":
    """With `output.interpolate`: which frames are denoised (interpolate.Outline), checked before any model loads."""
    if timeline.output.interpolate is None:
        return None
    if span is not None:
        raise UserError(f"--from/--to: not yet with output.interpolate ({timeline.at('output', 'interpolate')}); render the whole video")
    from latentwalk.interpolate import timeline_outline

    return timeline_outline(timeline, schedule)


def interpolation_fills(
    timeline: Timeline, outline: "Outline", video_keys: Sequence[str], missing_keys: set[str], store: FrameStore, shape, fresh: bool,
) -> "Fills":
    """Every video frame's key with interpolation: the anchors' (travel: `video_keys` are theirs; feedback: their chain keys), the fills'."""
    from latentwalk.interpolate import render_fills

    anchor_keys = list(video_keys) if timeline.mode == "travel" else [video_keys[f] for f in outline.anchors]
    return render_fills(timeline.output.interpolate, outline, anchor_keys, missing_keys, lambda key: store.has(key, shape), fresh)


def in_range(schedule: Plan, frames: FramePlan, chains, video_keys, missing_keys, first: int, stop: int):
    """(plan, frames, video keys, missing keys) of video frames first..stop-1, keyed as in the whole video.

    Feedback frames need their chain's past: every missing frame of the chains is still rendered.
    """
    from latentwalk.overrides import slice_plan

    keys = tuple(video_keys[first:stop])
    if chains is not None:
        return slice_plan(schedule, first, stop), frames, keys, missing_keys
    wanted, key_of = set(keys), frames.key_of()
    missing = tuple(f for f in frames.missing if key_of[f] in wanted)
    sliced = FramePlan(frames.identity, frames.inputs[first:stop], keys, missing, frames.shape)
    return slice_plan(schedule, first, stop), sliced, keys, {k for k in missing_keys if k in wanted}


class Clock:
    """Seconds per step of a render, for its manifest."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name], self.last = now - self.last, now

    def total(self) -> None:
        self.timings["total_s"] = time.perf_counter() - self.start


def executor_name(timeline: Timeline, executor: str | None, address: str | None, workers: int | None) -> str:
    """The executor a render asks for (arguments over the timeline), checked before any work."""
    from latentwalk.timeline import RAY_ADDRESS

    name = executor or timeline.settings.executor
    if name not in EXECUTORS:
        import difflib

        where = timeline.at("executor") if executor is None else "executor"
        close = difflib.get_close_matches(name, EXECUTORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{where}: unknown value {name!r}; expected one of: {', '.join(EXECUTORS)}{hint}")
    if address is not None and not RAY_ADDRESS.match(address):
        raise UserError(f"--ray: expected auto, host:port or ray://host:port, got {address!r}")
    if workers is not None and workers < 1:
        raise UserError(f"--ray-workers: must be at least 1, got {workers}")
    return name


def render_job(
    timeline: Timeline, store: FrameStore, device: str | None, batch_size: int | None, fresh: bool, overlap: bool | None,
    ray_address: str | None, ray_workers: int | None, log=None,
) -> Job:
    """What the executor of this render is given: the model, the engine settings and the farm's."""
    from latentwalk.images import timeline_pictures

    settings = timeline.settings
    # Image keyframes' pictures at the frame size travel with the engine settings (to Ray workers too).
    engine = replace(engine_settings(settings, batch_size), pictures=timeline_pictures(all_keyframes(timeline), settings.width, settings.height))

    def before_load(device_type: str, dtype: str) -> None:
        budget.check_render_memory(timeline, batch_size or settings.batch_size, device_type, dtype)

    return Job(
        spec=model_spec(settings), device=device or settings.device, dtype=settings.dtype,
        engine=engine, store_root=store.root, fresh=fresh, overlap=overlap,
        log=log or (lambda message: print(message, file=sys.stderr)), options_for=lambda device_type: model_options(settings, device_type),
        before_load=before_load, ray_address=ray_address if ray_address is not None else settings.ray_address,
        ray_workers=ray_workers or settings.ray_workers, ray_cpus_per_worker=settings.ray_cpus_per_worker,
    )


def all_keyframes(timeline: Timeline) -> tuple:
    """The timeline's keyframes and its lyric keyframes (either may carry a picture)."""
    return tuple(timeline.keyframes) + tuple(timeline.lyrics)


def probe_images(runner, identity: RenderIdentity, store: FrameStore, shape, fresh: bool, progress, capture: int):
    """Placement's images: stored probes read, missing ones rendered by the executor in full batches.

    `progress` (progress.Progress): each round adds its probes to the "placement probes" stage.
    """
    from latentwalk.placement import StoredImages

    def render_missing(frames: Sequence[FrameInputs], keys: Sequence[str], done) -> None:
        progress.stage("placement probes", total=len(frames), unit="probe")  # a further round adds its probes
        runner.start(identity)

        def counted(batch_keys, images) -> None:
            done(batch_keys, images)
            progress.advance(len(batch_keys))

        runner.render(frames, keys, counted, capture=capture)

    return StoredImages(store, lambda f: frame_key(identity, f), shape, render_missing, fresh)


def stream_video(
    timeline, schedule, out, frames, chains, runner, video_keys, missing_keys, store, frames_dir, progress, preview=None, chunking=None,
    fills: "Fills | None" = None, job: Job | None = None, tags: dict[str, str] | None = None, encode: bool = True,
) -> set[str]:
    """Denoise the missing frames through the executor while the video is written in order, stored frames and new.

    `tags`: the video's metadata (videometa.py); `encode=False`: the frames only go into the store
    (and are read back, which checks them), for an output stage that writes the video from there.

    `chunking` (chunks.chunking_for): the farm's encoder tasks encode the video in chunks instead.

    Returns the keys of stored frames found damaged when read, and rendered again.
    """
    from latentwalk.assemble import InOrderWriter
    from latentwalk.encode import AudioClip, VideoWriter
    from latentwalk.renderstate import StateWriter

    settings = timeline.settings
    clip = None
    if timeline.audio is not None and timeline.audio.path is not None:  # a range's plan starts at its first frame's time
        offset = schedule.frames[0].time if schedule.frames else 0.0
        clip = AudioClip(timeline.audio.path, timeline.audio.start + offset, schedule.duration)
    if chunking is not None and fills is None:  # a farm: chunks encoded on the cluster as their frames complete, joined here
        from latentwalk.chunks import render_chunked

        render_chunked(runner, chunking, frames, chains, video_keys, missing_keys, clip, out, progress, tags)
        return set()
    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
    video = set(video_keys)
    progress.stage("frames", total=len(missing_keys))
    # Where the render is, beside the video while it runs, for `plan --plot` (renderstate.py).
    state = StateWriter(None, out, len(video_keys), schedule.frames[0].frame if schedule.frames else 0, settings.fps, progress.eta)
    try:
        with VideoWriter(out, settings.width, settings.height, settings.fps, clip, tags=tags) if encode else NullWriter() as writer:
            if preview is not None:  # the preview shows each frame as it goes into the video
                from latentwalk.preview import Preview, PreviewWriter

                shown = Preview(preview, len(video_keys), first_frame=schedule.frames[0].frame if schedule.frames else 0)
                writer = PreviewWriter(writer, shown)
            state.writer, writer = writer, state
            # A travel frame found damaged when read is rendered again in this run (a chain's would need its past).
            in_order = InOrderWriter(writer, video_keys, store, frames.shape, set(missing_keys), frames_dir, retry_lost=chains is None)

            filler = fills.filler(store, frames.shape, runner, frames.identity, job) if fills else None

            def done(keys: Sequence[str], images: np.ndarray | None) -> None:
                in_order.add(keys, images) if images is not None else in_order.arrived(keys)
                progress.advance(sum(k in video for k in keys))  # a colour reference's own render is no video frame
                for made in filler.arrived(keys, images, lambda key: key not in in_order.waiting) if filler else ():
                    done(*made)  # in-betweens whose two anchors are there

            if filler is not None:
                done([], None)  # in-betweens of anchors stored before this run
            if chains is not None and missing_keys:
                runner.render_chains(chains, done)
            elif chains is None and frames.missing:
                runner.render(frames.missing, [frames.key_of()[f] for f in frames.missing], done)
            in_order.flush()
            again: set[str] = set()
            while lost := in_order.take_lost():
                if filler is not None:  # a damaged in-between is made again from its anchors
                    lost = filler.redo(lost, done)
                    in_order.flush()
                    if not lost:
                        continue
                inputs_of = {key: f for f, key in zip(frames.inputs, frames.keys)}
                progress.add_total(len(lost))  # damaged stored frames, rendered again
                runner.start(frames.identity)
                runner.render([inputs_of[k] for k in lost], lost, done)
                again.update(lost)
                in_order.flush()
            if preview is not None:
                shown.finish()
            state.finish()
            progress.stage("encode")  # ffmpeg takes the last frames and closes the file
    finally:
        state.remove()
    return again


class NullWriter:
    """A video writer that writes nothing: the frames go to the store alone."""

    def write(self, frame: np.ndarray) -> None:
        pass

    def __enter__(self) -> "NullWriter":
        return self

    def __exit__(self, *exc) -> None:
        pass


def render_manifest(timeline, schedule, frames: FramePlan, chains, placement, store: FrameStore, model, timings, farm_info) -> dict:
    """The manifest of a render: what produced it, its store, its placement and its farm."""
    source, device_name, dtype_name = model
    usage = store.usage()
    data = manifest_data(timeline, schedule, source, device_name, dtype_name, timings)
    data["model"]["family"] = frames.identity.family
    data["model"]["options"] = to_jsonable(asdict(model_options(timeline.settings, frames.identity.device_type)))
    data["store"] = {"path": str(store.root), "frames_stored": usage.frames, "bytes": usage.bytes, "identity": to_jsonable(asdict(frames.identity))}
    data["mode"] = timeline.mode
    if chains is not None:
        data["feedback" if timeline.mode == "feedback" else "video"] = chains.manifest(timeline)
    data["farm"] = farm_info
    if placement is not None:
        add_placement(data, placement, frame_measures(store, frames), schedule)
    return data


def render(
    timeline: Timeline | str | Path,
    out: str | Path | None = None,
    *,
    frames_dir: str | Path | None = None,
    store_dir: str | Path | None = None,
    overwrite_frames: bool = False,
    wait: bool = False,
    overrides: "Overrides | None" = None,
    preview: str | Path | None = None,
    **options,
) -> RenderResult:
    """Render a timeline to an mp4 with its audio, and a manifest JSON beside it.

    Frames already in the frame store (default: beside the video, `<name>.frames/`) are
    reused; only missing ones are denoised. `fresh` re-renders and overwrites every frame;
    `prune` then drops stored frames this render does not use. Outputs never overwrite an
    input or a file latentwalk did not make (see outputs.py); a second render of the same video
    or store exits with the holder's pid, or with `wait` waits for it. Further `options`:
    batch_size, device, progress, fresh, overlap (decode on a worker thread; default: only on
    CUDA, where it helps), prune, and executor="ray" with ray_address / ray_workers to render on
    a Ray cluster's workers into a store they share (a folder, or store_dir="s3://bucket/prefix");
    chunk_frames overrides the timeline's (a farm encodes the video in chunks of that many frames; 0: on the driver).

    `overrides` (overrides.Overrides): a draft, size, steps or fps for this render, and a range
    (from, to) of the video; a draft is named <name>.draft.mp4 with its own store, and a range
    <name>.<from>-<to>.mp4, its frames taken from (and left in) the whole video's store.
    `preview`: a .png kept showing the latest frames as they are written (preview.py).
    """
    timeline = as_timeline(timeline)
    whole_out = overrides.video_name(default_output(timeline), whole=True) if overrides else default_output(timeline)
    timeline = apply_overrides(timeline, overrides)
    create_folder = out is None
    out = Path(out) if out is not None else overrides.video_name(default_output(timeline)) if overrides else whole_out
    if store_dir is None:
        store_dir = default_store(whole_out if overrides and overrides.is_range else out)
    elif not (isinstance(store_dir, str) and "://" in store_dir):
        store_dir = Path(store_dir[len("file://") :] if str(store_dir).startswith("file://") else store_dir)
    frames_dir = Path(frames_dir) if frames_dir is not None else None
    if out.suffix.lower() not in (".mp4", ".webm"):
        raise UserError(f"--out: the video must be an .mp4 (H.264) or .webm (VP9) file, got {str(out)!r}")
    if overrides and overrides.is_range and options.get("prune"):
        raise UserError("--prune: not with --from/--to: a range uses part of the whole video's store; prune after a whole render")
    if preview is not None:
        from latentwalk.preview import check_preview_path

        preview = check_preview_path(preview)
        if any(outputs.same_file(preview, p) or preview == p for p in (out, out.with_suffix(".json"), *outputs.render_inputs(timeline))):
            raise UserError(f"--preview: {preview} is also the video, its manifest or an input; give the preview its own name")
    targets = outputs.check_render_outputs(
        outputs.render_inputs(timeline), out, frames_dir, store_dir, overwrite_frames=overwrite_frames, create_folder=create_folder
    )
    with outputs.claim(targets, wait):
        return _render_claimed(timeline, out, frames_dir=frames_dir, store_dir=store_dir, overrides=overrides, preview=preview, **options)


def apply_overrides(timeline: Timeline, overrides: "Overrides | None") -> Timeline:
    """The timeline with one render's draft, size, steps and fps applied (see overrides.py); a range changes no setting."""
    from latentwalk.overrides import apply

    return apply(timeline, overrides)


def overridden_plan(timeline: Timeline, overrides: "Overrides | None", analysis=None) -> tuple[Plan, tuple[int, int] | None]:
    """The whole plan of an overridden timeline and the range of its video frames (None: all of them), checked."""
    from latentwalk.overrides import frame_range

    analysis = analysis if analysis is not None else timeline_audio(timeline)
    try:
        schedule = plan(timeline, analysis)
    except UserError as e:  # e.g. two keyframes on one frame at a draft's rate: say which rate
        if overrides is None or not (overrides.draft or overrides.fps):
            raise
        flag = "--fps" if overrides.fps else "--draft"
        raise UserError(f"{e} (at {timeline.settings.fps:g} fps, from {flag})") from None
    return schedule, frame_range(with_tracked_downbeat(timeline, analysis), schedule, overrides)


@dataclass(frozen=True)
class ChainPlan:
    """A feedback render: every frame as the feedback driver sees it, keyed by chain, against the store."""

    frames: tuple["FeedbackFrame", ...]
    work: "FeedbackWork"

    def missing_keys(self) -> set[str]:
        """Keys of the video frames this run must make (diffused and cadence-filled)."""
        return {self.work.keys[i] for part in (self.work.diffuse, self.work.fill) for chain in part for i in chain}

    def keep(self) -> set[str]:
        """What a prune keeps: the video's frames and the colour references' independent renders."""
        return set(self.work.keys) | {self.frames[r].key for r in self.work.references}

    def manifest(self, timeline: Timeline) -> dict:
        missing = self.missing_keys()
        return {
            "settings": to_jsonable(asdict(timeline.feedback)),
            "chains": [
                {
                    "first_frame": chain[0],
                    "frames": len(chain),
                    "diffused": sum(self.frames[i].diffused for i in chain),
                    "rendered": sum(self.work.keys[i] in missing for i in chain),
                    "resumed_at": resume,
                }
                for chain, resume in zip(self.work.chains, self.work.resume_at())
            ],
            "colour_references": list(self.work.references),
        }


def flow_chains(timeline: Timeline, frames: FramePlan, store: FrameStore, fresh: bool = False):
    """A `video: {flow: true}` render's chain over the frames' own keys (videoflow.FlowPlan); None without flow."""
    video = timeline.settings.video
    if video is None or not video.flow:
        return None
    from latentwalk.videoflow import flow_plan

    return flow_plan(frames.inputs, frames.keys, video.flow_blend, lambda key: not fresh and store.has(key, frames.shape))


def chain_plan(
    timeline: Timeline, schedule: Plan, frames: FramePlan, store: FrameStore, fresh: bool = False, outline: "Outline | None" = None,
) -> ChainPlan:
    """Feedback frames over a travel plan's inputs and keys, chained, and what the store lacks.

    `outline` (interpolation): only its anchors are diffused, as `cadence` would pick them.
    """
    from latentwalk.feedback import plan_work, timeline_feedback_frames

    diffused = set(outline.anchors) if outline is not None else None
    feedback = timeline_feedback_frames(schedule.frames, schedule.keyframes, frames.inputs, frames.keys, timeline.feedback, diffused)
    return ChainPlan(tuple(feedback), plan_work(feedback, lambda key: not fresh and store.has(key, frames.shape)))


def frame_measures(store: FrameStore, frames: FramePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(placement distance, pixel MAD, 1 − SSIM) between each stored video frame and the next: three (n_frames - 1,)."""
    from latentwalk.placement import frame_measures as measures

    images = {k: store.load(k, frames.shape) for k in dict.fromkeys(frames.keys)}  # held frames share a key
    return measures([images[k] for k in frames.keys])


def add_placement(data: dict, placement, measures: tuple[np.ndarray, np.ndarray, np.ndarray], schedule: Plan) -> None:
    """Per frame: its distance to the next frame; per placed segment: its probes, their distances, and its
    predicted and measured evenness."""
    from latentwalk.placement import measured_evenness

    distances, pixel, ssim = measures
    for record, d in zip(data["plan"]["frames"], list(distances) + [None]):
        record["distance"] = None if d is None else float(d)
    segments = []
    for s in placement.segments:
        measured = measured_evenness(s.frames, schedule.frames, pixel, ssim)
        segments.append(to_jsonable(asdict(s)) | {"measured": None if measured is None else asdict(measured)})
    data["placement"] = {
        "distance": "sqrt(MAD * sqrt(1 - SSIM)) on frames block-averaged to <= 128 px (latentwalk.smooth.perceptual_distance)",
        "segment_distances": "per probe interval, the larger of its share of the segment's pixel MAD and of its "
        "sqrt(1 - SSIM) (latentwalk.smooth.shares); frames are placed evenly in these",
        "evenness": "adjacent-frame p95/median and max/median in pixel MAD and 1 - SSIM over a segment's frames (the next "
        "keyframe's included, holds left out): `predicted` from the probes (latentwalk.smooth.predict_evenness, the "
        "stopping rule's figures), `measured` on the rendered frames",
        "segments": segments,
    }


def plan_data(schedule: Plan, timeline: Timeline) -> dict:
    """The plan as JSON-ready data: fps, the per-frame records and the resolved keyframes."""
    return {
        "fps": schedule.fps,
        "n_frames": schedule.n_frames,
        "duration": schedule.duration,
        "bpm": schedule.bpm,
        "tracker": schedule.tracker,
        "keyframes": [
            {
                "index": k.index,
                "frame": k.frame,
                "time": k.time,
                "unit": k.keyframe.position.unit,
                "position": k.keyframe.position.value,
                "prompt": k.keyframe.prompt,
                "seed": k.keyframe.seed,
                "origin": k.keyframe.origin or None,
                # perceptual: `t` of the segment's frames is perceived progress until a render places them
                "spacing": k.keyframe.spacing,
            } | ({"image": k.keyframe.image} if k.keyframe.image else {})
            for k in schedule.keyframes
        ],
        "tracks": list(schedule.tracks),
        "frames": [frame_data(r, schedule.tracks) for r in schedule.frames],
    } | pictures_data(schedule, timeline) | inputs_data(schedule, timeline) | interpolation_data(schedule, timeline)


def interpolation_data(schedule: Plan, timeline: Timeline) -> dict:
    """`loop`, and with output.interpolate the frames the render denoises (the rest are interpolated); {} without either."""
    data: dict = {"loop": True} if schedule.loop else {}
    spec = timeline.output.interpolate
    if spec is None or len(schedule.frames) != schedule.n_frames:  # a range's plan: its outline is the whole video's
        return data
    from latentwalk.interpolate import timeline_outline

    outline = timeline_outline(timeline, schedule)
    return data | {"interpolate": {"factor": spec.factor, "method": spec.method, "denoised_frames": list(outline.anchors),
                                   "interpolated_frames": outline.interpolated()}}


def inputs_data(schedule: Plan, timeline: Timeline) -> dict:
    """The source video and ControlNets, with the source frame or control image of every frame; {} without them."""
    from latentwalk.control import plan_inputs

    return plan_inputs(schedule, timeline.settings)


def pictures_data(schedule: Plan, timeline: Timeline) -> dict:
    """Image keyframes' pictures and the frames that use each (images.picture_plan); {} without any."""
    from latentwalk.images import picture_plan

    pictures = picture_plan(schedule, timeline.settings.width, timeline.settings.height)
    return {"pictures": pictures} if pictures else {}


def frame_data(record: FrameRecord, tracks: Sequence[str]) -> dict:
    """One frame record as JSON-ready data, with the value of every track the timeline sets."""
    from latentwalk.schedule import track_value

    data = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(record).items() if k != "params"}
    return data | {name: track_value(record, name) for name in tracks}


def manifest_data(timeline: Timeline, schedule: Plan, model_source: str, device: str, dtype: str, timings: dict) -> dict:
    return {
        "timeline": {"source": timeline.source, "yaml": timeline.raw, "resolved": to_jsonable(asdict(timeline.settings))},
        "audio": to_jsonable(asdict(timeline.audio)) if timeline.audio else None,
        "model": {"spec": timeline.settings.model, "source": model_source, "device": device, "dtype": dtype},
        "plan": plan_data(schedule, timeline),
    } | manifest.provenance(timings)


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
    from latentwalk.placement import StoredImages

    schedule = plan(timeline)
    outline = interpolation_outline(timeline, schedule, None)  # output.interpolate: its in-betweens are kept too
    frames = frame_plan(timeline, schedule, store, device=device, batch_size=batch_size)
    if timeline.mode == "feedback":
        chains = chain_plan(timeline, schedule, frames, store, outline=outline)
        keep = chains.keep()
    elif (flow := flow_chains(timeline, frames, store)) is not None:
        keep = flow.keep()
    else:
        # Perceptual placement from the stored probes alone: a missing probe is an error, never a prune.
        stored = StoredImages(store, lambda f: frame_key(frames.identity, f), frames.shape)
        placement = place(schedule, frames.inputs, stored, timeline.settings.share_steps, timeline.settings.placement_budget)
        keep = [frame_key(frames.identity, f) for f in placement.inputs] + [frame_key(frames.identity, p) for p in placement.probes]
    if outline is not None:
        from latentwalk.interpolate import method_id, video_fills

        video = chains.work.keys if timeline.mode == "feedback" else keep[: schedule.n_frames]
        keep = list(keep) + list(video_fills(outline, [video[f] for f in outline.anchors], method_id(timeline.output.interpolate))[0])
    if store.state() not in ("store", "legacy"):
        return store, store.prune(keep)  # refuses, naming why
    with store.lock():
        return store, store.prune(keep)
