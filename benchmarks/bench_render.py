"""Benchmark `latentwalk.render`: efficiency, speed-up over a plain diffusers loop, memory, reuse.

Not a test: it prints a table and writes benchmarks/results-<machine>.json.

  (a) efficiency   pure model time (the same denoise + decode batches, timed alone) ÷ the
                   end-to-end wall time of `render`, and ÷ its render stage alone
  (b) speed-up     a plain StableDiffusionPipeline call per frame (prompt_embeds,
                   negative_prompt_embeds, latents; same steps, size and scheduler) ÷ render
  (c) memory       peak RSS (and CUDA max allocated) of a render of 100 and of 1,000 frames,
                   each in its own process; on CPU at 2 steps to keep 1,000 frames affordable
  (d) reuse        fraction of frames re-rendered after one keyframe's prompt changes

  python benchmarks/bench_render.py                       # the embedded toy model, CPU
  python benchmarks/bench_render.py --model PATH          # any diffusers folder
  python benchmarks/bench_render.py --sd15                # SD-1.5-size random weights, 512x512 fp16 (GPU)
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from latentwalk.api import frame_plan, plan, render
from latentwalk.stages import engine_settings, model_options, model_spec
from latentwalk.backends import load_backend
from latentwalk.engine import Conditioning, batch_inputs, plan_batches
from latentwalk.frames import timeline_frames
from latentwalk.sampling import denoise
from latentwalk.schedulers import make_scheduler, uses_guidance
from latentwalk.store import FrameStore
from latentwalk.timeline import load_timeline

HERE = Path(__file__).parent
PROMPTS = [
    "a cat in the snow",
    "a dog on the beach at sunset",
    "a city at night",
    "a forest in the fog",
    "mountains over the sea",
    "a photo of a kitten",
    "a red car in the rain",
    "a lighthouse in a storm",
]
SD15_WORDS = sorted({w for p in PROMPTS for w in p.split()})


def write_timeline(folder: Path, model: str, *, size: int, steps: int, frames: int, keyframes: int, batch_size: int,
                   device: str, dtype: str, changed: int | None = None) -> Path:
    """Evenly spaced keyframes with distinct prompts and seeds; `changed`: that keyframe's prompt edited."""
    lines = [f"model: {model}", f"width: {size}", f"height: {size}", "fps: 12", f"steps: {steps}",
             f"batch_size: {batch_size}", f"device: {device}", f"dtype: {dtype}", f"end: {{frame: {frames}}}", "keyframes:"]
    for k in range(keyframes):
        prompt = PROMPTS[k % len(PROMPTS)] + (", oil painting" if k == changed else "")
        lines.append(f"  - {{frame: {round(k * (frames - 1) / (keyframes - 1))}, prompt: '{prompt}', seed: {k + 1}}}")
    path = folder / ("edited.yaml" if changed is not None else "walk.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_time(timeline_path: Path, device: str | None) -> tuple[float, int]:
    """Seconds of denoise + decode alone over the batches `render` runs (fresh), and their count."""
    timeline = load_timeline(timeline_path)
    s = timeline.settings
    frames = frame_plan(timeline, plan(timeline), FrameStore(timeline_path.parent / "unused"), device=device, fresh=True)
    backend = load_backend(model_spec(s), device or s.device, s.dtype, model_options(s))
    conditioning = Conditioning(backend, frames.missing)
    shape = backend.latent_shape(s.width, s.height)
    batches = plan_batches(frames.missing, s.batch_size)
    inputs = [batch_inputs(list(b) + [b[-1]] * (s.batch_size - len(b)), conditioning, shape, s.interpolation) for b in batches]

    def run(x, first):
        latents = denoise(backend, x, s.scheduler, first.steps, width=s.width, height=s.height, guided=uses_guidance(first.guidance))
        return backend.decode(latents)  # decode ends in .cpu(): synchronised

    run(inputs[0], batches[0][0])  # warm-up, as render's own first batch is
    sync(backend.device)
    t0 = time.perf_counter()
    for x, b in zip(inputs, batches):
        run(x, b[0])
    sync(backend.device)
    return time.perf_counter() - t0, len(batches)


def plain_diffusers_time(timeline_path: Path, device: str | None, n: int) -> float:
    """Seconds for a StableDiffusionPipeline call per frame, for the first `n` frames of the plan."""
    import diffusers

    timeline = load_timeline(timeline_path)
    s = timeline.settings
    backend = load_backend(model_spec(s), device or s.device, s.dtype, model_options(s))
    pipe = backend.pipe
    pipe.scheduler = make_scheduler(s.scheduler, backend.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    schedule = plan(timeline)
    records = timeline_frames(schedule.frames, [k.keyframe for k in schedule.keyframes], s.negative_prompt, s.steps)[:n]
    conditioning = Conditioning(backend, records)
    shape = backend.latent_shape(s.width, s.height)
    per_frame = [batch_inputs([r], conditioning, shape, s.interpolation) for r in records]

    def call(x, r):
        return pipe(
            prompt_embeds=x.cond["embeds"].to(backend.device, backend.dtype),
            negative_prompt_embeds=x.uncond["embeds"].to(backend.device, backend.dtype),
            latents=x.noise.to(backend.device, backend.dtype), guidance_scale=r.guidance, num_inference_steps=s.steps,
            height=s.height, width=s.width, output_type="np",
        ).images

    call(per_frame[0], records[0])  # warm-up
    sync(backend.device)
    t0 = time.perf_counter()
    for x, r in zip(per_frame, records):
        call(x, r)
    sync(backend.device)
    return time.perf_counter() - t0


def memory_child(args: argparse.Namespace) -> None:
    """Render `--memory-child` frames fresh and print peak memory as JSON (one process per size)."""
    torch.set_num_threads(args.threads) if args.threads else None
    with tempfile.TemporaryDirectory() as tmp:
        path = write_timeline(Path(tmp), args.model, size=args.memory_size, steps=args.memory_steps, frames=args.memory_child,
                              keyframes=args.keyframes, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
        t0 = time.perf_counter()
        result = render(path, Path(tmp) / "walk.mp4", progress=False)
        wall = time.perf_counter() - t0
        store_mb = FrameStore(result.store).usage().bytes / 1e6
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"frames": args.memory_child, "peak_rss_mib": rss, "cuda_max_allocated_mib": cuda,
                      "wall_s": wall, "store_mb": store_mb}))


