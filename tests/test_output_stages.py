"""Output stages (latentwalk/interpolate.py) and seamless loops: outlines, frame counts, bit-identical
denoised frames, resume, the methods, the loop seam, and bad input through the real entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import WALK_FRAMES, walk_timeline
from latentwalk.api import plan, plan_data, prune_store, render
from latentwalk.encode import probe
from latentwalk.errors import UserError
from latentwalk.interpolate import ffmpeg_flow, opencv_flow, outline, timeline_outline
from latentwalk.placement import frame_distances
from latentwalk.timeline import INTERPOLATE_METHODS, parse_timeline


def latentwalk_command() -> list[str]:
    script = Path(sys.executable).parent / "latentwalk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "latentwalk.cli"]


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*latentwalk_command(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def pngs(folder: Path) -> np.ndarray:
    return np.stack([iio.imread(p) for p in sorted(folder.glob("frame_*.png"))])


def manifest(result) -> dict:
    return json.loads(Path(result.manifest).read_text())


# --- outlines: which frames are denoised ----------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_outline_keeps_fixed_frames_and_denoises_at_most_every_factor_th(factor):
    out = outline(30, {0, 7, 29}, factor)
    anchors = np.array(out.anchors)
    assert {0, 7, 29} <= set(out.anchors) and anchors[0] == 0 and anchors[-1] == 29
    assert np.diff(anchors).max() <= factor
    assert len(out.anchors) == 1 + -(-7 // factor) + -(-22 // factor)  # ceil(gap / factor) intervals per fixed gap
    between = [f for gap in out.gaps for f in gap.frames]
    assert sorted(between + list(out.anchors)) == list(range(30))  # every frame once: denoised or interpolated
    for gap in out.gaps:
        assert gap.left in out.anchors and gap.right in out.anchors
        assert [gap.weight(f) for f in gap.frames] == [(f - gap.left) / (gap.right - gap.left) for f in gap.frames]


def test_a_loop_outline_interpolates_its_last_frames_toward_frame_0():
    out = outline(20, {0, 7}, 4, loop=True)
    assert out.gaps[-1].right == 20 and 19 in out.gaps[-1].frames  # frame 20 is frame 0 again
    assert max(g.right for g in outline(20, {0, 7, 19}, 4).gaps) == 19  # without the loop the last frame is denoised


def test_keyframes_beats_and_cuts_are_always_denoised():
    beats = "audio: {bpm: 90}\nfps: 6\nend: {frame: 24}\nguidance: '7 + 2 * sin(beat)'\noutput: {interpolate: {factor: 4}}\n"
    timeline = parse_timeline(beats + "keyframes:\n  - {frame: 0, prompt: a cat}\n  - {frame: 11, prompt: a dog}\n")
    anchors = set(timeline_outline(timeline, plan(timeline)).anchors)
    assert {0, 11, 23} | {0, 4, 8, 12, 16, 20} <= anchors  # 90 bpm at 6 fps: a beat every 4 frames
    feedback = "mode: feedback\nend: {frame: 20}\noutput: {interpolate: {factor: 4, method: flow}}\n"
    timeline = parse_timeline(feedback + "keyframes:\n  - {frame: 0, prompt: a cat}\n  - {frame: 10, prompt: a dog, cut: true}\n")
    out = timeline_outline(timeline, plan(timeline))
    assert {9, 10} <= set(out.anchors)  # the chain before the cut ends denoised: nothing spans the cut
    assert all(not (g.left < 10 <= g.right) for g in out.gaps)


@pytest.mark.parametrize("fragment, message", [
    ("output: {interpolate: {factor: 5}}", "t.yaml:1: output.interpolate.factor: must be one of 2, 3, 4"),
    ("output: {interpolate: {factor: 1.5}}", "t.yaml:1: output.interpolate.factor: expected an integer, got 1.5"),
    ("output: {interpolate: {method: film}}", f"t.yaml:1: output.interpolate.method: unknown value 'film'; expected one of: {', '.join(INTERPOLATE_METHODS)}"),
    ("output: {interpolate: {method: rife}}", "t.yaml:1: output.interpolate.method: rife is not available"),
    ("output: {interpolat: {}}", "t.yaml:1: output.interpolat: unknown key 'interpolat' (did you mean 'interpolate'?)"),
    ("loop: true", "t.yaml:1: loop: needs at least two keyframes"),
    ("mode: feedback\ncadence: 2\noutput: {interpolate: {factor: 2}}", "t.yaml:3: output.interpolate: cadence 2 already makes"),
])
def test_bad_output_stages_are_refused_when_read(fragment, message):
    with pytest.raises(UserError) as error:
        parse_timeline(fragment + "\nend: {frame: 8}\nkeyframes:\n  - {frame: 0, prompt: a cat}\n", source="t.yaml")
    assert str(error.value).startswith(message), str(error.value)


def test_bad_input_exits_2_through_the_entry_point_before_any_model(tmp_path):
    (tmp_path / "rife.yaml").write_text("end: {frame: 8}\noutput:\n  interpolate: {method: rife}\nkeyframes:\n  - {frame: 0, prompt: a cat}\n")
    result = run_cli("render", "rife.yaml", "--out", "rife.mp4", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("latentwalk: error: rife.yaml:3: output.interpolate.method: rife is not available")
    # Keyframes on every frame leave nothing to interpolate: the plan says so, with the factor's line.
    (tmp_path / "dense.yaml").write_text(
        "end: {frame: 3}\noutput: {interpolate: {factor: 2}}\nkeyframes:\n  - {frame: 0, prompt: a cat}\n"
        "  - {frame: 1, prompt: a dog}\n  - {frame: 2, prompt: a city}\n"
    )
    result = run_cli("plan", "dense.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 2 and "dense.yaml:2: output.interpolate.factor: factor 2 leaves no frame to interpolate" in result.stderr
    assert not (tmp_path / "rife.mp4").exists() and not (tmp_path / "renders").exists()


# --- the methods on pictures with known motion ----------------------------------------------------


@pytest.mark.parametrize("method", [opencv_flow, ffmpeg_flow])
def test_flow_follows_motion_better_than_a_cross_fade(method):
    rng = np.random.default_rng(0)
    noise = rng.random((72, 120, 3))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.5) ** 2)
    for axis in (0, 1):  # a smooth random texture
        noise = np.apply_along_axis(lambda x: np.convolve(x, kernel / kernel.sum(), mode="same"), axis, noise)
    texture = ((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)
    a, b = texture[:, 8:72], texture[:, 16:80]  # the picture moves 8 px left
    weights = np.array([0.25, 0.5, 0.75])
    out = method(a, b, weights)
    assert out.shape == (3, 72, 64, 3) and out.dtype == np.uint8
    for w, image in zip(weights, out):
        truth = texture[:, 8 + round(8 * w) : 72 + round(8 * w)].astype(float)
        fade = (1 - w) * a + w * b
        inner = np.s_[6:-6, 10:-10]
        assert np.abs(image[inner] - truth[inner]).mean() < 0.6 * np.abs(fade[inner] - truth[inner]).mean()


# --- renders on the tiny model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def walk(tiny_model_dir, tmp_path_factory, one_thread):
    """The tiny walk rendered plainly and with factor-2 latent interpolation, each into its own store."""
    root = tmp_path_factory.mktemp("interpolate")
    (root / "plain.yaml").write_text(walk_timeline(tiny_model_dir))
    (root / "lat.yaml").write_text(walk_timeline(tiny_model_dir, extra="output: {interpolate: {factor: 2, method: latent}}\n"))
    results = {
        name: render(root / f"{name}.yaml", root / f"{name}.mp4", frames_dir=root / f"{name}-frames", store_dir=root / f"{name}.store", progress=False)
        for name in ("plain", "lat")
    }
    return root, results


def test_interpolated_video_has_the_plans_frames_and_its_denoised_ones_are_bit_identical(walk):
    root, results = walk
    planned = plan_data(plan(root / "lat.yaml"), parse_timeline((root / "lat.yaml").read_text()))
    anchors = planned["interpolate"]["denoised_frames"]
    assert planned["n_frames"] == WALK_FRAMES and planned["interpolate"]["interpolated_frames"] == WALK_FRAMES - len(anchors)
    assert {0, 9, 12, WALK_FRAMES - 1} <= set(anchors) and len(anchors) < WALK_FRAMES * 0.7
    plain, lat = pngs(root / "plain-frames"), pngs(root / "lat-frames")
    assert len(plain) == len(lat) == probe(root / "lat.mp4").frames == WALK_FRAMES
    assert all(np.array_equal(plain[f], lat[f]) for f in anchors)  # denoised in another store, to the bit
    between = [f for f in range(WALK_FRAMES) if f not in anchors]
    assert not any(np.array_equal(plain[f], lat[f]) for f in between)  # made by the stage, not the engine
    data = manifest(results["lat"])
    assert data["output"]["interpolate"]["denoised_frames"] == anchors
    assert data["store"]["frames_interpolated"] == len(between)
    assert data["store"]["frames_rendered"] < manifest(results["plain"])["store"]["frames_rendered"]


def test_resumed_interpolated_render_denoises_and_interpolates_nothing(walk):
    root, _ = walk
    _, pruned = prune_store(root / "lat.yaml", store_dir=root / "lat.store")  # keeps the in-betweens with their anchors
    assert pruned.frames == 0
    result = run_cli("render", "lat.yaml", "--out", "again.mp4", "--store", "lat.store", "--frames", "again-frames", cwd=root)
    assert result.returncode == 0, result.stderr
    data = json.loads((root / "again.json").read_text())["store"]
    assert (data["frames_rendered"], data["frames_interpolated"], data["frames_reused"]) == (0, 0, WALK_FRAMES)
    assert np.array_equal(pngs(root / "again-frames"), pngs(root / "lat-frames"))


def test_a_looping_interpolated_walk_leads_its_last_frame_into_its_first(tiny_model_dir, tmp_path, one_thread):
    text = walk_timeline(tiny_model_dir, extra="loop: true\noutput: {interpolate: {factor: 3, method: flow}}\n")
    (tmp_path / "loop.yaml").write_text(text.replace("{frame: 12, prompt: a city, seed: 3}", "{frame: 11, prompt: a city, seed: 3}"))
    result = render(tmp_path / "loop.yaml", tmp_path / "loop.mp4", frames_dir=tmp_path / "frames", progress=False)
    anchors = manifest(result)["output"]["interpolate"]["denoised_frames"]
    assert anchors[-1] < WALK_FRAMES - 1  # the last frames are interpolated toward frame 0
    frames = pngs(tmp_path / "frames")
    assert len(frames) == WALK_FRAMES
    seam = frame_distances([*frames, frames[0]])
    assert seam[-1] <= seam[:-1].max() and seam[-1] < frame_distances([frames[11], frames[0]])[0]


# --- the loop seam on the embedded model ----------------------------------------------------------


def test_loop_seam_is_as_smooth_as_any_adjacent_pair_on_the_embedded_model(tmp_path, one_thread):
    keys = "keyframes:\n  - {frame: 0, prompt: a red sunset over the sea, seed: 1}\n  - {frame: 4, prompt: snowy mountains at night, seed: 2}\n"
    head = "model: toy\nwidth: 64\nheight: 64\nsteps: 2\nfps: 4\nbatch_size: 4\nspacing: t\nend: {frame: 8}\n"
    (tmp_path / "loop.yaml").write_text(head + "loop: true\n" + keys)
    result = render(tmp_path / "loop.yaml", tmp_path / "loop.mp4", frames_dir=tmp_path / "frames", progress=False)
    frames = pngs(tmp_path / "frames")
    d = frame_distances([*frames, frames[0]])  # the last entry: from the last frame back to the first
    ratio = d[-1] / np.median(d[:-1])
    assert 0.5 < ratio < 1.5, (ratio, d)
    assert d[-1] < 0.5 * frame_distances([frames[4], frames[0]])[0]  # the seam is one step, not the keyframes' jump
    assert manifest(result)["plan"]["frames"][-1]["target"] == 0  # the last segment travels to the first keyframe
