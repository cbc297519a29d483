"""Run nateraw/stable-diffusion-videos' walk() on a diffusers folder, for bench_smooth.py's side-by-side speed run.

Runs in its own virtualenv (pip install stable-diffusion-videos), not latentwalk's:
  VENV/bin/python benchmarks/nateraw_walk.py --model toy --prompts A B --seeds 1 2 --frames 96 --out DIR
Same settings as latentwalk's render: DDIM from the model's own config, float32 on the CPU,
guidance 7.5, no safety checker, an mp4 at the end (walk's make_video).
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).parent
TOY_MODEL = HERE.parent / "latentwalk" / "toy" / "model"  # `toy`, without importing latentwalk here


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="toy")
    parser.add_argument("--prompts", nargs=2, required=True)
    parser.add_argument("--seeds", nargs=2, type=int, required=True)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import sdv_shim

    sdv_shim.install()
    import torch
    from diffusers import DDIMScheduler
    from stable_diffusion_videos import StableDiffusionWalkPipeline

    folder = str(TOY_MODEL) if args.model == "toy" else args.model
    pipe = StableDiffusionWalkPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.to("cpu")
    pipe.walk(prompts=list(args.prompts), seeds=list(args.seeds), num_interpolation_steps=args.frames,
              output_dir=str(args.out), name="walk", fps=args.fps, num_inference_steps=args.steps, guidance_scale=7.5,
              height=args.size, width=args.size, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
