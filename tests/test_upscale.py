"""output.upscale (latentwalk/upscale.py): refined and model-upscaled frames, their size and count, the
store, batch invariance, and bad input, through the `latentwalk` entry point on the tiny model."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import WALK_FRAMES, walk_timeline
from latentwalk.encode import probe
from latentwalk.store import FrameStore

REFINE = "spacing: t\noutput:\n  upscale: {factor: 2, steps: 2, strength: 0.5}\n"


# `run` (the installed latentwalk command in a subprocess) is conftest.py's.


@pytest.fixture(scope="module")
def refined(tmp_path_factory, tiny_model_dir, run):
    """A 32 px walk upscaled twice by refine (2 of 2 steps at strength 0.5), with its frames as PNGs."""
    work = tmp_path_factory.mktemp("upscale")
    (work / "walk.yaml").write_text(walk_timeline(tiny_model_dir, extra=REFINE))
    result = run("render", "walk.yaml", "--out", "walk.mp4", "--frames", "png", "--quiet", cwd=work)
    return work, result


def stored_plan(work: Path):
    """The render's frame plan and upscale plan, keyed in this process as the CLI keyed them (one thread)."""
    from latentwalk import api
    from latentwalk.upscale import plan_upscale

    timeline = api.as_timeline(work / "walk.yaml")
    store = FrameStore(work / "walk.frames")
    frames = api.frame_plan(timeline, api.plan(timeline), store)
    return timeline, store, frames, plan_upscale(timeline.output.upscale, frames.identity, frames.keys, frames.inputs, store)


def test_refined_video_is_twice_the_size_with_every_frame(refined):
    work, result = refined
    info = probe(work / "walk.mp4")
    assert (info.width, info.height, info.frames) == (64, 64, WALK_FRAMES)
    manifest = json.loads((work / "walk.json").read_text())
    up = manifest["upscale"]
    assert (up["method"], up["factor"], up["width"], up["height"], up["frames_reused"]) == ("refine", 2, 64, 64, 0)
    assert up["frames_made"] == manifest["store"]["frames_rendered"] > 0  # one refined frame per denoised one
    assert f"upscaled to 64x64 (refine): {up['frames_made']} frames made, 0 reused" in result.stdout
    pngs = sorted((work / "png").glob("frame_*.png"))
    assert len(pngs) == WALK_FRAMES


def test_refine_is_batch_invariant_and_is_what_the_store_and_pngs_hold(refined, tiny_model_dir, one_thread):
    import imageio.v3 as iio

    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.stages import engine_settings, model_options
    from latentwalk.upscale import refine

    work, _ = refined
    timeline, store, frames, plan = stored_plan(work)
    assert plan.missing == () and len(plan.sources) == len(set(frames.keys))
    stored = {k: store.load(k, plan.shape) for k in plan.sources}
    for i, png in enumerate(sorted((work / "png").glob("frame_*.png"))):
        assert np.array_equal(iio.imread(png), stored[plan.keys[i]])  # the video's frames are the stored ones

    backend = load_backend(ModelSpec(str(tiny_model_dir)), "cpu", "auto", model_options(timeline.settings, "cpu"))
    settings = engine_settings(replace(timeline.settings, width=64, height=64))
    keys = list(plan.sources)[:3]
    sources = [plan.sources[k] for k in keys]
    bases = [store.load(base, plan.base_shape) for base, _ in sources]
    together = refine(backend, settings, plan.spec, sources, bases)  # three rows of one padded batch
    alone = [refine(backend, settings, plan.spec, [s], [b])[0] for s, b in zip(sources, bases)]
    for key, a, b in zip(keys, together, alone):
        assert np.array_equal(a, b) and np.array_equal(a, stored[key])


def test_refine_redraws_each_frame(refined, one_thread):
    """Refine is img2img, not a resize: each frame differs from its Lanczos enlargement (how much of the
    composition it keeps is measured on the embedded model: benchmarks/bench_upscale.py; the tiny model's VAE is random)."""
    from latentwalk.upscale import lanczos

    work, _ = refined
    _, store, frames, plan = stored_plan(work)
    ups = {k: store.load(k, plan.shape) for k in plan.sources}
    for key, (base, _) in plan.sources.items():
        assert np.abs(ups[key].astype(float) - lanczos(store.load(base, plan.base_shape), 2)).mean() > 1
    assert len({u.tobytes() for u in ups.values()}) == len(ups)


def test_resume_makes_nothing_and_other_settings_make_new_frames(refined, run, tiny_model_dir):
    work, first = refined
    made = json.loads((work / "walk.json").read_text())["upscale"]["frames_made"]
    again = run("render", "walk.yaml", "--out", "walk.mp4", "--quiet", cwd=work).stdout
    assert f"{WALK_FRAMES} frames reused, 0 rendered" in again and f"0 frames made, {made} reused" in again
    stronger = walk_timeline(tiny_model_dir, extra=REFINE.replace("0.5", "0.75"))
    (work / "stronger.yaml").write_text(stronger)
    other = run("render", "stronger.yaml", "--out", "stronger.mp4", "--store", "walk.frames", "--quiet", cwd=work).stdout
    assert f"{WALK_FRAMES} frames reused, 0 rendered" in other and f"{made} frames made, 0 reused" in other
    assert FrameStore(work / "walk.frames").usage().frames == 3 * made  # the frames, and both sets of refined ones


