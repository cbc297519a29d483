import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from latentwalk.toy import world
from latentwalk.toy.train import TINY, TrainConfig, learning_rate, parse_args, train, training_captions

WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two tiny runs with seed 0 and one with seed 1."""
    root = tmp_path_factory.mktemp("toy")
    config = TrainConfig(**TINY)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(replace(config, out=root / name, seed=seed))
    return root / "a", root / "b", root / "c"


def test_tiny_run_writes_a_loadable_pipeline(tiny_runs):
    out = tiny_runs[0]
    index = json.loads((out / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False
    assert not list(out.rglob("*.bin"))
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a snowy night over the mountains", num_inference_steps=2,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).images
    assert image.shape == (1, world.SIZE, world.SIZE, 3)
    assert np.isfinite(image).all()
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["unet_steps"] == TINY["unet_steps"]
    assert set(record["seconds"]) >= {"vae", "unet", "total"}
    assert pipe.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_runs):
    a, b, c = tiny_runs
    for name in WEIGHT_FILES:
        wa, wb, wc = (load_file(run / name) for run in (a, b, c))
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=f"{name}:{key}")
        assert any(not torch.equal(wa[key], wc[key]) for key in wa), name


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    lrs = [learning_rate(step, 100, 1e-3, 10) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))


def test_training_captions_drop_some_prompts_for_guidance():
    config = TrainConfig(caption_dropout=0.1, junk_word_prob=0.0)
    rng = np.random.default_rng(0)
    attributes = [world.random_attributes(rng) for _ in range(2000)]
    captions = training_captions(attributes, config, rng)
    empty = sum(c == "" for c in captions) / len(captions)
    assert 0.07 < empty < 0.13
    assert all(set(c.replace(",", " ").split()) <= set(world.VOCABULARY) for c in captions)


def test_parse_args_defaults_and_overrides():
    config = parse_args(["--out", "x", "--unet-steps", "7", "--seed", "3"])
    assert config.out == Path("x") and config.unet_steps == 7 and config.seed == 3
    assert config.vae_steps == TrainConfig().vae_steps
    tiny = parse_args(["--tiny", "--out", "y"])
    assert tiny.unet_steps == TINY["unet_steps"]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="vae_crop"):
        TrainConfig(vae_crop=30)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
