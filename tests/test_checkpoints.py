"""Single-file checkpoints (original layout) with configs from a local folder, and VAE overrides."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_layout import write_sd_checkpoint
from conftest import TINY_SIZE
from latentwalk.api import render
from latentwalk.backends import ModelSpec, load_backend, model_family
from latentwalk.backends.sd import SDBackend
from latentwalk.cli import main
from latentwalk.engine import EngineSettings, render_frames
from latentwalk.frames import FrameInputs
from latentwalk.prompts import parse_prompt


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """As on a machine without the model hub: diffusers' config fetches fail at once."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory) -> Path:
    return write_sd_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def frame(prompt: str, seed: int) -> FrameInputs:
    text, negative = str(parse_prompt(prompt)), str(parse_prompt(""))
    return FrameInputs(seed, seed, 0.0, text, text, negative, negative, 0.0, 5.0, 3)


FRAMES = [frame("a cat in the snow", 3), frame("a dog at night", 4)]


def render_all(backend, frames=FRAMES) -> np.ndarray:
    out = {}
    render_frames(backend, frames, EngineSettings(TINY_SIZE, TINY_SIZE, "ddim", "auto", "slerp", 2), lambda fs, images: out.update(zip(fs, images)))
    return np.stack([out[f] for f in frames])


@pytest.fixture(scope="module")
def folder_frames(tiny_model_dir) -> np.ndarray:
    return render_all(load_backend(ModelSpec(str(tiny_model_dir)), device="cpu"))


def timeline(tmp_path: Path, model: Path, extra: str = "") -> Path:
    path = tmp_path / f"{model.stem}.yaml"
    path.write_text(
        f"model: {model}\n{extra}width: {TINY_SIZE}\nheight: {TINY_SIZE}\nfps: 4\nsteps: 3\nbatch_size: 2\ndevice: cpu\nspacing: t\n"
        "end: {frame: 3}\nkeyframes:\n  - {frame: 0, prompt: a cat in the snow, seed: 3}\n  - {frame: 2, prompt: a dog at night, seed: 4}\n"
    )
    return path


def test_checkpoint_files_render_the_frames_of_their_folder(tiny_model_dir, checkpoint, folder_frames, tmp_path):
    assert model_family(ModelSpec(str(checkpoint))) is SDBackend  # read from the tensor names
    from_file = load_backend(ModelSpec(str(checkpoint), model_config=str(tiny_model_dir)), device="cpu")
    np.testing.assert_array_equal(render_all(from_file), folder_frames)
    ckpt = write_sd_checkpoint(tiny_model_dir, tmp_path / "tiny.ckpt")  # the older pickle format
    np.testing.assert_array_equal(render_all(load_backend(ModelSpec(str(ckpt), model_config=str(tiny_model_dir)), device="cpu")), folder_frames)


def test_a_timeline_on_a_checkpoint_renders_like_its_folder(tiny_model_dir, checkpoint, tmp_path):
    on_file = render(timeline(tmp_path, checkpoint, f"model_config: {tiny_model_dir}\n"), tmp_path / "file.mp4", frames_dir=tmp_path / "file", progress=False)
    on_folder = render(timeline(tmp_path, tiny_model_dir), tmp_path / "folder.mp4", frames_dir=tmp_path / "folder", progress=False)
    assert on_file.frames_rendered == on_folder.frames_rendered == 3
    for i in range(3):
        name = f"frame_{i:06d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "file" / name)), np.asarray(Image.open(tmp_path / "folder" / name)))


