"""Benchmark smooth travel on the embedded model: jumpiness of walks, midpoint detours, speed (through `latentwalk render`).

Not a test: it prints tables (and writes JSON with --json). Walks are one segment each
(prompt A, seed A → prompt B, seed B), 128x128, 12 fps × 4 s = 48 frames plus keyframe B,
20 DDIM steps, `easing: linear`, batch 8.

  (a) placement  per walk, adjacent-frame distance p95/median, max/median, PPL (sum), PDV
                 (variance) in pixel MAD and 1 − SSIM, uniform t against perceptual placement;
                 frames denoised (probes included); rank correlation of the placement
                 distance with pixel and SSIM distance over every adjacent pair
  (b) sharing    per walk and `share_steps`: the same smoothness figures, each shared frame's distance
                 from the same frame denoised from its own noise, UNet steps run, and wall time
                 against today's uniform render (`spacing: t`, no sharing)
  (c) detours    text slerp against `interpolation: blend` (blended guided noise predictions) at t = ¼, ½, ¾:
                 brightness outside the ends' range and the path's detour (d(A,M) + d(M,B)) / d(A,B)
  (d) speed      whole-process frames per second, `latentwalk render` against
                 nateraw/stable-diffusion-videos' walk() (benchmarks/nateraw_walk.py, run by
                 --nateraw-python), alternating A B A B; and render --overlap off against on

  python benchmarks/bench_smooth.py                        # every part
  python benchmarks/bench_smooth.py --parts placement,detours --walks 2
  python benchmarks/bench_smooth.py --parts sharing --walks 2 --depths 0,8,12
  python benchmarks/bench_smooth.py --parts speed --nateraw-python /path/to/venv/bin/python --runs 3
"""

import argparse
import os
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
FPS, SECONDS, SIZE, STEPS, BATCH = 12, 4, 128, 20, 8

# Walks between scenes of the toy world (latentwalk/toy/world.py): time of day, weather, landscape.
WALKS = [
    ("mountains at sunset", 1, "mountains at night", 2),
    ("a sunset over the sea with a red sun", 12, "a clear night over the city with stars", 13),  # the demo's segment
    ("a clear day over the mountains with a sun", 11, "a snowy day over the mountains", 11),
    ("the forest in the rain", 3, "a desert during the day", 4),
    ("a foggy sea at dusk", 5, "a snowy city by night", 6),
]
# Detour cases: both ends dark or warm, where a text midpoint may pass through a bright day.
DETOURS = [
    ("a sunset over the sea with a red sun", 12, "a clear night over the city with stars", 13),
    ("mountains at sunset", 1, "mountains at night", 1),
    ("the sea at sunset", 5, "the city at night", 5),
]


def luma(frames: np.ndarray) -> np.ndarray:
    """Mean BT.601 luma per frame in [0, 1]."""
    return (np.asarray(frames, np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])).mean(axis=(-2, -1))


def metrics_row(frames: np.ndarray) -> dict:
    from latentwalk.smooth import DISTANCES, adjacent_distances, walk_metrics

    return {name: asdict(walk_metrics(adjacent_distances(frames, DISTANCES[name]))) for name in ("pixel", "ssim")}


def fmt(m: dict) -> str:
    return " ".join(f"{m[k]['p95_over_median']:5.2f} {m[k]['max_over_median']:5.2f} {m[k]['ppl']:6.3f} {m[k]['pdv']:.1e}"
                    for k in ("pixel", "ssim"))


