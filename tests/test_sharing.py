"""Shared trajectories: frames between a segment's coarse probes start from the probes' latents at step k."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import TINY_SIZE, WALK_FRAMES, walk_timeline
from latentwalk.api import frame_plan, plan, render
from latentwalk.backends import ModelOptions, ModelSpec, load_backend
from latentwalk.engine import Conditioning, EngineSettings, Trajectories, batch_inputs, render_frames
from latentwalk.errors import UserError
from latentwalk.frames import FrameInputs, frame_key
from latentwalk.placement import placed_segments
from latentwalk.prompts import parse_prompt
from latentwalk.sampling import denoise
from latentwalk.store import FrameStore
from latentwalk.timeline import SHARE_AUTO_FRACTION, parse_timeline

N_FRAMES = WALK_FRAMES
STEPS, SHARED = 4, 2


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    # As a render loads it on the CPU (`channels_last: auto`), so its frames compare bit for bit.
    return load_backend(ModelSpec(str(tiny_model_dir)), device="cpu", options=ModelOptions(channels_last=True))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def path_frame(t: float, share=None) -> FrameInputs:
    """A frame on the path 'a cat in the snow' (seed 1) → 'a dog at night' (seed 2)."""
    a, b, negative = (str(parse_prompt(p)) for p in ("a cat in the snow", "a dog at night", ""))
    return FrameInputs(1, 2, t, a, b, negative, negative, t, 5.0, STEPS, share=share)


def settings(batch_size: int = 4, scheduler: str = "ddim") -> EngineSettings:
    return EngineSettings(TINY_SIZE, TINY_SIZE, scheduler, "auto", "slerp", batch_size)


def images(backend, frames, trajectories=None, capture=0, batch_size=4, scheduler="ddim") -> dict:
    out = {}
    render_frames(backend, frames, settings(batch_size, scheduler), lambda fs, ims: out.update(zip(fs, ims)),
                  trajectories=trajectories, capture=capture)
    return out


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m", "euler_a"])
def test_latents_after_k_steps_are_the_same_in_a_stopped_and_a_whole_run(backend, scheduler):
    """What a resumed render recomputes (stop=k) is what the probe pass kept (on_step in a whole run)."""
    frames = [path_frame(t) for t in (0.0, 0.3, 0.6, 1.0)]
    inputs = batch_inputs(frames, Conditioning(backend, frames), backend.latent_shape(TINY_SIZE, TINY_SIZE), "slerp")
    run = lambda **kw: denoise(backend, inputs, scheduler, STEPS, width=TINY_SIZE, height=TINY_SIZE, **kw)  # noqa: E731
    seen = {}
    whole = run(on_step=lambda done, x: seen.setdefault(done, x.clone()))
    assert sorted(seen) == list(range(1, STEPS + 1)) and torch.equal(seen[STEPS], whole)
    early = run(stop=SHARED)
    assert torch.equal(early, seen[SHARED]) and not torch.equal(early, whole)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_single_step_schedulers_started_again_from_step_k_continue_the_same_run(backend, scheduler):
    frames = [path_frame(t) for t in (0.0, 0.3, 0.6, 1.0)]
    inputs = batch_inputs(frames, Conditioning(backend, frames), backend.latent_shape(TINY_SIZE, TINY_SIZE), "slerp")
    run = lambda **kw: denoise(backend, inputs, scheduler, STEPS, width=TINY_SIZE, height=TINY_SIZE, **kw)  # noqa: E731
    assert torch.equal(run(start=(SHARED, run(stop=SHARED))), run())


def test_a_shared_frame_starts_from_the_slerp_of_its_sources(backend):
    shared = path_frame(0.25, share=(0.0, 1.0, SHARED))
    sources = [path_frame(0.0).along_path(s) for s in (0.0, 1.0)]
    assert shared.share_sources() == (*sources, 0.25)
    kept = Trajectories()
    captured = images(backend, sources, kept, capture=SHARED)
    assert set(kept.latents) == {(f, SHARED) for f in sources}  # the probe pass kept exactly its sources' step-k latents
    assert all(x.device.type == "cpu" and x.shape == (4, 16, 16) for x in kept.latents.values())
    # Capturing step-k latents does not change a source's own pixels.
    plain = images(backend, sources)
    assert all(np.array_equal(captured[f], plain[f]) for f in sources)
    # The shared frame by hand: the slerp of the sources' step-k latents, then the remaining steps.
    conditioning = Conditioning(backend, [shared])
    rows = [shared] * 4
    inputs = batch_inputs(rows, conditioning, backend.latent_shape(TINY_SIZE, TINY_SIZE), "slerp")
    start = kept.start(rows)
    by_hand = backend.decode(denoise(backend, inputs, "ddim", STEPS, width=TINY_SIZE, height=TINY_SIZE, start=(SHARED, start)))[0]
    ours = images(backend, [shared], kept)[shared]
    np.testing.assert_array_equal(ours, by_hand)
    # It is neither source and not the frame denoised from its own noise.
    scratch = images(backend, [replace(shared, share=None)])[replace(shared, share=None)]
    assert not np.array_equal(ours, scratch) and not any(np.array_equal(ours, plain[f]) for f in sources)


def test_shared_frames_do_not_depend_on_their_batch_or_on_where_sources_came_from(backend):
    shared = [path_frame(t, share=(0.0, 0.5, SHARED)) for t in (0.1, 0.2, 0.3, 0.4)] + [path_frame(0.7, share=(0.5, 1.0, SHARED))]
    kept = Trajectories()
    images(backend, [path_frame(0.0).along_path(t) for t in (0.0, 0.5, 1.0)], kept, capture=SHARED)  # the probe pass
    together = images(backend, shared, kept)
    scratch = images(backend, [replace(f, share=None) for f in shared])
    assert all(not np.array_equal(together[f], scratch[replace(f, share=None)]) for f in shared)  # they did share
    # A resumed render has no kept latents: the sources' first k steps run again, alone or in other batches.
    for frame in shared:
        alone = images(backend, [frame])[frame]
        np.testing.assert_array_equal(alone, together[frame])


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m"])
def test_sharing_more_steps_moves_a_frame_further_from_its_own_render(backend, scheduler):
    frame = path_frame(0.5)
    scratch = images(backend, [frame], scheduler=scheduler)[frame].astype(np.float64)
    distances = []
    for k in (1, 2, 3):
        shared = path_frame(0.5, share=(0.25, 0.75, k))
        distances.append(np.abs(images(backend, [shared], scheduler=scheduler)[shared] - scratch).mean())
    assert distances[0] > 0 and distances[0] <= distances[-1]


def test_dpmpp_2m_shared_frames_resume_to_the_same_pixels(backend):
    """A multistep solver's kept latents (whole run) and recomputed ones (stopped run) start the same frame."""
    shared = path_frame(0.3, share=(0.0, 1.0, SHARED))
    kept = Trajectories()
    images(backend, [path_frame(0.0).along_path(s) for s in (0.0, 1.0)], kept, capture=SHARED, scheduler="dpmpp_2m")
    resumed = images(backend, [shared], scheduler="dpmpp_2m")[shared]  # no kept latents: recomputed
    np.testing.assert_array_equal(images(backend, [shared], kept, scheduler="dpmpp_2m")[shared], resumed)
    scratch = replace(shared, share=None)
    assert not np.array_equal(resumed, images(backend, [scratch], scheduler="dpmpp_2m")[scratch])  # it did share


