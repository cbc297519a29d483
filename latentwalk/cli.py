"""The `latentwalk` command: render, plan, beats (and sweep)."""

import argparse
import errno
import json
import logging
import os
import signal
import statistics
import sys
from pathlib import Path

from latentwalk.audio import TRACKERS
from latentwalk.device import DEVICE_NAMES
from latentwalk.errors import UserError
from latentwalk.store import MARKER, FrameStore, open_store

EXIT_USAGE = 2
EXIT_INTERNAL = 1
DEBUG_ENV = "LATENTWALK_DEBUG"  # set to 1 to see the traceback of an unexpected error


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="latentwalk", description="Prompt-travel music videos from a YAML timeline.",
        epilog="Every option: docs/commands.md; every timeline key: docs/timeline.md; the manual: docs/index.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("render", help="render a timeline to an mp4 with its soundtrack", epilog="Options: docs/commands.md#render")
    r.add_argument("timeline", help="a timeline .yaml, or a video latentwalk made (rendered again from the timeline it carries, from its store)")
    r.add_argument("--out", help="output .mp4 (H.264), or .webm (VP9) (default: renders/<timeline name>.mp4)")
    r.add_argument("--frames", metavar="DIR", help="also write every frame as a PNG into DIR")
    r.add_argument("--batch-size", type=int, help="frames denoised together (overrides the timeline)")
    r.add_argument("--device", choices=DEVICE_NAMES, help="overrides the timeline")
    r.add_argument("--quiet", action="store_true", help="no progress display (warnings are still printed)")
    r.add_argument("--store", metavar="DIR", help="frame store to reuse frames from: a folder or a URL (s3://bucket/prefix, through fsspec) (default: <out>.frames/ beside the video)")
    r.add_argument("--fresh", action="store_true", help="ignore stored frames: render and overwrite every frame")
    r.add_argument("--prune", action="store_true", help="afterwards delete stored frames this render does not use")
    r.add_argument("--plot", metavar="FILE", help="also draw each frame's distance to the next (keyframes, beats marked) into a .png/.svg/.pdf")
    r.add_argument("--overlap", choices=["auto", "on", "off"], default="auto", help="decode batch k-1 on a worker thread while batch k denoises (auto: on CUDA only, where it helps)")
    r.add_argument("--overwrite-frames", action="store_true", help="let --frames write frame_NNNNNN.png into a folder holding other files")
    r.add_argument("--wait", action="store_true", help="if another render holds this video or store, wait for it instead of exiting")
    r.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="render on a Ray cluster's workers: auto, host:port, ray://host:port, or none to start a local cluster")
    r.add_argument("--ray-workers", type=int, metavar="N", help="with --ray: workers to start (default: one per GPU, or per ray_cpus_per_worker cores)")
    r.add_argument("--chunk-frames", type=_number(int), metavar="N", help="with --ray: encode the video on the cluster in chunks of N frames, joined here without re-encoding (0: encode on this machine; overrides the timeline)")
    add_override_arguments(r)
    r.add_argument("--preview", metavar="FILE.png", help="keep FILE.png showing the latest frame and the last 8 as thumbnails, replaced atomically as the render goes")

    st = sub.add_parser("store", help="show a frame store's size, or prune it to what a timeline needs", epilog="Options: docs/commands.md#store")
    st.add_argument("target", help="a frame store folder, or a timeline (its store beside its default --out)")
    st.add_argument("--out", help="with a timeline: the video whose store to use")
    st.add_argument("--prune", action="store_true", help="delete frames the timeline's current plan does not use")
    st.add_argument("--batch-size", type=int, help="with --prune: the batch size the frames were rendered with")
    st.add_argument("--device", choices=DEVICE_NAMES, help="with --prune: the device they were rendered on")

    p = sub.add_parser("plan", help="print the per-frame schedule without rendering", epilog="Options: docs/commands.md#plan")
    p.add_argument("timeline")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="FILE", help="also draw the plan (waveform, beats, keyframes, tracks) into a .png/.svg/.pdf, "
                   "with the frames a render of it has written so far shaded")
    p.add_argument("--video", metavar="MP4", help="with --plot: the render to show the progress of (default: the timeline's own video, "
                   "renders/<name>.mp4, or its draft or range with those flags)")
    add_override_arguments(p)

    b = sub.add_parser("beats", help="print the tempo and beat times of an audio file", epilog="Options: docs/commands.md#beats")
    b.add_argument("audio")
    b.add_argument("--bpm", type=float, help="track beats at this tempo instead of estimating it")
    b.add_argument("--start", type=float, default=0.0, help="seconds into the file to start at")
    b.add_argument("--end", type=float, help="seconds into the file to stop at")
    b.add_argument("--tracker", default="auto", choices=TRACKERS, help="beat tracker (auto: madmom when the beats extra is installed, else librosa)")
    b.add_argument("--beats-per-bar", type=int, default=0, help="beats per bar (default: inferred from the whole song, with a confidence)")
    b.add_argument("--json", action="store_true", help='print {"bpm", "tracker", "beats", "downbeats", "tempo", ...}')
    b.add_argument("--midi", metavar="FILE", help="beats and bars from this MIDI file; its offset in the audio is estimated unless --offset gives it")
    b.add_argument("--offset", type=float, help="with --midi: seconds into the audio where the MIDI file's time 0 falls")
    b.add_argument("--plot", metavar="FILE", help="also draw the waveform with beats, downbeats, bar numbers and tempo into a .png/.svg/.pdf")

    s = sub.add_parser("sweep", help="render a labelled grid over prompt weights, seeds, guidance, steps or strength", epilog="Options: docs/commands.md#sweep")
    s.add_argument("sweep")
    s.add_argument("--out", metavar="DIR", help="output folder (default: renders/<sweep name>/)")
    s.add_argument("--video", action="store_true", default=None, help="also write an mp4 along the x axis")
    s.add_argument("--batch-size", type=int, help="cells denoised together (overrides the sweep)")
    s.add_argument("--device", choices=DEVICE_NAMES, help="overrides the sweep")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    sh = sub.add_parser("show", help="print the timeline, settings and files a latentwalk video carries", epilog="Options: docs/commands.md#show")
    sh.add_argument("video")
    sh.add_argument("--json", action="store_true", help="the whole description as JSON (timeline YAML, resolved settings, files, store, version)")
    sh.add_argument("--yaml", action="store_true", help="only the timeline's YAML as written, to save and render as a timeline")
    return parser


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that change the timeline for one render or plan (see overrides.py)."""
    parser.add_argument("--draft", action="store_true", help="a cheap version with the timing kept: half size (>= 64 px), a quarter of the steps (>= 4), half the fps, spacing: t; written to <name>.draft.mp4 with its own store")
    parser.add_argument("--size", metavar="WxH", help="frame size in pixels, multiples of 8 (overrides the timeline and --draft)")
    parser.add_argument("--steps", type=_number(int), metavar="N", help="denoising steps (overrides the timeline and --draft)")
    parser.add_argument("--fps", type=_number(float), metavar="F", help="frames per second; keyframes keep their times (overrides the timeline and --draft)")
    parser.add_argument("--from", dest="from_", metavar="POS", help="start of a range of the video: seconds (12.5), beat:N or bar:N; its frames are the whole render's, from its store")
    parser.add_argument("--to", metavar="POS", help="end of the range (exclusive): seconds, beat:N or bar:N (default: the end)")


def _number(kind):
    """An argparse type whose error names the flag through UserError (argparse adds the flag)."""
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None

    convert.__name__ = kind.__name__
    return convert


def overrides_of(args: argparse.Namespace):
    """The Overrides the flags ask for, checked (before any audio analysis or model), or None."""
    from latentwalk.overrides import Overrides, check, parse_position, parse_size

    overrides = Overrides(
        draft=args.draft,
        size=parse_size(args.size) if args.size is not None else None,
        steps=args.steps,
        fps=args.fps,
        start=parse_position(args.from_, "--from") if args.from_ is not None else None,
        stop=parse_position(args.to, "--to") if args.to is not None else None,
    )
    check(overrides)
    return overrides if overrides != Overrides() else None


def cmd_render(args: argparse.Namespace) -> None:
    from latentwalk.api import render

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
    overrides = overrides_of(args)
    if is_video(args.timeline):  # a video latentwalk made: render it again from the timeline it carries
        overrides = from_video(args, overrides)
    if args.preview and args.plot and Path(args.preview).resolve() == Path(args.plot).resolve():
        raise UserError(f"--preview: {args.preview} is also the --plot file; give each its own name")
    if args.plot:
        from latentwalk.plot import _pyplot, check_plot_path

        check_plot_path(args.plot)  # a bad path or missing matplotlib fails before rendering
        _pyplot()
    watcher = PlotWatcher(args.timeline, overrides, args.out, args.plot) if args.plot else None
    try:
        result = render(
            args.timeline, args.out, frames_dir=args.frames, batch_size=args.batch_size, device=args.device, progress=not args.quiet,
            store_dir=args.store, fresh=args.fresh, overlap={"auto": None, "on": True, "off": False}[args.overlap], prune=args.prune,
            overwrite_frames=args.overwrite_frames, wait=args.wait,
            executor="ray" if args.ray is not None else None, ray_address=args.ray or None, ray_workers=args.ray_workers,
            chunk_frames=args.chunk_frames,
            overrides=overrides, preview=args.preview,
        )
    finally:
        if watcher is not None:
            watcher.stop()
    t = result.timings
    print(f"wrote {result.video} ({result.plan.n_frames} frames, {result.plan.duration:.2f}s) in {t['total_s']:.1f}s")
    usage = open_store(result.store).usage()
    print(f"{result.frames_reused} frames reused, {result.frames_rendered} rendered, store {usage.bytes / 1e6:.1f} MB ({result.store})")
    if result.farm:
        for w in result.farm["workers"]:
            print(f"worker {w['node']} (pid {w['pid']}): {w['frames']} frames in {w['busy_s']:.1f}s ({w['frames_per_s']:.2f} frames/s)")
        if result.farm["retries"]:
            print(f"{len(result.farm['retries'])} batches retried after a worker died")
        if result.farm.get("chunks"):  # the video encoded on the cluster (chunks.py)
            c = result.farm["chunks"]
            again = f", {len(c['retries'])} encoded again after a failure" if c["retries"] else ""
            print(f"video: {c['chunks']} chunks of {c['chunk_frames']} frames, {c['encoded']} encoded on the cluster, {c['reused']} reused{again}")
    if result.upscale:
        up = result.upscale
        print(f"upscaled to {up['width']}x{up['height']} ({up['method']}): {up['frames_made']} frames made, {up['frames_reused']} reused")
    print(f"manifest {result.manifest}")
    if args.plot:
        from latentwalk.plot import plot_distances

        manifest = json.loads(result.manifest.read_text())
        distances = [f.get("distance") for f in manifest["plan"]["frames"][:-1]]
        source = "stored frames"
        if any(d is None for d in distances):  # no placement (feedback renders): measure the video itself
            resolved = manifest.get("upscale") or manifest["timeline"]["resolved"]  # the video's size
            distances, source = video_distances(result.video, resolved["width"], resolved["height"]), "video frames"
        out = plot_distances(result.plan, distances, args.plot, segments=manifest.get("placement", {}).get("segments", ()), title=f"{Path(getattr(args.timeline, 'source', args.timeline)).name}  ({source})")
        median = f", median {statistics.median(distances):.4f}" if len(distances) else ""
        print(f"plot {out} ({len(distances)} distances between {source}{median})", file=sys.stderr)


PLOT_INTERVAL = 15.0  # seconds between redraws of `render --plot`'s live plan: a draw costs about a second


class PlotWatcher:
    """`render --plot`: while the render writes frames, redraw the plan with the frames written so far
    shaded (from its renderstate file), at most every `interval` seconds; the distances plot of the
    finished render replaces it."""

    def __init__(self, timeline: str, overrides, out: str | None, plot: str, interval: float | None = None):
        import threading

        from latentwalk.api import as_timeline, default_output
        from latentwalk.renderstate import read_state

        self.overrides, self.plot, self.interval = overrides, plot, PLOT_INTERVAL if interval is None else interval
        self.drawn = 0  # plots drawn while the render ran
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="latentwalk-plot", daemon=True)
        try:
            self.timeline = as_timeline(timeline)
        except (UserError, OSError):  # the render itself says what is wrong with it
            return
        whole = default_output(self.timeline)
        self.video = Path(out) if out is not None else overrides.video_name(whole) if overrides else whole
        before = read_state(self.video)  # an earlier render's: not this one's progress
        self.seen = before.updated if before else None
        self.thread.start()

    def run(self) -> None:
        from latentwalk.api import apply_overrides, overridden_plan
        from latentwalk.renderstate import read_state

        schedule = None
        while not self.stopped.wait(self.interval):
            state = read_state(self.video)
            if state is None or state.updated == self.seen:
                continue
            self.seen = state.updated
            try:
                if schedule is None:  # once the render streams frames: its audio analysis is cached by then
                    timeline = apply_overrides(self.timeline, self.overrides)
                    schedule = overridden_plan(timeline, self.overrides)[0]
                write_plot(schedule, timeline, self.plot, rendered=state, quiet=True)
                self.drawn += 1
            except Exception:  # the live plot only informs: the render goes on without it
                return

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()


def video_distances(video: Path, width: int, height: int) -> list[float]:
    """The placement distance (as in a manifest) between each frame of an mp4 and the next, decoded one frame at a time."""
    import subprocess
    import tempfile

    import numpy as np

    from latentwalk.encode import ffmpeg_exe
    from latentwalk.placement import frame_distances

    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(video), "-map", "0:v:0"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-"]
    size = width * height * 3
    distances, previous = [], None
    with tempfile.TemporaryFile() as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:  # a file: never blocks
        while len(chunk := proc.stdout.read(size)) == size:
            frame = np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)
            if previous is not None:
                distances.append(float(frame_distances([previous, frame])[0]))
            previous = frame
        proc.wait()
        err.seek(0)
        error = err.read().decode(errors="replace").strip()
    if proc.returncode != 0 or previous is None:
        raise RuntimeError(f"could not decode {video} for --plot: {error or 'no frames'}")
    return distances


def is_video(path: str) -> bool:
    from latentwalk.videometa import is_video as video

    return video(path)


def from_video(args: argparse.Namespace, overrides):
    """`render VIDEO.mp4`: args set from the video's embedded timeline (videometa.py); returns its overrides.

    Its own store, batch size and device key the frames as before, so nothing stored is denoised
    again; without --out the video goes beside the source (x.again.mp4), never over it.
    """
    from latentwalk.videometa import again_name, timeline_from_video

    if overrides is not None:
        raise UserError(
            "--draft, --size, --steps, --fps, --from, --to: not with a video, which renders again as it was made; "
            f"save its timeline (latentwalk show {args.timeline} --yaml > timeline.yaml) and render that with them"
        )
    video = Path(args.timeline)
    timeline, overrides, given = timeline_from_video(video)
    args.timeline = timeline
    args.out = args.out if args.out is not None else str(again_name(video))
    args.store = args.store if args.store is not None else given["store"]
    args.batch_size = args.batch_size if args.batch_size is not None else given["batch_size"]
    args.device = args.device if args.device is not None else given["device"]
    return overrides


def cmd_show(args: argparse.Namespace) -> None:
    from latentwalk.videometa import format_payload, read

    payload = read(args.video)
    if args.json and args.yaml:
        raise UserError("--json, --yaml: give one")
    if args.json:
        print(json.dumps(payload, indent=1))
    elif args.yaml:
        sys.stdout.write(payload["timeline"]["yaml"])
    else:
        print(format_payload(payload, Path(args.video)))


def cmd_store(args: argparse.Namespace) -> None:
    from latentwalk.api import prune_store

    target = Path(args.target)
    if target.is_file():
        if not args.prune:
            from latentwalk.api import as_timeline, default_output, default_store

            store = FrameStore(default_store(Path(args.out) if args.out else default_output(as_timeline(target))))
        else:
            store, removed = prune_store(target, args.out, device=args.device, batch_size=args.batch_size)
            print(f"pruned {removed.frames} frames and {removed.temp_files} temp files ({removed.bytes / 1e6:.1f} MB)")
    elif args.prune:
        raise UserError(f"--prune: needs a timeline to know which frames to keep, got the folder {args.target!r}")
    elif target.is_dir() or "://" in args.target:  # a folder, or a store at a URL (s3://...)
        store = open_store(args.target)
        if isinstance(store, FrameStore) and store.state() == "foreign":  # not "0 frames": it is no store at all
            raise UserError(f"store: {args.target!r} is not a frame store (no {MARKER} in it, and it holds other files)")
    else:
        raise UserError(f"store: no such frame store or timeline: {args.target!r}")
    usage = store.usage()
    print(f"{store.root}: {usage.frames} frames, {usage.bytes / 1e6:.1f} MB" + (f", {usage.temp_files} temp files" if usage.temp_files else ""))


def cmd_plan(args: argparse.Namespace) -> None:
    from latentwalk.api import apply_overrides, as_timeline, overridden_plan, plan_data, timeline_audio
    from latentwalk.overrides import slice_plan

    overrides = overrides_of(args)
    original = as_timeline(args.timeline)
    timeline = apply_overrides(original, overrides)
    if args.video and not args.plot:
        raise UserError("--video: only with --plot (it names the render whose progress the plot shows)")
    if args.plot:
        from latentwalk.plot import check_plot_path

        check_plot_path(args.plot)  # a bad path fails before the audio analysis
    analysis = timeline_audio(timeline)
    schedule, span = overridden_plan(timeline, overrides, analysis)
    if args.plot:  # the whole plan: its waveform starts at the video's start
        write_plot(schedule, timeline, args.plot, rendered=render_state(original, overrides, args.video))
    schedule = slice_plan(schedule, *span) if span else schedule  # a range: its frames, numbered as in the whole plan
    if args.json:
        json.dump(plan_data(schedule, timeline), sys.stdout)
        print()
        return
    print(format_plan(schedule))
    from latentwalk.control import plan_notes

    for line in plan_notes(schedule, timeline.settings):  # video to video, ControlNets
        print(f"\n{line}")
    from latentwalk.images import picture_notes

    notes = picture_notes(schedule, timeline.settings.width, timeline.settings.height)
    if notes:
        print("\n" + "\n".join(notes))
    from latentwalk.api import interpolation_data

    stages = interpolation_data(schedule, timeline)  # checks output.interpolate against the plan, like a render
    if "interpolate" in stages:
        stage = stages["interpolate"]
        print(f"\nnote: output.interpolate denoises {len(stage['denoised_frames'])} of {schedule.n_frames} frames (every keyframe's, "
              f"at most {stage['factor']} apart); the {stage['interpolated_frames']} between are interpolated ({stage['method']})")
    if stages.get("loop"):
        print("\nnote: loop: the last keyframe travels back to the first, so the last frame leads into frame 0")
    perceptual = [k.index for k in schedule.keyframes[:-1] if k.keyframe.spacing == "perceptual"]
    if perceptual:
        print(
            f"\nnote: segments {', '.join(map(str, perceptual))} use `spacing: perceptual`: the t above is each frame's "
            "perceived progress; its weight is placed at render time from probe frames (recorded in the render's manifest)"
            f"; probing stops once the probes predict even frames, at most {timeline.settings.placement_budget} probes per "
            "segment (placement_budget); the render's manifest and `render --plot` give each segment's probes and its "
            "predicted and measured evenness"
        )
        if timeline.settings.share_steps:
            print(
                f"note: frames between those segments' coarse probes share their first {timeline.settings.share_steps} of "
                f"{timeline.settings.steps} steps (share_steps); keyframe frames are denoised from their own noise"
            )


def render_state(timeline, overrides, video: str | None):
    """Where the last render of this plan's video is (renderstate.State), or None if none ran."""
    from latentwalk.api import default_output
    from latentwalk.renderstate import read_state

    if video is None:
        video = overrides.video_name(default_output(timeline)) if overrides else default_output(timeline)
    state = read_state(video)
    if video is not None and state is not None:
        done = "done" if state.finished else "in progress"
        print(f"render of {video}: {state.written}/{state.total} frames written ({done})", file=sys.stderr)
    return state


