"""Perceptual placement at render time: probes as stored frames, keyframes locked, resume without rendering."""

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import WALK_FRAMES, walk_timeline

from latentwalk.api import frame_plan, plan, render
from latentwalk.errors import UserError
from latentwalk.frames import frame_key
from latentwalk.prompts import parse_prompt
from latentwalk.placement import StoredImages, place, placed_segments, thumbnail
from latentwalk.store import FrameStore
from latentwalk.timeline import parse_timeline

N_FRAMES = WALK_FRAMES


def timeline_text(model_dir, spacing="perceptual", extra="") -> str:
    return walk_timeline(model_dir, extra=f"spacing: {spacing}\n{extra}")


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def rendered(tiny_model_dir, tmp_path_factory, one_thread):
    """One perceptual and one `spacing: t` render of the same timeline, each with its own store."""
    tmp = tmp_path_factory.mktemp("placement")
    perceptual = render(write(tmp, timeline_text(tiny_model_dir)), tmp / "p.mp4", progress=False)
    uniform = render(write(tmp, timeline_text(tiny_model_dir, "t"), "u.yaml"), tmp / "u.mp4", progress=False)
    return tmp, perceptual, uniform


def manifest(result) -> dict:
    return json.loads(result.manifest.read_text())


def stored_frames(result, timeline_path) -> list[np.ndarray]:
    timeline = parse_timeline(timeline_path.read_text(), str(timeline_path))
    store = FrameStore(result.store)
    frames = frame_plan(timeline, result.plan, store)
    return [store.load(k, frames.shape) for k in frames.keys]


def test_frame_count_and_keyframes_unchanged(rendered):
    tmp, perceptual, uniform = rendered
    assert perceptual.plan.n_frames == uniform.plan.n_frames == N_FRAMES
    p, u = perceptual.plan.frames, uniform.plan.frames
    for key in perceptual.plan.keyframes:  # keyframes stay on their frames, exactly t = 0
        assert p[key.frame].t == p[key.frame].noise_t == 0.0 and p[key.frame].segment == key.index
    ps = [f.t for f in p[0:9]]
    assert ps == sorted(ps) and 0 < ps[-1] < 1  # monotone inside the segment, never reaching the next keyframe
    assert [f.t for f in p] != [f.t for f in u]  # placement moved frames
    m = manifest(perceptual)
    assert [f["t"] for f in m["plan"]["frames"]] == [f.t for f in p]
    distances = [f["distance"] for f in m["plan"]["frames"]]
    assert distances[-1] is None and all(d >= 0 for d in distances[:-1])
    assert {s["index"] for s in m["placement"]["segments"]} == {0, 1}


def test_manifest_reports_probes_and_predicted_and_measured_evenness(rendered):
    from latentwalk.smooth import adjacent_distances, pixel_distance, ssim_distance, walk_metrics

    tmp, perceptual, _ = rendered
    segments = {s["index"]: s for s in manifest(perceptual)["placement"]["segments"]}
    frames = np.stack(stored_frames(perceptual, tmp / "t.yaml"))
    for s in segments.values():
        assert s["probes"] == len(s["probe_t"]) <= s["budget"] == 32 and s["stopped"] in ("even", "budget", "narrow")
        assert len(s["pixel"]) == len(s["root_ssim"]) == len(s["distances"]) == s["probes"] - 1
        assert set(s["predicted"]) == {"pixel_p95", "pixel_max", "ssim_p95", "ssim_max"}
    # Measured: the segment's rendered frames and the next keyframe's (frames 0-9 for segment 0).
    seg = frames[0:10]
    for name, distance in (("pixel", pixel_distance), ("ssim", ssim_distance)):
        m = walk_metrics(adjacent_distances(seg, distance))
        assert segments[0]["measured"][f"{name}_p95"] == pytest.approx(m.p95_over_median)
        assert segments[0]["measured"][f"{name}_max"] == pytest.approx(m.max_over_median)


def test_keyframe_frames_equal_an_independent_render_of_the_keyframe(rendered, tiny_model_dir):
    tmp, perceptual, _ = rendered
    frames = stored_frames(perceptual, tmp / "t.yaml")
    alone = write(tmp, timeline_text(tiny_model_dir).split("keyframes:")[0].replace(f"frame: {N_FRAMES}", "frame: 1")
                  + "keyframes:\n  - {frame: 0, prompt: a dog at night, seed: 2}\n", "alone.yaml")
    single = render(alone, tmp / "alone.mp4", progress=False)
    assert np.array_equal(stored_frames(single, alone)[0], frames[9])  # byte-identical


