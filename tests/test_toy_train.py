import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from latentwalk.toy import world
from latentwalk.toy.train import PHOTOS, TINY, TrainConfig, learning_rate, parse_args, train, training_captions

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
    assert config.photo_tiles == 0  # the shipped model's VAE saw world pictures only
    photos = parse_args(["--photos", "--vae-only", "--out", "z", "--vae-steps", "5"])
    assert photos.photo_tiles > 0 and photos.vae_only and photos.vae_steps == 5
    assert photos.vae_channels == PHOTOS["vae_channels"]
    with pytest.raises(SystemExit):
        parse_args(["--vae-only"])  # would put a new VAE under the shipped UNet


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="vae_crop"):
        TrainConfig(vae_crop=30)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


# The VAE's photographs (`latentwalk/toy/pictures.py`): fetched only by the trainer, so these
# tests use pictures made here.


def test_picture_table_is_pinned_and_holds_some_out():
    from latentwalk.toy import pictures

    names = [(p[0], p[1]) for p in pictures.PICTURES]
    assert len(names) == len(set(names))
    assert all(p[0] in pictures.WHEELS or p[0] in pictures.DEBS for p in pictures.PICTURES)
    assert all(len(p[2]) == 16 and int(p[2], 16) >= 0 for p in pictures.PICTURES)
    held = [p for p in pictures.PICTURES if pictures.HELD_OUT in p[3:]]
    assert 3 <= len(held) < len(pictures.PICTURES) // 4


def test_tiles_are_seeded_views_at_random_scales():
    from latentwalk.toy import pictures

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 200, 3), dtype=np.uint8), np.full((128, 160, 3), 200, np.uint8)]
    a = pictures.tiles(images, 40, np.random.default_rng(1))
    b = pictures.tiles(images, 40, np.random.default_rng(1))
    c = pictures.tiles(images, 40, np.random.default_rng(2))
    assert a.shape == (40, 128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    flat = a.std(axis=(1, 2)).max(axis=1)  # largest per-channel spread of each view
    assert (flat < 1).any() and (flat > 20).any()  # views of both pictures
    # scales: a view of the noise picture shrunk more averages more pixels, so it is flatter
    noise = flat[flat > 1]
    assert noise.max() > 1.2 * noise.min()
    # colour jitter: the flat grey picture comes back at several brightnesses
    greys = {int(t.mean()) for t, s in zip(a, flat) if s < 1}
    assert len(greys) > 3


def test_square_and_drawings():
    from latentwalk.toy import pictures

    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = 255  # the centred square is all white
    assert pictures.square(wide, 64).min() == 255
    drawn = pictures.drawings()
    assert set(drawn) >= {"ridge", "sail"}
    for image in drawn.values():
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and image.std() > 20
    ridge = drawn["ridge"].astype(float)
    assert ridge[:60, :, 0].mean() > ridge[:60, :, 2].mean() + 40  # a warm sky
    assert ridge[-10:].mean() < 60  # a dark ridge at the bottom
    sail = drawn["sail"].astype(float)
    assert sail[-30:, :, 2].mean() > sail[-30:, :, 0].mean() + 40  # a blue sea
    assert (sail.min(axis=-1) > 240).sum() > 200  # a white sail


def test_psnr_and_ssim():
    from latentwalk.toy import pictures

    rng = np.random.default_rng(0)
    a = rng.integers(30, 200, (64, 64, 3)).astype(np.uint8)
    assert pictures.psnr(a, a) == float("inf")
    assert pictures.psnr(a, a + np.uint8(25)) == pytest.approx(20 * np.log10(255 / 25))
    assert pictures.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0 < pictures.ssim(a, noisy) < 0.8


def test_deb_data_reads_the_data_archive(tmp_path):
    import io
    import tarfile

    from latentwalk.toy import pictures

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tar:
        info = tarfile.TarInfo("./usr/share/x.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b"abc"), (b"data.tar.xz", payload.getvalue())]
    blob = b"!<arch>\n"
    for name, body in members:
        blob += name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
        blob += str(len(body)).encode().ljust(10) + b"`\n" + body + (b"\n" if len(body) % 2 else b"")
    deb = tmp_path / "x.deb"
    deb.write_bytes(blob)
    archive = pictures.deb_data(deb)
    assert archive.extractfile("./usr/share/x.txt").read() == b"hello"
    (tmp_path / "bad.deb").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a Debian package"):
        pictures.deb_data(tmp_path / "bad.deb")


def test_evaluate_vae_reports_each_held_out_picture(tiny_runs, monkeypatch):
    from diffusers import AutoencoderKL

    from latentwalk.toy import pictures, train as train_module

    rng = np.random.default_rng(0)
    fake = [pictures.Picture("pkg:data/a.png", rng.integers(0, 256, (200, 150, 3), dtype=np.uint8), True),
            pictures.Picture("pkg:data/b.png", rng.integers(0, 256, (150, 150, 3), dtype=np.uint8), False)]
    monkeypatch.setattr(pictures, "load", lambda cache=None: fake)
    vae = AutoencoderKL.from_pretrained(tiny_runs[0] / "vae")
    figures = train_module.evaluate_vae(vae)
    assert set(figures) == {"a.png", *(f"drawn {k}" for k in pictures.drawings()), "held-out mean", "world mean"}
    for f in figures.values():
        assert 0 < f["psnr"] < 60 and -1 <= f["ssim"] <= 1
    mean = np.mean([figures[k]["psnr"] for k in figures if k not in ("held-out mean", "world mean")])
    assert figures["held-out mean"]["psnr"] == pytest.approx(mean, abs=1e-3)


def test_tiny_vae_only_run_on_photos(tmp_path, monkeypatch):
    """The --photos path end to end on made-up pictures: photograph views in the VAE batches,
    the held-out figures printed and recorded, the VAE saved alone."""
    from diffusers import AutoencoderKL

    from latentwalk.toy import pictures

    rng = np.random.default_rng(0)
    fake = [pictures.Picture(f"pkg:data/{i}.png", rng.integers(0, 256, (160, 200, 3), dtype=np.uint8), i == 0)
            for i in range(3)]
    loaded = []
    monkeypatch.setattr(pictures, "load", lambda cache=None: loaded.append(cache) or fake)
    config = replace(TrainConfig(**TINY), out=tmp_path / "vae_run", photo_tiles=6, vae_only=True)
    train(config)
    assert loaded  # the photographs were asked for
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae_run" / "vae")
    assert vae.config.block_out_channels == list(TINY["vae_channels"])
    record = json.loads((tmp_path / "vae_run" / "vae" / "training.json").read_text())
    assert record["config"]["photo_tiles"] == 6
    assert {"0.png", "held-out mean", "world mean"} <= set(record["vae_held_out"])
    assert not (tmp_path / "vae_run" / "unet").exists()
