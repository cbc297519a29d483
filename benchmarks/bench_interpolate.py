"""Benchmark frame interpolation (latentwalk/interpolate.py) on the embedded model, through `latentwalk render`.

Not a test: it prints tables (and writes JSON with --json). One walk between two scenes of the toy
world, 128x128, `spacing: t` (so placement probes do not blur the comparison), DDIM.

  (a) speed    whole-process frames per second of `latentwalk render` into a fresh store, factor
               1 (no interpolation), 2 and 4 with `--method` (latent), alternating A B C A B C
  (b) quality  for each method and factor, every interpolated frame's distance to the frame the
               engine denoises at that time (the factor-1 render), in units of that render's median
               adjacent-frame distance; and the smoothness of each video's adjacent-frame distances
               (p95/median, max/median; latentwalk.smooth.walk_metrics), in the placement distance
               and in pixel MAD. `crossfade` (a pixel mix of the two anchors) is a baseline, not a method.

  nice -n 10 python benchmarks/bench_interpolate.py
  nice -n 10 python benchmarks/bench_interpolate.py --size 64 --fps 8 --seconds 3 --steps 8 --json benchmarks/results-interpolate.json
  nice -n 10 python benchmarks/bench_interpolate.py --parts speed --method flow --size 64 --fps 8 --seconds 3 --steps 8
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WALK = ("a sunset over the sea with a red sun", 12, "a clear night over the city with stars", 13)  # the demo's segment


def timeline(fps: int, seconds: int, steps: int, size: int, extra: str = "") -> str:
    a, seed_a, b, seed_b = WALK
    return (
        f"model: toy\nwidth: {size}\nheight: {size}\nfps: {fps}\nsteps: {steps}\nscheduler: ddim\nbatch_size: 8\n"
        f"spacing: t\nend: {{time: {seconds}}}\n{extra}"
        f"keyframes:\n  - {{time: 0, prompt: {a}, seed: {seed_a}}}\n  - {{time: {seconds - 1 / fps:.6f}, prompt: {b}, seed: {seed_b}}}\n"
    )


def latentwalk(*args, cwd: Path) -> float:
    """Seconds of one whole `latentwalk` process."""
    command = [str(Path(sys.executable).parent / "latentwalk"), *map(str, args)]
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def pngs(folder: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.stack([iio.imread(p) for p in sorted(folder.glob("frame_*.png"))])


def smoothness(frames: np.ndarray) -> dict:
    from latentwalk.placement import frame_distances
    from latentwalk.smooth import pixel_distance, walk_metrics

    placement = walk_metrics(frame_distances(list(frames)))
    pixel = walk_metrics(np.array([float(pixel_distance(a, b)) for a, b in zip(frames, frames[1:])]))
    return {"p95/median": placement.p95_over_median, "max/median": placement.max_over_median,
            "pixel p95/median": pixel.p95_over_median, "pixel max/median": pixel.max_over_median}


def speed(args, work: Path) -> dict:
    """Median frames/s per factor, runs alternating between the factors."""
    factors = (1, 2, 4)
    for f in factors:
        extra = f"output: {{interpolate: {{factor: {f}, method: {args.method}}}}}\n" if f > 1 else ""
        (work / f"speed{f}.yaml").write_text(timeline(args.fps, args.seconds, args.steps, args.size, extra))
    n = args.fps * args.seconds
    seconds: dict[int, list[float]] = {f: [] for f in factors}
    for run in range(args.runs):
        for f in factors:
            store = work / f"speed-{f}-{run}.frames"
            seconds[f].append(latentwalk("render", f"speed{f}.yaml", "--out", f"speed-{f}-{run}.mp4", "--store", store, cwd=work))
            print(f"  factor {f} run {run + 1}: {seconds[f][-1]:.1f} s", flush=True)
    return {f: {"seconds": s, "frames_per_s": n / statistics.median(s)} for f, s in seconds.items()}


def quality(args, work: Path) -> dict:
    """Distances of interpolated frames to the engine's own, and smoothness, per method and factor."""
    from latentwalk.placement import frame_distances

    (work / "ref.yaml").write_text(timeline(args.fps, args.seconds, args.steps, args.size))
    latentwalk("render", "ref.yaml", "--out", "ref.mp4", "--store", "q.frames", "--frames", "ref-frames", cwd=work)
    ref = pngs(work / "ref-frames")
    unit = float(np.median(frame_distances(list(ref))))
    out = {"reference": smoothness(ref) | {"median adjacent distance": unit}}
    for factor in (2, 4):
        for method in ("latent", "flow"):
            name = f"{method}{factor}"
            (work / f"{name}.yaml").write_text(
                timeline(args.fps, args.seconds, args.steps, args.size, f"output: {{interpolate: {{factor: {factor}, method: {method}}}}}\n")
            )
            latentwalk("render", f"{name}.yaml", "--out", f"{name}.mp4", "--store", "q.frames", "--frames", f"{name}-frames", cwd=work)
            frames = pngs(work / f"{name}-frames")
            anchors = json.loads((work / f"{name}.json").read_text())["output"]["interpolate"]["denoised_frames"]
            assert all(np.array_equal(frames[a], ref[a]) for a in anchors), "denoised frames differ from the reference"
            between = [f for f in range(len(ref)) if f not in anchors]
            d = np.array([frame_distances([frames[f], ref[f]])[0] for f in between]) / unit
            out[name] = {"to engine mean": float(d.mean()), "to engine max": float(d.max()), "frames": len(between)} | smoothness(frames)
            if method == "latent":  # the baseline over the same anchors
                fade = frames.copy()
                for f in between:
                    left = max(a for a in anchors if a < f)
                    right = min(a for a in anchors if a > f)
                    w = (f - left) / (right - left)
                    fade[f] = np.clip((1 - w) * ref[left].astype(float) + w * ref[right], 0, 255).round().astype(np.uint8)
                d = np.array([frame_distances([fade[f], ref[f]])[0] for f in between]) / unit
                out[f"crossfade{factor}"] = {"to engine mean": float(d.mean()), "to engine max": float(d.max()), "frames": len(between)} | smoothness(fade)
            print(f"  {name}: {out[name]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="speed,quality")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--method", default="latent", help="the method the speed part times (latent or flow)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict = {"settings": vars(args) | {"json": None, "walk": WALK}, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "quality" in args.parts:
            print("quality (distances in median adjacent-frame distances of the factor-1 render)")
            results["quality"] = quality(args, work)
            print(f"{'video':<12} {'to engine mean':>15} {'max':>6} {'p95/med':>8} {'max/med':>8} {'px p95/med':>10} {'px max/med':>10}")
            for name, r in results["quality"].items():
                mean, top = (f"{r['to engine mean']:.2f}", f"{r['to engine max']:.2f}") if "to engine mean" in r else ("-", "-")
                print(f"{name:<12} {mean:>15} {top:>6} {r['p95/median']:>8.2f} {r['max/median']:>8.2f} {r['pixel p95/median']:>10.2f} {r['pixel max/median']:>10.2f}")
        if "speed" in args.parts:
            print("speed (whole latentwalk render process, fresh store)")
            results["speed"] = speed(args, work)
            base = results["speed"][1]["frames_per_s"]
            for f, r in results["speed"].items():
                print(f"factor {f}: {r['frames_per_s']:.2f} frames/s ({r['frames_per_s'] / base:.2f}x), runs {', '.join(f'{s:.1f}' for s in r['seconds'])} s")
    results["load_average_after"] = os.getloadavg()
    print(f"load average before {results['load_average'][0]:.1f}, after {results['load_average_after'][0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
