"""Shared fixtures: a tiny random Stable-Diffusion-layout pipeline and a drum track with known beats."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentwalk.toy.soundtrack import drum_track, write_wav
from latentwalk.toy.tokenizer import write_clip_tokenizer

TINY_WORDS = "a the of over in at with cat kitten dog photo day night snow sunset sea city forest mountains".split()
TINY_SIZE = 32  # pixels; the tiny VAE downsamples by 2, so latents are 16x16
WALK_FRAMES = 14  # frames of walk_timeline: keyframes on 0, 9 and 12


def walk_timeline(model_dir, steps: int = 2, extra: str = "") -> str:
    """A three-keyframe travel timeline on the tiny model (placement and sharing tests); `extra`: more top-level keys."""
    return (
        f"model: {model_dir}\nwidth: 32\nheight: 32\nfps: 8\nsteps: {steps}\nbatch_size: 4\nscheduler: ddim\n"
        f"{extra}end: {{frame: {WALK_FRAMES}}}\n"
        "keyframes:\n  - {frame: 0, prompt: a cat in the snow, seed: 1}\n"
        "  - {frame: 9, prompt: a dog at night, seed: 2}\n  - {frame: 12, prompt: a city, seed: 3}\n"
    )


def build_tiny_pipeline(folder: Path) -> Path:
    """A 2-block UNet, 2-block VAE and 2-layer CLIP text encoder with random weights, saved as diffusers."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(TINY_WORDS, folder / "_tokenizer", max_length=16))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_SIZE,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "tiny")
    return folder / "tiny"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a busy 2-core box crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def drum_wav(tmp_path_factory) -> tuple[Path, "object"]:
    """8 bars at 120 bpm (16 s plus a 1 s tail) with drums, bass and pad; returns (path, Track)."""
    track = drum_track(120.0, 8, musical=True)
    return write_wav(track, tmp_path_factory.mktemp("audio") / "drums.wav"), track


def build_tiny_sdxl_pipeline(folder: Path) -> Path:
    """SDXL's layout in miniature: two CLIP encoders (the second with a projection), pooled
    embeddings and size conditioning (`text_time`), random weights, saved as diffusers."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(1)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(TINY_WORDS, folder / "_tokenizer_xl", max_length=16))

    def encoder_config(hidden: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16, projection_dim=24, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )

    text_encoder = CLIPTextModel(encoder_config(16))
    text_encoder_2 = CLIPTextModelWithProjection(encoder_config(32))
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16 + 32,  # both encoders' features, concatenated
        attention_head_dim=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 24,  # six time ids of 8 dims, plus the pooled projection
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_SIZE,
        force_upcast=True,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(folder / "tiny-xl")
    return folder / "tiny-xl"


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    return build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("model-xl"))


@pytest.fixture(scope="session")
def _audio_cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio-cache")


@pytest.fixture(autouse=True)
def audio_cache(_audio_cache_root, monkeypatch) -> Path:
    """Audio analyses cache into a folder of this test session, never the user's ~/.cache."""
    monkeypatch.setenv("LATENTWALK_CACHE", str(_audio_cache_root))
    return _audio_cache_root


def latentwalk_command() -> list[str]:
    """The installed `latentwalk` entry point (or the module, where no script is installed)."""
    script = Path(sys.executable).parent / "latentwalk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "latentwalk.cli"]


@pytest.fixture(scope="module")
def run(_audio_cache_root):
    """run(*args, cwd, expect=0): `latentwalk ARGS` in a subprocess, one thread, the shared analysis cache."""
    env = {**os.environ, "LATENTWALK_CACHE": str(_audio_cache_root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def run(*args, cwd: Path, expect: int | None = 0) -> subprocess.CompletedProcess:
        result = subprocess.run([*latentwalk_command(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if expect is not None:
            assert result.returncode == expect, f"latentwalk {' '.join(map(str, args))}: exit {result.returncode}\n{result.stderr}"
        return result

    return run