def test_spacing_t_is_todays_schedule(rendered):
    tmp, _, uniform = rendered
    timeline = parse_timeline((tmp / "u.yaml").read_text(), str(tmp / "u.yaml"))
    assert [f.t for f in uniform.plan.frames] == [f.t for f in plan(timeline).frames]
    assert manifest(uniform)["placement"]["segments"] == [] and uniform.probes_rendered == 0


def test_resume_re_places_from_stored_probes_without_rendering(rendered, tmp_path):
    tmp, perceptual, _ = rendered
    again = render(tmp / "t.yaml", tmp_path / "again.mp4", store_dir=perceptual.store, progress=False)
    assert again.frames_rendered == 0 and again.frames_reused == N_FRAMES
    assert [f.t for f in again.plan.frames] == [f.t for f in perceptual.plan.frames]  # deterministic


def test_killed_render_resumes_rendering_only_what_is_missing(rendered, tiny_model_dir, tmp_path):
    tmp, perceptual, _ = rendered
    store = FrameStore(tmp_path / "store")
    for key in FrameStore(perceptual.store).keys():  # a run killed after placement: probes stored, other frames not
        store.save(key, FrameStore(perceptual.store).load(key, (32, 32, 3)))
    timeline = parse_timeline((tmp / "t.yaml").read_text(), str(tmp / "t.yaml"))
    placed = frame_plan(timeline, perceptual.plan, store)
    segments = placed_segments(perceptual.plan, frame_plan(timeline, plan(timeline), store).inputs, timeline.settings.share_steps)
    probe_t = {s["index"]: s["probe_t"] for s in manifest(perceptual)["placement"]["segments"]}
    probes = {frame_key(placed.identity, s.probe(t)) for s in segments for t in probe_t[s.index]}
    lost = set(placed.keys) - probes
    assert len(lost) >= 1
    for key in lost:
        store.path(key).unlink()
    again = render(tmp / "t.yaml", tmp_path / "again.mp4", store_dir=store.root, progress=False)
    assert again.frames_rendered == len(lost) and again.probes_rendered == 0


def test_prune_keeps_probes_and_a_missing_probe_is_an_error(rendered, tmp_path):
    from latentwalk.api import prune_store

    tmp, perceptual, _ = rendered
    store = FrameStore(tmp_path / "store")
    for key in FrameStore(perceptual.store).keys():
        store.save(key, FrameStore(perceptual.store).load(key, (32, 32, 3)))
    before = store.keys()
    _, removed = prune_store(tmp / "t.yaml", store_dir=store.root)
    assert removed.frames == 0 and store.keys() == before
    timeline = parse_timeline((tmp / "t.yaml").read_text(), str(tmp / "t.yaml"))
    only_probes = before - set(frame_plan(timeline, perceptual.plan, store).keys)
    assert only_probes  # probes that are no video frame are kept all the same
    store.path(sorted(only_probes)[0]).unlink()
    with pytest.raises(UserError, match="probe"):
        prune_store(tmp / "t.yaml", store_dir=store.root)
    assert store.keys() == before - {sorted(only_probes)[0]}  # nothing deleted


def fake_images(value_of):
    """images_of for pure placement tests: each frame a flat grey of value_of(its weight along segment 0).

    A keyframe's own frame (t = 0) is the start of the first segment, else the end of one (weight 1).
    """
    first = str(parse_prompt("a cat in the snow"))
    weight = lambda f: f.t if f.t > 0 or f.prompt_a == first else 1.0  # noqa: E731
    return lambda frames: [np.full((16, 16, 3), round(value_of(weight(f))), np.uint8) for f in frames]


def test_placement_evens_out_a_jump_and_is_deterministic(tiny_model_dir):
    timeline = parse_timeline(timeline_text(tiny_model_dir), "t.yaml")
    schedule = plan(timeline)
    from latentwalk.frames import timeline_frames

    inputs = timeline_frames(schedule.frames, [k.keyframe for k in schedule.keyframes], "", 2)
    assert [s.index for s in placed_segments(schedule, inputs)] == [0, 1]
    jump = lambda t: 255 / (1 + np.exp(-40 * (t - 0.7)))  # noqa: E731  all change near t = 0.7
    first = place(schedule, inputs, fake_images(jump))
    second = place(schedule, inputs, fake_images(jump))
    assert first == second
    t = np.array([f.t for f in first.schedule.frames[:9]])
    values = np.array([jump(x) for x in t] + [jump(1.0)])
    steps = np.diff(values)
    assert steps.max() / np.median(steps) < 2.0  # uniform t gives one step ~ 10x the median
    uniform = np.array([jump(x) for x in np.arange(10) / 9])
    assert np.diff(uniform).max() / np.median(np.diff(uniform)) > 5.0


