"""Benchmark smooth travel on the embedded model: jumpiness of walks, shared trajectories, midpoint detours, speed.

Not a test: it prints tables (and writes JSON with --json). Walks are one segment each
(prompt A, seed A → prompt B, seed B), 128x128, 12 fps × 4 s = 48 frames plus keyframe B,
20 DDIM steps, `easing: linear`, batch 8.

  (a) placement  per walk, adjacent-frame distance p95/median, max/median, PPL (sum), PDV
                 (variance) in pixel MAD and 1 − SSIM, uniform t against perceptual placement;
                 extra UNet evaluations spent on probes; rank correlation of the placement
                 distance with pixel and SSIM distance over every adjacent pair
  (b) sharing    shared-trajectory depths: smoothness, distance of shared frames from their
                 from-scratch versions, UNet evaluations and wall time
  (c) detours    text slerp, text lerp and blended guided noise predictions at t = ¼, ½, ¾:
                 brightness outside the ends' range and the path's detour (d(A,M) + d(M,B)) / d(A,B)
  (d) speed      whole-process frames per second, `latentwalk render` against
                 nateraw/stable-diffusion-videos' walk() (benchmarks/nateraw_walk.py, run by
                 --nateraw-python), alternating A B A B; and render --no-overlap against default

  python benchmarks/bench_smooth.py                        # every part
  python benchmarks/bench_smooth.py --parts placement,detours --walks 2
  python benchmarks/bench_smooth.py --parts speed --nateraw-python /path/to/venv/bin/python --runs 3
"""

import argparse
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
SHARE_DEPTHS = (0, 5, 10, 15)


def luma(frames: np.ndarray) -> np.ndarray:
    """Mean BT.601 luma per frame in [0, 1]."""
    return (np.asarray(frames, np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])).mean(axis=(-2, -1))


def metrics_row(frames: np.ndarray) -> dict:
    from latentwalk.smooth import DISTANCES, adjacent_distances, walk_metrics

    return {name: asdict(walk_metrics(adjacent_distances(frames, DISTANCES[name]))) for name in ("pixel", "ssim")}


def fmt(m: dict) -> str:
    return " ".join(f"{m[k]['p95_over_median']:5.2f} {m[k]['max_over_median']:5.2f} {m[k]['ppl']:6.3f} {m[k]['pdv']:.1e}"
                    for k in ("pixel", "ssim"))


def part_placement(model, walks: list, plan, snap: float) -> dict:
    """(a) uniform t against perceptual placement, per walk."""
    from latentwalk.smooth import DISTANCES, adjacent_distances, rank_correlation
    from latentwalk.smooth_proto import Segment, segment_context, smooth_segment, uniform_segment

    print(f"\n(a) placement: {FPS} fps x {SECONDS} s, {SIZE}px, {STEPS} DDIM steps, linear easing, batch {BATCH}, "
          f"probes: coarse {plan.batch_size} + {plan.rounds} rounds, snap {snap}")
    print(f"{'walk':58s} {'spacing':10s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV | UNet rows  wall s")
    rows, pooled = [], {"perceptual": [], "pixel": [], "ssim": []}
    for prompt_a, seed_a, prompt_b, seed_b in walks:
        seg = Segment(prompt_a, seed_a, prompt_b, seed_b, FPS * SECONDS, steps=STEPS, width=SIZE, height=SIZE)
        ctx = segment_context(model, seg)
        name = f"{prompt_a} ({seed_a}) -> {prompt_b} ({seed_b})"
        uniform = uniform_segment(model, ctx, seg, BATCH)
        smooth = smooth_segment(model, ctx, seg, plan, snap=snap)
        for label, r in (("t", uniform), ("perceptual", smooth)):
            m = metrics_row(r.frames)
            print(f"{name[:58]:58s} {label:10s} | {fmt(m)} | {r.unet_rows:5d} {r.wall_s:7.1f}")
            rows.append({"walk": name, "spacing": label, "metrics": m, "unet_rows": r.unet_rows, "wall_s": r.wall_s,
                         "probes": len(r.probe_t) if label != "t" else 0, "reused": r.reused, "t": r.t.tolist()})
        extra = smooth.unet_rows - uniform.unet_rows
        print(f"{'':58s} probes {len(smooth.probe_t)}, reused as frames {smooth.reused}, "
              f"extra UNet rows {extra:+d} ({extra / uniform.unet_rows:+.0%})")
        for name_d in pooled:
            pooled[name_d].extend(adjacent_distances(uniform.frames, DISTANCES[name_d]).tolist())
    rho = {k: rank_correlation(pooled["perceptual"], pooled[k]) for k in ("pixel", "ssim")}
    print(f"rank correlation of the placement distance over {len(pooled['pixel'])} adjacent pairs: "
          f"pixel {rho['pixel']:.3f}, ssim {rho['ssim']:.3f} (pixel vs ssim {rank_correlation(pooled['pixel'], pooled['ssim']):.3f})")
    goal = all(r["metrics"][k]["p95_over_median"] <= 2.0 and r["metrics"][k]["max_over_median"] <= 3.0
               for r in rows if r["spacing"] == "perceptual" for k in ("pixel", "ssim"))
    print(f"goal p95/median <= 2.0 and max/median <= 3.0 on every walk, both distances: {'met' if goal else 'NOT met'}")
    return {"walks": rows, "rank_correlation": rho, "goal_met": goal}