def write_plot(schedule, timeline, path: str, rendered=None, quiet: bool = False) -> None:
    """Draw the plan with the timeline's audio clip as its waveform; say where it went on stderr."""
    from latentwalk.api import timeline_audio, with_tracked_downbeat
    from latentwalk.audio import SAMPLE_RATE
    from latentwalk.plot import plot_plan

    samples, bpb, down = None, 4, 0
    if timeline.audio is not None:
        timeline = with_tracked_downbeat(timeline, timeline_audio(timeline))  # cached: no second analysis
        bpb, down = timeline.audio.beats_per_bar, timeline.audio.downbeat or 0
        if timeline.audio.path is not None:
            from latentwalk.audio import load_audio

            # The stretch the plot's time axis shows (the video, or a range of it), not the whole
            # file: a short video of a long song keeps its waveform's detail.
            start = timeline.audio.start + (schedule.frames[0].time if schedule.frames else 0.0)
            end = start + schedule.duration
            end = end if timeline.audio.end is None else min(end, timeline.audio.end)
            samples = load_audio(timeline.audio.path, start, end, SAMPLE_RATE)
    out = plot_plan(
        schedule, path, samples=samples, sample_rate=SAMPLE_RATE, beats_per_bar=bpb, downbeat=down, title=Path(timeline.source).name,
        rendered=rendered,
    )
    wave = f": waveform {len(samples) / SAMPLE_RATE:.3f}s of audio" if samples is not None else ": no audio"
    if not quiet:
        print(f"plot {out} ({schedule.n_frames} frames, {schedule.duration:.3f}s{wave})", file=sys.stderr)


