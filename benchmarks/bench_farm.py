"""Benchmark the Ray farm: 1, 2 and 4 workers against one process, and what bounds a farm of many GPUs.

Not a test: it prints a table and writes benchmarks/results-farm-<machine>.json.

  (a) scaling    render stage (model already loaded on every worker) of the same timeline with
                 1, 2 and 4 Ray workers of 1 CPU each, and one process at 1 and at all threads;
                 Ray's round trip per batch (an actor call, nothing rendered)
  (b) assembly   side by side, A B A B, on the toy model's frames (128 px) and random-like frames
                 (a drifting gradient with grain) at 512 and 1024 px: today's driver (store → one
                 H.264 encoder, with audio) against chunked encoding (each chunk store → encoder,
                 as a task on the cluster does, and the driver's join: concat -c copy + the audio);
                 the store's write and read rates; the two videos' pixels (PSNR, mean and max
                 absolute difference) against each other and the source
  (c) projection total ≈ load + max(F·c/N, F/J, F/(N·E), F/S) + one chunk's encode (docs/farms.md)

  nice -n 10 python benchmarks/bench_farm.py                        # both parts, the embedded toy model, CPU
  nice -n 10 python benchmarks/bench_farm.py --parts assembly       # (b) alone
  python benchmarks/bench_farm.py --model PATH --device cuda --size 512 --steps 30 --parts scaling
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


def moving_frames(size: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """Random-like frames x264 codes as it codes a render: a drifting gradient plus grain (N(0, 6))."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    return [np.clip((np.stack([x + i / frames, y, (x + y) / 2], axis=-1) % 1.0) * 255 + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
            for i in range(frames)]


def decoded(path: Path, size: int) -> np.ndarray:
    import subprocess

    from latentwalk.encode import ffmpeg_exe

    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(10 * np.log10(255.0**2 / mse), 2) if mse else float("inf")


def assembly(name: str, images: list[np.ndarray], folder: Path, chunk_frames: int, repeats: int) -> dict:
    """Today's driver (store → InOrderWriter → one ffmpeg, with audio) against chunked encoding
    (each chunk: store → encode_chunk, as an encoder task does; then the driver's join: concat -c copy
    + the audio muxed), A B A B; the store's write and read rates; the videos' pixels against each other."""
    from latentwalk.assemble import InOrderWriter
    from latentwalk.chunks import ChunkFolder, ChunkSettings, encode_chunk, join, plan_chunks
    from latentwalk.encode import AudioClip, VideoWriter
    from latentwalk.store import FrameStore
    from latentwalk.toy.soundtrack import drum_track, write_wav

    size, frames, fps = images[0].shape[0], len(images), 24.0
    store = FrameStore(folder / f"assembly-{name}.frames")
    keys = [f"{size:08x}{i:056x}" for i in range(frames)]
    t0 = time.perf_counter()
    stored = sum(store.save(key, image) for key, image in zip(keys, images))
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for key in keys:
        store.load(key, (size, size, 3))
    read_s = time.perf_counter() - t0
    wav = write_wav(drum_track(120.0, int(frames / fps / 2) + 2), folder / f"assembly-{name}.wav")
    clip = AudioClip(wav, 0.0, frames / fps)
    settings = ChunkSettings(size, size, fps, chunk_frames)
    single_s, encode_s, join_s = [], [], []
    for _ in range(repeats):  # A B A B: the machine's load drifts
        # A: today's driver.
        t0 = time.perf_counter()
        with VideoWriter(folder / f"single-{name}.mp4", size, size, fps, clip) as writer:
            InOrderWriter(writer, keys, store, (size, size, 3), set(keys)).arrived(keys)
        single_s.append(time.perf_counter() - t0)
        # B: every chunk encoded (one encoder after another here; on a farm each is a task), then the join.
        chunks = ChunkFolder(folder / f"assembly-{name}-{len(encode_s)}.chunks")
        paths, t0 = [], time.perf_counter()
        for chunk in plan_chunks(keys, chunk_frames):
            paths.append(chunks.save(settings.name(chunk), encode_chunk(str(store.root), chunk, settings), len(chunk)))
        encode_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        join(paths, folder / f"chunked-{name}.mp4", settings, frames, clip)
        join_s.append(time.perf_counter() - t0)
    source = np.stack(images)
    single, chunked = decoded(folder / f"single-{name}.mp4", size), decoded(folder / f"chunked-{name}.mp4", size)
    diff = np.abs(single.astype(int) - chunked.astype(int))
    best = min
    return {
        "frames": frames, "chunk_frames": chunk_frames, "repeats": repeats,
        "store": {"bytes_per_frame": round(stored / frames), "raw_bytes_per_frame": size * size * 3,
                  "write_MB_per_s": round(stored / write_s / 1e6, 1), "read_MB_per_s": round(stored / read_s / 1e6, 1),
                  "write_frames_per_s": round(frames / write_s, 1), "read_frames_per_s": round(frames / read_s, 1)},
        "single_encoder_frames_per_s": round(frames / best(single_s), 2),
        "single_encoder_runs_s": [round(t, 2) for t in single_s],
        "chunk_encode_frames_per_s": round(frames / best(encode_s), 2),
        "chunk_encode_runs_s": [round(t, 2) for t in encode_s],
        "join_frames_per_s": round(frames / best(join_s), 1),
        "join_runs_s": [round(t, 3) for t in join_s],
        "bytes": {"single": (folder / f"single-{name}.mp4").stat().st_size, "chunked": (folder / f"chunked-{name}.mp4").stat().st_size},
        "pixels": {"frames_decoded": [len(single), len(chunked)], "psnr_chunked_vs_single_db": psnr(chunked, single),
                   "mean_abs_diff": round(float(diff.mean()), 3), "max_abs_diff": int(diff.max()),
                   "psnr_single_vs_source_db": psnr(single, source), "psnr_chunked_vs_source_db": psnr(chunked, source)},
    }


