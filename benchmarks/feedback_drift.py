"""Colour drift of the img2img feedback loop over long runs, with and without the coherence tools.

Not a test: it prints a table and writes benchmarks/feedback-drift-<frames>.json. Four chains
of the same camera move, prompt and seeds run side by side in one batch (the driver's
independent chains), differing only in their `Coherence`:

  none      plain feedback
  colour    LAB mean/std matched to the chain's first frame
  guard     unsharp mask 0.25, lightness std within ×1.1 of the reference, noise 0.02
  all       colour + guard

Per frame: mean and std (over pixels) of R, G and B in [0, 1]. Drift: the largest |mean_k − mean_0|
over the run, per channel; spread ratio: std_k / std_0 at the end.

  python benchmarks/feedback_drift.py                 # 1,000 frames, toy model, 64x64, 6 steps
  python benchmarks/feedback_drift.py --frames 100    # a quick run
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latentwalk.camera import Motion
from latentwalk.backends import ModelSpec, load_backend
from latentwalk.engine import EngineSettings
from latentwalk.feedback import Coherence, FeedbackFrame, engine_fns, render_feedback
from latentwalk.frames import FrameInputs

HERE = Path(__file__).parent
CONFIGS = {
    "none": Coherence(colour=0.0),
    "colour": Coherence(colour=1.0),
    "guard": Coherence(colour=0.0, sharpen=0.25, max_contrast=1.1, noise=0.02),
    "all": Coherence(colour=1.0, sharpen=0.25, max_contrast=1.1, noise=0.02),
}
SEED_EVERY = 50  # frames between seeds: the noise slerps from seed to seed, as between keyframes
REPORT_AT = (0, 10, 50, 100, 200, 500, 999)


def record(k: int, prompt: str, steps: int) -> FrameInputs:
    """Frame k's noise travels from seed k // 50 to the next; one prompt throughout."""
    a = k // SEED_EVERY
    return FrameInputs(a, a + 1, (k % SEED_EVERY) / SEED_EVERY, prompt, prompt, "", "", 0.0, 5.0, steps)


def chain(n: int, coherence: Coherence, strength: float, motion: Motion, prompt: str, steps: int) -> list[FeedbackFrame]:
    return [
        FeedbackFrame(row=record(k, prompt, steps), key=f"{k}", cut=k == 0, motion=motion, strength=strength, coherence=coherence, noise_seed=k)
        for k in range(n)
    ]


def stats(frame: np.ndarray) -> tuple[list[float], list[float]]:
    pixels = frame.reshape(-1, 3).astype(np.float64) / 255
    return pixels.mean(0).tolist(), pixels.std(0).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--prompt", default="mountains at sunset")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # 1. Model and the two callables over the engine; one chain per configuration, in one
    # frame list (each chain starts with a cut).
    backend = load_backend(ModelSpec("toy"), "cpu")
    settings = EngineSettings(args.size, args.size, "ddim", "auto", "slerp", batch_size=len(CONFIGS))
    motion = Motion(zoom=1.02, angle=0.5, translate_x=0.3)
    frames = [f for c in CONFIGS.values() for f in chain(args.frames, c, args.strength, motion, args.prompt, args.steps)]
    first_fn, img2img_fn = engine_fns(backend, frames, settings)
    store: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    done = [0]

    def progress(active):
        done[0] += 1
        if done[0] % 100 == 0:
            print(f"  round {done[0]}/{args.frames}  {time.perf_counter() - start:.0f} s", flush=True)

    keys = render_feedback(frames, img2img_fn, first_fn, store.get, store.__setitem__, batch_size=len(CONFIGS), on_step=progress)
    seconds = time.perf_counter() - start
    # 3. Statistics per chain and frame.
    results = {}
    for c, name in enumerate(CONFIGS):
        series = [stats(store[keys[c * args.frames + k]]) for k in range(args.frames)]
        means, stds = np.array([m for m, _ in series]), np.array([s for _, s in series])
        results[name] = {
            "mean": means.tolist(),
            "std": stds.tolist(),
            "max_mean_drift": np.abs(means - means[0]).max(0).tolist(),
            "median_mean_drift": np.median(np.abs(means - means[0]), 0).tolist(),
            "p95_mean_drift": np.percentile(np.abs(means - means[0]), 95, 0).tolist(),
            "end_spread_ratio": (stds[-1] / stds[0]).tolist(),
        }
    # 4. The table.
    print(f"\n{args.frames} frames x {len(CONFIGS)} chains, {args.size}x{args.size}, {args.steps} steps, strength {args.strength}, "
          f"{motion}, {seconds:.0f} s ({seconds / args.frames:.2f} s per round of {len(CONFIGS)} frames)")
    print("config  frame   mean R  mean G  mean B |  std R   std G   std B")
    for name, r in results.items():
        for k in (k for k in REPORT_AT if k < args.frames):
            m, s = r["mean"][k], r["std"][k]
            print(f"{name:7} {k:5}   {m[0]:.3f}   {m[1]:.3f}   {m[2]:.3f}  |  {s[0]:.3f}   {s[1]:.3f}   {s[2]:.3f}")
        d, q = r["max_mean_drift"], r["end_spread_ratio"]
        p50, p95 = r["median_mean_drift"], r["p95_mean_drift"]
        print(f"{name:7} |mean_k - mean_0| median {p50[0]:.3f} {p50[1]:.3f} {p50[2]:.3f}, 95th percentile {p95[0]:.3f} "
              f"{p95[1]:.3f} {p95[2]:.3f}, max {d[0]:.3f} {d[1]:.3f} {d[2]:.3f};  end std / first std {q[0]:.2f} {q[1]:.2f} {q[2]:.2f}\n")
    out = HERE / f"feedback-drift-{args.frames}.json"
    settings = {"frames": args.frames, "size": args.size, "steps": args.steps, "strength": args.strength, "prompt": args.prompt,
                "motion": str(motion), "configs": {k: str(v) for k, v in CONFIGS.items()}, "seconds": seconds}
    out.write_text(json.dumps({"settings": settings, "results": results}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