def test_a_checkpoint_without_model_config_exits_2_saying_to_set_it(checkpoint, tmp_path, capsys):
    assert main(["render", str(timeline(tmp_path, checkpoint)), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model_config: needed for the checkpoint" in err and "set model_config: to a local diffusers folder" in err
    assert "Traceback" not in err and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("name, content", [("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"), ("broken.ckpt", b"not a pickle")])
def test_a_corrupt_checkpoint_exits_2_before_any_work(tiny_model_dir, tmp_path, capsys, name, content):
    broken = tmp_path / name
    broken.write_bytes(content)
    assert main(["render", str(timeline(tmp_path, broken, f"model_config: {tiny_model_dir}\n")), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"model: cannot read checkpoint '{broken}'" in err and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_a_checkpoint_with_configs_of_another_family_exits_2(checkpoint, tiny_sdxl_dir, tmp_path, capsys):
    assert main(["render", str(timeline(tmp_path, checkpoint, f"model_config: {tiny_sdxl_dir}\n")), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tiny.yaml:2: model_config: " in err and "is an SDXL model, but the checkpoint" in err and str(tiny_sdxl_dir) in err
    assert "Traceback" not in err


# --- vae: a VAE folder replacing the model's --------------------------------------------------------


def test_a_vae_override_is_used(tiny_model_dir, folder_frames, tmp_path):
    same = tmp_path / "same-vae"
    shutil.copytree(tiny_model_dir / "vae", same)
    np.testing.assert_array_equal(render_all(load_backend(ModelSpec(str(tiny_model_dir), vae=str(same)), device="cpu")), folder_frames)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(same)
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.2  # brighter: every pixel moves up
    vae.save_pretrained(tmp_path / "bright-vae")
    bright = render_all(load_backend(ModelSpec(str(tiny_model_dir), vae=str(tmp_path / "bright-vae")), device="cpu"))
    shift = bright.astype(int) - folder_frames.astype(int)
    assert shift.mean() > 10 and (shift >= 0).all()  # 0.2 in [-1, 1] is ~25 levels, less where clipped at 255


def test_a_vae_of_another_latent_width_fails_at_load_naming_vae(tiny_model_dir, tmp_path):
    from diffusers import AutoencoderKL

    from latentwalk.errors import UserError

    config = dict(AutoencoderKL.load_config(tiny_model_dir / "vae"), latent_channels=8)  # as SD3's and Flux's 16
    AutoencoderKL.from_config(config).save_pretrained(tmp_path / "wide-vae")
    with pytest.raises(UserError, match=r"^vae: the VAE in '.*wide-vae' makes latents of 8 channels, but this model's UNet takes 4"):
        load_backend(ModelSpec(str(tiny_model_dir), vae=str(tmp_path / "wide-vae")), device="cpu")


def test_vae_override_enters_the_frame_key(tiny_model_dir, tmp_path):
    from latentwalk.api import render_identity
    from latentwalk.timeline import load_timeline

    shutil.copytree(tiny_model_dir / "vae", tmp_path / "vae")
    own = render_identity(load_timeline(timeline(tmp_path, tiny_model_dir)).settings)
    override = render_identity(load_timeline(timeline(tmp_path, tiny_model_dir, f"vae: {tmp_path / 'vae'}\n")).settings)
    assert own.model_fingerprint != override.model_fingerprint and own.model == override.model


def test_float16_keeps_an_sdxl_vae_that_asks_for_it_in_float32(tiny_sdxl_dir):
    """SDXL's VAE overflows in float16 (black frames); its config says force_upcast, as diffusers reads it."""
    from latentwalk.backends import ModelOptions, apply_options

    xl = load_backend(ModelSpec(str(tiny_sdxl_dir)), device="cpu")  # float16 on the CPU is refused: place it by hand
    apply_options(xl.pipe, torch.device("cpu"), torch.float16, ModelOptions())
    assert xl.pipe.unet.dtype == torch.float16 and xl.pipe.text_encoder_2.dtype == torch.float16
    assert xl.pipe.vae.dtype == torch.float32
    images = xl.decode(torch.randn(1, 4, TINY_SIZE // 2, TINY_SIZE // 2, dtype=torch.float16))
    assert images.shape == (1, TINY_SIZE, TINY_SIZE, 3) and images.std() > 5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sdxl_renders_in_float16_on_a_gpu_like_float32(tiny_sdxl_dir):
    frames = [frame("a cat in the snow", 3)]
    half = render_all(load_backend(ModelSpec(str(tiny_sdxl_dir)), device="cuda", dtype="float16"), frames)
    full = render_all(load_backend(ModelSpec(str(tiny_sdxl_dir)), device="cuda", dtype="float32"), frames)
    assert half.std() > 5 and np.abs(half.astype(int) - full.astype(int)).mean() < 3
