"""Cadence's trade-off: speed against distance from the fully diffused video, and flicker.

Not a test: it prints a table and writes benchmarks/feedback-cadence.json. One feedback chain
of the toy model, rendered with cadence 1, 2, 4 and 8 (each alone, batch 1, so seconds compare):

  seconds        wall time of the whole chain
  vs cadence 1   mean |frame − the cadence-1 frame| in uint8 levels, over all frames
  flicker        mean |frame_k − frame_(k−1)| in uint8 levels (lower is smoother)

  python benchmarks/feedback_cadence.py               # 96 frames, 64x64, 6 steps
  python benchmarks/feedback_cadence.py --frames 32
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from latentwalk.camera import Motion, diffused_indices
from latentwalk.backends import ModelSpec, load_backend
from latentwalk.engine import EngineSettings
from latentwalk.feedback import Coherence, FeedbackFrame, engine_fns, render_feedback
from latentwalk.frames import FrameInputs

HERE = Path(__file__).parent
CADENCES = (1, 2, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--strength", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    # 1. Model and callables over the engine.
    backend = load_backend(ModelSpec("toy"), "cpu")
    prompt = "mountains at sunset"
    base = [
        FeedbackFrame(
            row=FrameInputs(k // 24, k // 24 + 1, (k % 24) / 24, prompt, prompt, "", "", 0.0, 5.0, args.steps), key=f"{k}", cut=k == 0,
            motion=Motion(zoom=1.02, angle=0.5, translate_x=0.3), strength=args.strength,
            coherence=Coherence(colour=1.0, noise=0.02), noise_seed=k,
        )
        for k in range(args.frames)
    ]
    first_fn, img2img_fn = engine_fns(backend, base, EngineSettings(args.size, args.size, "ddim", "auto", "slerp", batch_size=1))
    # 2. One chain per cadence, timed alone.
    videos, seconds = {}, {}
    for cadence in CADENCES:
        diffused = set(diffused_indices(args.frames, cadence))
        frames = [replace(f, diffused=k in diffused) for k, f in enumerate(base)]
        store: dict[str, np.ndarray] = {}
        start = time.perf_counter()
        keys = render_feedback(frames, img2img_fn, first_fn, store.get, store.__setitem__, batch_size=1)
        seconds[cadence] = time.perf_counter() - start
        videos[cadence] = np.stack([store[k] for k in keys]).astype(np.float64)
    # 3. The table.
    print(f"\n{args.frames} frames, {args.size}x{args.size}, {args.steps} steps, strength {args.strength}")
    print("cadence  seconds  speed-up  vs cadence 1  flicker")
    results = {}
    for cadence, video in videos.items():
        results[cadence] = {
            "seconds": seconds[cadence],
            "speed_up": seconds[1] / seconds[cadence],
            "vs_cadence_1": float(np.abs(video - videos[1]).mean()),
            "flicker": float(np.abs(np.diff(video, axis=0)).mean()),
        }
        r = results[cadence]
        print(f"{cadence:7}  {r['seconds']:7.1f}  {r['speed_up']:7.2f}x  {r['vs_cadence_1']:12.1f}  {r['flicker']:7.2f}")
    out = HERE / "feedback-cadence.json"
    out.write_text(json.dumps({"settings": vars(args), "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
