"""latentwalk.sweep: validation, grid layout and labels, weight/seed/strength cells, seeds mode, the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_SIZE
from latentwalk import cli
from latentwalk.errors import UserError
from latentwalk.sheet import GAP, LINE, PAD
from latentwalk.sweep import (
    blank_placeholders,
    cell_batches,
    fill_placeholders,
    parse_sweep,
    placeholder_names,
    run_sweep,
    sweep_cells,
)

STEPS = 3
CAT_TO_KITTEN = '"a cat" + {w} * ("a kitten" - "a cat")'


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from latentwalk.backends import ModelSpec, load_backend

    return load_backend(ModelSpec(str(tiny_model_dir)), "cpu", "float32")


def spec(tiny_model_dir: Path, **fields) -> dict:
    return {"model": str(tiny_model_dir), "width": TINY_SIZE, "height": TINY_SIZE, "steps": STEPS, "seed": 7} | fields


# --- pure parts --------------------------------------------------------------------------------


def test_placeholders_skip_escapes_and_keep_columns():
    template = 'mix("a \\{w\\} day", "night", {w}) + {v2} * "snow"'
    assert placeholder_names(template) == ["w", "v2"]
    assert fill_placeholders(template, {"w": "0.25", "v2": "-1.0"}) == 'mix("a \\{w\\} day", "night", 0.25) + -1.0 * "snow"'
    blank = blank_placeholders(template)
    assert len(blank) == len(template) and "{w}" not in blank.replace("\\{w\\}", "")


def test_cells_vary_only_their_axes_and_steps_split_batches():
    sweep = parse_sweep(
        "prompt: a cat\nseed: 3\nguidance: 6\nx: {param: steps, values: [2, 4, 2]}\ny: {param: guidance, values: [1, 9]}\n"
    )
    cells = sweep_cells(sweep)
    assert [(c.row, c.col, c.steps, c.guidance, c.seed) for c in cells] == [
        (0, 0, 2, 1.0, 3), (0, 1, 4, 1.0, 3), (0, 2, 2, 1.0, 3),
        (1, 0, 2, 9.0, 3), (1, 1, 4, 9.0, 3), (1, 2, 2, 9.0, 3),
    ]  # fmt: skip
    batches = cell_batches(cells, batch_size=3)
    # Batches share steps and guidance mode (guidance 1 runs without the unconditional half);
    # (0, 0) and (0, 2) have identical inputs: one frame, rendered once, shown twice.
    assert [[(c.row, c.col) for c in b] for b in batches] == [[(0, 0), (0, 2)], [(0, 1)], [(1, 0), (1, 2)], [(1, 1)]]
    assert all(len({c.steps for c in b}) == 1 and len({c.guidance > 1 for c in b}) == 1 for b in batches)


def test_range_gives_clean_values():
    sweep = parse_sweep(f"prompt: '{CAT_TO_KITTEN}'\nx: {{param: w, range: [0, 0.3, 4]}}\n")
    assert sweep.x.values == (0.0, 0.1, 0.2, 0.3)
    assert [c.prompt for c in sweep_cells(sweep)][1] == '"a cat" + 0.1 * ("a kitten" - "a cat")'


# --- rendering on the tiny model ---------------------------------------------------------------


def test_grid_size_sheet_and_manifest_labels(tiny_model_dir, tiny_model, tmp_path):
    s = spec(tiny_model_dir, prompt=CAT_TO_KITTEN, x={"param": "w", "range": [0, 1, 3]}, y={"param": "seed", "values": [1, 2]})
    result = run_sweep(s, tmp_path, model=tiny_model)

    assert len(result.cells) == 6 and result.images.shape == (2, 3, TINY_SIZE, TINY_SIZE, 3)
    assert [p.name for p in result.cell_paths] == [f"cell_{r}_{c}.png" for r in range(2) for c in range(3)]
    for cell, path in zip(result.cells, result.cell_paths):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), result.image(cell.row, cell.col))

    # The sheet: enlarged cells plus label margins, each cell's pixels exactly where the layout says.
    sheet = np.asarray(Image.open(result.sheet))
    layout = result.layout
    side = TINY_SIZE * layout.scale
    assert layout.left > 0 and layout.top >= 3 * LINE  # y labels left; title, x title, x values on top
    assert sheet.shape[1] == PAD + layout.left + 3 * side + 2 * GAP + PAD
    assert sheet.shape[0] == layout.top + 2 * side + GAP + PAD
    for cell in result.cells:
        x0, y0 = layout.cell_origin(cell.row, cell.col)
        enlarged = result.image(cell.row, cell.col).repeat(layout.scale, 0).repeat(layout.scale, 1)
        np.testing.assert_array_equal(sheet[y0 : y0 + side, x0 : x0 + side], enlarged)
    assert (sheet[: layout.top] < 128).any()  # text was drawn

    manifest = json.loads(result.manifest.read_text())
    assert manifest["axes"]["x"] == {"param": "w", "values": [0.0, 0.5, 1.0], "labels": ["0", "0.5", "1"]}
    assert manifest["axes"]["y"] == {"param": "seed", "values": [1, 2], "labels": ["1", "2"]}
    assert [c["values"] for c in manifest["cells"]] == [{"w": w, "seed": s} for s in (1, 2) for w in (0.0, 0.5, 1.0)]
    assert [c["file"] for c in manifest["cells"]] == [p.name for p in result.cell_paths]
    assert manifest["files"]["sheet"] == "sheet.png"


def test_identical_seed_and_prompt_give_identical_cells(tiny_model_dir, tiny_model, tmp_path):
    result = run_sweep(spec(tiny_model_dir, prompt="a dog in the snow", x={"param": "seed", "values": [3, 3, 4]}), tmp_path, model=tiny_model)
    # Batch rows share kernels but not always their summation order: allow one level of rounding.
    same = np.abs(result.image(0, 0).astype(int) - result.image(0, 1))
    other = np.abs(result.image(0, 0).astype(int) - result.image(0, 2))
    assert same.max() <= 1 and same.mean() < 0.01 and other.mean() > 5, (same.max(), other.mean())


def test_weight_endpoints_equal_plain_prompt_renders(tiny_model_dir, tiny_model, tmp_path):
    """mix(a, b, 0) drops b's term, so its conditioning is a's own encoding, bit for bit."""
    from latentwalk.engine import EngineSettings, render_frames
    from latentwalk.frames import FrameInputs

    s = spec(tiny_model_dir, prompt='mix("a cat", "a kitten", {w})', guidance=5.0, x={"param": "w", "values": [0, 0.5, 1]})
    result = run_sweep(s, tmp_path, model=tiny_model)
    for col, plain in ((0, "a cat"), (2, "a kitten")):
        # The same frame as a timeline keyframe would give it: the engine is shared.
        frame = FrameInputs(7, 7, 0.0, f'"{plain}"', f'"{plain}"', '""', '""', 0.0, 5.0, STEPS)
        out = []
        render_frames(tiny_model, [frame], EngineSettings(TINY_SIZE, TINY_SIZE, "ddim", "auto", "slerp", 8), lambda f, images: out.extend(images))
        np.testing.assert_array_equal(result.image(0, col), out[0], err_msg=f"w={col / 2}: differs from {plain!r}")
    assert not np.array_equal(result.image(0, 0), result.image(0, 1))


def silent_unet_model(model):
    """The tiny model with a UNet that predicts zero noise: DDIM then returns x_t / sqrt(alphā_t) exactly."""
    import copy

    unet = copy.deepcopy(model.unet)
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    silent = copy.copy(model)
    silent.unet = unet
    return silent


def gradient_image() -> np.ndarray:
    yy, xx = np.mgrid[0:TINY_SIZE, 0:TINY_SIZE]
    return np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], -1).astype(np.uint8)  # (H, W, 3)


def test_img2img_strength_sweep(tiny_model_dir, tiny_model, tmp_path):
    from latentwalk.sweep import encode_image

    init = gradient_image()
    Image.fromarray(init).save(tmp_path / "init.png")
    s = spec(tiny_model_dir, prompt="a photo of the sea", init_image="init.png", steps=4,
             x={"param": "strength", "values": [0, 0.25, 0.5, 0.75, 1]})  # fmt: skip
    path = tmp_path / "strength.yaml"
    path.write_text(json.dumps(s))  # JSON is YAML; init_image resolves against the file's folder
    result = run_sweep(path, tmp_path / "out", model=silent_unet_model(tiny_model))

    # Only strength changes between cells.
    fixed = {(c.prompt, c.seed, c.guidance, c.steps) for c in result.cells}
    assert len(fixed) == 1 and [c.strength for c in result.cells] == [0, 0.25, 0.5, 0.75, 1]
    # Strength 0 is the init image through the VAE and back (the tiny VAE is random: that is its tolerance).
    round_trip = tiny_model.decode(encode_image(tiny_model, init))[0]
    np.testing.assert_array_equal(result.image(0, 0), round_trip)
    # Any strength above 0 moves away; by how much is checked in latent space below, because the
    # random tiny decoder saturates at the slightest change in its latents.
    assert all(np.abs(result.image(0, col).astype(float) - round_trip).mean() > 1 for col in range(1, 5))


def test_img2img_noises_to_the_timestep_of_its_strength(tiny_model):
    """diffusers' img2img: add_noise at the first of the truncated timesteps, 4 · strength steps left."""
    from diffusers import DDIMScheduler

    from latentwalk.interpolation import seed_noise
    from latentwalk.sampling import BatchInputs, denoise
    from latentwalk.schedulers import img2img_start
    from latentwalk.sweep import encode_image

    model = silent_unet_model(tiny_model)
    init_latents = encode_image(model, gradient_image())  # (1, C, h, w)
    noise = seed_noise(5, tuple(init_latents.shape[1:]))[None]
    context = torch.zeros(1, 16, 32)
    inputs = BatchInputs(
        noise=noise, cond={"embeds": context}, uncond={"embeds": context}, guidance=torch.tensor([3.0]), step_seeds=(0,), init_latents=init_latents
    )
    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(4)
    # With zero predicted noise DDIM's x0 estimate stays x_t / sqrt(alphā_t) = init + sqrt((1 - alphā_t) / alphā_t) · noise;
    # the last step scales it by sqrt(alphā_0), as set_alpha_to_one=False leaves the final alpha.
    final = scheduler.alphas_cumprod[0].item() ** 0.5
    distances = []
    for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
        latents = denoise(model, inputs, "ddim", 4, width=TINY_SIZE, height=TINY_SIZE, strength=strength)
        if strength == 0:
            torch.testing.assert_close(latents, init_latents, atol=0, rtol=0)
        else:
            alpha = scheduler.alphas_cumprod[scheduler.timesteps[img2img_start(4, strength)]].item()
            expected = final * (init_latents + ((1 - alpha) / alpha) ** 0.5 * noise)
            torch.testing.assert_close(latents, expected, atol=1e-4, rtol=1e-4)
        distances.append((latents - init_latents).abs().mean().item())
    assert all(b > a for a, b in zip(distances, distances[1:])), distances