def build_sd15(folder: Path) -> Path:
    """An SD-1.5-architecture pipeline with random weights (no download), saved in fp16."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from latentwalk.toy.tokenizer import write_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(SD15_WORDS, folder / "_tokenizer", max_length=77))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the default config is SD 1.x's
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder / "sd15")
    return folder / "sd15"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="diffusers folder (default: the embedded toy model)")
    parser.add_argument("--sd15", action="store_true", help="SD-1.5-size random model at 512x512 fp16 (for GPUs)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=48, help="frames for (a), (b) and (d)")
    parser.add_argument("--plain-frames", type=int, help="frames for the plain diffusers loop (default: --frames)")
    parser.add_argument("--keyframes", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--memory-frames", default="100,1000", help="frame counts for (c); empty to skip")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--memory-size", type=int, default=32)
    parser.add_argument("--machine", default=platform.node() or "local", help="name in the results file")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)

    tmp = Path(tempfile.mkdtemp(prefix="latentwalk-bench-"))
    if args.sd15:
        args.model, args.size, args.dtype = str(build_sd15(tmp)), 512, "float16"
        args.memory_size, args.memory_steps = 512, args.steps
    device = None if args.device == "auto" else args.device
    results: dict = {"machine": args.machine, "settings": {k: v for k, v in vars(args).items() if k != "memory_child"}}
    results["settings"]["torch_threads"] = torch.get_num_threads()
    results["device_name"] = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    common = dict(size=args.size, steps=args.steps, frames=args.frames, keyframes=args.keyframes, batch_size=args.batch_size,
                  device=args.device, dtype=args.dtype)
    walk = write_timeline(tmp, args.model, **common)

    # (a) Efficiency: the end-to-end render, then the same batches' model calls alone.
    render(walk, tmp / "warmup.mp4", store_dir=tmp / "warmup.frames", progress=False)  # page cache, lazy imports
    t0 = time.perf_counter()
    result = render(walk, tmp / "walk.mp4", progress=False, fresh=True)
    wall = time.perf_counter() - t0
    pure, n_batches = model_time(walk, device)
    results["efficiency"] = {
        "frames": result.frames_rendered, "batches": n_batches, "model_s": pure, "render_wall_s": wall,
        "render_stage_s": result.timings["render_s"], "timings": result.timings,
        "efficiency": pure / wall, "efficiency_render_stage": pure / result.timings["render_s"],
    }

    # (b) Speed-up over a plain diffusers pipeline call per frame.
    n_plain = args.plain_frames or args.frames
    plain = plain_diffusers_time(walk, device, n_plain)
    per_frame_ours = wall / result.plan.n_frames
    results["speedup"] = {"plain_frames": n_plain, "plain_s": plain, "plain_s_per_frame": plain / n_plain,
                          "render_s_per_frame": per_frame_ours, "speedup": plain / n_plain / per_frame_ours}

    # (c) Peak memory, each frame count in its own process (ru_maxrss is a process high-water mark).
    results["memory"] = []
    for n in [int(x) for x in args.memory_frames.split(",") if x]:
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--model", args.model, "--keyframes", str(args.keyframes),
               "--batch-size", str(args.batch_size), "--device", args.device, "--dtype", args.dtype,
               "--memory-size", str(args.memory_size), "--memory-steps", str(args.memory_steps)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"memory run of {n} frames failed:\n{out.stderr[-3000:]}")
        results["memory"].append(json.loads(out.stdout.strip().splitlines()[-1]))

    # (d) Reuse: edit one middle keyframe's prompt and render again from the same store.
    changed = args.keyframes // 2
    edited = write_timeline(tmp, args.model, changed=changed, **common)
    again = render(edited, tmp / "walk.mp4", progress=False)
    results["reuse"] = {"keyframes": args.keyframes, "changed_keyframe": changed, "frames": again.plan.n_frames,
                        "rerendered": again.frames_rendered, "fraction": again.frames_rendered / again.plan.n_frames}

    print_table(results)
    out_path = HERE / f"results-{args.machine}.json"
    out_path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out_path}")


def print_table(r: dict) -> None:
    s, e, p, u = r["settings"], r["efficiency"], r["speedup"], r["reuse"]
    print(f"latentwalk render benchmark on {r['machine']} ({r['device_name']}, {s['torch_threads']} torch threads)")
    print(f"model {s['model']}, {s['size']}x{s['size']}, {s['steps']} steps, batch {s['batch_size']}, dtype {s['dtype']}\n")
    rows = [
        ("(a) efficiency, model ÷ render wall", f"{e['efficiency']:.3f}", f"{e['model_s']:.2f}s model / {e['render_wall_s']:.2f}s wall, {e['frames']} frames"),
        ("    model ÷ render stage", f"{e['efficiency_render_stage']:.3f}", f"stage {e['render_stage_s']:.2f}s (no load/encode)"),
        ("(b) speed-up over plain diffusers", f"{p['speedup']:.2f}x", f"{p['plain_s_per_frame']*1e3:.1f} vs {p['render_s_per_frame']*1e3:.1f} ms/frame"),
    ]
    for m in r["memory"]:
        cuda = f", cuda {m['cuda_max_allocated_mib']:.0f} MiB" if m["cuda_max_allocated_mib"] is not None else ""
        rows.append((f"(c) peak memory, {m['frames']} frames", f"{m['peak_rss_mib']:.0f} MiB",
                     f"RSS{cuda}; {m['wall_s']:.1f}s, store {m['store_mb']:.1f} MB ({s['memory_size']}px, {s['memory_steps']} steps)"))
    rows.append((f"(d) re-rendered, 1 of {u['keyframes']} prompts edited", f"{u['fraction']:.3f}", f"{u['rerendered']} of {u['frames']} frames"))
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>9}  {c}")


if __name__ == "__main__":
    main()