def walk_timeline(folder: Path, walk: tuple, spacing: str, interpolation: str = "slerp", frames: int = FPS * SECONDS + 1,
                  share_steps: int | str = "auto") -> Path:
    """One segment A → B of `frames` frames (keyframe B last), linear easing, as `latentwalk render` reads it."""
    prompt_a, seed_a, prompt_b, seed_b = walk
    path = folder / f"walk-{spacing}-{interpolation}-{share_steps}.yaml"
    path.write_text("\n".join([
        "model: toy", f"width: {SIZE}", f"height: {SIZE}", f"fps: {FPS}", f"steps: {STEPS}", "scheduler: ddim",
        f"batch_size: {BATCH}", "device: cpu", f"spacing: {spacing}", f"interpolation: {interpolation}", f"share_steps: {share_steps}",
        f"end: {{frame: {frames}}}", "keyframes:",
        f"  - {{frame: 0, prompt: '{prompt_a}', seed: {seed_a}}}",
        f"  - {{frame: {frames - 1}, prompt: '{prompt_b}', seed: {seed_b}}}",
    ]) + "\n")
    return path


def rendered_frames(path: Path, out: Path) -> tuple[np.ndarray, object, float]:
    """Render through the engine (api.render); (frames, result, wall seconds)."""
    from latentwalk.api import frame_plan, render
    from latentwalk.store import FrameStore
    from latentwalk.timeline import load_timeline

    clock = time.perf_counter()
    result = render(path, out, progress=False)
    wall = time.perf_counter() - clock
    store = FrameStore(result.store)
    keys = frame_plan(load_timeline(path), result.plan, store).keys
    return np.stack([store.load(k, (SIZE, SIZE, 3)) for k in keys]), result, wall


def part_placement(walks: list, plots: Path | None = None) -> dict:
    """(a) `spacing: t` against `spacing: perceptual`, per walk, rendered by `latentwalk render`'s engine."""
    from latentwalk.smooth import DISTANCES, adjacent_distances, rank_correlation

    print(f"\n(a) placement: {FPS} fps x {SECONDS} s, {SIZE}px, {STEPS} DDIM steps, linear easing, batch {BATCH}")
    print(f"{'walk':58s} {'spacing':10s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV | denoised  wall s")
    rows, pooled = [], {"perceptual": [], "pixel": [], "ssim": []}
    for walk in walks:
        name = f"{walk[0]} ({walk[1]}) -> {walk[2]} ({walk[3]})"
        for spacing in ("t", "perceptual"):
            with tempfile.TemporaryDirectory() as tmp:
                frames, result, wall = rendered_frames(walk_timeline(Path(tmp), walk, spacing), Path(tmp) / "w.mp4")
            m = metrics_row(frames)
            print(f"{name[:58]:58s} {spacing:10s} | {fmt(m)} | {result.frames_rendered:5d} {wall:7.1f}")
            if plots is not None:
                from latentwalk.placement import frame_distances
                from latentwalk.plot import plot_distances

                out = plots / f"walk{walks.index(walk)}-{spacing}.png"
                plot_distances(result.plan, frame_distances(frames), out, title=f"{name}, spacing: {spacing}")
            rows.append({"walk": name, "spacing": spacing, "metrics": m, "frames_rendered": result.frames_rendered,
                         "probes_rendered": result.probes_rendered, "wall_s": wall, "t": [f.t for f in result.plan.frames]})
            if spacing == "t":
                for name_d in pooled:
                    pooled[name_d].extend(adjacent_distances(frames, DISTANCES[name_d]).tolist())
    rho = {k: rank_correlation(pooled["perceptual"], pooled[k]) for k in ("pixel", "ssim")}
    print(f"rank correlation of the placement distance over {len(pooled['pixel'])} adjacent pairs: "
          f"pixel {rho['pixel']:.3f}, ssim {rho['ssim']:.3f} (pixel vs ssim {rank_correlation(pooled['pixel'], pooled['ssim']):.3f})")
    goal = all(r["metrics"][k]["p95_over_median"] <= 2.0 and r["metrics"][k]["max_over_median"] <= 3.0
               for r in rows if r["spacing"] == "perceptual" for k in ("pixel", "ssim"))
    print(f"goal p95/median <= 2.0 and max/median <= 3.0 on every walk, both distances: {'met' if goal else 'NOT met'}")
    return {"walks": rows, "rank_correlation": rho, "goal_met": goal}


