"""Benchmark the model seam on an SDXL-architecture model: a guided run, a Turbo-style run, and
the same frames through diffusers' own StableDiffusionXLPipeline.

Not a test: it prints one JSON line per run. The model is built here with random weights (no
download), so the figures are speed, not image quality:
  - on CUDA: SDXL 1.0's own configs (UNet 2.6 B parameters, CLIP ViT-L + OpenCLIP ViT-bigG
    text encoders, the 4-level VAE), 1024x1024, float16 (the VAE upcast as its config asks);
  - on the CPU: the same architecture scaled down (channels /10, the deepest level's 10
    transformer layers cut to 2, 2-layer text encoders), 128x128, float32. Say so when quoting.

  python benchmarks/bench_models.py                 # SDXL (euler, guidance 5) and Turbo (euler_a, trailing, guidance 0)
  python benchmarks/bench_models.py --pipeline      # also diffusers' pipeline on the same frames, A B A B
  python benchmarks/bench_models.py --lora          # also the cost of a rank-8 LoRA with a weight per row
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latentwalk.backends import ModelSpec, load_backend
from latentwalk.engine import Conditioning, EngineSettings, batch_inputs, render_frames
from latentwalk.frames import FrameInputs
from latentwalk.prompts import parse_prompt
from latentwalk.timeline import LoraSpec
from latentwalk.toy.tokenizer import write_clip_tokenizer

PROMPTS = ["a cat in the snow", "a dog on the beach at sunset", "a city at night", "a forest in the fog"]
WORDS = sorted({w for p in PROMPTS for w in p.split()})


def sdxl_configs(full: bool) -> dict:
    """SDXL 1.0's configs (stabilityai/stable-diffusion-xl-base-1.0), or the CPU-sized cut."""
    if full:
        return dict(
            unet=dict(block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), sample_size=128),
            clip_l=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu"),
            clip_g=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu", projection_dim=1280),
            vae=dict(block_out_channels=(128, 256, 512, 512)),
            time_dim=256,
        )
    return dict(
        unet=dict(block_out_channels=(32, 64, 128), transformer_layers_per_block=(1, 2, 2), attention_head_dim=(1, 2, 4), sample_size=16),
        clip_l=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu"),
        clip_g=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2, hidden_act="gelu", projection_dim=128),
        vae=dict(block_out_channels=(32, 32, 64, 64)),
        time_dim=32,
    )


def build_sdxl(folder: Path, full: bool) -> Path:
    """An SDXL-layout diffusers folder with random weights (float16 when full)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    c = sdxl_configs(full)
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(WORDS, folder / "_tokenizer", max_length=77))
    special = dict(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(CLIPTextConfig(**c["clip_l"], **special))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**c["clip_g"], **special))
    unet = UNet2DConditionModel(
        **c["unet"], in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=c["clip_l"]["hidden_size"] + c["clip_g"]["hidden_size"], use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=c["time_dim"],
        projection_class_embeddings_input_dim=6 * c["time_dim"] + c["clip_g"]["projection_dim"],
    )
    vae = AutoencoderKL(
        **c["vae"], in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.13025, force_upcast=True, sample_size=1024 if full else 128,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    if full:
        pipe.to(torch.float16)
    pipe.save_pretrained(folder / "sdxl")
    return folder / "sdxl"


def make_lora(model: Path, out: Path) -> Path:
    """A random rank-8 LoRA on every attention projection of the UNet."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionXLPipeline.save_lora_weights(out.parent, weight_name=out.name, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)))
    return out


def walk(n: int, guidance: float, steps: int, lora: bool = False) -> list[FrameInputs]:
    """n frames travelling through the prompts (conditioning and noise both move)."""
    texts = [str(parse_prompt(p)) for p in PROMPTS]
    negative = str(parse_prompt(""))
    frames = []
    for i in range(n):
        position = i * (len(PROMPTS) - 1) / max(n - 1, 1)
        k = min(int(position), len(PROMPTS) - 2)
        t = position - k
        params = (("lora:style", 0.2 + 0.8 * i / max(n - 1, 1)),) if lora else ()
        frames.append(FrameInputs(k + 1, k + 2, t, texts[k], texts[k + 1], negative, negative, t, guidance, steps, params=params))
    return frames


def timed_engine(backend, frames, settings) -> tuple[float, np.ndarray]:
    out: dict = {}
    sync(backend)
    t0 = time.perf_counter()
    render_frames(backend, frames, settings, lambda fs, images: out.update(zip(fs, images)))
    sync(backend)
    return time.perf_counter() - t0, np.stack([out[f] for f in frames])


