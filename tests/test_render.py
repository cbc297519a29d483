"""Rendering through a tiny random diffusers pipeline: batching, determinism and a real mp4."""

import json

import numpy as np
import pytest
import torch

from latentwalk.api import plan, render
from latentwalk.encode import probe
from latentwalk.render import batch_inputs, decode, denoise, encode_keyframes, latent_shape, load_model, render_batches
from latentwalk.interpolation import seed_noise
from latentwalk.timeline import parse_timeline

TOLERANCE = 2  # uint8 levels: float32 CPU kernels may differ in the last bits between batch shapes


def tiny_timeline(model_dir, wav=None, **overrides) -> str:
    settings = {"model": str(model_dir), "width": 32, "height": 32, "fps": 8, "steps": 3, "batch_size": 4, **overrides}
    head = "".join(f"{k}: {v}\n" for k, v in settings.items())
    audio = f"audio: {{path: {wav}, end: 6}}\n" if wav else "end: {frame: 12}\n"
    keys = (
        "keyframes:\n"
        "  - {beat: 0, prompt: a cat in the snow, seed: 1}\n"
        "  - {beat: 3, prompt: '\"a dog\" + 0.5 * (\"a city\" - \"a dog\")', seed: 2, easing: cosine}\n"
        "  - {bar: 2, prompt: 'a photo of a {cat|kitten:0.3}', seed: 3, guidance: 3, pacing: audio}\n"
        if wav
        else "keyframes:\n  - {frame: 0, prompt: a cat, seed: 1}\n  - {frame: 5, prompt: a dog at night, seed: 2}\n  - {frame: 9, prompt: a city, seed: 3}\n"
    )
    return head + audio + keys


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def frames_with_batch_size(model, timeline, batch_size):
    schedule = plan(timeline)
    cond = encode_keyframes(model, [k.prompt for k in timeline.keyframes], [""] * len(timeline.keyframes))
    batches = render_batches(
        model, schedule.frames, cond, width=32, height=32, steps=3, scheduler=timeline.settings.scheduler,
        interpolation="slerp", batch_size=batch_size,
    )
    return np.concatenate([frames for _, frames in batches])


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m"])
def test_frames_do_not_depend_on_batch_size(model, tiny_model_dir, scheduler):
    timeline = parse_timeline(tiny_timeline(tiny_model_dir, scheduler=scheduler))
    one = frames_with_batch_size(model, timeline, 1)
    assert one.shape == (12, 32, 32, 3) and one.dtype == np.uint8
    assert one.std() > 5  # real images, not a constant
    for batch_size in (3, 5, 12):
        other = frames_with_batch_size(model, timeline, batch_size)
        assert np.abs(one.astype(int) - other.astype(int)).max() <= TOLERANCE


def test_frame_does_not_depend_on_its_batch_neighbours(model, tiny_model_dir):
    timeline = parse_timeline(tiny_timeline(tiny_model_dir))
    records = plan(timeline).frames
    cond = encode_keyframes(model, [k.prompt for k in timeline.keyframes], [""] * 3)
    noise = {s: seed_noise(s, latent_shape(model, 32, 32)) for s in (1, 2, 3)}
    alone = decode(model, denoise(model, batch_inputs([records[6]], cond, noise, "slerp"), "ddim", 3))[0]
    for neighbours in ([records[0], records[6]], [records[6], records[11], records[2]]):
        i = neighbours.index(records[6])
        frames = decode(model, denoise(model, batch_inputs(neighbours, cond, noise, "slerp"), "ddim", 3))
        assert np.abs(frames[i].astype(int) - alone.astype(int)).max() <= TOLERANCE


def test_keyframe_frame_is_the_pure_keyframe(model, tiny_model_dir):
    """At a keyframe, noise and conditioning are exactly that keyframe's own."""
    timeline = parse_timeline(tiny_timeline(tiny_model_dir))
    records = plan(timeline).frames
    cond = encode_keyframes(model, [k.prompt for k in timeline.keyframes], [""] * 3)
    noise = {s: seed_noise(s, latent_shape(model, 32, 32)) for s in (1, 2, 3)}
    inputs = batch_inputs([records[5]], cond, noise, "slerp")
    assert torch.equal(inputs.noise[0], noise[2])
    assert torch.equal(inputs.cond[0], cond.cond[1])


def test_guidance_changes_the_image(model, tiny_model_dir):
    timeline = parse_timeline(tiny_timeline(tiny_model_dir))
    records = plan(timeline).frames[:1]
    cond = encode_keyframes(model, ["a cat", "a dog"], ["", ""])
    noise = {s: seed_noise(s, latent_shape(model, 32, 32)) for s in (1, 2, 3)}
    base = batch_inputs(records, cond, noise, "slerp")
    low = decode(model, denoise(model, base, "ddim", 3))
    high = decode(model, denoise(model, type(base)(base.noise, base.cond, base.uncond, base.guidance * 4), "ddim", 3))
    assert np.abs(low.astype(int) - high.astype(int)).mean() > 0.5


def test_render_to_mp4_with_audio(tiny_model_dir, drum_wav, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(tiny_timeline(tiny_model_dir, wav=drum_wav[0]))
    result = render(path, tmp_path / "out.mp4", frames_dir=tmp_path / "frames", progress=False)
    info = probe(result.video)
    assert info.frames == round(6.0 * 8) == result.plan.n_frames
    assert info.fps == 8 and (info.width, info.height) == (32, 32)
    assert info.duration == pytest.approx(6.0, abs=1e-3)
    assert info.has_audio and info.audio_duration == pytest.approx(6.0, abs=0.1)
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 48
    manifest = json.loads(result.manifest.read_text())
    assert len(manifest["plan"]["frames"]) == 48
    assert [k["frame"] for k in manifest["plan"]["keyframes"]] == [k.frame for k in result.plan.keyframes]
    assert manifest["versions"]["torch"] == torch.__version__
    beats = result.plan.beats
    assert [k.frame for k in result.plan.keyframes] == [round(beats[0] * 8), round(beats[3] * 8), round(beats[8] * 8)]