def test_a_segment_held_on_its_keyframe_is_placed_after_the_hold(tiny_model_dir):
    """`easing: hold` keeps the first frames at t = 0 (the keyframe's own frame); the rest is placed."""
    from latentwalk.frames import timeline_frames

    timeline = parse_timeline(timeline_text(tiny_model_dir, extra="easing: hold\nhold: 0.5\n"), "t.yaml")
    schedule = plan(timeline)
    inputs = timeline_frames(schedule.frames, [k.keyframe for k in schedule.keyframes], "", 2)
    assert inputs[1] == inputs[0]  # held: the keyframe's frame itself
    assert [s.index for s in placed_segments(schedule, inputs)] == [0, 1]
    jump = lambda t: 255 / (1 + np.exp(-40 * (t - 0.7)))  # noqa: E731
    placed = place(schedule, inputs, fake_images(jump)).schedule.frames
    assert [f.t for f in placed[:9]] != [f.t for f in schedule.frames[:9]]
    assert [f.t for f in placed[:9]][:2] == [0.0, 0.0]  # the hold stays on the keyframe


def stored_images(value_of):
    """images_of over a dict store (frame inputs → image), logging the frames it renders: a resumable fake render."""
    render, rendered, store = fake_images(value_of), [], {}

    def images_of(frames):
        missing = [f for f in frames if f not in store]
        rendered.append(missing)
        store.update(zip(missing, render(missing)))
        return [store[f] for f in frames]

    return images_of, rendered, store


def test_probing_keeps_its_budget_and_resumes_without_rendering_stored_probes(tiny_model_dir):
    from latentwalk.frames import timeline_frames

    timeline = parse_timeline(timeline_text(tiny_model_dir), "t.yaml")
    schedule = plan(timeline)
    inputs = timeline_frames(schedule.frames, [k.keyframe for k in schedule.keyframes], "", 2)
    jump = lambda t: 255 / (1 + np.exp(-300 * (t - 0.53)))  # noqa: E731  a switch between two coarse probes
    images_of, rendered, store = stored_images(jump)
    first = place(schedule, inputs, images_of, budget=12)
    assert [(s.index, s.probes, s.stopped) for s in first.segments][0] == (0, 12, "budget")
    assert all(s.probes <= 12 and len(s.probe_t) == s.probes for s in first.segments)
    assert sum(map(len, rendered)) == len(first.probes) == len(set(first.probes))  # each probe rendered once
    # Killed after the coarse pass: the next run renders only the rounds after it, and places the same.
    coarse = rendered[0]
    resumed, rendered_again, store_again = stored_images(jump)
    store_again.update({f: store[f] for f in coarse})
    again = place(schedule, inputs, resumed, budget=12)
    assert again == first
    assert set(f for call in rendered_again for f in call) == set(first.probes) - set(coarse)
    # Everything stored: nothing rendered, same placement.
    assert place(schedule, inputs, images_of, budget=12) == first and sum(map(len, rendered)) == len(first.probes)
    # A larger budget only adds probes: the first rounds are the same.
    wider = place(schedule, inputs, stored_images(jump)[0], budget=24).segments[0]
    assert wider.probes > 12 and set(first.segments[0].probe_t[:8]) <= set(wider.probe_t)


def test_placement_budget_is_validated_with_its_line(tiny_model_dir):
    with pytest.raises(UserError, match=r"t.yaml:\d+: placement_budget: .*at least 2"):
        parse_timeline(timeline_text(tiny_model_dir, extra="placement_budget: 1\n"), "t.yaml")
    assert parse_timeline(timeline_text(tiny_model_dir, extra="placement_budget: 40\n"), "t.yaml").settings.placement_budget == 40


def test_segments_with_travelling_guidance_keep_t_spacing(tiny_model_dir):
    text = timeline_text(tiny_model_dir).replace("seed: 2}", "seed: 2, guidance: 3}")
    timeline = parse_timeline(text, "t.yaml")
    schedule = plan(timeline)
    from latentwalk.frames import timeline_frames

    inputs = timeline_frames(schedule.frames, [k.keyframe for k in schedule.keyframes], "", 2)
    assert [s.index for s in placed_segments(schedule, inputs)] == []  # both segments' guidance travels