def part_sharing(model, walks: list, plan) -> dict:
    """(b) shared trajectories: the same probes (captured at every depth), frames started at each depth."""
    from latentwalk.smooth import pixel_distance, ssim_distance
    from latentwalk.smooth_proto import Segment, probe_segment, segment_context, smooth_segment

    print(f"\n(b) shared trajectories (latentblending): frames not probed start at step d of {STEPS} "
          f"from a slerp of the two nearest probes' latents")
    print(f"{'walk':40s} {'depth':>5s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV | "
          f"vs scratch: MAD max, 1-SSIM max | UNet rows  wall s")
    rows = []
    for prompt_a, seed_a, prompt_b, seed_b in walks:
        seg = Segment(prompt_a, seed_a, prompt_b, seed_b, FPS * SECONDS, steps=STEPS, width=SIZE, height=SIZE)
        ctx = segment_context(model, seg)
        probed = probe_segment(model, ctx, seg, plan, tuple(d for d in SHARE_DEPTHS if d > 0))
        scratch = None
        for depth in SHARE_DEPTHS:
            r = smooth_segment(model, ctx, seg, plan, share_depth=depth, probed=probed)
            scratch = r if depth == 0 else scratch
            m = metrics_row(r.frames)
            dev_mad = float(pixel_distance(r.frames, scratch.frames).max())
            dev_ssim = float(ssim_distance(r.frames, scratch.frames).max())
            print(f"{prompt_a[:18] + '->' + prompt_b[:20]:40s} {depth:5d} | {fmt(m)} | {dev_mad:8.4f} {dev_ssim:8.4f} "
                  f"| {r.unet_rows:5d} {r.wall_s:7.1f}")
            rows.append({"walk": f"{prompt_a} -> {prompt_b}", "depth": depth, "metrics": m, "max_mad_vs_scratch": dev_mad,
                         "max_ssim_distance_vs_scratch": dev_ssim, "unet_rows": r.unet_rows, "wall_s": r.wall_s})
    return {"rows": rows}


def part_detours(model) -> dict:
    """(c) midpoint detours: where does the middle of the path go, per conditioning method."""
    from latentwalk.smooth import pixel_distance
    from latentwalk.smooth_proto import Renders, Segment, render_blended, render_ts, segment_context

    ts = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    print("\n(c) midpoint detours at t = 1/4, 1/2, 3/4: luma of the frames; 'above' = brightest middle frame "
          "above the brighter end; detour = max over middles of (d(A,M) + d(M,B)) / d(A,B) in pixel MAD (1 = on the way)")
    rows = []
    for prompt_a, seed_a, prompt_b, seed_b in DETOURS:
        seg = Segment(prompt_a, seed_a, prompt_b, seed_b, FPS * SECONDS, steps=STEPS, width=SIZE, height=SIZE)
        ctx = segment_context(model, seg)
        for method in ("slerp", "lerp", "eps-blend"):
            renders = Renders()
            clock = time.perf_counter()
            if method == "eps-blend":
                render_blended(model, ctx, seg, ts, renders, len(ts))
            else:
                render_ts(model, ctx, Segment(**{**asdict(seg), "interpolation": method}), ts, renders, len(ts))
            wall = time.perf_counter() - clock
            frames = np.stack([renders.frames[float(t)] for t in ts])
            y = luma(frames)
            above = float(max(y[1:-1].max() - max(y[0], y[-1]), 0.0))
            base = float(pixel_distance(frames[0], frames[-1]))
            detour = float(max((pixel_distance(frames[0], f) + pixel_distance(f, frames[-1])) / base for f in frames[1:-1]))
            print(f"{prompt_a[:24] + ' -> ' + prompt_b[:26]:54s} {method:9s} luma {' '.join(f'{v:.3f}' for v in y)} "
                  f"above {above:.3f} detour {detour:.2f} ({wall:.1f} s)")
            rows.append({"case": f"{prompt_a} ({seed_a}) -> {prompt_b} ({seed_b})", "method": method, "luma": y.tolist(),
                         "above_ends": above, "detour": detour, "wall_s": wall})
    for method in ("slerp", "lerp", "eps-blend"):
        mine = [r for r in rows if r["method"] == method]
        print(f"  {method:9s} mean detour {np.mean([r['detour'] for r in mine]):.2f}, "
              f"mean brightness above the ends {np.mean([r['above_ends'] for r in mine]):.3f}")
    return {"rows": rows}


