"""Benchmark image keyframes on the embedded model: inversion accuracy and cost, keyframe fidelity, travel smoothness.

Not a test: it prints tables (and writes JSON with --json). The pictures are configs/pictures/
(drawn with PIL: a warm sky over a dark ridge, a blue sea with a white sail); `model: toy` at
128x128, 20 DDIM steps, one thread per process unless OMP_NUM_THREADS says otherwise.

  (a) inversion  per picture and conditioning (the empty prompt; a prompt at guidance 1 and 7.5),
                 per fixed-point refinement count: seconds per inversion, and the keyframe's frame
                 denoised from the inverted noise *without* the residual against the picture's VAE
                 round trip (PSNR, 1 - SSIM); a render adds the residual, so its keyframe frame is
                 the round trip itself (measured in (b))
  (b) travel     one-segment walks of 49 frames (12 fps x 4 s, linear easing, default perceptual
                 placement) rendered through `latentwalk render`: picture -> picture (no prompts,
                 the morph), picture -> prompt, and a prompt -> prompt walk beside them; adjacent-frame
                 pixel MAD and 1 - SSIM: p95/median and max/median; the keyframe frames against
                 the pictures' round trips; wall time. With --plot FILE, the adjacent distances per walk.

  nice -n 10 python benchmarks/bench_images.py
  nice -n 10 python benchmarks/bench_images.py --parts travel --plot docs/images/pictures-smoothness.png --json benchmarks/results-images.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PICTURES = {"ridge": ROOT / "configs" / "pictures" / "sunset-ridge.png", "sail": ROOT / "configs" / "pictures" / "sea-sail.png"}
SIZE, STEPS, FPS, SECONDS = 128, 20, 12, 4
FRAMES = FPS * SECONDS + 1  # 48 travelling frames and keyframe B
ITERATIONS = (0, 1, 3, 5)
# (name, prompt, guidance) the pictures are inverted under in (a).
CONDITIONS = (("empty prompt, g 7.5", "", 7.5), ("prompt, g 1", "the sea during the day", 1.0), ("prompt, g 7.5", "the sea during the day", 7.5))
# (name, keyframe A, keyframe B): each a picture name or (prompt, seed).
WALKS = (
    ("picture -> picture (morph)", "ridge", "sail"),
    ("picture -> prompt", "ridge", ("a snowy night over the mountains", 5)),
    ("prompt -> prompt", ("mountains at sunset", 3), ("a snowy night over the mountains", 5)),
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def one_minus_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from latentwalk.smooth import ssim_distance

    return float(ssim_distance(a.astype(np.float64) / 255, b.astype(np.float64) / 255))


def part_inversion() -> list[dict]:
    """(a): reconstruction error and cost per refinement count, for each picture and conditioning."""
    import torch

    from latentwalk import inversion
    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.engine import Conditioning, batch_inputs, side_frame
    from latentwalk.frames import ImageSide
    from latentwalk.images import fit_picture, picture_key
    from latentwalk.prompts import parse_prompt
    from latentwalk.sampling import denoise

    backend = load_backend(ModelSpec("toy"), device="cpu")
    shape = backend.latent_shape(SIZE, SIZE)
    rows = []
    print(f"\n(a) inversion: toy model, {SIZE} px, {STEPS} DDIM steps, {torch.get_num_threads()} thread(s)")
    print(f"{'picture':8s} {'conditioning':20s} {'iters':>5s} {'invert s':>8s} |   PSNR  1-SSIM | noise std   (keyframe frame from the inverted noise, no residual)")
    for name, path in PICTURES.items():
        pixels = fit_picture(path, SIZE, SIZE)
        key = picture_key(pixels)
        trip = backend.decode(backend.encode_images(pixels[None]))[0]
        for label, prompt, guidance in CONDITIONS:
            text = str(parse_prompt(prompt))
            side = ImageSide(key, 1, text, str(parse_prompt("")), guidance)
            anchor = side_frame(side, STEPS)
            conditioning = Conditioning(backend, [anchor])
            plain = batch_inputs([replace(anchor, image_a=None, image_b=None)], conditioning, shape, "slerp")
            latent = backend.encode_images(pixels[None])
            for iterations in ITERATIONS:
                clock = time.perf_counter()
                noise = inversion.invert(backend, latent, plain, "ddim", STEPS, width=SIZE, height=SIZE, guided=guidance > 1, iterations=iterations)
                seconds = time.perf_counter() - clock
                rebuilt = backend.decode(denoise(backend, replace(plain, noise=noise), "ddim", STEPS, width=SIZE, height=SIZE, guided=guidance > 1))[0]
                row = {"picture": name, "conditioning": label, "iterations": iterations, "invert_s": seconds,
                       "psnr": psnr(rebuilt, trip), "one_minus_ssim": one_minus_ssim(rebuilt, trip), "noise_std": float(noise.std())}
                rows.append(row)
                print(f"{name:8s} {label:20s} {iterations:5d} {seconds:8.2f} | {row['psnr']:6.2f} {row['one_minus_ssim']:7.4f} | {row['noise_std']:.3f}", flush=True)
    return rows


def walk_yaml(a, b) -> str:
    def keyframe(frame: int, end) -> str:
        if isinstance(end, str):
            return f"  - {{frame: {frame}, image: '{PICTURES[end]}', seed: {7 if frame else 3}}}"
        return f"  - {{frame: {frame}, prompt: '{end[0]}', seed: {end[1]}}}"

    return "\n".join([
        "model: toy", f"width: {SIZE}", f"height: {SIZE}", f"fps: {FPS}", f"steps: {STEPS}", "scheduler: ddim", "batch_size: 8",
        "device: cpu", f"end: {{frame: {FRAMES}}}", "keyframes:", keyframe(0, a), keyframe(FRAMES - 1, b),
    ]) + "\n"


def part_travel(plot: str | None) -> list[dict]:
    """(b): walks through `latentwalk render`, their smoothness and keyframe fidelity."""
    from PIL import Image

    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.images import fit_picture
    from latentwalk.smooth import DISTANCES, adjacent_distances, walk_metrics

    backend = load_backend(ModelSpec("toy"), device="cpu")
    script = Path(sys.executable).parent / "latentwalk"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "latentwalk.cli"]
    rows, curves = [], {}
    print(f"\n(b) travel: {FRAMES} frames, `latentwalk render` (perceptual placement, share_steps auto), toy model {SIZE} px, {STEPS} DDIM steps")
    print(f"{'walk':28s} | pixel p95/med max/med | ssim p95/med max/med | keyframe PSNR vs round trip | wall s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, a, b in WALKS:
            folder = Path(tmp) / name.split()[0].replace(">", "")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "walk.yaml").write_text(walk_yaml(a, b))
            clock = time.perf_counter()
            subprocess.run([*command, "render", "walk.yaml", "--out", "walk.mp4", "--frames", "frames", "--quiet"], cwd=folder, check=True)
            wall = time.perf_counter() - clock
            frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted((folder / "frames").glob("*.png"))])
            unit = frames.astype(np.float64) / 255
            metrics = {k: asdict(walk_metrics(adjacent_distances(unit, DISTANCES[k]))) for k in ("pixel", "ssim")}
            fidelity = {}
            for index, end in ((0, a), (FRAMES - 1, b)):
                if isinstance(end, str):
                    pixels = fit_picture(PICTURES[end], SIZE, SIZE)
                    trip = backend.decode(backend.encode_images(pixels[None]))[0]
                    fidelity[end] = {"psnr": psnr(frames[index], trip), "one_minus_ssim": one_minus_ssim(frames[index], trip)}
            manifest = json.loads((folder / "walk.json").read_text())
            row = {"walk": name, "frames": len(frames), "metrics": metrics, "keyframes": fidelity, "wall_s": wall,
                   "probes": manifest["store"]["probes_rendered"]}
            rows.append(row)
            curves[name] = {k: adjacent_distances(unit, DISTANCES[k]) for k in ("pixel", "ssim")}
            shown = ", ".join(f"{k} {v['psnr']:.1f} dB / {v['one_minus_ssim']:.4f}" for k, v in fidelity.items()) or "-"
            print(f"{name:28s} | {metrics['pixel']['p95_over_median']:9.2f} {metrics['pixel']['max_over_median']:7.2f} | "
                  f"{metrics['ssim']['p95_over_median']:8.2f} {metrics['ssim']['max_over_median']:7.2f} | {shown:27s} | {wall:6.1f}", flush=True)
    if plot:
        draw(curves, plot)
    return rows


def draw(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
    for name, d in curves.items():
        for ax, key in zip(axes, ("pixel", "ssim")):
            ax.plot(d[key] / np.median(d[key]), label=name, lw=1.2)
    for ax, title in zip(axes, ("pixel MAD / median", "1 - SSIM / median")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame", fontsize=8)
        ax.axhline(1, color="grey", lw=0.5)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="inversion,travel")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--plot", metavar="FILE", help="(b): adjacent-frame distances of each walk over its median")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start" + (" (busy)" if load > 1 else ""))
    out = {"load_average": load}
    parts = args.parts.split(",")
    if "inversion" in parts:
        out["inversion"] = part_inversion()
    if "travel" in parts:
        out["travel"] = part_travel(args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