class Nearest(torch.nn.Module):
    """A stand-in super-resolution network with spandrel's descriptor attributes: each pixel made 2x2."""

    scale, purpose, input_channels, output_channels = 2, "SR", 3, 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_model_method_runs_the_network_on_every_stored_frame(tmp_path, tiny_model_dir, monkeypatch, one_thread):
    """The stage's own code with a stand-in network (spandrel's loading is the next test's, where spandrel is installed)."""
    from latentwalk import api, upscale

    (tmp_path / "x4.pth").write_bytes(b"stand-in")
    (tmp_path / "walk.yaml").write_text(walk_timeline(tiny_model_dir, extra="spacing: t\noutput:\n  upscale: {method: model, model: x4.pth}\n"))
    monkeypatch.setattr(upscale, "load_model", lambda timeline, device: upscale.checked_model(timeline, Nearest()))
    result = api.render(tmp_path / "walk.yaml", tmp_path / "walk.mp4", progress=False)
    assert (probe(result.video).width, probe(result.video).frames) == (64, WALK_FRAMES) and result.upscale["method"] == "model"
    timeline, store, frames, plan = stored_plan(tmp_path)
    assert plan.missing == () and result.upscale["frames_made"] == len(plan.sources)
    for key, (base, _) in plan.sources.items():
        assert np.array_equal(store.load(key, plan.shape), store.load(base, plan.base_shape).repeat(2, 0).repeat(2, 1))
    monkeypatch.setattr(upscale, "load_model", lambda timeline, device: upscale.checked_model(timeline, torch.nn.Identity()))
    with pytest.raises(Exception, match=r"walk.yaml:\d+: output.upscale.factor: .* enlarges None"):
        api.render(tmp_path / "walk.yaml", tmp_path / "walk.mp4", progress=False)


def test_spandrel_reads_a_local_random_esrgan(tmp_path, tiny_model_dir, run, one_thread):
    pytest.importorskip("spandrel", reason="the upscale extra (spandrel needs a torchvision built for this torch)")
    from spandrel import ModelLoader
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).state_dict(), tmp_path / "esrgan_x2.pth")
    (tmp_path / "walk.yaml").write_text(walk_timeline(tiny_model_dir, extra="spacing: t\noutput:\n  upscale: {method: model, model: esrgan_x2.pth}\n"))
    run("render", "walk.yaml", "--out", "walk.mp4", "--quiet", cwd=tmp_path)
    assert (probe(tmp_path / "walk.mp4").width, probe(tmp_path / "walk.mp4").frames) == (64, WALK_FRAMES)
    from latentwalk.upscale import run_model

    model = ModelLoader("cpu").load_from_file(str(tmp_path / "esrgan_x2.pth")).eval()
    _, store, _, plan = stored_plan(tmp_path)
    key, (base, _) = next(iter(plan.sources.items()))
    assert np.abs(store.load(key, plan.shape).astype(int) - run_model(model, store.load(base, plan.base_shape))).max() <= 1
    (tmp_path / "x4.yaml").write_text(walk_timeline(tiny_model_dir, extra="output:\n  upscale: {factor: 4, method: model, model: esrgan_x2.pth}\n"))
    wrong = run("render", "x4.yaml", "--out", "x4.mp4", cwd=tmp_path, expect=2).stderr
    assert "x4.yaml:9: output.upscale.factor: esrgan_x2.pth enlarges 2x, but factor is 4; set factor: 2" in wrong


@pytest.mark.parametrize("upscale, message", [
    ("{factor: 3}", "output.upscale.factor: must be one of 2, 4"),
    ("{method: rife}", "output.upscale.method: unknown value 'rife'; expected one of: refine, model"),
    ("{method: model, model: gone.pth}", "output.upscale.model: weights file not found"),
    ("{method: model, model: x4.pth, strength: 0.5}", "output.upscale.strength: only used with method: refine"),
])
def test_bad_upscale_exits_2_naming_the_line_before_any_model_loads(upscale, message, tmp_path, tiny_model_dir, run):
    (tmp_path / "x4.pth").write_bytes(b"not weights")
    (tmp_path / "walk.yaml").write_text(walk_timeline(tiny_model_dir, extra=f"output:\n  upscale: {upscale}\n"))
    result = run("render", "walk.yaml", "--out", "walk.mp4", cwd=tmp_path, expect=2)
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("latentwalk: error: walk.yaml:9: ") and message in lines[0], result.stderr
    assert not (tmp_path / "walk.frames").exists() and not (tmp_path / "walk.mp4").exists()