def test_seeds_mode_numbers_a_square_grid_through_the_cli(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "seeds.yaml"
    path.write_text(
        f"model: {tiny_model_dir}\nwidth: {TINY_SIZE}\nheight: {TINY_SIZE}\nsteps: 2\n"
        "prompt: the sea at night\nseeds: {count: 5, start: 10}\nfps: 2\n"
    )
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), "--video", "--quiet"]) == 0
    assert "wrote 5 cells (2x3)" in capsys.readouterr().out

    manifest = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert manifest["mode"] == "seeds" and manifest["grid"] == {"rows": 2, "cols": 3}
    assert [(c["row"], c["col"], c["seed"], c["label"]) for c in manifest["cells"]] == [
        (0, 0, 10, "10"), (0, 1, 11, "11"), (0, 2, 12, "12"), (1, 0, 13, "13"), (1, 1, 14, "14"),
    ]  # fmt: skip
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"sheet.png", "sweep.mp4", "cell_1_1.png"}

    from latentwalk.encode import probe

    info = probe(tmp_path / "out" / "sweep.mp4")
    assert (info.frames, info.width, info.has_audio) == (5, TINY_SIZE, False)


# --- bad sweeps: exit status 2, the message names the field, the value and the line -------------

BAD_SWEEPS = [
    ("prompt: a cat\nx: {param: seed, values: [1]}\nwidht: 64\n", ["bad.yaml:3", "widht", "did you mean 'width'"]),
    ("x: {param: seed, values: [1]}\n", ["bad.yaml:1", "prompt", "missing"]),
    ("prompt: a cat\n", ["x", "missing"]),
    ("prompt: a cat\nwidth: big\nx: {param: seed, values: [1]}\n", ["bad.yaml:2", "width", "'big'"]),
    ("prompt: a cat\nx: {param: sharpness, values: [1]}\n", ["bad.yaml:2", "x.param", "'sharpness'"]),
    (f"prompt: '{CAT_TO_KITTEN}'\nx: {{param: seed, values: [1]}}\n", ["bad.yaml:1", "prompt", "{w} has no axis"]),
    ("prompt: a cat\nx:\n  param: w\n  values: [0, 1]\n", ["bad.yaml:3", "x.param", "'w'", "placeholders found: none"]),
    (f"prompt: '{CAT_TO_KITTEN}'\nx:\n  param: w\n  range: [0, 1]\n", ["bad.yaml:4", "x.range", "[0, 1]"]),
    (f"prompt: '{CAT_TO_KITTEN}'\nx:\n  param: w\n  range: [0, 1, 0]\n", ["bad.yaml:4", "x.range[2]", "at least 1"]),
    ("prompt: a cat\nx: {param: seed, range: [0, 1, 3]}\n", ["bad.yaml:2", "x.range", "integer", "0.5"]),
    ("prompt: a cat\nx: {param: steps, values: [2, 0]}\n", ["bad.yaml:2", "x.values[1]", "at least 1", "0"]),
    ("prompt: '\"a cat\" + (\"a dog\"'\nx: {param: seed, values: [1]}\n", ["bad.yaml:1: prompt", "column 19"]),
    ("prompt: '{cat|kitten:{w}}'\nx: {param: w, values: [0.5, 1.5]}\n", ["bad.yaml:1: prompt with w=1.5", "bad weight '1.5'"]),
    ("prompt: a cat\nx: {param: strength, values: [0.5]}\n", ["bad.yaml:2", "x.param", "init_image"]),
    ("prompt: a cat\ninit_image: nowhere.png\nx: {param: strength, values: [0.5]}\n", ["bad.yaml:2", "init_image", "nowhere.png"]),
    ("prompt: a cat\nseeds: {count: 4}\nx: {param: seed, values: [1]}\n", ["bad.yaml:3", "x", "seeds mode"]),
    ("prompt: a cat\nx: {param: seed, values: [1]}\ny: {param: seed, values: [2]}\n", ["bad.yaml:3", "y.param", "'seed'"]),
]