def steps_denoised(timeline, inputs, manifest: dict) -> int:
    """UNet steps per row (a guidance pair counted once) the render ran: every distinct probe and video frame."""
    from latentwalk.api import frame_plan, plan
    from latentwalk.placement import placed_segments
    from latentwalk.store import FrameStore

    schedule = plan(timeline)
    unplaced = frame_plan(timeline, schedule, FrameStore(tempfile.mkdtemp())).inputs
    segments = {s.index: s for s in placed_segments(schedule, unplaced, timeline.settings.share_steps)}
    probes = [segments[seg["index"]].probe(t) for seg in manifest["placement"]["segments"] for t in seg["probe_t"]]
    return sum(f.steps - (f.share[2] if f.share else 0) for f in set(probes) | set(inputs))


def part_sharing(walks: list, depths: list[int]) -> dict:
    """(b) shared trajectories: share_steps against smoothness, closeness to from-scratch frames, and wall time."""
    from latentwalk.api import frame_plan
    from latentwalk.stages import engine_settings
    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.engine import render_frames
    from latentwalk.smooth import pixel_distance, ssim
    from latentwalk.store import FrameStore
    from latentwalk.timeline import load_timeline

    print(f"\n(b) shared trajectories: {FPS} fps x {SECONDS} s, {SIZE}px, {STEPS} DDIM steps, linear easing, batch {BATCH};"
          " `spacing: t` with no sharing is today's uniform render")
    print(f"{'walk':40s} {'spacing':10s} {'share':>5s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV |"
          " vs scratch: pixel med/max  1-SSIM med | steps  wall s  wall/uniform")
    backend = load_backend(ModelSpec("toy"), device="cpu")
    rows = []
    for walk in walks:
        name = f"{walk[0]} -> {walk[2]}"
        uniform_wall = None
        for spacing, depth in [("t", 0)] + [("perceptual", d) for d in depths]:
            with tempfile.TemporaryDirectory() as tmp:
                path = walk_timeline(Path(tmp), walk, spacing, share_steps=depth)
                frames, result, wall = rendered_frames(path, Path(tmp) / "w.mp4")
                manifest = json.loads(result.manifest.read_text())
                timeline = load_timeline(path)
                inputs = frame_plan(timeline, result.plan, FrameStore(result.store)).inputs
            uniform_wall = wall if spacing == "t" else uniform_wall
            m = metrics_row(frames)
            # Every shared frame against the same frame denoised from its own noise.
            shared = [i for i, f in enumerate(inputs) if f.share]
            scratch: dict = {}
            if shared:
                wanted = list(dict.fromkeys(replace_share(inputs[i]) for i in shared))
                render_frames(backend, wanted, engine_settings(timeline.settings),
                              lambda batch, images: scratch.update(zip(batch, images)))
            ref = np.stack([scratch[replace_share(inputs[i])] for i in shared]) if shared else np.empty((0,))
            adj = np.median(np.abs(np.diff(frames.astype(np.float64) / 255, axis=0)).mean(axis=(1, 2, 3)))
            vs_pixel = pixel_distance(frames[shared], ref) / adj if shared else np.zeros(1)
            vs_ssim = 1 - ssim(frames[shared], ref) if shared else np.zeros(1)
            steps = steps_denoised(timeline, inputs, manifest)
            print(f"{name[:40]:40s} {spacing:10s} {depth:5d} | {fmt(m)} | {np.median(vs_pixel):5.2f} {np.max(vs_pixel):5.2f}"
                  f"  {np.median(vs_ssim):.3f}        | {steps:5d} {wall:6.1f}  {wall / uniform_wall:5.2f}")
            rows.append({"walk": name, "spacing": spacing, "share_steps": depth, "metrics": m, "wall_s": wall,
                         "wall_over_uniform": wall / uniform_wall, "steps_denoised": steps, "shared_frames": len(shared),
                         "vs_scratch_pixel_over_adjacent_median": [float(np.median(vs_pixel)), float(np.max(vs_pixel))],
                         "vs_scratch_1_minus_ssim_median": float(np.median(vs_ssim))})
    print("vs scratch: a shared frame's pixel distance to the same frame denoised from its own noise, in units of the"
          " walk's median adjacent-frame pixel distance; wall: in-process render (model loaded per render), this machine")
    return {"rows": rows}


