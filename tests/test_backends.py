"""The model seam: families read from the model's files, SDXL end to end, few-step runs."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_SIZE
from latentwalk.backends import ModelSpec, load_backend, model_family
from latentwalk.backends.sd import SDBackend
from latentwalk.backends.sdxl import SDXLBackend
from latentwalk.cli import main
from latentwalk.encode import probe
from latentwalk.engine import EngineSettings, render_frames
from latentwalk.frames import FrameInputs
from latentwalk.prompts import parse_prompt


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def xl(tiny_sdxl_dir):
    return load_backend(ModelSpec(str(tiny_sdxl_dir)), device="cpu")


def frame(prompt: str, seed: int = 3, guidance: float = 5.0, steps: int = 3, **fields) -> FrameInputs:
    text = str(parse_prompt(prompt))
    return FrameInputs(seed, seed, 0.0, text, text, '""', '""', 0.0, guidance, steps, **fields)


def render_all(backend, frames, batch_size=4, scheduler="euler", spacing="auto"):
    out = {}
    settings = EngineSettings(TINY_SIZE, TINY_SIZE, scheduler, spacing, "slerp", batch_size)
    render_frames(backend, list(dict.fromkeys(frames)), settings, lambda fs, images: out.update(zip(fs, images)))
    return np.stack([out[f] for f in frames])


def test_family_comes_from_the_model_index(tiny_model_dir, tiny_sdxl_dir):
    assert model_family(ModelSpec(str(tiny_model_dir))) is SDBackend
    assert model_family(ModelSpec(str(tiny_sdxl_dir))) is SDXLBackend
    assert model_family(ModelSpec("toy")) is SDBackend


def test_unsupported_pipeline_exits_2_before_any_work(tmp_path, capsys):
    folder = tmp_path / "flux"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    timeline = tmp_path / "t.yaml"
    timeline.write_text(f"model: {folder}\nend: {{frame: 2}}\nkeyframes:\n  - {{frame: 0, prompt: a cat}}\n")
    assert main(["render", str(timeline), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "FluxPipeline" in err and "SDXL" in err and "SD 1.x/2.x" in err and "Traceback" not in err
    assert "t.yaml:1: model: " in err  # the file and line of the field at fault
    assert not (tmp_path / "x.mp4").exists()


def test_sdxl_conditioning_has_both_encoders_and_pooled(xl):
    cond = xl.encode(parse_prompt("a cat in the snow"))
    assert cond["embeds"].shape == (1, 16, 16 + 32) and cond["pooled"].shape == (1, 24)
    # Empty negative prompts are zeros, as the model's force_zeros_for_empty_prompt asks.
    negative = xl.encode(parse_prompt(""), negative=True)
    assert not negative["embeds"].any() and not negative["pooled"].any()
    assert xl.encode(parse_prompt(""))["embeds"].abs().sum() > 0  # but "" as a prompt is encoded


def test_sdxl_expression_identities_are_exact(xl):
    plain = xl.encode(parse_prompt('"a cat"'))
    same = xl.encode(parse_prompt('"a cat" + 0 * ("a dog" - "a cat")'))
    for name in ("embeds", "pooled"):
        assert torch.equal(plain[name], same[name]), name
    half = xl.encode(parse_prompt('mix("a cat", "a dog", 0.5)'))
    dog = xl.encode(parse_prompt('"a dog"'))
    for name in ("embeds", "pooled"):
        torch.testing.assert_close(half[name], (plain[name] + dog[name]) / 2, atol=1e-6, rtol=1e-5)


def test_token_edits_reach_both_sdxl_encoders(xl):
    cat, kitten = xl.encode(parse_prompt("a cat")), xl.encode(parse_prompt("a kitten"))
    edit = xl.encode(parse_prompt("a {cat|kitten:1}"))
    torch.testing.assert_close(edit["embeds"], kitten["embeds"], atol=1e-6, rtol=1e-5)
    partial = xl.encode(parse_prompt("a {cat|kitten:0.3}"))["embeds"]
    for lo, hi in ((0, 16), (16, 48)):  # the first encoder's features, then the second's
        part = partial[..., lo:hi]
        assert not torch.equal(part, cat["embeds"][..., lo:hi]) and not torch.equal(part, kitten["embeds"][..., lo:hi])


def test_sdxl_frames_do_not_depend_on_batch(xl):
    frames = [frame("a cat", seed=s, guidance=g) for s in (1, 2, 3) for g in (1.0, 6.0)]
    one = render_all(xl, frames, batch_size=1)
    assert one.std() > 5
    for batch_size in (2, 5):
        assert np.abs(one.astype(int) - render_all(xl, frames, batch_size=batch_size).astype(int)).max() <= 2


def test_sdxl_timeline_renders_and_sweep_gives_the_same_pixels(tiny_sdxl_dir, tmp_path):
    timeline = tmp_path / "xl.yaml"
    timeline.write_text(
        f"model: {tiny_sdxl_dir}\nwidth: {TINY_SIZE}\nheight: {TINY_SIZE}\nfps: 6\nsteps: 3\nscheduler: euler\nguidance: 5\n"
        "batch_size: 4\ndevice: cpu\nend: {frame: 9}\nkeyframes:\n"
        "  - {frame: 0, prompt: a cat in the snow, seed: 3}\n  - {frame: 6, prompt: a dog at night, seed: 4, negative_prompt: a city}\n"
    )
    assert main(["render", str(timeline), "--out", str(tmp_path / "xl.mp4"), "--frames", str(tmp_path / "png"), "--quiet"]) == 0
    info = probe(tmp_path / "xl.mp4")
    assert info.frames == 9 and (info.width, info.height) == (TINY_SIZE, TINY_SIZE)
    manifest = json.loads((tmp_path / "xl.json").read_text())
    assert manifest["model"]["family"] == "sdxl"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"model: {tiny_sdxl_dir}\nwidth: {TINY_SIZE}\nheight: {TINY_SIZE}\nsteps: 3\nscheduler: euler\nguidance: 5\nbatch_size: 4\n"
        "prompt: a cat in the snow\nx: {param: seed, values: [3, 4]}\n"
    )
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--quiet"]) == 0
    from PIL import Image

    keyframe = np.asarray(Image.open(tmp_path / "png" / "frame_000000.png"))
    cell = np.asarray(Image.open(tmp_path / "sw" / "cell_0_0.png"))
    np.testing.assert_array_equal(keyframe, cell)  # one engine: identical inputs, identical pixels


def test_turbo_style_run_at_guidance_zero_halves_unet_work(xl, tiny_sdxl_dir, tmp_path):
    """SDXL-Turbo's recipe: euler_a, trailing spacing, 1 step, guidance 0."""
    rows = []
    hook = xl.unet.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    try:
        turbo = render_all(xl, [frame("a cat", guidance=0.0, steps=1)], batch_size=2, scheduler="euler_a", spacing="trailing")
        rows_turbo = list(rows)
        rows.clear()
        render_all(xl, [frame("a cat", guidance=2.0, steps=1)], batch_size=2, scheduler="euler_a", spacing="trailing")
    finally:
        hook.remove()
    assert rows_turbo == [2] and rows == [4]  # one step; the guided run carries the unconditional half too
    assert turbo.std() > 5
    again = render_all(xl, [frame("a cat", guidance=0.0, steps=1)], batch_size=2, scheduler="euler_a", spacing="trailing")
    np.testing.assert_array_equal(turbo, again)  # ancestral noise is seeded per frame


def test_v_prediction_models_keep_their_prediction_type(tiny_model_dir, tmp_path):
    """SD 2.x 768-v models: the scheduler reads prediction_type from the model's own config."""
    import shutil

    from latentwalk.schedulers import make_scheduler

    folder = tmp_path / "v"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text()) | {"prediction_type": "v_prediction"}
    config_path.write_text(json.dumps(config))
    v_model = load_backend(ModelSpec(str(folder)), device="cpu")
    for name in ("ddim", "euler", "euler_a", "dpmpp_2m", "lcm"):
        assert make_scheduler(name, v_model.scheduler_config).config.prediction_type == "v_prediction", name
    eps_model = load_backend(ModelSpec(str(tiny_model_dir)), device="cpu")
    f = frame("a cat", steps=2)
    v, eps = render_all(v_model, [f], 1, "ddim"), render_all(eps_model, [f], 1, "ddim")
    assert np.abs(v.astype(int) - eps.astype(int)).mean() > 1  # same weights, read as v: another image
