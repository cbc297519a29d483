"""Image keyframes (latentwalk/images.py, inversion.py): the keyframe's frame is the picture through the
VAE, the travel through its inverted noise is batch-invariant and resumes byte-identically, keys
follow the picture's pixels, and bad pictures fail before any model loads."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentwalk import images
from latentwalk.api import frame_plan, plan, render, schedule_inputs
from latentwalk.backends import ModelSpec, load_backend
from latentwalk.engine import INVERTED, Conditioning, EngineSettings, Pictures, frame_noise, render_frames
from latentwalk.interpolation import slerp_noise
from latentwalk.errors import UserError
from latentwalk.images import fit_picture, picture_key, timeline_pictures
from latentwalk.prompts import parse_prompt
from latentwalk.store import FrameStore
from latentwalk.timeline import load_timeline, parse_timeline

# uint8 levels: float32 CPU kernels may differ in the last bits between batch shapes (as test_render).
TOLERANCE = 2
FRAMES = 12  # keyframes on frames 0 (picture), 5 (prompt) and 9 (picture)


def draw(path: Path, size=(32, 32), seed: int = 0) -> Path:
    """A small picture with structure (gradient sky, a dark band, a bright disc)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    rng = np.random.default_rng(seed)
    colour = rng.uniform(60, 255, 3)
    pixels = np.stack([colour[c] * (1 - y) + 40 * y for c in range(3)], -1)
    pixels[y > 0.6 + 0.1 * np.sin(x * 9 + seed)] = (30, 25, 40)
    pixels[(x - 0.6) ** 2 + (y - 0.35) ** 2 < 0.02] = (250, 230, 150)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def timeline_text(model_dir, steps: int = 2, batch_size: int = 4, extra: str = "", middle: str = "prompt: a dog at night") -> str:
    return (
        f"model: {model_dir}\nwidth: 32\nheight: 32\nfps: 8\nsteps: {steps}\nbatch_size: {batch_size}\nscheduler: ddim\nspacing: t\n"
        f"{extra}end: {{frame: {FRAMES}}}\nkeyframes:\n"
        "  - {frame: 0, image: ridge.png, seed: 1}\n"
        f"  - {{frame: 5, {middle}, seed: 2}}\n"
        "  - {frame: 9, image: sea.png, prompt: the sea, seed: 3}\n"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pictures")
    draw(out / "ridge.png", (48, 32), seed=1)  # another size and aspect: fitted (cropped) to 32x32
    draw(out / "sea.png", (32, 32), seed=2)
    return out


@pytest.fixture(scope="module")
def model(tiny_model_dir, one_thread):
    return load_backend(ModelSpec(str(tiny_model_dir)), device="cpu")


def load(folder: Path, text: str):
    path = folder / "t.yaml"
    path.write_text(text)
    return load_timeline(path)


def render_timeline(model, timeline, batch_size: int) -> np.ndarray:
    """(n_frames, H, W, 3) through the engine, the pictures in the settings as a render passes them."""
    schedule = plan(timeline)
    inputs = schedule_inputs(timeline, schedule)
    s = timeline.settings
    settings = EngineSettings(s.width, s.height, s.scheduler, s.timestep_spacing, s.interpolation, batch_size,
                              pictures=timeline_pictures(timeline.keyframes, s.width, s.height))
    out = {}
    render_frames(model, list(dict.fromkeys(inputs)), settings, lambda frames, imgs: out.update(zip(frames, imgs)))
    return np.stack([out[f] for f in inputs])


def round_trip(model, pixels: np.ndarray) -> np.ndarray:
    return model.decode(model.encode_images(pixels[None]))[0]


def test_keyframe_frames_are_the_pictures_vae_round_trip_and_travel_is_batch_invariant(model, tiny_model_dir, folder):
    timeline = load(folder, timeline_text(tiny_model_dir))
    INVERTED.clear()
    one = render_timeline(model, timeline, 1)
    assert one.shape == (FRAMES, 32, 32, 3)
    # 1. The keyframes' own frames: their pictures as the model sees them (VAE round trip).
    for frame, name in ((0, "ridge.png"), (9, "sea.png")):
        expected = round_trip(model, fit_picture(folder / name, 32, 32))
        assert np.abs(one[frame].astype(int) - expected.astype(int)).max() <= TOLERANCE
    # ... and frames past the last keyframe hold it.
    assert np.abs(one[11].astype(int) - one[9].astype(int)).max() <= TOLERANCE
    # 2. The travel moves away from the picture: frames between differ from it and from each other.
    assert np.abs(one[2].astype(float) - one[0]).mean() > 1 and np.abs(one[7].astype(float) - one[9]).mean() > 1
    # 3. Batch-invariant, inversion included (a fresh inversion per batch size: nothing cached).
    for batch_size in (3, 5):
        INVERTED.clear()
        other = render_timeline(model, timeline, batch_size)
        assert np.abs(one.astype(int) - other.astype(int)).max() <= TOLERANCE


def test_image_strength_moves_away_from_the_picture(model, tiny_model_dir, folder):
    """0: the picture itself at its keyframe; rising strength: further from it, monotonically."""
    picture = round_trip(model, fit_picture(folder / "ridge.png", 32, 32)).astype(float)
    distances = []
    for strength in (0.0, 0.3, 1.0):
        timeline = load(folder, timeline_text(tiny_model_dir, extra=f"image_strength: {strength}\n"))
        distances.append(np.abs(render_timeline(model, timeline, 4)[0] - picture).mean())
    assert distances[0] <= 0.5 and distances[0] < distances[1] < distances[2]


def test_two_pictures_without_a_prompt_morph(model, tiny_model_dir, folder):
    """DiffMorpher-style: picture to picture, both under the empty prompt; the ends are the pictures."""
    text = (
        f"model: {tiny_model_dir}\nwidth: 32\nheight: 32\nfps: 8\nsteps: 2\nbatch_size: 4\nspacing: t\nend: {{frame: 6}}\nkeyframes:\n"
        "  - {frame: 0, image: ridge.png, seed: 1}\n  - {frame: 5, image: sea.png, seed: 2}\n"
    )
    timeline = load(folder, text)
    inputs = schedule_inputs(timeline, plan(timeline))
    assert {f.prompt_a for f in inputs} == {str(parse_prompt(""))} and all(f.image_a is not None and f.image_b is not None for f in inputs)
    frames = render_timeline(model, timeline, 4).astype(float)
    a, b = (round_trip(model, fit_picture(folder / n, 32, 32)).astype(float) for n in ("ridge.png", "sea.png"))
    assert np.abs(frames[0] - a).max() <= TOLERANCE and np.abs(frames[5] - b).max() <= TOLERANCE
    # Between them, each frame starts from the slerp of the two pictures' inverted noises (DiffMorpher's
    # latent path; a random tiny model's in-between pictures say nothing, the embedded model's are in
    # benchmarks/bench_images.py).
    s = timeline.settings
    engine = EngineSettings(32, 32, "ddim", "auto", "slerp", 4, pictures=timeline_pictures(timeline.keyframes, 32, 32))
    pictures = Pictures(model, engine, Conditioning(model, inputs), model.latent_shape(32, 32))
    shape = model.latent_shape(s.width, s.height)
    for f in inputs[1:5]:
        ends = pictures[f.image_a, 2].noise, pictures[f.image_b, 2].noise
        assert torch.equal(frame_noise(f, shape, pictures), slerp_noise(*ends, torch.tensor([f.noise_t], dtype=torch.float64)))


def test_store_keys_follow_the_pictures_pixels(tiny_model_dir, tmp_path):
    draw(tmp_path / "ridge.png", (48, 32), seed=1)
    draw(tmp_path / "sea.png", (32, 32), seed=2)
    text = timeline_text(tiny_model_dir)
    store = FrameStore(tmp_path / "store")

    def keys():
        timeline = load(tmp_path, text)
        return frame_plan(timeline, plan(timeline), store, device="cpu").keys

    before = keys()
    # The same pixels saved again (other file bytes): the same keys.
    Image.open(tmp_path / "sea.png").save(tmp_path / "sea.png", compress_level=1)
    assert keys() == before
    # One pixel of the second picture changed: keys of frames travelling to or holding it change, the rest stay.
    pixels = np.asarray(Image.open(tmp_path / "sea.png")).copy()
    pixels[3, 3] = 255 - pixels[3, 3]
    Image.fromarray(pixels).save(tmp_path / "sea.png")
    after = keys()
    assert after[:6] == before[:6]  # segment 0 (ridge -> dog) and the dog keyframe's own frame
    assert all(a != b for a, b in zip(after[6:], before[6:]))  # travelling toward the sea, and its hold
    # Timelines without pictures keep the keys they had (no image fields in the key).
    plain = load(tmp_path, f"model: {tiny_model_dir}\nwidth: 32\nheight: 32\nend: {{frame: 3}}\nkeyframes:\n  - {{frame: 0, prompt: a cat}}\n")
    inputs = schedule_inputs(plain, plan(plain))
    assert all(f.image_a is None and f.image_b is None and "image_strength" not in dict(f.params) for f in inputs)


def test_plan_says_which_frames_use_which_picture(tiny_model_dir, folder, capsys):
    from latentwalk.cli import main

    path = folder / "p.yaml"
    path.write_text(timeline_text(tiny_model_dir))
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    pictures = {p["keyframe"]: p for p in data["pictures"]}
    assert sorted(pictures) == [0, 2] and pictures[0]["frames"] == [0, 4] and pictures[2]["frames"] == [5, 11]
    assert pictures[0]["size"] == [48, 32] and "resized from 48x32" in pictures[0]["fit"] and pictures[2]["fit"] == "as is"
    assert data["keyframes"][0]["image"].endswith("ridge.png") and "image" not in data["keyframes"][1]
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[image: ridge.png]" in out and "picture {}: resized from 48x32 (centre-cropped to the frame's aspect) to 32x32; frames 0-4 (5)".format(folder / "ridge.png") in out


def bad_picture(folder: Path, kind: str) -> str:
    if kind == "missing":
        return "nowhere.png"
    path = folder / f"{kind}.png"
    if kind == "unreadable":
        path.write_text("not a picture\n")
    elif kind == "truncated":
        draw(folder / "whole.png", (32, 32), seed=4)
        data = (folder / "whole.png").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "huge":
        draw(path, (64, 64))
    return path.name


@pytest.mark.parametrize("kind, reason", [
    ("missing", "picture not found"),
    ("unreadable", "is not a picture Pillow can read"),
    ("truncated", "a truncated or damaged file?"),
    ("huge", "more than the limit of 0 MP"),
])
def test_bad_pictures_fail_with_their_line_before_any_model_loads(tmp_path, monkeypatch, kind, reason):
    if kind == "huge":
        monkeypatch.setattr(images, "MAX_PICTURE_PIXELS", 64 * 64 - 1)
    name = bad_picture(tmp_path, kind)
    text = f"end: {{frame: 4}}\nkeyframes:\n  - frame: 0\n    prompt: a cat\n  - frame: 2\n    image: {name}\n"
    with pytest.raises(UserError) as error:
        parse_timeline(text, source="t.yaml", base_dir=tmp_path)
    message = str(error.value)
    assert message.startswith("t.yaml:6: keyframes[1].image: ") and reason in message


@pytest.mark.parametrize("body, where", [
    ("image_strength: 1.5\nend: {frame: 4}\nkeyframes:\n  - {frame: 0, image: sea.png}\n", "t.yaml:1: image_strength: must be at most 1"),
    ("end: {frame: 4}\nkeyframes:\n  - {frame: 0, image: sea.png, image_strength: -0.1}\n", "t.yaml:3: keyframes[0].image_strength: must be at least 0"),
    ("end: {frame: 4}\nkeyframes:\n  - {frame: 0, image: 7}\n", "t.yaml:3: keyframes[0].image: expected a string"),
    ("end: {frame: 4}\nkeyframes:\n  - {frame: 0, seed: 1}\n", "t.yaml:3: keyframes[0]: missing field 'prompt' (or 'image'"),
])
def test_bad_image_fields(tmp_path, body, where):
    draw(tmp_path / "sea.png")
    with pytest.raises(UserError, match="^" + __import__("re").escape(where)):
        parse_timeline(body, source="t.yaml", base_dir=tmp_path)


def test_bad_picture_through_the_cli_exits_2_without_importing_torch(tmp_path):
    (tmp_path / "t.yaml").write_text("end: {frame: 4}\nkeyframes:\n  - {frame: 0, image: gone.png}\n")
    code = "import sys; from latentwalk.cli import main; r = main(['plan', sys.argv[1]]); print('torch' in sys.modules); sys.exit(r)"
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.yaml")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout.strip() == "False"
    where = tmp_path / "t.yaml"
    assert result.stderr.strip().splitlines() == [f"latentwalk: error: {where}:3: keyframes[0].image: picture not found: {str(tmp_path / 'gone.png')!r} (see docs/pictures.md#the-keys)"]


def test_resumed_render_is_byte_identical_and_feedback_starts_from_the_picture(model, tiny_model_dir, tmp_path):
    from latentwalk.overrides import Overrides
    from latentwalk.timeline import Position

    draw(tmp_path / "ridge.png", (48, 32), seed=1)
    draw(tmp_path / "sea.png", (32, 32), seed=2)
    path = tmp_path / "t.yaml"
    path.write_text(timeline_text(tiny_model_dir, batch_size=3))
    whole = render(path, tmp_path / "whole.mp4", frames_dir=tmp_path / "whole", device="cpu", progress=False)
    # A render stopped after frame 6 (a range), then resumed: frames 0-6 come from the store.
    part = render(path, tmp_path / "r.mp4", frames_dir=tmp_path / "part", device="cpu", progress=False, overrides=Overrides(stop=Position("frame", 7)),
                  store_dir=tmp_path / "resumed.frames")
    resumed = render(path, tmp_path / "r.mp4", frames_dir=tmp_path / "resumed", device="cpu", progress=False, store_dir=tmp_path / "resumed.frames")
    assert part.frames_rendered == 7 and resumed.frames_reused == 7
    assert resumed.frames_rendered == 3  # frames 7, 8 and the sea's own frame, held to the end
    names = sorted(p.name for p in (tmp_path / "whole").glob("*.png"))
    assert len(names) == FRAMES
    for name in names:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name
    manifest = json.loads(whole.manifest.read_text())
    assert [p["keyframe"] for p in manifest["plan"]["pictures"]] == [0, 2]
    # Feedback mode: the chain's first frame is the picture through the VAE; the next frames are img2img of it.
    path.write_text(timeline_text(tiny_model_dir, batch_size=1, extra="mode: feedback\nstrength: 0.5\n").replace("spacing: t\n", ""))
    render(path, tmp_path / "fb.mp4", frames_dir=tmp_path / "fb", device="cpu", progress=False)
    first = np.asarray(Image.open(sorted((tmp_path / "fb").glob("*.png"))[0]))
    expected = round_trip(model, fit_picture(tmp_path / "ridge.png", 32, 32))
    assert np.abs(first.astype(int) - expected.astype(int)).max() <= TOLERANCE


def test_render_through_the_latentwalk_command(tiny_model_dir, tmp_path, model):
    from latentwalk.encode import probe

    draw(tmp_path / "ridge.png", (48, 32), seed=1)
    draw(tmp_path / "sea.png", (32, 32), seed=2)
    (tmp_path / "t.yaml").write_text(timeline_text(tiny_model_dir))
    script = Path(sys.executable).parent / "latentwalk"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "latentwalk.cli"]
    result = subprocess.run([*command, "render", "t.yaml", "--out", "t.mp4", "--frames", "frames", "--device", "cpu", "--quiet"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    info = probe(tmp_path / "t.mp4")
    assert info.frames == FRAMES
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert len(frames) == FRAMES
    sea = np.asarray(Image.open(frames[9]))
    expected = round_trip(model, fit_picture(tmp_path / "sea.png", 32, 32))
    assert np.abs(sea.astype(int) - expected.astype(int)).max() <= TOLERANCE + 1  # another process: its own thread count


def test_sweep_over_pictures_and_image_strength(model, tiny_model_dir, tmp_path):
    """An image axis: each cell at image_strength 0 is its picture through the VAE; a bad picture names its value."""
    from latentwalk.sweep import parse_sweep, run_sweep

    draw(tmp_path / "ridge.png", (48, 32), seed=1)
    draw(tmp_path / "sea.png", (32, 32), seed=2)
    path = tmp_path / "s.yaml"
    path.write_text(f"model: {tiny_model_dir}\nwidth: 32\nheight: 32\nsteps: 2\nprompt: a cat\n"
                    "x: {param: image, values: [ridge.png, sea.png]}\ny: {param: image_strength, values: [0, 1]}\n")
    result = run_sweep(path, tmp_path / "out", model=model)
    assert [c.label for c in result.cells] == ["image=ridge.png, image_strength=0", "image=sea.png, image_strength=0",
                                               "image=ridge.png, image_strength=1", "image=sea.png, image_strength=1"]
    for col, name in enumerate(("ridge.png", "sea.png")):
        expected = round_trip(model, fit_picture(tmp_path / name, 32, 32)).astype(int)
        assert np.abs(result.images[0, col].astype(int) - expected).max() <= TOLERANCE
        assert np.abs(result.images[1, col].astype(int) - expected).mean() > 1  # strength 1: a new image from the seed
    with pytest.raises(UserError, match=r"^s.yaml:2: x.values\[1\]: picture not found"):
        parse_sweep("prompt: a cat\nx: {param: image, values: [ridge.png, gone.png]}\n", source="s.yaml", base_dir=tmp_path)
    with pytest.raises(UserError, match=r"^s.yaml:2: x.param: image_strength needs an image axis"):
        parse_sweep("prompt: a cat\nx: {param: image_strength, values: [0, 1]}\n", source="s.yaml", base_dir=tmp_path)