def timed_pipeline(backend, frames, settings, steps: int, guidance: float) -> tuple[float, np.ndarray]:
    """The same frames (conditioning, noise, steps, scheduler) through StableDiffusionXLPipeline, batch by batch."""
    from latentwalk.schedulers import make_scheduler

    pipe = backend.pipe
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(settings.scheduler, backend.scheduler_config, settings.timestep_spacing)
    conditioning = Conditioning(backend, frames)
    shape = backend.latent_shape(settings.width, settings.height)
    images = []
    sync(backend)
    t0 = time.perf_counter()
    for i in range(0, len(frames), settings.batch_size):
        rows = frames[i : i + settings.batch_size]
        b = batch_inputs(rows, conditioning, shape, settings.interpolation)
        dt = backend.dtype
        generator = [torch.Generator("cpu").manual_seed(s) for s in b.step_seeds]
        out = pipe(
            prompt_embeds=b.cond["embeds"].to(backend.device, dt), pooled_prompt_embeds=b.cond["pooled"].to(backend.device, dt),
            negative_prompt_embeds=b.uncond["embeds"].to(backend.device, dt), negative_pooled_prompt_embeds=b.uncond["pooled"].to(backend.device, dt),
            latents=b.noise.to(backend.device, dt), num_inference_steps=steps, guidance_scale=guidance,
            width=settings.width, height=settings.height, output_type="np", generator=generator,
        ).images
        images.append((out * 255).round().astype(np.uint8))
    sync(backend)
    return time.perf_counter() - t0, np.concatenate(images)


def sync(backend) -> None:
    if backend.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=None, help="frames per run (default: 32 on CUDA, 8 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 4 on CUDA, 4 on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="guided run's steps (default: 30 on CUDA, 6 on the CPU)")
    parser.add_argument("--turbo-steps", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--pipeline", action="store_true", help="also diffusers' StableDiffusionXLPipeline on the same frames, A B A B")
    parser.add_argument("--lora", action="store_true", help="also the guided run with a rank-8 LoRA whose weight differs per frame")
    parser.add_argument("--repeats", type=int, default=2, help="A B rounds for --pipeline")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device, dtype, size = ("cuda", "float16", 1024) if cuda else ("cpu", "float32", 128)
    n = args.frames or (32 if cuda else 8)
    batch_size = args.batch_size or 4
    steps = args.steps or (30 if cuda else 6)
    tmp = Path(tempfile.mkdtemp(prefix="latentwalk-bench-models-"))
    t0 = time.perf_counter()
    folder = build_sdxl(tmp, full=cuda)
    print(json.dumps({"run": "build", "model": "SDXL 1.0 configs" if cuda else "SDXL architecture scaled down for CPU",
                      "random_weights": True, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    backend = load_backend(ModelSpec(str(folder)), device, dtype)
    runs = [("sdxl", "euler", "auto", steps, 5.0)] + [(f"turbo-{s}step", "euler_a", "trailing", s, 0.0) for s in args.turbo_steps]
    for name, scheduler, spacing, run_steps, guidance in runs:
        settings = EngineSettings(size, size, scheduler, spacing, "slerp", batch_size)
        frames = walk(n, guidance, run_steps)
        timed_engine(backend, frames[:batch_size], settings)  # warm-up: kernels, allocator, caches
        engine_s, pipeline_s, diffs = [], [], []
        for _ in range(args.repeats if args.pipeline else 1):
            calls = backend.unet_calls
            seconds, images = timed_engine(backend, frames, settings)
            engine_s.append(seconds)
            unet_calls = backend.unet_calls - calls
            if args.pipeline:
                seconds, reference = timed_pipeline(backend, frames, settings, run_steps, guidance)
                pipeline_s.append(seconds)
                diffs.append(int(np.abs(images.astype(int) - reference.astype(int)).max()))
        row = {"run": name, "device": device, "dtype": dtype, "size": size, "frames": n, "batch_size": batch_size, "steps": run_steps,
               "guidance": guidance, "scheduler": scheduler, "spacing": spacing, "unet_calls": unet_calls,
               "unet_rows_per_call": batch_size * (2 if guidance > 1 else 1), "seconds": [round(s, 2) for s in engine_s],
               "frames_per_s": round(n / statistics.median(engine_s), 3)}
        if args.pipeline:
            row |= {"pipeline_seconds": [round(s, 2) for s in pipeline_s], "pipeline_over_engine": round(statistics.median(pipeline_s) / statistics.median(engine_s), 3),
                    "max_pixel_difference": max(diffs)}
        print(json.dumps(row), flush=True)
    if args.lora:
        lora = make_lora(folder, tmp / "lora" / "style.safetensors")
        styled = load_backend(ModelSpec(str(folder), loras=(LoraSpec("style", str(lora), 1.0),)), device, dtype)
        settings = EngineSettings(size, size, "euler", "auto", "slerp", batch_size)
        timed_engine(styled, walk(batch_size, 5.0, steps, lora=True), settings)
        plain_s, _ = timed_engine(backend, walk(n, 5.0, steps), settings)
        lora_s, _ = timed_engine(styled, walk(n, 5.0, steps, lora=True), settings)
        print(json.dumps({"run": "sdxl-lora", "rank": 8, "weights": "one per frame, 0.2 to 1.0", "frames_per_s": round(n / lora_s, 3),
                          "without_lora_frames_per_s": round(n / plain_s, 3), "lora_over_plain_time": round(lora_s / plain_s, 3)}), flush=True)


if __name__ == "__main__":
    main()