def format_plan(schedule) -> str:
    """A table for people: one row per frame, keyframes marked with their prompt."""
    from latentwalk.schedule import track_value

    bpm = f", {schedule.bpm:.2f} bpm" if schedule.bpm else ""
    lines = [f"{schedule.n_frames} frames at {schedule.fps:g} fps = {schedule.duration:.3f}s{bpm}"]
    lines += [f"beats: {note}" for note in schedule.beat_notes] + [""]
    for k in schedule.keyframes:
        pos = k.keyframe.position
        origin = f" [{k.keyframe.origin}]" if k.keyframe.origin else ""
        lines.append(f"keyframe {k.index}: {pos.unit} {pos.value:g} -> frame {k.frame} ({k.time:.3f}s) seed {k.keyframe.seed}{origin}: "
                     + " ".join(([f"[image: {Path(k.keyframe.image).name}]"] if k.keyframe.image else []) + ([k.keyframe.prompt] if k.keyframe.prompt or not k.keyframe.image else [])))
    others = [name for name in schedule.tracks if name != "guidance"]
    header = f"{'frame':>6} {'time':>8} {'beat':>7} {'seg':>4} {'t':>6} {'noise_t':>7} {'seeds':>11} {'guid':>5}"
    lines += ["", header + "".join(f" {name:>{max(7, len(name))}}" for name in others)]
    key_frames = {k.frame for k in schedule.keyframes}
    for r in schedule.frames:
        mark = " *" if r.frame in key_frames else ""
        lines.append(
            f"{r.frame:>6} {r.time:>8.3f} {r.beat:>7.2f} {r.segment:>4} {r.t:>6.3f} {r.noise_t:>7.3f} "
            f"{f'{r.seed_a}->{r.seed_b}':>11} {r.guidance:>5.2f}"
            + "".join(f" {track_value(r, name):>{max(7, len(name))}.3f}" for name in others)
            + mark
        )
    return "\n".join(lines)