def write_timeline(folder: Path, prompts: tuple[str, str], seeds: tuple[int, int], frames: int) -> Path:
    path = folder / "walk.yaml"
    path.write_text("\n".join([
        "model: toy", f"width: {SIZE}", f"height: {SIZE}", f"fps: {FPS}", f"steps: {STEPS}", "scheduler: ddim",
        f"batch_size: {BATCH}", "device: cpu", f"end: {{frame: {frames}}}", "keyframes:",
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


def part_speed(nateraw_python: str | None, runs: int, frames: int) -> dict:
    """(d) whole-process frames per second against nateraw's walk(), and overlap on/off."""
    prompts, seeds = (WALKS[0][0], WALKS[0][2]), (WALKS[0][1], WALKS[0][3])
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timeline = write_timeline(tmp, prompts, seeds, frames)
        ours = [sys.executable, "-m", "latentwalk.cli", "render", str(timeline), "--out", str(tmp / "a.mp4"), "--fresh", "--quiet"]
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
        wa, wb = alternate(ours + ["--no-overlap"], ours, runs)
        ratio = [b / a for a, b in zip(wa, wb)]
        print(f"  render --no-overlap median {statistics.median(wa):6.1f} s  {frames / statistics.median(wa):5.2f} fps")
        print(f"  render (overlap)    median {statistics.median(wb):6.1f} s  {frames / statistics.median(wb):5.2f} fps")
        print(f"  ratio (fps no-overlap / fps overlap), median of pairs: {statistics.median(ratio):.2f}x")
        result["overlap"] = {"no_overlap_s": wa, "overlap_s": wb, "ratio_median": statistics.median(ratio)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="placement,sharing,detours,speed")
    parser.add_argument("--walks", type=int, default=len(WALKS), help="how many of the walks to run (placement)")
    parser.add_argument("--share-walks", type=int, default=1, help="how many walks the sharing part runs")
    parser.add_argument("--rounds", type=int, default=2, help="bisection rounds after the coarse probe pass")
    parser.add_argument("--snap", type=float, default=0.0, help="snap frames onto probes within this fraction of a gap")
    parser.add_argument("--nateraw-python", help="python of a virtualenv with stable-diffusion-videos installed")
    parser.add_argument("--runs", type=int, default=3, help="counted A B pairs per speed comparison")
    parser.add_argument("--frames", type=int, default=96, help="frames per speed run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import torch

    from latentwalk.render import load_model
    from latentwalk.smooth import ProbePlan

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = ProbePlan(batch_size=BATCH, rounds=args.rounds)
    results: dict = {"settings": {"fps": FPS, "seconds": SECONDS, "size": SIZE, "steps": STEPS, "batch": BATCH,
                                  "rounds": args.rounds, "snap": args.snap, "threads": torch.get_num_threads()}}
    model = load_model("toy", "cpu") if parts & {"placement", "sharing", "detours"} else None
    if "placement" in parts:
        results["placement"] = part_placement(model, WALKS[: args.walks], plan, args.snap)
    if "sharing" in parts:
        results["sharing"] = part_sharing(model, WALKS[: args.share_walks], plan)
    if "detours" in parts:
        results["detours"] = part_detours(model)
    if "speed" in parts:
        results["speed"] = part_speed(args.nateraw_python, args.runs, args.frames)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
