"""Benchmark video to video on the embedded model: flicker with and without `video: {flow: true}`.

Not a test: it prints a table (and writes JSON with --json). Renders configs/video.yaml (the
shipped 128 px clip, beat-pulsed strength) through latentwalk.api.render, once per variant, in
a fresh store each, and measures on the frames:

  adjacent MAD      mean pixel MAD (0-255) between adjacent frames, and its ratio to the
                    source clip's own (1: changes as much as the source does)
  adjacent 1-SSIM   the same in 1 - SSIM
  warp error        mean MAD between frame k and frame k-1 warped by the *source's* optical flow
                    (Farnebäck), the temporal-consistency error of Lai et al. 2018; the source's
                    own figure is what motion the flow does not explain
  s/frame           wall time of the render over its frames (model load and encode included)

  nice -n 10 python benchmarks/bench_video.py                 # 48 frames, 20 steps
  nice -n 10 python benchmarks/bench_video.py --frames 24 --steps 10 --blend 0.3,0.6 --json out.json
  nice -n 10 python benchmarks/bench_video.py --frames 24 --steps 10 --blend 0.1,0.3 --strength 0.5
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "video.yaml"


def frames_of(video: Path, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 frames of an mp4 as latentwalk reads a source."""
    from latentwalk.video_input import VideoFrames, probe

    reader = VideoFrames(str(video), size, size)
    return np.stack([np.array(reader.get(k)) for k in range(probe(video).n_frames)])


def figures(frames: np.ndarray, source: np.ndarray) -> dict:
    from latentwalk.smooth import ssim_distance
    from latentwalk.videoflow import backward_flow, warp

    a, b = frames[:-1].astype(np.float32), frames[1:].astype(np.float32)
    warped = [warp(frames[k - 1], backward_flow(source[k], source[k - 1])).astype(np.float32) for k in range(1, len(frames))]
    return {
        "adjacent_mad": float(np.abs(b - a).mean()),
        "adjacent_1_ssim": float(np.mean(ssim_distance(frames[:-1], frames[1:]))),
        "warp_error": float(np.mean([np.abs(frames[k].astype(np.float32) - warped[k - 1]).mean() for k in range(1, len(frames))])),
    }


def render_variant(work: Path, name: str, n_frames: int, steps: int, flow: bool, blend: float, strength: float | None) -> tuple[np.ndarray, float]:
    import imageio.v3 as iio

    from latentwalk.api import render

    data = yaml.safe_load(CONFIG.read_text())
    data["video"] = {"path": str(CONFIG.parent / data["video"]), **({"flow": True, "flow_blend": blend} if flow else {})}
    data["steps"], data["end"] = steps, {"frame": n_frames}
    if strength is not None:  # a constant instead of the beat pulse, which flickers on purpose
        data["strength"] = strength
    last = {k: v for k, v in data["keyframes"][-1].items() if k not in ("beat", "bar", "time", "frame")}
    data["keyframes"][-1] = {"frame": n_frames - 1, **last}  # a shorter run still travels all the way
    if flow:
        data["batch_size"] = 1  # a chain: one frame per UNet call either way
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    clock = time.perf_counter()
    result = render(path, work / f"{name}.mp4", progress=False, frames_dir=work / name)
    seconds = time.perf_counter() - clock
    frames = np.stack([iio.imread(p) for p in sorted((work / name).glob("*.png"))])
    assert len(frames) == result.plan.n_frames == n_frames
    return frames, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--blend", default="0.5", help="flow_blend values, comma-separated")
    parser.add_argument("--strength", type=float, help="a constant strength instead of the config's beat pulse")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    source = frames_of(CONFIG.parent / "video" / "clip.mp4", 128)[: args.frames]
    rows = {"source": figures(source, source) | {"s_per_frame": None}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        variants = [("independent", False, 0.0)] + [(f"flow {b}", True, float(b)) for b in args.blend.split(",")]
        for name, flow, blend in variants:
            frames, seconds = render_variant(work, name.replace(" ", "-"), args.frames, args.steps, flow, blend, args.strength)
            rows[name] = figures(frames, source) | {"s_per_frame": seconds / args.frames}
    base = rows["source"]
    what = f"strength {args.strength:g}" if args.strength is not None else "the config's beat-pulsed strength"
    print(f"{args.frames} frames of configs/video.yaml at 128 px, {args.steps} steps, {what}; load average {load:.1f} at the start")
    print(f"{'':>14} {'adj MAD':>8} {'x source':>8} {'adj 1-SSIM':>10} {'x source':>8} {'warp err':>8} {'s/frame':>8}")
    for name, r in rows.items():
        spf = f"{r['s_per_frame']:.2f}" if r["s_per_frame"] else "-"
        print(
            f"{name:>14} {r['adjacent_mad']:>8.2f} {r['adjacent_mad'] / base['adjacent_mad']:>8.2f} {r['adjacent_1_ssim']:>10.4f} "
            f"{r['adjacent_1_ssim'] / base['adjacent_1_ssim']:>8.2f} {r['warp_error']:>8.2f} {spf:>8}"
        )
    if args.json:
        meta = {"frames": args.frames, "steps": args.steps, "strength": args.strength, "load_average": load}
        args.json.write_text(json.dumps(meta | {"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
