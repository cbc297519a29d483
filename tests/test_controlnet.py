"""ControlNets (latentwalk/control.py): per-row weights and control images, weight 0 as the frame
without one, keys that follow every control input, bad ControlNets caught when the timeline is read."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from latentwalk.errors import UserError
from latentwalk.frames import RenderIdentity, frame_key
from latentwalk.timeline import load_timeline
from test_video_input import clip_frames, write_clip

LATENTWALK = str(Path(sys.executable).parent / "latentwalk")
IDENTITY = RenderIdentity("m", "f", "sd", 32, 32, "ddim", "auto", "slerp", "torch.float32", "cpu", 1, 4, (), (), ())


def tiny_controlnet(unet_dir: Path, out: Path, seed: int = 3) -> Path:
    """A ControlNet copied from a tiny UNet (ControlNetModel.from_unet), every weight random (its zero
    convolutions too, or it would add nothing), its control image embedding downsampling 2x like the tiny VAE."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    with torch.no_grad():
        for p in controlnet.parameters():
            p.normal_(0, 0.05)
    controlnet.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def inputs(tiny_model_dir, tmp_path_factory) -> Path:
    """A folder with the tiny ControlNet, a control picture, a folder of 4 pictures and a 2 s clip."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("control")
    tiny_controlnet(tiny_model_dir / "unet", folder / "edges")
    frames = clip_frames(20, 32, 32)
    Image.fromarray(frames[5]).save(folder / "still.png")
    (folder / "maps").mkdir()
    for i in range(4):
        Image.fromarray(frames[4 * i]).save(folder / "maps" / f"{i:03d}.png")
    write_clip(folder / "clip.mp4", frames, 10)
    return folder


def write_timeline(folder: Path, model: Path, controls: str, keyframes: str = "", extra: str = "", name: str = "t.yaml") -> Path:
    path = folder / name
    path.write_text(
        f"model: {model}\nwidth: 32\nheight: 32\nfps: 8\nsteps: 2\nbatch_size: 4\nscheduler: ddim\nend: {{frame: 4}}\n{extra}"
        + (f"controlnets:\n{controls}" if controls else "")
        + "keyframes:\n"
        + (keyframes or "  - {frame: 0, prompt: a cat in the snow, seed: 1}\n  - {frame: 3, prompt: a dog at night, seed: 2}\n")
    )
    return path


def frame_inputs(path: Path):
    from latentwalk.api import plan, schedule_inputs

    timeline = load_timeline(path)
    return timeline, schedule_inputs(timeline, plan(timeline))


@pytest.fixture(scope="module")
def backend(tiny_model_dir, inputs):
    from latentwalk.backends import load_backend
    from latentwalk.modelspec import ModelSpec

    timeline = load_timeline(write_timeline(inputs, tiny_model_dir, "  - {path: edges, image: still.png}\n", name="load.yaml"))
    return load_backend(ModelSpec(str(tiny_model_dir), controlnets=timeline.settings.controlnets), "cpu", "float32")


def render(backend, timeline, frames, batch_size: int = 4) -> list[np.ndarray]:
    """The frames through the engine in batches of batch_size rows, in the order given."""
    from latentwalk.engine import render_frames
    from latentwalk.stages import engine_settings

    settings = replace(engine_settings(timeline.settings), batch_size=batch_size)
    out = {}
    render_frames(backend, frames, settings, lambda batch, images: out.update(zip(batch, images)), overlap=False)
    return [out[f] for f in frames]


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_weight_changes_pixels_in_proportion_and_zero_is_the_render_without_it(backend, tiny_model_dir, inputs, one_thread):
    """One frame at weights 0, 0.25, 0.5 and 1 in one batch: 0 is bit for bit (and key for key) the frame
    of the timeline without controlnets; the change grows with the weight, about linearly at small weights."""
    timeline, frames = frame_inputs(write_timeline(inputs, tiny_model_dir, "  - {path: edges, image: still.png}\n"))
    plain_timeline, plain = frame_inputs(write_timeline(inputs, tiny_model_dir, "", name="plain.yaml"))
    base = frames[1]
    assert base.controls and base.controls[0].weight == 1.0
    rows = [replace(base, controls=())] + [replace(base, controls=(replace(base.controls[0], weight=w),)) for w in (0.25, 0.5, 1.0)]
    assert rows[0] == plain[1] and frame_key(IDENTITY, rows[0]) == frame_key(IDENTITY, plain[1])
    images = render(backend, timeline, rows)
    (without,) = render(backend, plain_timeline, [plain[1]])
    assert np.array_equal(images[0], without)
    changes = [mad(image, without) for image in images[1:]]
    assert 0 < changes[0] < changes[1] < changes[2], changes
    assert changes[0] / changes[1] == pytest.approx(0.5, abs=0.15) and changes[1] / changes[2] == pytest.approx(0.5, abs=0.15), changes


def test_weights_travel_between_keyframes_and_a_frame_does_not_depend_on_its_batch(backend, tiny_model_dir, inputs, one_thread):
    """controlnet_weights 0 -> 2 over four frames: weight 0 leaves the ControlNet out of the frame; rendered
    together (one mixed batch) or one by one, every frame is the same bytes."""
    keyframes = (
        "  - {frame: 0, prompt: a cat in the snow, seed: 1, controlnet_weights: {edges: 0}}\n"
        "  - {frame: 3, prompt: a cat in the snow, seed: 1, controlnet_weights: {edges: 2}}\n"
    )
    timeline, frames = frame_inputs(write_timeline(inputs, tiny_model_dir, "  - {path: edges, image: maps, preprocess: canny}\n", keyframes))
    assert [f.controls[0].weight if f.controls else 0.0 for f in frames] == pytest.approx([0, 2 / 3, 4 / 3, 2])
    assert len({c.image for f in frames for c in f.controls}) == 3  # one picture per frame, frame 0's unused
    together = render(backend, timeline, list(frames))
    alone = [render(backend, timeline, [f])[0] for f in reversed(frames)][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


def test_store_keys_follow_every_control_input(tiny_model_dir, inputs, tmp_path):
    """The control picture's bytes, weight, start/end, preprocessing and the ControlNet's own files are in the key."""
    from PIL import Image

    for name in ("edges", "still.png"):
        (shutil.copytree if name == "edges" else shutil.copy)(inputs / name, tmp_path / name)

    def keys(controls: str) -> list[str]:
        return [frame_key(IDENTITY, f) for f in frame_inputs(write_timeline(tmp_path, tiny_model_dir, controls))[1]]

    base = keys("  - {path: edges, image: still.png}\n")
    for variant in ("weight: 0.5", "start: 0.2", "end: 0.8", "preprocess: canny"):
        changed = keys(f"  - {{path: edges, image: still.png, {variant}}}\n")
        assert all(a != b for a, b in zip(base, changed)), variant
    assert keys("  - {path: edges, image: still.png}\n") == base  # the same inputs: the same keys
    pixels = np.array(Image.open(tmp_path / "still.png"))
    pixels[0, 0] ^= 1  # one level of one pixel
    Image.fromarray(pixels).save(tmp_path / "still.png")
    repainted = keys("  - {path: edges, image: still.png}\n")
    assert all(a != b for a, b in zip(base, repainted))
    config = tmp_path / "edges" / "config.json"
    config.write_text(config.read_text().replace('"act_fn"', '"act_fn" ', 1))  # the same model, other bytes: another fingerprint
    assert all(a != b for a, b in zip(repainted, keys("  - {path: edges, image: still.png}\n")))


def test_plan_shows_each_frames_control_image(tiny_model_dir, inputs):
    path = write_timeline(inputs, tiny_model_dir, "  - {path: edges, video: clip.mp4, weight: 0.7, end: 0.5}\n", name="plan.yaml")
    out = subprocess.run([LATENTWALK, "plan", str(path), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    (control,) = data["controlnets"]
    assert control["images"] == [0, 1, 2, 3] and control["end"] == 0.5  # 8 fps from 10: frames 0, 1.25, 2.5, 3.75
    assert [f["control:edges"] for f in data["frames"]] == [0.7] * 4
    text = subprocess.run([LATENTWALK, "plan", str(path)], capture_output=True, text=True).stdout
    assert "controlnet edges: its video's frames" in text and "0->0, 1->1, 2->2, 3->3" in text


def bad_cases(folder: Path) -> list[tuple[str, str, str, str]]:
    """(controlnets entry, keyframes or "", message part, field) of inputs caught when the timeline is read."""
    return [
        ("{path: nowhere, image: still.png}", "", "is not a ControlNet folder", "controlnets[0].path"),
        ("{path: notcn, image: still.png}", "", "is not a ControlNet: its config.json describes a UNet2DConditionModel", "controlnets[0].path"),
        ("{path: xl, image: still.png}", "", "a ControlNet for an SDXL model", "controlnets[0].path"),
        ("{path: edges}", "", "needs exactly one of image", "controlnets[0]"),
        ("{path: edges, image: still.png, video: clip.mp4}", "", "found: image, video", "controlnets[0]"),
        ("{path: edges, image: missing.png}", "", "picture not found", "controlnets[0].image"),
        ("{path: edges, image: empty}", "", "holds no pictures", "controlnets[0].image"),
        ("{path: edges, image: few}", "", "holds 2 pictures, but the timeline has 4 frames", "controlnets[0].image"),
        ("{path: edges, video: short.mp4}", "", "shorter than the timeline", "controlnets[0].video"),
        ("{path: edges, from_video: true}", "", "needs a top-level video", "controlnets[0].from_video"),
        ("{path: edges, image: still.png, start: 0.6, end: 0.5}", "", "must be greater than start", "controlnets[0].end"),
        ("{path: edges, image: still.png, weight: -1}", "", "must be at least 0", "controlnets[0].weight"),
        ("{path: edges, image: still.png, preprocess: depth}", "", "unknown value 'depth'", "controlnets[0].preprocess"),
        (
            "{path: edges, image: still.png}",
            "  - {frame: 0, prompt: a, controlnet_weights: {edgs: 1}}\n  - {frame: 3, prompt: b}\n",
            "no ControlNet named 'edgs'",
            "keyframes[0].controlnet_weights.edgs",
        ),
    ]


def test_bad_controlnet_input_is_a_clear_error_before_any_model(tiny_model_dir, inputs, tmp_path):
    from PIL import Image

    from latentwalk.api import plan

    for name in ("edges", "still.png", "clip.mp4", "maps"):
        (shutil.copytree if (inputs / name).is_dir() else shutil.copy)(inputs / name, tmp_path / name)
    shutil.copytree(tiny_model_dir / "unet", tmp_path / "notcn")
    shutil.copytree(inputs / "edges", tmp_path / "xl")
    config = json.loads((tmp_path / "xl" / "config.json").read_text())
    (tmp_path / "xl" / "config.json").write_text(json.dumps(config | {"cross_attention_dim": 2048, "addition_embed_type": "text_time"}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "few").mkdir()
    for i in range(2):
        Image.fromarray(clip_frames(2, 32, 32)[i]).save(tmp_path / "few" / f"{i}.png")
    write_clip(tmp_path / "short.mp4", clip_frames(3, 32, 32), 10)  # 0.3 s against the timeline's 0.5 s
    for controls, keyframes, says, field in bad_cases(tmp_path):
        path = write_timeline(tmp_path, tiny_model_dir, f"  - {controls}\n", keyframes)
        with pytest.raises(UserError) as error:
            plan(load_timeline(path))
        message = str(error.value)
        assert message.startswith(f"{path}:") and f": {field}: " in message and says in message, (controls, message)


def test_render_through_the_entry_point_matches_the_engine(backend, tiny_model_dir, inputs, tmp_path, one_thread):
    """`latentwalk render` with a folder of control pictures: as many frames as planned, each the engine's own
    frame for its inputs (one level apart at most: the command runs torch on more threads)."""
    import imageio.v3 as iio

    from latentwalk.video_input import probe

    for name in ("edges", "maps"):
        shutil.copytree(inputs / name, tmp_path / name)
    path = write_timeline(tmp_path, tiny_model_dir, "  - {path: edges, image: maps, weight: 1.5}\n")
    out = subprocess.run([LATENTWALK, "render", str(path), "--frames", str(tmp_path / "png")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert probe(tmp_path / "renders" / "t.mp4").n_frames == 4
    rendered = [iio.imread(p) for p in sorted((tmp_path / "png").glob("*.png"))]
    timeline, frames = frame_inputs(path)
    expected = render(backend, timeline, list(frames))
    assert len(rendered) == 4 and all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(rendered, expected))
    manifest = json.loads((tmp_path / "renders" / "t.json").read_text())
    assert manifest["plan"]["controlnets"][0]["images"] == ["000.png", "001.png", "002.png", "003.png"]


def test_sdxl_controlnet(tiny_sdxl_dir, tmp_path, one_thread):
    """The same on SDXL's layout (pooled and size conditioning reach the ControlNet): weight 0 is the frame without it."""
    from PIL import Image

    from latentwalk.backends import load_backend
    from latentwalk.modelspec import ModelSpec

    tiny_controlnet(tiny_sdxl_dir / "unet", tmp_path / "xl-edges")
    Image.fromarray(clip_frames(6, 32, 32)[5]).save(tmp_path / "still.png")
    keyframes = "  - {frame: 0, prompt: a cat, seed: 1, controlnet_weights: {xl-edges: 0}}\n  - {frame: 3, prompt: a cat, seed: 1}\n"
    path = write_timeline(tmp_path, tiny_sdxl_dir, "  - {path: xl-edges, image: still.png, weight: 2}\n", keyframes)
    timeline, frames = frame_inputs(path)
    backend = load_backend(ModelSpec(str(tiny_sdxl_dir), controlnets=timeline.settings.controlnets), "cpu", "float32")
    images = render(backend, timeline, [frames[0], frames[3], replace(frames[3], controls=())])  # one mixed batch
    assert frames[0].controls == () and mad(images[1], images[2]) > 1.0
    assert np.array_equal(render(backend, timeline, [frames[0]])[0], images[0])  # alone: no ControlNet runs at all