def replace_share(frame):
    from dataclasses import replace

    return replace(frame, share=None)


def part_detours(midpoints: int = 3) -> dict:
    """(c) midpoint detours: text slerp against the blended guided noise predictions (`interpolation: blend`)."""
    from latentwalk.smooth import pixel_distance

    print(f"\n(c) midpoint detours at {midpoints} evenly spaced middles: 'above' = brightest middle frame above the "
          "brighter end (luma); detour = max over middles of (d(A,M) + d(M,B)) / d(A,B) in pixel MAD (1 = on the way)")
    rows = []
    for walk in DETOURS:
        for method in ("slerp", "blend"):
            with tempfile.TemporaryDirectory() as tmp:
                path = walk_timeline(Path(tmp), walk, "t", method, frames=midpoints + 2)
                frames, result, wall = rendered_frames(path, Path(tmp) / "w.mp4")
            y = luma(frames)
            above = float(max(y[1:-1].max() - max(y[0], y[-1]), 0.0))
            base = float(pixel_distance(frames[0], frames[-1]))
            detour = float(max((pixel_distance(frames[0], f) + pixel_distance(f, frames[-1])) / base for f in frames[1:-1]))
            print(f"{walk[0][:24] + ' -> ' + walk[2][:26]:54s} {method:6s} luma {' '.join(f'{v:.3f}' for v in y)} "
                  f"above {above:.3f} detour {detour:.2f} ({wall:.1f} s)")
            rows.append({"case": f"{walk[0]} ({walk[1]}) -> {walk[2]} ({walk[3]})", "method": method, "luma": y.tolist(),
                         "above_ends": above, "detour": detour, "wall_s": wall})
    for method in ("slerp", "blend"):
        mine = [r for r in rows if r["method"] == method]
        print(f"  {method:6s} mean detour {np.mean([r['detour'] for r in mine]):.2f}, "
              f"mean brightness above the ends {np.mean([r['above_ends'] for r in mine]):.3f}, "
              f"wall {np.sum([r['wall_s'] for r in mine]):.1f} s")
    return {"rows": rows}


def write_timeline(folder: Path, prompts: tuple[str, str], seeds: tuple[int, int], frames: int, spacing: str) -> Path:
    path = folder / "walk.yaml"
    path.write_text("\n".join([
        "model: toy", f"width: {SIZE}", f"height: {SIZE}", f"fps: {FPS}", f"steps: {STEPS}", "scheduler: ddim",
        f"batch_size: {BATCH}", "device: cpu", f"spacing: {spacing}", f"end: {{frame: {frames}}}", "keyframes:",
        f"  - {{frame: 0, prompt: '{prompts[0]}', seed: {seeds[0]}}}",
        f"  - {{frame: {frames - 1}, prompt: '{prompts[1]}', seed: {seeds[1]}}}",
    ]) + "\n")
    return path


