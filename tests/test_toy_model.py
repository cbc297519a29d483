"""The committed toy model knows what its words mean.

Every check renders prompt pairs that differ in one attribute, with the same seeds (so the
same starting noise), and asserts a gap in a global picture statistic for EACH seed. The
margins sit at one half to two thirds of the smallest gap measured on the committed weights
(night >= 0.22 darker, snow >= 0.12 whiter, sunset >= 0.047 warmer, over SEEDS). Fog is
learned too weakly to test: foggy pictures are not measurably flatter (see the model card).
"""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from latentwalk.toy import MODEL_DIR, world

SEEDS = (0, 1, 2)
STEPS = 15
GUIDANCE = 5.0
NIGHT_DARKER_BY = 0.15  # mean brightness, day minus night
SNOW_WHITER_BY = 0.08  # mean of min(R, G, B), snow minus clear
SUNSET_WARMER_BY = 0.03  # mean R - B, sunset minus day
SAME_WITH_UNKNOWN_WORDS = 0.1  # max mean |difference| when unknown words are mixed in
MAX_MEGABYTES = 25.0


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def render(pipe):
    """prompt -> (len(SEEDS), H, W, 3) floats in [0, 1]; cached, as prompts repeat."""
    cache: dict[str, np.ndarray] = {}

    def render(prompt: str) -> np.ndarray:
        if prompt not in cache:
            cache[prompt] = pipe(
                [prompt] * len(SEEDS), num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=[torch.Generator().manual_seed(s) for s in SEEDS], output_type="np",
            ).images
        return cache[prompt]

    return render


def brightness(images: np.ndarray) -> np.ndarray:
    return images.mean(axis=(1, 2, 3))


def whiteness(images: np.ndarray) -> np.ndarray:
    return images.min(axis=-1).mean(axis=(1, 2))


def warmth(images: np.ndarray) -> np.ndarray:
    return (images[..., 0] - images[..., 2]).mean(axis=(1, 2))


