"""Benchmark the Ray farm: 1, 2 and 4 workers against one process, and the driver's assembly rate.

Not a test: it prints a table and writes benchmarks/results-farm-<machine>.json.

  (a) scaling    render stage (model already loaded on every worker) of the same timeline with
                 1, 2 and 4 Ray workers of 1 CPU each, and one process at 1 and at all threads
  (b) assembly   frames per second the driver reads from the store and encodes (ffmpeg, H.264),
                 at the benchmark's size and at 512 and 1024 pixels: the ceiling of any farm
  (c) projection total ≈ load + max(frames × per-frame cost / N, frames / assembly rate)

  python benchmarks/bench_farm.py                   # the embedded toy model, CPU
  python benchmarks/bench_farm.py --model PATH --device cuda --size 512 --steps 30
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
PROMPTS = ["a cat in the snow", "a dog on the beach at sunset", "a city at night", "a forest in the fog"]


def write_timeline(folder: Path, model: str, *, size: int, steps: int, frames: int, batch_size: int, device: str) -> Path:
    lines = [f"model: {model}", f"width: {size}", f"height: {size}", "fps: 12", f"steps: {steps}", f"batch_size: {batch_size}",
             f"device: {device}", f"end: {{frame: {frames}}}", "keyframes:"]
    for k, prompt in enumerate(PROMPTS):
        lines.append(f"  - {{frame: {round(k * (frames - 1) / (len(PROMPTS) - 1))}, prompt: '{prompt}', seed: {k + 1}}}")
    path = folder / "walk.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_render(path: Path, out: Path, **kwargs) -> dict:
    from latentwalk.api import render

    result = render(path, out, progress=False, **kwargs)
    t = result.timings
    return {"frames": result.frames_rendered, "load_s": round(t.get("load_model_s", 0.0), 2), "render_s": round(t["render_s"], 2),
            "frames_per_s": round(result.frames_rendered / t["render_s"], 3), "farm": result.farm}


def assembly_rate(size: int, frames: int, folder: Path) -> float:
    """Frames/s of store → InOrderWriter → ffmpeg for frames that are all stored already."""
    from latentwalk.assemble import InOrderWriter
    from latentwalk.encode import VideoWriter
    from latentwalk.store import FrameStore

    store = FrameStore(folder / f"assembly-{size}")
    rng = np.random.default_rng(0)
    # Smooth moving content (x264's speed depends on it): a gradient, drifting, plus mild noise.
    y, x = np.mgrid[0:size, 0:size] / size
    keys = []
    for i in range(frames):
        base = np.stack([x + i / frames, y, (x + y) / 2], axis=-1) % 1.0
        image = np.clip(base * 255 + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        keys.append(f"{i:064x}")
        store.save(keys[-1], image)
    t0 = time.perf_counter()
    with VideoWriter(folder / f"assembly-{size}.mp4", size, size, 30) as writer:
        in_order = InOrderWriter(writer, keys, store, (size, size, 3), set(keys))
        in_order.arrived(keys)  # as if every worker had just reported
    return frames / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--assembly-frames", type=int, default=240)
    args = parser.parse_args()

    import ray
    import torch

    folder = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    path = write_timeline(folder, args.model, size=args.size, steps=args.steps, frames=args.frames, batch_size=args.batch_size, device=args.device)
    workers = [int(n) for n in args.workers.split(",")]
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "ray": ray.__version__,
                                 "load_average_at_start": os.getloadavg()},  # other jobs on the machine skew every figure
                     "timeline": {"model": args.model, "size": args.size, "steps": args.steps, "frames": args.frames, "batch_size": args.batch_size,
                                  "device": args.device}}

    # 1. One process: the baseline a farm must beat (1 thread, and every core).
    threads = torch.get_num_threads()
    single = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        single[f"{n}_threads"] = timed_render(path, folder / f"single-{n}.mp4", store_dir=folder / f"single-{n}.frames")
        print(f"one process, {n} thread(s): {single[f'{n}_threads']['render_s']:.1f}s render, {single[f'{n}_threads']['frames_per_s']:.2f} frames/s", flush=True)
    torch.set_num_threads(threads)
    results["single_process"] = single

    # 2. A local cluster with as many logical CPUs as the most workers: oversubscribed on purpose.
    ray.init(num_cpus=max(workers), include_dashboard=False, configure_logging=False, log_to_driver=False)
    farm = {}
    try:
        for n in workers:
            row = timed_render(path, folder / f"farm-{n}.mp4", store_dir=folder / f"farm-{n}.frames", executor="ray", ray_workers=n)
            farm[str(n)] = row
            per_worker = ", ".join(f"{w['frames_per_s']:.2f}" for w in row["farm"]["workers"])
            print(f"{n} Ray worker(s): {row['render_s']:.1f}s render, {row['frames_per_s']:.2f} frames/s (per worker: {per_worker}), "
                  f"model load {row['load_s']:.1f}s", flush=True)
    finally:
        ray.shutdown()
    results["farm"] = farm

    # 3. The driver's assembly rate bounds any farm.
    assembly = {str(size): round(assembly_rate(size, args.assembly_frames, folder), 1) for size in sorted({args.size, 512, 1024})}
    for size, rate in assembly.items():
        print(f"assembly {size}x{size}: {rate:.1f} frames/s (store → ffmpeg)", flush=True)
    results["assembly_frames_per_s"] = assembly

    # 4. Projection for N GPUs: total ≈ load + max(F × c / N, F / A).
    results["projection"] = "total_s ≈ load_s + max(frames * per_frame_s / N, frames / assembly_frames_per_s)"
    out = HERE / f"results-farm-{args.device}-{os.cpu_count()}core.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