# ---------------------------------------------------------------------------------- renders


def timeline_text(model_dir, share="2") -> str:
    return walk_timeline(model_dir, steps=STEPS, extra=f"share_steps: {share}\n")


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def stored(result, path):
    timeline = parse_timeline(path.read_text(), str(path))
    store = FrameStore(result.store)
    frames = frame_plan(timeline, result.plan, store)
    return frames, [store.load(k, frames.shape) for k in frames.keys]


@pytest.fixture(scope="module")
def shared_render(tiny_model_dir, tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("sharing")
    path = write(tmp, timeline_text(tiny_model_dir))
    return tmp, path, render(path, tmp / "s.mp4", progress=False)


def test_render_shares_frames_between_coarse_probes_and_keeps_keyframes_exact(shared_render, tiny_model_dir):
    tmp, path, result = shared_render
    frames, pixels = stored(result, path)
    manifest = json.loads(result.manifest.read_text())
    shared = [f for f in frames.inputs if f.share]
    assert len(frames.inputs) == N_FRAMES and shared  # frame count unchanged; frames were shared
    assert all(f.share[2] == SHARED and f.share[0] < f.t < f.share[1] for f in shared)
    assert [r["share"] is not None for r in manifest["plan"]["frames"]] == [f.share is not None for f in frames.inputs]
    for key in result.plan.keyframes:  # keyframe frames are never shared: the independent render
        assert frames.inputs[key.frame].share is None
    alone = write(tmp, timeline_text(tiny_model_dir).split("keyframes:")[0].replace(f"frame: {N_FRAMES}", "frame: 1")
                  + "keyframes:\n  - {frame: 0, prompt: a dog at night, seed: 2}\n", "alone.yaml")
    single = render(alone, tmp / "alone.mp4", progress=False)
    assert np.array_equal(stored(single, alone)[1][0], pixels[9])


def test_killed_shared_render_resumes_to_the_same_pixels_without_probes(shared_render, tmp_path):
    tmp, path, result = shared_render
    frames, pixels = stored(result, path)
    store = FrameStore(tmp_path / "store")
    source = FrameStore(result.store)
    for key in source.keys():
        store.save(key, source.load(key, frames.shape))
    timeline = parse_timeline(path.read_text(), str(path))
    segments = placed_segments(plan(timeline), frame_plan(timeline, plan(timeline), store).inputs, SHARED)
    probe_t = {s["index"]: s["probe_t"] for s in json.loads(result.manifest.read_text())["placement"]["segments"]}
    probes = {frame_key(frames.identity, s.probe(t)) for s in segments for t in probe_t[s.index]}
    lost = {frames.keys[i] for i, f in enumerate(frames.inputs) if f.share} - probes
    assert lost
    for key in lost:  # killed after placement: the shared frames that are no probe were not written yet
        store.path(key).unlink()
    again = render(path, tmp_path / "again.mp4", store_dir=store.root, progress=False)
    assert again.frames_rendered == len(lost) and again.probes_rendered == 0
    _, resumed = stored(again, path)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, pixels))  # sources' latents recomputed exactly


