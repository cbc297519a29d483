"""Benchmark output.upscale (latentwalk/upscale.py) on the embedded model, 128 -> 256 px: seconds per frame.

Not a test: it prints a table (and writes JSON with --json). Eight travel frames of the embedded
model (`model: toy`, 128 px, 20 ddim steps, batch 8) are denoised once; then, per frame, in
alternating rounds (A B A B: refine, model, refine, model, ...):

  lanczos   the pixel enlargement alone (what refine starts from)
  refine    Lanczos then img2img at 256 px with each frame's own inputs, steps 20 at strength 0.35
            (7 UNet steps at 4x the pixels), one padded batch of 8, as a render makes them
  model     spandrel's ESRGAN in Real-ESRGAN x2plus's layout (pixel unshuffle, 64 filters, 23 RRDB blocks),
            random weights (the cost is the architecture's, whatever the weights), one frame at a time

With the figures: how far each refined frame moved from its own frame (MAD of its 2x2-block mean
against the 128 px frame, in 0-255 levels) next to the median MAD between adjacent frames, so
"keeps the composition" is a number. `model` needs spandrel (the upscale extra); without it that
row says why it was not measured.

  python benchmarks/bench_upscale.py
  python benchmarks/bench_upscale.py --rounds 3 --json upscale.json
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from latentwalk.backends import ModelSpec, load_backend
from latentwalk.device import resolve_model
from latentwalk.engine import Conditioning, render_frames
from latentwalk.frames import FrameInputs
from latentwalk.stages import engine_settings, model_options
from latentwalk.timeline import UpscaleSpec, parse_timeline
from latentwalk.upscale import lanczos, refine, run_model

TIMELINE = """model: toy
width: 128
height: 128
fps: 8
steps: 20
batch_size: 8
spacing: t
end: {frame: 8}
keyframes:
  - {frame: 0, prompt: a red circle on a blue sky, seed: 1}
  - {frame: 7, prompt: a yellow square over the sea, seed: 2}
"""


def base_frames(backend, settings) -> tuple[list[FrameInputs], np.ndarray]:
    from latentwalk import api

    timeline = parse_timeline(TIMELINE)
    schedule = api.plan(timeline)
    inputs = list(api.schedule_inputs(timeline, schedule))
    out: dict = {}
    render_frames(backend, inputs, settings, lambda batch, images: out.update(zip(batch, images)), overlap=False)
    return inputs, np.stack([out[f] for f in inputs])


def per_frame(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds of refine and model")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()

    # 1. The embedded model and its eight frames at 128 px.
    timeline = parse_timeline(TIMELINE)
    settings = timeline.settings
    backend = load_backend(ModelSpec(resolve_model("toy")), "cpu", "auto", model_options(settings, "cpu"))
    inputs, bases = base_frames(backend, engine_settings(settings))
    n = len(inputs)
    spec = UpscaleSpec(factor=2, method="refine", steps=20, strength=0.35, model=None)
    large = engine_settings(replace(settings, width=256, height=256))
    sources = [(f"frame{i}", f) for i, f in enumerate(inputs)]
    conditioning = Conditioning(backend, [f for _, f in sources])

    # 2. The super-resolution network, if spandrel is there.
    model, why = None, None
    try:
        from spandrel import ModelLoader
        from spandrel.architectures.ESRGAN import ESRGAN

        torch.manual_seed(0)
        # Real-ESRGAN x2plus's layout: the frame pixel-unshuffled to half size (12 channels), 23 RRDB blocks, x4 up
        network = ESRGAN(in_nc=12, out_nc=3, num_filters=64, num_blocks=23, scale=4, shuffle_factor=2)
        model = ModelLoader("cpu").load_from_state_dict(network.state_dict()).eval()  # detected as a user's file is
    except Exception as e:  # ImportError without the extra; a torchvision that does not load
        why = f"{type(e).__name__}: {e}"

    # 3. Alternating rounds.
    times: dict[str, list[float]] = {"lanczos": [], "refine": [], "model": []}
    refined = None
    for _ in range(args.rounds):
        times["lanczos"].append(per_frame(lambda: [lanczos(b, 2) for b in bases], n))
        start = time.perf_counter()
        refined = refine(backend, large, spec, sources, list(bases), conditioning)
        times["refine"].append((time.perf_counter() - start) / n)
        if model is not None:
            times["model"].append(per_frame(lambda: [run_model(model, b) for b in bases], n))

    # 4. How far refine moved each frame, against how far adjacent frames are apart.
    down = refined.astype(float).reshape(n, 128, 2, 128, 2, 3).mean(axis=(2, 4))
    moved = [float(np.abs(d - b).mean()) for d, b in zip(down, bases.astype(float))]
    adjacent = [float(np.abs(a - b).mean()) for a, b in zip(bases[:-1].astype(float), bases[1:].astype(float))]

    threads = torch.get_num_threads()
    print(f"embedded model, 128 -> 256 px, {n} frames, CPU, {threads} torch threads, {args.rounds} rounds (A B A B)")
    print(f"{'stage':<8} {'s/frame (each round)':<32} median")
    for name, values in times.items():
        if values:
            print(f"{name:<8} {', '.join(f'{v:.3f}' for v in values):<32} {statistics.median(values):.3f}")
        else:
            print(f"{name:<8} not measured: {why}")
    print(f"refine moved each frame by MAD {statistics.median(moved):.1f} levels (median; max {max(moved):.1f}); "
          f"adjacent frames differ by {statistics.median(adjacent):.1f} (median)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "threads": threads, "frames": n, "seconds_per_frame": times, "model_not_measured": why,
            "refine_moved_mad": moved, "adjacent_mad": adjacent, "torch": torch.__version__, "argv": sys.argv,
        }, indent=1))


if __name__ == "__main__":
    main()
