"""Rendering through a tiny random diffusers pipeline: batching, determinism and a real mp4."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from latentwalk.api import plan, render
from latentwalk.encode import probe
from latentwalk.backends import ModelSpec, load_backend
from latentwalk.engine import Conditioning, EngineSettings, batch_inputs, render_frames
from latentwalk.frames import timeline_frames
from latentwalk.interpolation import seed_noise
from latentwalk.sampling import denoise
from latentwalk.timeline import parse_timeline

TOLERANCE = 2  # uint8 levels: float32 CPU kernels may differ in the last bits between batch shapes


def tiny_timeline(model_dir, wav=None, **overrides) -> str:
    settings = {"model": str(model_dir), "width": 32, "height": 32, "fps": 8, "steps": 3, "batch_size": 4, **overrides}
    head = "".join(f"{k}: {v}\n" for k, v in settings.items())
    audio = f"audio: {{path: {wav}, end: 6, tracker: librosa}}\n" if wav else "end: {frame: 12}\n"  # librosa: bar 0 is beat 0
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
    return load_backend(ModelSpec(str(tiny_model_dir)), device="cpu")


def timeline_inputs(timeline):
    return timeline_frames(plan(timeline).frames, timeline.keyframes, "", timeline.settings.steps)


def render_inputs(model, inputs, batch_size, scheduler="ddim"):
    settings = EngineSettings(32, 32, scheduler, "auto", "slerp", batch_size)
    out = {}
    render_frames(model, list(dict.fromkeys(inputs)), settings, lambda frames, images: out.update(zip(frames, images)))
    return np.stack([out[f] for f in inputs])


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m", "euler_a"])
def test_frames_do_not_depend_on_batch_size(model, tiny_model_dir, scheduler):
    timeline = parse_timeline(tiny_timeline(tiny_model_dir, scheduler=scheduler))
    inputs = timeline_inputs(timeline)
    one = render_inputs(model, inputs, 1, scheduler)
    assert one.shape == (12, 32, 32, 3) and one.dtype == np.uint8
    assert one.std() > 5  # real images, not a constant
    for batch_size in (3, 5, 12):
        other = render_inputs(model, inputs, batch_size, scheduler)
        assert np.abs(one.astype(int) - other.astype(int)).max() <= TOLERANCE


def test_frame_does_not_depend_on_its_batch_neighbours(model, tiny_model_dir):
    inputs = timeline_inputs(parse_timeline(tiny_timeline(tiny_model_dir)))
    settings = EngineSettings(32, 32, "ddim", "auto", "slerp", 3)
    conditioning = Conditioning(model, inputs)
    shape = model.latent_shape(32, 32)

    def frames(rows):
        batch = batch_inputs(rows, conditioning, shape, "slerp")
        return model.decode(denoise(model, batch, "ddim", 3, width=32, height=32))

    alone = frames([inputs[6]] * 3)[0]
    for neighbours in ([inputs[0], inputs[6], inputs[1]], [inputs[6], inputs[11], inputs[2]]):
        i = neighbours.index(inputs[6])
        assert np.abs(frames(neighbours)[i].astype(int) - alone.astype(int)).max() <= TOLERANCE
    del settings


def test_keyframe_frame_is_the_pure_keyframe(model, tiny_model_dir):
    """At a keyframe, noise and conditioning are exactly that keyframe's own."""
    inputs = timeline_inputs(parse_timeline(tiny_timeline(tiny_model_dir)))
    conditioning = Conditioning(model, inputs)
    batch = batch_inputs([inputs[5]], conditioning, model.latent_shape(32, 32), "slerp")
    assert torch.equal(batch.noise[0], seed_noise(2, model.latent_shape(32, 32)))
    assert torch.equal(batch.cond["embeds"][0], conditioning.positive['"a dog at night"']["embeds"][0])


def test_guidance_changes_the_image(model, tiny_model_dir):
    inputs = timeline_inputs(parse_timeline(tiny_timeline(tiny_model_dir)))[:1]
    low = render_inputs(model, inputs, 1)
    high = render_inputs(model, [dataclasses.replace(inputs[0], guidance=inputs[0].guidance * 4)], 1)
    assert np.abs(low.astype(int) - high.astype(int)).mean() > 0.5


def test_guidance_at_most_one_skips_the_unconditional_pass(model, tiny_model_dir):
    """Few-step models run at guidance 0 or 1: one UNet batch per step instead of two halves."""
    frame = timeline_inputs(parse_timeline(tiny_timeline(tiny_model_dir)))[0]
    counts = {}
    for guidance in (0.0, 1.0, 7.5):
        before = model.unet_calls
        widths = []
        hook = model.unet.register_forward_pre_hook(lambda module, args: widths.append(len(args[0])))
        try:
            render_inputs(model, [dataclasses.replace(frame, guidance=guidance)], 2)
        finally:
            hook.remove()
        counts[guidance] = (model.unet_calls - before, sum(widths))
    steps = frame.steps
    # The same number of UNet calls, but guidance > 1 runs twice the rows (uncond + cond halves).
    assert counts[0.0] == counts[1.0] == (steps, steps * 2)
    assert counts[7.5] == (steps, steps * 4)
    # At guidance <= 1 the prompt alone steers: 0 and 1 give the same frame.
    zero = render_inputs(model, [dataclasses.replace(frame, guidance=0.0)], 2)
    one = render_inputs(model, [dataclasses.replace(frame, guidance=1.0)], 2)
    assert np.array_equal(zero, one)


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


def test_noise_shift_moves_toward_a_second_noise_and_zero_is_the_frame_itself(model, tiny_model_dir):
    from latentwalk.engine import frame_noise

    shape = model.latent_shape(32, 32)
    frame = timeline_inputs(parse_timeline(tiny_timeline(tiny_model_dir)))[3]  # travelling: seeds 1 → 2
    own = frame_noise(frame, shape)
    assert torch.equal(frame_noise(dataclasses.replace(frame, params=(("noise_shift", 0.0),)), shape), own)
    full = frame_noise(dataclasses.replace(frame, params=(("noise_shift", 1.0),)), shape)
    other = frame_noise(dataclasses.replace(frame, seed_a=frame.seed_a + 1, seed_b=frame.seed_b + 1), shape)
    torch.testing.assert_close(full, other, atol=1e-6, rtol=1e-6)  # the seeds + 1, travelling alike
    fixed = frame_noise(dataclasses.replace(frame, params=(("noise_shift", 1.0), ("noise_shift_seed", 9.0))), shape)
    torch.testing.assert_close(fixed[0], seed_noise(9, shape), atol=1e-6, rtol=1e-6)
    half = frame_noise(dataclasses.replace(frame, params=(("noise_shift", 0.5),)), shape)
    assert abs(half.norm() / own.norm() - 1) < 0.05  # slerp keeps noise at full strength
    shifted = render_inputs(model, [dataclasses.replace(frame, params=(("noise_shift", 0.5),))], 2)
    assert np.abs(shifted.astype(int) - render_inputs(model, [frame], 2).astype(int)).mean() > 1