@pytest.mark.parametrize("text, expected", BAD_SWEEPS)
def test_bad_sweeps_exit_2_naming_the_field(text, expected, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert not (tmp_path / "out").exists()  # nothing written, no model loaded


def test_bad_sweep_through_the_api_raises_user_error():
    with pytest.raises(UserError, match="x.values"):
        run_sweep({"prompt": "a cat", "x": {"param": "guidance", "values": "loud"}})


# --- the embedded toy model --------------------------------------------------------------------


def test_toy_day_to_night_sweep_gets_darker(tmp_path):
    from latentwalk.toy import MODEL_DIR

    if not (MODEL_DIR / "model_index.json").is_file():
        pytest.skip(f"the embedded toy model is not trained yet ({MODEL_DIR / 'model_index.json'} missing)")
    s = {
        "model": "toy",
        "steps": 10,
        "seed": 3,
        "device": "cpu",
        "prompt": 'mix("a clear day over the mountains", "a clear night over the mountains", {w})',
        "x": {"param": "w", "values": [0, 0.25, 0.5, 0.75, 1]},
    }
    result = run_sweep(s, tmp_path)
    rgb = result.images[0].astype(float) / 255  # (5, H, W, 3)
    luminance = (rgb @ np.array([0.2126, 0.7152, 0.0722])).mean(axis=(1, 2))  # Rec. 709 weights
    assert all(b < a + 0.01 for a, b in zip(luminance, luminance[1:])), luminance
    assert luminance[0] - luminance[-1] > 0.15, luminance


def test_toy_img2img_moves_further_with_strength(tmp_path):
    from latentwalk.toy import MODEL_DIR

    if not (MODEL_DIR / "model_index.json").is_file():
        pytest.skip(f"the embedded toy model is not trained yet ({MODEL_DIR / 'model_index.json'} missing)")
    from latentwalk.toy import world

    # A picture of the world the VAE was trained on, so strength 0 (its round trip) is close.
    Image.fromarray(world.sample(np.random.default_rng(4)).image).save(tmp_path / "init.png")
    s = {"model": "toy", "steps": 10, "seed": 3, "device": "cpu", "prompt": "a clear night over the sea",
         "init_image": str(tmp_path / "init.png"), "x": {"param": "strength", "values": [0, 0.3, 0.6, 1]}}  # fmt: skip
    result = run_sweep(s, tmp_path / "out")
    init = np.asarray(Image.open(tmp_path / "init.png"), dtype=float)
    distance = [np.abs(result.image(0, col) - init).mean() for col in range(4)]
    # Strength 0 is the toy VAE's round trip: blurry, about 15/255 mean error on its own world.
    assert distance[0] < 20 and all(b > a - 1 for a, b in zip(distance, distance[1:])), distance
    assert distance[-1] - distance[0] > 20, distance