def cmd_beats(args: argparse.Namespace) -> None:
    from latentwalk.api import analyze_audio, midi_analysis
    from latentwalk.audio import AnalysisSettings, check_settings

    settings = AnalysisSettings(args.start, args.end, args.bpm, args.tracker, args.beats_per_bar)
    check_settings(settings, {"start": "--start", "end": "--end", "bpm": "--bpm"})
    if args.offset is not None and args.midi is None:
        raise UserError("--offset: aligns a --midi file with the audio; give --midi too")
    if args.plot:
        from latentwalk.plot import check_plot_path

        check_plot_path(args.plot)
    if args.midi is not None:
        analysis = midi_analysis(args.audio, args.midi, args.offset, args.start, args.end)
    else:
        analysis = analyze_audio(args.audio, args.start, args.end, args.bpm, args.tracker, args.beats_per_bar)
    beats = [round(float(b), 4) for b in analysis.beats]
    downbeats = [round(float(b), 4) for b in analysis.downbeats]
    if args.plot:
        from latentwalk.audio import SAMPLE_RATE, load_audio
        from latentwalk.plot import plot_beats

        samples = load_audio(args.audio, args.start, args.end, SAMPLE_RATE)
        out = plot_beats(analysis, samples, SAMPLE_RATE, args.plot, title=Path(args.audio).name)
        print(f"plot {out} ({len(beats)} beats, {len(downbeats)} bars)", file=sys.stderr)
    if args.json:
        tempo = [round(float(t), 3) for t in analysis.tempo]
        print(json.dumps({
            "bpm": round(analysis.bpm, 3), "tracker": analysis.tracker, "beats": beats, "downbeats": downbeats, "tempo": tempo,
            "notes": list(analysis.notes), "meter": analysis.meter, "beats_per_bar": analysis.beats_per_bar,
            "meter_confidence": round(analysis.meter_confidence, 3),
        }))
        return
    print(f"tempo: {analysis.bpm:.2f} bpm (median), {len(beats)} beats in {analysis.duration:.2f}s, tracker: {analysis.tracker}")
    for note in analysis.notes:
        print(f"beats: {note}")
    if analysis.meter:
        how = "inferred" if not args.beats_per_bar else "given"
        print(f"meter: {analysis.meter} ({analysis.beats_per_bar} beats to the bar, {how}; confidence {analysis.meter_confidence:.2f})")
    if analysis.downbeat_index is not None:
        print(f"first downbeat: beat {analysis.downbeat_index} ({len(downbeats)} bars)")
    bar_starts = set(downbeats)
    for i, b in enumerate(beats):
        print(f"{i:5d} {b:9.3f}" + (" |" if b in bar_starts else ""))