def scheduler_overhead(calls: int = 200) -> float:
    """Milliseconds the driver spends per batch on Ray's side: one call to an actor and its answer, nothing rendered."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def batch(self, keys):
            return keys

    echo = Echo.remote()
    keys = [f"{i:064x}" for i in range(8)]
    ray.get(echo.batch.remote(keys))  # started
    t0 = time.perf_counter()
    for _ in range(calls):
        ray.get(echo.batch.remote(keys))
    ms = (time.perf_counter() - t0) / calls * 1000
    ray.kill(echo)
    return round(ms, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--parts", default="scaling,assembly", help="scaling (renders; the scheduler's round trip too), assembly (encoders and the join), scheduler (the round trip alone)")
    parser.add_argument("--assembly-sizes", default="512,1024", help="random-like frames at these sides, besides the toy model's frames")
    parser.add_argument("--assembly-frames", type=int, default=120)
    parser.add_argument("--chunk-frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="A B rounds of the assembly comparison")
    parser.add_argument("--out", help="the JSON to write (default benchmarks/results-farm-<device>-<cores>core.json)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import ray
    import torch

    from latentwalk.executors.ray import quiet_ray_logs

    quiet_ray_logs()  # no Ray banners between the figures
    folder = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    path = write_timeline(folder, args.model, size=args.size, steps=args.steps, frames=args.frames, batch_size=args.batch_size, device=args.device)
    workers = [int(n) for n in args.workers.split(",")]
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "ray": ray.__version__,
                                 "load_average_at_start": os.getloadavg()},  # other jobs on the machine skew every figure
                     "timeline": {"model": args.model, "size": args.size, "steps": args.steps, "frames": args.frames, "batch_size": args.batch_size,
                                  "device": args.device}}

    if "scaling" in parts:
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

    if "scheduler" in parts or "scaling" in parts:
        # Ray's cost per batch on the driver: one actor call and its answer, nothing rendered.
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            results["scheduler_ms_per_batch"] = scheduler_overhead()
        finally:
            ray.shutdown()
        print(f"Ray round trip per batch (an actor call with 8 keys, nothing rendered): {results['scheduler_ms_per_batch']:.2f} ms", flush=True)

    if "assembly" in parts:
        # 3. What the driver does per frame: today all the encoding, chunked only the join (and
        # the audio); the encoders' own rate (each chunk one task on the cluster); the store.
        sources = {"toy-128": toy_frames(args.model, folder, args.assembly_frames)}
        sources |= {f"random-{n}": moving_frames(n, args.assembly_frames) for n in map(int, args.assembly_sizes.split(",")) if n}
        results["assembly"] = {}
        for name, images in sources.items():
            row = assembly(name, images, folder, args.chunk_frames, args.repeats)
            results["assembly"][name] = row
            px = row["pixels"]
            print(f"{name}: one encoder {row['single_encoder_frames_per_s']:.2f} frames/s; chunked: each encoder {row['chunk_encode_frames_per_s']:.2f} "
                  f"frames/s, the driver's join {row['join_frames_per_s']:.0f} frames/s; store {row['store']['bytes_per_frame'] / 1e6:.2f} MB/frame, "
                  f"write {row['store']['write_MB_per_s']:.0f} MB/s, read {row['store']['read_MB_per_s']:.0f} MB/s; chunked vs one encoder "
                  f"{px['psnr_chunked_vs_single_db']} dB (mean |d| {px['mean_abs_diff']}, max {px['max_abs_diff']}), vs source "
                  f"{px['psnr_chunked_vs_source_db']} / {px['psnr_single_vs_source_db']} dB; bytes {row['bytes']['chunked']} / {row['bytes']['single']}",
                  flush=True)

    # 4. Projection for N GPUs (docs/farms.md): total ≈ load + max(F·c/N, F/J, F/(N·E), F/S) + one chunk's encode + the join.
    results["projection"] = ("total_s ≈ load_s + max(frames * per_frame_s / N, frames / join_frames_per_s, frames / (N * chunk_encode_frames_per_s), "
                             "frames / store_frames_per_s) + chunk_frames / chunk_encode_frames_per_s")
    results["load_average_at_end"] = os.getloadavg()
    out = Path(args.out) if args.out else HERE / f"results-farm-{args.device}-{os.cpu_count()}core.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


def toy_frames(model: str, folder: Path, frames: int) -> list[np.ndarray]:
    """`frames` frames of the embedded toy model's walk (4 steps: the pixels, not the denoising, matter here), rendered in this process."""
    from latentwalk.api import frame_plan, render
    from latentwalk.store import FrameStore
    from latentwalk.timeline import load_timeline

    place = folder / "toy-assembly"
    place.mkdir()
    path = write_timeline(place, model, size=128, steps=4, frames=frames, batch_size=8, device="cpu")
    path.write_text(path.read_text().replace("keyframes:", "spacing: t\nkeyframes:"))
    result = render(path, place / "walk.mp4", progress=False)
    store = FrameStore(result.store)
    plan = frame_plan(load_timeline(path), result.plan, store)
    return [store.load(key, plan.shape) for key in plan.keys]


if __name__ == "__main__":
    sys.exit(main())