def test_share_steps_zero_renders_every_frame_from_its_own_noise(tiny_model_dir, tmp_path, backend):
    path = write(tmp_path, timeline_text(tiny_model_dir, share="0"))
    result = render(path, tmp_path / "z.mp4", progress=False)
    frames, pixels = stored(result, path)
    assert not any(f.share for f in frames.inputs)
    middle = frames.inputs[4]
    np.testing.assert_array_equal(pixels[4], images(backend, [middle])[middle])


# ---------------------------------------------------------------------------------- settings


def settings_of(text):
    return parse_timeline(text + "end: {frame: 2}\nkeyframes:\n  - {frame: 0, prompt: a, seed: 1}\n", "t.yaml").settings


def test_share_steps_auto_follows_steps_and_scheduler():
    assert settings_of("steps: 20\n").share_steps == round(SHARE_AUTO_FRACTION * 20)
    assert settings_of("steps: 20\nscheduler: euler\n").share_steps == round(SHARE_AUTO_FRACTION * 20)
    assert settings_of("steps: 20\nscheduler: dpmpp_2m\n").share_steps == round(SHARE_AUTO_FRACTION * 20)
    assert settings_of("steps: 4\nscheduler: euler_a\n").share_steps == 0  # few-step samplers: nothing to share
    assert settings_of("steps: 4\nscheduler: lcm\nshare_steps: 2\n").share_steps == 2  # but they may
    assert settings_of("steps: 20\nshare_steps: 0\n").share_steps == 0
    assert settings_of("steps: 2\n").share_steps == 1 and settings_of("steps: 1\n").share_steps == 0  # one step of its own


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps: 10\nshare_steps: 10\n", r"t.yaml:2: share_steps: must be below steps \(10\)"),
        ("share_steps: half\n", r"t.yaml:1: share_steps: expected auto or a number of steps"),
        ("share_steps: -1\n", r"t.yaml:1: share_steps: must be at least 0"),
        ("channels_last: maybe\n", r"t.yaml:1: channels_last: expected auto, true or false, got 'maybe'"),
    ],
)
def test_bad_share_steps_name_file_line_and_field(text, message):
    with pytest.raises(UserError, match=message):
        settings_of(text)


def test_key_of_a_shared_frame_names_its_sources_and_depth(shared_render):
    tmp, path, result = shared_render
    frames, _ = stored(result, path)
    f = next(f for f in frames.inputs if f.share)
    keys = {frame_key(frames.identity, g) for g in (f, replace(f, share=None), replace(f, share=(*f.share[:2], 1)),
                                                     replace(f, share=(f.share[0], (f.share[1] + f.t) / 2, SHARED)))}
    assert len(keys) == 4


@pytest.mark.parametrize("interpolation", ["slerp", "lerp", "blend"])
def test_a_frame_at_weight_zero_does_not_depend_on_the_keyframe_it_travels_to(backend, interpolation):
    """Keyframe frames drop their b-side (frames.canonical): exact, so the path's end probe is the next keyframe's frame."""
    from latentwalk.frames import canonical

    start = replace(path_frame(0.0), params=(("noise_shift", 0.3),))
    alone = canonical(start)
    assert (alone.prompt_b, alone.seed_b) == (alone.prompt_a, alone.seed_a) != (start.prompt_b, start.seed_b)
    out = {}
    settings_ = EngineSettings(TINY_SIZE, TINY_SIZE, "ddim", "auto", interpolation, 4)
    render_frames(backend, [start, alone], settings_, lambda fs, ims: out.update(zip(fs, ims)))
    np.testing.assert_array_equal(out[start], out[alone])
    end = path_frame(0.3).along_path(1.0)
    assert end == canonical(replace(path_frame(0.0), seed_a=2, prompt_a=path_frame(0.0).prompt_b))