def timed(cmd: list[str]) -> float:
    """Whole-process wall seconds of one run (start-up, model load and encoding included)."""
    clock = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - clock
    if done.returncode:
        raise SystemExit(f"{cmd[0]} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def alternate(a: list[str], b: list[str], runs: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Run A and B in turn (A B A B ...) after `warmup` uncounted pairs, so drift hits both alike."""
    wall_a, wall_b = [], []
    for i in range(warmup + runs):
        x, y = timed(a), timed(b)
        if i >= warmup:
            wall_a.append(x)
            wall_b.append(y)
    return wall_a, wall_b


def part_speed(nateraw_python: str | None, runs: int, frames: int, spacing: str = "perceptual") -> dict:
    """(d) whole-process frames per second against nateraw's walk(), and overlap on/off."""
    prompts, seeds = (WALKS[0][0], WALKS[0][2]), (WALKS[0][1], WALKS[0][3])
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timeline = write_timeline(tmp, prompts, seeds, frames, spacing)
        ours = [sys.executable, "-m", "latentwalk.cli", "render", str(timeline), "--out", str(tmp / "a.mp4"), "--fresh", "--quiet"]
        theirs_spacing = "same spacing as nateraw (uniform t): `spacing: t`" if spacing == "t" else "`spacing: perceptual` (probes included)"
        print(f"  latentwalk runs with {theirs_spacing}")
        print(f"\n(d) speed, whole process: {frames} frames, {SIZE}px, {STEPS} DDIM steps, batch {BATCH}, {runs} pairs A B A B")
        if nateraw_python:
            theirs = [nateraw_python, str(HERE / "nateraw_walk.py"), "--model", "toy", "--prompts", *prompts,
                      "--seeds", *map(str, seeds), "--frames", str(frames), "--size", str(SIZE), "--steps", str(STEPS),
                      "--batch-size", str(BATCH), "--out", str(tmp / "nateraw")]
            wa, wb = alternate(ours, theirs, runs)
            ratio = [b / a for a, b in zip(wa, wb)]  # fps(ours) / fps(theirs), pair by pair
            print(f"  latentwalk render   median {statistics.median(wa):6.1f} s  {frames / statistics.median(wa):5.2f} fps")
            print(f"  nateraw walk()      median {statistics.median(wb):6.1f} s  {frames / statistics.median(wb):5.2f} fps")
            print(f"  ratio (fps latentwalk / fps nateraw), median of pairs: {statistics.median(ratio):.2f}x "
                  f"(min {min(ratio):.2f}, max {max(ratio):.2f})")
            result["vs_nateraw"] = {"latentwalk_s": wa, "nateraw_s": wb, "ratio_median": statistics.median(ratio)}
        wa, wb = alternate(ours + ["--overlap", "off"], ours + ["--overlap", "on"], runs)
        ratio = [b / a for a, b in zip(wa, wb)]
        print(f"  render --overlap off median {statistics.median(wa):6.1f} s  {frames / statistics.median(wa):5.2f} fps")
        print(f"  render --overlap on  median {statistics.median(wb):6.1f} s  {frames / statistics.median(wb):5.2f} fps")
        print(f"  ratio (fps off / fps on), median of pairs: {statistics.median(ratio):.2f}x")
        result["overlap"] = {"no_overlap_s": wa, "overlap_s": wb, "ratio_median": statistics.median(ratio)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="placement,sharing,detours,speed")
    parser.add_argument("--walks", type=int, default=len(WALKS), help="how many of the walks to run (placement)")
    parser.add_argument("--nateraw-python", help="python of a virtualenv with stable-diffusion-videos installed")
    parser.add_argument("--runs", type=int, default=3, help="counted A B pairs per speed comparison")
    parser.add_argument("--frames", type=int, default=96, help="frames per speed run")
    parser.add_argument("--speed-spacing", default="perceptual", choices=["perceptual", "t"], help="latentwalk's spacing in the speed runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--depths", default="0,6,8,10,12,14", help="share_steps values of the sharing part")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plots", type=Path, help="write each placement walk's distance plot into this folder")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"settings": {"fps": FPS, "seconds": SECONDS, "size": SIZE, "steps": STEPS, "batch": BATCH,
                                  "threads": torch.get_num_threads(), "load": os.getloadavg()}}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "placement" in parts:
        results["placement"] = part_placement(WALKS[: args.walks], args.plots)
    if "sharing" in parts:
        results["sharing"] = part_sharing(WALKS[: args.walks], [int(d) for d in args.depths.split(",")])
    if "detours" in parts:
        results["detours"] = part_detours()
    if "speed" in parts:
        results["speed"] = part_speed(args.nateraw_python, args.runs, args.frames, args.speed_spacing)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