def test_model_folder_is_small_plain_diffusers():
    index = json.loads((MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    weights = list(MODEL_DIR.rglob("*.safetensors"))
    assert len(weights) == 3
    assert not list(MODEL_DIR.rglob("*.bin"))
    assert sum(w.stat().st_size for w in weights) / 1e6 < MAX_MEGABYTES


def test_frames_are_128_pixels(render):
    images = render("mountains at night")
    assert images.shape == (len(SEEDS), world.SIZE, world.SIZE, 3)
    assert np.isfinite(images).all()


@pytest.mark.parametrize("landscape", ["mountains", "sea", "city"])
def test_night_is_darker_than_day(render, landscape):
    gap = brightness(render(f"{landscape} during the day")) - brightness(render(f"{landscape} at night"))
    assert (gap > NIGHT_DARKER_BY).all(), gap


@pytest.mark.parametrize("landscape", ["mountains", "forest", "city"])
def test_snow_is_whiter(render, landscape):
    gap = whiteness(render(f"a snowy day over the {landscape}")) - whiteness(render(f"a clear day over the {landscape}"))
    assert (gap > SNOW_WHITER_BY).all(), gap


@pytest.mark.parametrize("landscape", ["sea", "mountains"])
def test_sunset_is_warmer_than_day(render, landscape):
    gap = warmth(render(f"the {landscape} at sunset")) - warmth(render(f"the {landscape} during the day"))
    assert (gap > SUNSET_WARMER_BY).all(), gap


# Held-out pairs (`world.HELD_OUT`): never seen together in training, each part must show.


def test_snowy_desert_is_whiter_than_desert(render):
    gap = whiteness(render("a snowy day over the desert")) - whiteness(render("a clear day over the desert"))
    assert (gap > SNOW_WHITER_BY).all(), gap


def test_city_at_sunset_is_warmer_than_city_by_day(render):
    gap = warmth(render("the city at sunset")) - warmth(render("the city during the day"))
    assert (gap > SUNSET_WARMER_BY).all(), gap


# Words outside the vocabulary are spelled out in characters; they must not derail a prompt.


def test_unknown_words_keep_the_attributes(render):
    day = render("a beautiful day over the mountains, 4k")
    night = render("a beautiful night over the mountains, 4k")
    assert (brightness(day) - brightness(night) > NIGHT_DARKER_BY).all()
    snowy = render("cinematic snowy mountains during the day")
    clear = render("cinematic clear mountains during the day")
    assert (whiteness(snowy) - whiteness(clear) > SNOW_WHITER_BY).all()


def test_unknown_words_change_little(render):
    plain = render("snowy mountains at night")
    noisy = render("epic snowy mountains at night, artstation")
    assert np.abs(plain - noisy).mean() < SAME_WITH_UNKNOWN_WORDS


def test_prompt_of_only_unknown_words_renders(render):
    images = render("zxqv glorp wibble")
    assert images.shape == (len(SEEDS), world.SIZE, world.SIZE, 3)
    assert np.isfinite(images).all()


# Travel through `latentwalk render`, the path a user takes.

TRAVEL_FRAMES = 9
TRAVEL_NOISE = 0.01  # a frame may be this much brighter than the one before it
TRAVEL_DARKER_BY = 0.15  # first frame minus last frame, mean brightness


@pytest.mark.parametrize("seed", SEEDS)
def test_day_to_night_travel_gets_darker_frame_after_frame(tmp_path, seed):
    from latentwalk.api import render as render_video

    timeline = tmp_path / "travel.yaml"
    timeline.write_text(
        f"model: toy\nfps: 8\nsteps: {STEPS}\nguidance: {GUIDANCE}\nbatch_size: {TRAVEL_FRAMES}\n"
        f"end: {{frame: {TRAVEL_FRAMES}}}\nkeyframes:\n"
        f"  - {{frame: 0, prompt: a clear day over the mountains, seed: {seed}}}\n"
        f"  - {{frame: {TRAVEL_FRAMES - 1}, prompt: a clear night over the mountains}}\n"
    )
    render_video(timeline, tmp_path / "travel.mp4", frames_dir=tmp_path / "frames", progress=False)
    import imageio.v3 as iio

    frames = np.stack([iio.imread(tmp_path / "frames" / f"frame_{i:06d}.png") for i in range(TRAVEL_FRAMES)]) / 255.0
    light = brightness(frames)
    assert (np.diff(light) < TRAVEL_NOISE).all(), light
    assert light[0] - light[-1] > TRAVEL_DARKER_BY, light


# The VAE's round trip (encode, decode at 128x128) of pictures it never trained on: the drawings
# of `latentwalk/toy/pictures.py`, and world scenes. The shipped VAE measures ridge 21.96 dB,
# sail 15.82, house 15.08 and 20.74 over these 8 world scenes; the bars sit 1 dB below, so that a
# retrained model is no worse (issue 25 asks for >= 24 dB on held-out pictures; not reached yet).
# The held-out photographs need the training downloads, so `python -m latentwalk.toy.train
# --evaluate` and benchmarks/bench_vae.py measure them.

DRAWN_PSNR_ABOVE = {"ridge": 20.9, "sail": 14.8, "house": 14.0}  # dB, per drawing
WORLD_PSNR_ABOVE = 19.7  # dB, mean over 8 world scenes


def test_vae_round_trip_holds_drawn_pictures_and_the_world(pipe):
    from latentwalk.toy import pictures
    from latentwalk.toy.train import WORLD_EVAL_SCENES, WORLD_EVAL_SEED, round_trip

    drawn = pictures.drawings()
    back = round_trip(pipe.vae, np.stack(list(drawn.values())))
    measured = {name: pictures.psnr(a, b) for (name, a), b in zip(drawn.items(), back)}
    assert all(measured[name] > DRAWN_PSNR_ABOVE[name] for name in DRAWN_PSNR_ABOVE), measured
    rng = np.random.default_rng(WORLD_EVAL_SEED)
    scenes = np.stack([world.sample(rng).image for _ in range(WORLD_EVAL_SCENES // 4)])
    world_psnr = np.mean([pictures.psnr(a, b) for a, b in zip(scenes, round_trip(pipe.vae, scenes))])
    assert world_psnr > WORLD_PSNR_ABOVE, world_psnr