def test_spacing_is_validated_with_its_line(tiny_model_dir):
    with pytest.raises(UserError, match=r"t.yaml:\d+: .*spacing"):
        parse_timeline(timeline_text(tiny_model_dir, "lpips"), "t.yaml")


def test_thumbnail_block_averages_to_at_most_the_side():
    image = np.arange(300 * 200 * 3, dtype=np.uint8).reshape(300, 200, 3)
    small = thumbnail(image, side=128)
    assert small.shape == (100, 66, 3)
    assert small[0, 0, 0] == pytest.approx(image[:3, :3, 0].mean() / 255)


def test_cli_render_plot_and_plan_note(rendered, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from latentwalk.cli import main

    tmp, perceptual, _ = rendered
    png = tmp_path / "d.png"
    assert main(["render", str(tmp / "t.yaml"), "--out", str(tmp_path / "v.mp4"), "--store", str(perceptual.store), "--quiet", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0 rendered" in capsys.readouterr().out  # from the stored frames and probes alone
    assert main(["plan", str(tmp / "t.yaml")]) == 0
    assert "segments 0, 1 use `spacing: perceptual`" in capsys.readouterr().out
    assert main(["plan", str(tmp / "u.yaml")]) == 0
    assert "perceptual" not in capsys.readouterr().out


def blend_frames(model, frames, batch_size):
    from latentwalk.engine import EngineSettings, render_frames

    out = {}
    settings = EngineSettings(32, 32, "ddim", "auto", "blend", batch_size)
    render_frames(model, list(frames), settings, lambda fs, images: out.update(zip(fs, images)))
    return [out[f] for f in frames]


def test_blend_is_batch_invariant_and_the_plain_prompt_at_its_ends(tiny_model_dir, one_thread):
    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.engine import EngineSettings, render_frames
    from latentwalk.frames import FrameInputs

    model = load_backend(ModelSpec(str(tiny_model_dir)), device="cpu")
    base = FrameInputs(1, 2, 0.0, '"a cat"', '"a dog at night"', '""', '""', 0.0, 7.5, 2)
    frames = [replace(base, t=t, noise_t=t) for t in (0.0, 0.3, 0.6, 1.0)]
    together = blend_frames(model, frames, 4)
    alone = [blend_frames(model, [f], 4)[0] for f in frames[1:3]]
    assert all(np.array_equal(a, b) for a, b in zip(alone, together[1:3]))  # neighbours do not matter
    assert not np.array_equal(together[1], together[2])
    plain = {}
    settings = EngineSettings(32, 32, "ddim", "auto", "slerp", 4)
    ends = [frames[0], replace(base, prompt_a=base.prompt_b, seed_a=2, noise_t=0.0)]
    render_frames(model, ends, settings, lambda fs, images: plain.update(zip(fs, images)))
    for blended, f in zip((together[0], together[3]), ends):  # t = 0 and 1: the plain prompt (UNet batch shape aside)
        assert np.abs(blended.astype(int) - plain[f].astype(int)).max() <= 2


def test_a_first_render_reuses_nothing_and_placed_inputs_key_like_the_placed_schedule(rendered, tiny_model_dir):
    """'reused' counts frames an earlier run made: probes this run rendered (some are video frames) are not."""
    tmp, perceptual, _ = rendered
    assert perceptual.frames_reused == 0 and perceptual.probes_rendered > 0
    distinct = len(set(frame_plan(parse_timeline(timeline_text(tiny_model_dir)), perceptual.plan, FrameStore(perceptual.store)).keys))
    assert perceptual.frames_rendered >= distinct
    # Seconds of each step: the model load that probes started is not counted as placement.
    steps = {k: v for k, v in perceptual.timings.items() if k != "total_s"}
    assert perceptual.timings["load_model_s"] > 0 and sum(steps.values()) == pytest.approx(perceptual.timings["total_s"], abs=0.5)
    again = render(tmp / "t.yaml", tmp / "p.mp4", progress=False)
    assert (again.frames_reused, again.frames_rendered, again.probes_rendered) == (N_FRAMES, 0, 0)
    # The render keys placement's own inputs; the placed schedule's records key to the same frames.
    timeline = parse_timeline(timeline_text(tiny_model_dir))
    assert frame_plan(timeline, again.plan, FrameStore(again.store)).missing == ()