def cmd_sweep(args: argparse.Namespace) -> None:
    from latentwalk.sweep import run_sweep

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
    result = run_sweep(
        args.sweep, args.out, video=args.video, device=args.device, batch_size=args.batch_size, progress=not args.quiet
    )
    rows, cols = result.sweep.grid_shape
    print(f"wrote {len(result.cells)} cells ({rows}x{cols}) in {result.timings['total_s']:.1f}s")
    print(f"sheet {result.sheet}")
    for video in result.videos:
        print(f"video {video}")
    print(f"manifest {result.manifest}")


COMMANDS = {"render": cmd_render, "store": cmd_store, "plan": cmd_plan, "beats": cmd_beats, "sweep": cmd_sweep, "show": cmd_show}


def quiet_libraries() -> None:
    """Silence the libraries' own loading bars and notices: --quiet prints results only."""
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        os.environ[name] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = os.environ["DIFFUSERS_VERBOSITY"] = "error"
    for module in ("transformers", "diffusers"):  # already imported (tests, library use): tell them directly
        if module in sys.modules:
            sys.modules[module].logging.set_verbosity_error()
            sys.modules[module].logging.disable_progress_bar()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup path (partial files, locks) runs."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def pointer(error: UserError, argv: list[str] | None) -> str:
    """` (see docs/...)`: the manual's section for a timeline field, or the command's options for a flag."""
    if error.docs:
        return f" (see {error.docs})"
    command = next((a for a in (sys.argv[1:] if argv is None else argv) if a in COMMANDS), None)
    if command is not None and str(error).startswith("--"):
        return f" (see docs/commands.md#{command})"
    return ""


def main(argv: list[str] | None = None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("latentwalk: warning: %(message)s"))
    log = logging.getLogger("latentwalk")
    log.addHandler(handler)
    propagate, log.propagate = log.propagate, False
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "quiet", False):
            quiet_libraries()
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"latentwalk: error: {e}{pointer(e, argv)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and cut short
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"latentwalk: {how}; partial files removed, frames already rendered kept in the store: run again to resume", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT)
    except OSError as e:
        print(f"latentwalk: error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("latentwalk: error: out of memory; try a smaller batch_size, width and height, or vae_tiling: true", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"latentwalk: internal error: {type(e).__name__}: {e} (set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def describe_os_error(e: OSError) -> str:
    """One line for a file-system failure; for a full disk, what was kept."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENOSPC:
        return (
            f"{where}no space left on device. Nothing was replaced: an earlier video and its manifest are "
            "untouched, and frames already stored are kept, so running again after freeing space resumes"
        )
    return f"{where}{e.strerror or e}"


if __name__ == "__main__":
    sys.exit(main())
