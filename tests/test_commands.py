"""Every command README.md shows, run through the installed `latentwalk` entry point on the shipped
configs (or small copies of them, with their audio), checking what each one promises.

The command lines README.md shows (`grep -n 'latentwalk [a-z]' README.md`), and where each runs here:

  latentwalk render TIMELINE.yaml [--out renders/x.mp4] [--frames DIR [--overwrite-frames]] [--batch-size N]
                    [--device cpu|cuda|mps] [--store DIR|URL] [--fresh] [--prune] [--overlap auto|on|off]
                    [--ray [ADDRESS]] [--wait] [--quiet]
      travel_render (--out --frames --overwrite-frames --batch-size --device --overlap off --wait --quiet --plot),
      test_edit_rerender_store_prune_and_render_prune (--store DIR, --fresh, --prune),
      feedback_render (default --out, --overlap on); --ray: only its bad address (exit 2) here, the
      Ray farm itself renders in tests/test_farm.py (a local cluster does not fit this file's time)
  latentwalk render configs/demo.yaml --fresh             test_edit_rerender_store_prune_and_render_prune
  latentwalk render configs/feedback.yaml                 feedback_render: default out renders/feedback.mp4
  latentwalk render --plot d.png                          travel_render, feedback_render
  OMP_NUM_THREADS=1 latentwalk render ...                 every render here (ENV)
  latentwalk render bad.yaml                              test_bad_input_exits_2_with_one_line
  latentwalk render t.yaml --ray [ADDRESS]                test_bad_input_exits_2_with_one_line (a bad address)
  latentwalk render t.yaml --ray auto --store s3://...    URL stores: `store memory://...` here; S3 needs s3fs and a bucket
  latentwalk plan   TIMELINE.yaml [--json] [--plot plan.png]
      test_plan_of_every_shipped_timeline, test_plan_plot_draws_the_clip_waveform
  latentwalk plan configs/reactive.yaml --plot renders/readme/reactive_plan.png
      test_plan_plot_draws_the_clip_waveform
  latentwalk beats  AUDIO [--tracker auto|librosa|madmom] [--bpm N] [--start S] [--end E] [--json]
      test_beats_json_on_the_demo_soundtrack, test_beats_table_with_tempo_and_a_stretch
  latentwalk beats song.wav                               test_readme_walkthrough_prints_what_it_shows (README's lines),
                                                          test_beats_json_on_the_demo_soundtrack (the table)
  latentwalk plan song.yaml --plot plan.png               test_readme_walkthrough_prints_what_it_shows (README's lines)
  latentwalk render song.yaml                             its form (default out): feedback_render; README's song.yaml
                                                          itself (192 frames at 128 px, 20 steps) is not rendered here
  latentwalk sweep  SWEEP.yaml [--out DIR] [--video]      test_sweep_daynight_sheet_cells_and_videos
  latentwalk sweep configs/sweep_daynight.yaml            test_sweep_daynight_sheet_cells_and_videos (--out; the default
      renders/sweep_daynight/ is checked without rendering; seeds mode, configs/seeds.yaml: tests/test_sweep.py)
  latentwalk store  DIR|URL|TIMELINE [--prune]            test_store_sizes, test_edit_rerender_store_prune_...
  latentwalk store TIMELINE --prune (or render --prune)   test_edit_rerender_store_prune_and_render_prune

(`make demo` runs `python -m latentwalk.toy.soundtrack configs/demo.wav`, done here by `workdir`,
then `latentwalk render configs/demo.yaml`, whose small copy is travel_render.)
test_readme_commands_are_all_covered fails when README.md shows a command or flag this file does not run.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from latentwalk.encode import probe  # noqa: E402
from latentwalk.plot import DPI, PANEL_INCHES, WIDTH_INCHES, figure_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TIMELINES = ("demo", "features", "feedback", "reactive")  # configs/*.yaml that are timelines (the rest are sweeps)
# Where each shipped timeline ends: bar 8 of the 120 bpm demo track (beat 32, 16 s), or the clip 2-14 s.
DURATIONS = {"demo": 16.0, "features": 12.0, "feedback": 16.0, "reactive": 16.0}
BEATS = np.arange(33) * 0.5  # the demo soundtrack: 8 bars of 4 beats at 120 bpm, and the next downbeat
SIZE = 64  # pixels of the small render copies (the embedded model renders any multiple of 8)
TRAVEL_FRAMES = 16  # fps 4 × bar 2 (4 s); the second keyframe on bar 1 = frame 8


def latentwalk_command() -> list[str]:
    """The installed console script (latentwalk = latentwalk.cli:main) beside this Python, else `-m`."""
    script = Path(sys.executable).parent / "latentwalk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "latentwalk.cli"]


@pytest.fixture(scope="module")
def env(_audio_cache_root) -> dict:
    # One thread: tiny renders run fastest so on a busy 2-core box (and README's OMP_NUM_THREADS=1 form).
    return {**os.environ, "LATENTWALK_CACHE": str(_audio_cache_root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def run(env):
    def run(*args, cwd: Path, expect: int | None = 0) -> subprocess.CompletedProcess:
        result = subprocess.run([*latentwalk_command(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if expect is not None:
            assert result.returncode == expect, f"latentwalk {' '.join(map(str, args))}: exit {result.returncode}\n{result.stderr}"
        return result

    return run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, env) -> Path:
    """The shipped configs, their lyrics and the demo soundtrack (written as `make demo` writes it), in a temp folder."""
    work = tmp_path_factory.mktemp("commands")
    for path in [*CONFIGS.glob("*.yaml"), *CONFIGS.glob("*.lrc")]:
        shutil.copy(path, work / path.name)
    subprocess.run([sys.executable, "-m", "latentwalk.toy.soundtrack", str(work / "demo.wav")], check=True, env=env)
    (work / "tiny").mkdir()
    return work


def small_copy(work: Path, name: str, keyframes: list[dict], **changes) -> Path:
    """configs/<name>.yaml as tiny/<name>.yaml with `changes`, its keyframes replaced, the same audio."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    data.update(changes, keyframes=keyframes)
    if isinstance(data.get("audio"), dict):
        data["audio"]["path"] = str(work / data["audio"]["path"])
    path = work / "tiny" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def travel_keyframes(second_prompt: str | None = None) -> list[dict]:
    demo = yaml.safe_load((CONFIGS / "demo.yaml").read_text())["keyframes"]
    second = {**demo[2], "bar": 1, **({"prompt": second_prompt} if second_prompt else {})}  # the sunset, seed 12
    return [demo[0], second]


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    return imread(path).shape[:2]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentwalk: error: "), result.stderr
    return lines[0]


# --- the README's list --------------------------------------------------------------------------


def test_readme_commands_are_all_covered():
    from latentwalk.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    usage = re.search(r"## Commands\n\n```sh\n(.*?)```", readme, re.S).group(1)
    flags = set(re.findall(r"--[a-z][a-z-]*", usage))
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    shown = {word for word in re.findall(r"(?:^|`|\$ |=1 )latentwalk ([a-z]+)", readme, re.M) if word in subcommands}
    assert shown == {"render", "plan", "beats", "sweep", "store", "show"}  # the commands this file (and test_show.py) runs
    assert len(flags) >= 15, flags  # the usage block was found and read
    source = Path(__file__).read_text()
    missing = sorted(f for f in flags if f'"{f}"' not in source)
    assert not missing, f"README.md shows {missing}, which tests/test_commands.py never runs"
    for name in ("demo", "feedback", "reactive", "sweep_daynight"):  # configs the README runs by name
        assert f"configs/{name}.yaml" in readme and (CONFIGS / f"{name}.yaml").is_file()


def test_readme_walkthrough_prints_what_it_shows(workdir, run):
    """README's first-video walkthrough (song.yaml on the demo soundtrack copied as song.wav): the
    `beats` and `plan` console blocks print the lines README.md shows."""
    readme = (ROOT / "README.md").read_text()
    song = re.search(r"```yaml\n(# save as: song\.yaml\n.*?)```", readme, re.S)
    if song is None:
        pytest.skip("README.md has no song.yaml walkthrough")
    walk = workdir / "walkthrough"
    walk.mkdir()
    (walk / "song.yaml").write_text(song.group(1))
    shutil.copy(workdir / "demo.wav", walk / "song.wav")
    blocks = re.findall(r"```console\n\$ (latentwalk (?:beats|plan) [^\n]*)\n(.*?)```", readme, re.S)
    assert {command.split()[1] for command, _ in blocks} == {"beats", "plan"}, blocks
    for command, shown in blocks:
        result = run(*command.split()[1:], cwd=walk)
        printed = [line.rstrip() for line in (result.stderr + result.stdout).splitlines()]
        expected = [line.rstrip() for line in shown.splitlines() if line.strip() not in ("", "...")]
        missing = [line for line in expected if line not in printed]
        assert not missing, f"{command}: README shows lines it does not print: {missing}"
        at = [printed.index(line) for line in expected]
        assert at == sorted(at), f"{command}: printed in another order"
    assert png_size(walk / "plan.png") == (round(figure_size(1)[1] * DPI), round(figure_size(1)[0] * DPI))


# --- plan -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TIMELINES)
def test_plan_of_every_shipped_timeline(name, workdir, run):
    data = json.loads(run("plan", f"{name}.yaml", "--json", cwd=workdir).stdout)
    fps, duration = data["fps"], data["duration"]
    assert duration == pytest.approx(DURATIONS[name], abs=0.02)
    assert data["n_frames"] == len(data["frames"]) == round(fps * duration)
    assert [f["frame"] for f in data["frames"]] == list(range(data["n_frames"]))
    times = np.array([f["time"] for f in data["frames"]])
    np.testing.assert_allclose(times, np.arange(data["n_frames"]) / fps, atol=1e-6)
    assert data["bpm"] == pytest.approx(120, rel=0.01)
    for k in data["keyframes"]:  # every keyframe on the frame of its time, in order
        assert k["frame"] == round(k["time"] * fps)
        if k["unit"] in ("beat", "bar") and name != "features":  # features.yaml counts from 2 s in, at fractions
            assert k["time"] == pytest.approx(round(k["time"] * 2) / 2, abs=0.03)  # on a beat of the 120 bpm track
    assert [k["frame"] for k in data["keyframes"]] == sorted({k["frame"] for k in data["keyframes"]})
    assert "guidance" in data["tracks"] and all(t in data["frames"][0] for t in data["tracks"])
    if name not in ("demo", "features"):
        return
    table = run("plan", f"{name}.yaml", cwd=workdir).stdout.splitlines()
    assert table[0].startswith(f"{data['n_frames']} frames at {fps:g} fps = {duration:.3f}s")
    assert sum(line.endswith(" *") for line in table) == len({k["frame"] for k in data["keyframes"]})


def waveform_coverage(png: Path) -> tuple[float, float]:
    """(share of the top panel's columns with waveform grey in them, where the last one is as a share of its width)."""
    image = np.round(imread(png)[..., :3] * 255)
    dark = image.max(axis=2) < 80
    h, w = dark.shape
    rows = np.flatnonzero(dark[:, w // 10 : w - w // 10].mean(axis=1) > 0.9)  # the panels' top and bottom edges
    top, bottom = rows[0], rows[1]
    edge = np.flatnonzero(dark[top])
    inner = image[top + 2 : bottom - 1, edge[0] + 2 : edge[-1] - 1]
    grey = (inner.max(axis=2) - inner.min(axis=2) <= 6) & (inner.max(axis=2) < 235)  # neutral, darker than paper
    columns = grey.sum(axis=0) >= 1
    return float(columns.mean()), (np.flatnonzero(columns)[-1] + 1) / len(columns)


def test_plan_plot_draws_the_clip_waveform(workdir, run):
    plot = workdir / "plan.png"
    assert not plot.exists()
    result = run("plan", "demo.yaml", "--json", "--plot", plot, cwd=workdir)
    data = json.loads(result.stdout)  # --plot does not disturb --json
    assert data["n_frames"] == 384
    assert f"plot {plot} (384 frames, 16.000s: waveform 16.000s of audio)" in result.stderr
    width, height = figure_size(len(data["tracks"]))
    assert png_size(plot) == (round(height * DPI), round(width * DPI))
    assert plot.stat().st_size > 20_000  # a drawn waveform, not an empty frame
    covered, last = waveform_coverage(plot)
    assert covered > 0.95 and last > 0.99, (covered, last)  # the waveform runs the whole time axis
    # README's form: a new nested folder, the track panels of reactive.yaml.
    reactive = run("plan", "reactive.yaml", "--plot", "renders/readme/reactive_plan.png", "--json", cwd=workdir)
    tracks = json.loads(reactive.stdout)["tracks"]
    assert len(tracks) >= 2 and "waveform 16.000s of audio" in reactive.stderr
    width, height = figure_size(len(tracks))
    assert png_size(workdir / "renders/readme/reactive_plan.png") == (round(height * DPI), round(width * DPI))
    # A clip that starts 2 s into the file: the waveform is that stretch.
    features = run("plan", "features.yaml", "--plot", "features.svg", cwd=workdir)
    assert "(288 frames, 12.000s: waveform 12.000s of audio)" in features.stderr
    assert "latentwalk plot" in (workdir / "features.svg").read_text()[:5000]


def test_plan_plot_waveform_is_the_clips_samples(workdir, monkeypatch, tmp_path):
    """The samples handed to the plot are the file's, from audio.start for the plan's duration."""
    import soundfile

    import latentwalk.plot
    from latentwalk.api import load_timeline, plan
    from latentwalk.audio import SAMPLE_RATE
    from latentwalk.cli import write_plot

    drawn = {}
    monkeypatch.setattr(latentwalk.plot, "plot_plan", lambda schedule, path, **options: drawn.update(options) or Path(path))
    timeline = load_timeline(workdir / "features.yaml")  # audio.start 2, end 14
    write_plot(plan(timeline), timeline, str(tmp_path / "p.png"))
    samples, rate = drawn["samples"], drawn["sample_rate"]
    whole, file_rate = soundfile.read(str(workdir / "demo.wav"), dtype="float32")
    assert rate == SAMPLE_RATE == file_rate
    assert len(samples) == 12 * rate
    np.testing.assert_allclose(samples, whole[2 * rate : 14 * rate], atol=1e-4)
    assert np.abs(samples).max() > 0.1


# --- beats ----------------------------------------------------------------------------------------


def test_beats_json_on_the_demo_soundtrack(workdir, run):
    from latentwalk.audio import madmom_available
    from test_audio import f_measure

    data = json.loads(run("beats", "demo.wav", "--tracker", "auto", "--json", cwd=workdir).stdout)
    beats = np.array(data["beats"])
    assert data["bpm"] == pytest.approx(120, rel=0.01)
    assert data["tracker"] == ("madmom" if madmom_available() else "librosa")
    assert len(beats) in (32, 33)  # 8 bars; the downbeat after them rings in the last second
    assert np.median(np.diff(beats)) == pytest.approx(0.5, abs=0.01)
    assert np.abs(np.diff(beats) - 0.5).max() < 0.05
    assert f_measure(BEATS[: len(beats)], beats) >= 0.95
    assert len(data["tempo"]) == len(beats) and np.median(data["tempo"]) == pytest.approx(120, rel=0.02)
    if data["downbeats"]:  # madmom: bars every 4 beats, from the first
        assert np.diff(data["downbeats"]) == pytest.approx(np.full(len(data["downbeats"]) - 1, 2.0), abs=0.05)
    # `latentwalk beats song.wav`: the same beats as a table, bars marked
    table = run("beats", "demo.wav", cwd=workdir).stdout.splitlines()
    assert table[0].startswith(f"tempo: {data['bpm']:.2f} bpm (median), {len(beats)} beats in 17.00s, tracker: {data['tracker']}")
    rows = [line for line in table if re.match(r"^\s+\d+\s+[\d.]+( \|)?$", line)]
    assert [float(r.split()[1]) for r in rows] == pytest.approx(list(beats), abs=1e-3)
    assert sum(r.endswith(" |") for r in rows) == len(data["downbeats"])


def test_beats_table_with_tempo_and_a_stretch(workdir, run):
    out = run("beats", "demo.wav", "--tracker", "librosa", "--bpm", "120", "--start", "2", "--end", "14", cwd=workdir).stdout.splitlines()
    head = re.match(r"tempo: ([\d.]+) bpm \(median\), (\d+) beats in ([\d.]+)s, tracker: librosa$", out[0])
    assert head, out[0]
    assert float(head[1]) == 120 and float(head[3]) == 12.0
    beats = np.array([float(line.split()[1]) for line in out[1:] if re.match(r"^\s+\d+\s+[\d.]+( \|)?$", line)])  # " |": a bar starts
    assert len(beats) == int(head[2]) and len(beats) in (24, 25)  # 12 s at 2 beats a second (and the hit at its very end)
    assert beats[0] == pytest.approx(0.0, abs=0.05)  # the hit at 2.0 s is beat 0 of the stretch
    assert np.diff(beats[:24]) == pytest.approx(np.full(23, 0.5), abs=0.03)


# --- render: travel (perceptual placement) ----------------------------------------------------------


@pytest.fixture(scope="module")
def travel_render(workdir, run):
    timeline = small_copy(workdir, "demo", travel_keyframes(), width=SIZE, height=SIZE, fps=4, steps=6, end={"bar": 2})
    out, frames, plot = workdir / "travel" / "travel.mp4", workdir / "travel_frames", workdir / "travel_distance.png"
    out.parent.mkdir()
    frames.mkdir()
    (frames / "notes.txt").write_text("someone else's file")  # --frames into it needs --overwrite-frames
    assert not plot.exists()
    result = run(
        "render", timeline, "--out", out, "--frames", frames, "--overwrite-frames", "--batch-size", "4", "--device", "cpu",
        "--overlap", "off", "--wait", "--quiet", "--plot", plot, cwd=workdir,
    )
    manifest = json.loads(out.with_suffix(".json").read_text())
    return {"timeline": timeline, "out": out, "frames": frames, "plot": plot, "result": result, "manifest": manifest}


@pytest.mark.slow
def test_travel_render_writes_the_planned_video_frames_and_manifest(travel_render):
    out, manifest, stdout = travel_render["out"], travel_render["manifest"], travel_render["result"].stdout
    info = probe(out)
    assert info.frames == manifest["plan"]["n_frames"] == TRAVEL_FRAMES
    assert (info.width, info.height, info.fps) == (SIZE, SIZE, 4)
    assert info.duration == pytest.approx(4.0, abs=0.01)
    assert info.has_audio and info.audio_duration == pytest.approx(4.0, abs=0.1)
    assert f"wrote {out} ({TRAVEL_FRAMES} frames, 4.00s)" in stdout
    store = manifest["store"]
    assert f"0 frames reused, {store['frames_rendered']} rendered" in stdout
    assert store["frames_rendered"] > store["probes_rendered"] > 0  # placement probed, some probes are frames
    assert [k["frame"] for k in manifest["plan"]["keyframes"]] == [0, 8]
    pngs = sorted(travel_render["frames"].glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(TRAVEL_FRAMES)]
    assert (travel_render["frames"] / "notes.txt").read_text() == "someone else's file"
    images = np.stack([imread(p) for p in pngs])
    assert images.shape[1:3] == (SIZE, SIZE)
    assert np.abs(images[1:8] - images[:7]).mean() > 0  # it travels in segment 0 ...
    assert (np.abs(images[9:] - images[8]) == 0).all()  # ... and holds the last keyframe


@pytest.mark.slow
def test_travel_render_plots_the_manifests_distances(travel_render):
    plot, manifest, stderr = travel_render["plot"], travel_render["manifest"], travel_render["result"].stderr
    distances = [f["distance"] for f in manifest["plan"]["frames"]]
    assert distances[-1] is None and all(d is not None and d >= 0 for d in distances[:-1])
    assert max(distances[:7]) > 0 and max(distances[8:-1]) == 0  # travel, then the held keyframe
    assert f"plot {plot} ({TRAVEL_FRAMES - 1} distances between stored frames, median {statistics.median(distances[:-1]):.4f})" in stderr
    assert png_size(plot) == (round(2 * PANEL_INCHES * DPI), round(WIDTH_INCHES * DPI))
    assert imread(plot)[..., :3].std() > 0.05


@pytest.mark.slow
def test_store_sizes(travel_render, workdir, run):
    stored = travel_render["manifest"]["store"]["frames_stored"]
    files = list((travel_render["out"].with_suffix(".frames")).glob("*.frame"))
    assert stored == len(files) > TRAVEL_FRAMES // 2
    size = sum(f.stat().st_size for f in files) / 1e6
    line = f": {stored} frames, {size:.1f} MB"
    assert line in run("store", travel_render["out"].with_suffix(".frames"), cwd=workdir).stdout  # DIR
    assert line in run("store", travel_render["timeline"], "--out", travel_render["out"], cwd=workdir).stdout  # TIMELINE
    assert run("store", "memory://latentwalk/none.frames", cwd=workdir).stdout.strip() == "memory://latentwalk/none.frames: 0 frames, 0.0 MB"


@pytest.mark.slow
def test_edit_rerender_store_prune_and_render_prune(travel_render, workdir, run):
    # A copy of the first render's video, manifest and store, so the fixture's stay as they were.
    flow = workdir / "flow"
    flow.mkdir()
    out, store, original = flow / "travel.mp4", flow / "travel.frames", travel_render["out"].with_suffix(".frames")
    shutil.copy(travel_render["out"], out)
    shutil.copy(travel_render["out"].with_suffix(".json"), out.with_suffix(".json"))
    shutil.copytree(original, store)
    first = {p.name for p in store.glob("*.frame")}

    # 1. Edit the second keyframe's prompt and render it `--fresh` into the same store: nothing reused.
    edited = flow / "travel.yaml"
    data = yaml.safe_load(travel_render["timeline"].read_text())
    data["keyframes"] = travel_keyframes("a clear night over the city with stars")
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    again = run("render", edited, "--out", out, "--store", store, "--batch-size", "4", "--fresh", "--quiet", cwd=workdir)
    manifest = json.loads(out.with_suffix(".json").read_text())
    rendered = manifest["store"]["frames_rendered"]
    assert f"0 frames reused, {rendered} rendered" in again.stdout and manifest["store"]["fresh"] is True
    assert probe(out).frames == TRAVEL_FRAMES
    both = {p.name for p in store.glob("*.frame")}
    assert len(both) == manifest["store"]["frames_stored"] and len(both - first) > TRAVEL_FRAMES // 2

    # 2. `store TIMELINE --prune`: the first version's frames go, all of the edit's stay.
    pruned = run("store", edited, "--out", out, "--prune", "--batch-size", "4", cwd=workdir).stdout.splitlines()
    count = int(re.match(r"pruned (\d+) frames and 0 temp files", pruned[0])[1])
    kept = {p.name for p in store.glob("*.frame")}
    assert count == len(both) - len(kept) > 0 and (both - kept) <= first
    shared = kept & first  # keyframe 0's frame (and the probe on it): the edit uses them too, and denoised them again
    assert shared and all((store / k).read_bytes() == (original / k).read_bytes() for k in shared)  # to the same bytes
    assert pruned[1] == f"{store}: {len(kept)} frames, {sum((store / k).stat().st_size for k in kept) / 1e6:.1f} MB"

    # 3. `render --prune`: every frame reused from what prune kept, and a stale frame put back is pruned.
    stale = sorted(first - kept)[0]
    shutil.copy(original / stale, store / stale)
    last = run("render", edited, "--out", out, "--batch-size", "4", "--prune", "--quiet", cwd=workdir)
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert f"{TRAVEL_FRAMES} frames reused, 0 rendered" in last.stdout
    assert manifest["store"]["pruned_frames"] == 1 and {p.name for p in store.glob("*.frame")} == kept


# --- render: feedback ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feedback_render(workdir, run):
    shipped = yaml.safe_load((CONFIGS / "feedback.yaml").read_text())["keyframes"]
    second = {"beat": 2, **{k: v for k, v in shipped[1].items() if k != "bar"}}
    keyframes = [shipped[0], second, {**shipped[2], "bar": 1}]  # the cut moves to bar 1 (frame 8)
    timeline = small_copy(workdir, "feedback", keyframes, width=SIZE, height=SIZE, fps=4, end={"bar": 2})
    plot = workdir / "feedback_distance.png"
    # README: `latentwalk render configs/feedback.yaml`, to the default renders/feedback.mp4
    result = run("render", "tiny/feedback.yaml", "--frames", "feedback_frames", "--overlap", "on", "--quiet", "--plot", plot, cwd=workdir)
    out = workdir / "renders" / "feedback.mp4"
    return {"timeline": timeline, "out": out, "plot": plot, "result": result, "manifest": json.loads(out.with_suffix(".json").read_text())}


@pytest.mark.slow
def test_feedback_render_writes_its_chains(feedback_render, workdir, run):
    out, manifest = feedback_render["out"], feedback_render["manifest"]
    info = probe(out)
    assert info.frames == manifest["plan"]["n_frames"] == 16 and (info.width, info.height) == (SIZE, SIZE)
    assert info.has_audio and info.audio_duration == pytest.approx(4.0, abs=0.1)
    assert f"wrote {out.relative_to(workdir)} (16 frames, 4.00s)" in feedback_render["result"].stdout
    chains = manifest["feedback"]["chains"]
    assert [c["first_frame"] for c in chains] == [0, 8] and sum(c["frames"] for c in chains) == 16  # cut on frame 8
    assert all(0 < c["diffused"] < c["frames"] for c in chains)  # cadence 3: the frames between are warped fills
    stored = manifest["store"]["frames_stored"]
    assert f"renders/feedback.frames: {stored} frames" in run("store", "tiny/feedback.yaml", cwd=workdir).stdout  # TIMELINE, default store


@pytest.mark.slow
def test_feedback_render_plots_the_videos_distances(feedback_render, workdir):
    from latentwalk.cli import video_distances
    from latentwalk.placement import frame_distances

    plot, stderr = feedback_render["plot"], feedback_render["result"].stderr
    assert not any("distance" in f for f in feedback_render["manifest"]["plan"]["frames"])  # feedback: no placement
    from_video = video_distances(feedback_render["out"], SIZE, SIZE)
    assert len(from_video) == 15
    assert f"plot {plot} (15 distances between video frames, median {statistics.median(from_video):.4f})" in stderr
    assert png_size(plot) == (round(2 * PANEL_INCHES * DPI), round(WIDTH_INCHES * DPI))
    # The video's distances follow the frames' own (--frames PNGs, lossless) up to H.264's noise.
    exact = frame_distances([imread(p)[..., :3] * 255 for p in sorted((workdir / "feedback_frames").glob("frame_*.png"))])
    assert np.corrcoef(exact, from_video)[0, 1] > 0.9
    assert np.abs(np.asarray(from_video) - exact).max() < 0.02 and min(exact) > 0  # the camera never stops


# --- sweep --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_daynight_sheet_cells_and_videos(workdir, run):
    from latentwalk.sheet import sheet_font, sheet_layout
    from latentwalk.sweep import default_out_dir, load_sweep

    data = yaml.safe_load((CONFIGS / "sweep_daynight.yaml").read_text())
    data.update(width=SIZE, height=SIZE, steps=4, x={"param": "w", "range": [0, 1, 3]})
    path = workdir / "tiny" / "sweep_daynight.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run("sweep", "tiny/sweep_daynight.yaml", "--out", "sweep_out", "--video", "--quiet", cwd=workdir)
    out = workdir / "sweep_out"
    assert default_out_dir(load_sweep(path)) == Path("renders/sweep_daynight")  # without --out (README's form)
    assert "wrote 6 cells (2x3)" in result.stdout and f"sheet {out.relative_to(workdir)}/sheet.png" in result.stdout
    cells = np.stack([[imread(out / f"cell_{r}_{c}.png")[..., :3] for c in range(3)] for r in range(2)])
    assert cells.shape == (2, 3, SIZE, SIZE, 3)
    luma = (cells @ np.array([0.2126, 0.7152, 0.0722])).mean(axis=(2, 3))
    assert (np.diff(luma, axis=1) < 0).all() and (luma[:, 0] - luma[:, 2] > 0.1).all(), luma  # day → night, both seeds
    layout, _, _ = sheet_layout(load_sweep(path), sheet_font())
    sheet = imread(out / "sheet.png")[..., :3]
    assert sheet.shape[:2] == (layout.size[1], layout.size[0])
    for r in range(2):
        for c in range(3):
            x, y = layout.cell_origin(r, c)
            shown = sheet[y : y + layout.cell_height, x : x + layout.cell_width]
            np.testing.assert_array_equal(shown, cells[r, c].repeat(layout.scale, 0).repeat(layout.scale, 1))
    videos = [out / f"sweep_row{r}.mp4" for r in range(2)]
    assert all(f"video {v.relative_to(workdir)}" in result.stdout for v in videos)
    assert [(i.frames, i.fps, i.width) for i in map(probe, videos)] == [(3, 4, SIZE)] * 2
    manifest = json.loads((out / "sweep.json").read_text())
    assert [c["values"]["w"] for c in manifest["cells"][:3]] == [0, 0.5, 1] and len(manifest["cells"]) == 6


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_exits_2_with_one_line(workdir, run, tmp_path):
    # --plot: a suffix that is no image, before any audio analysis or render; nothing written
    line = one_error_line(run("plan", "demo.yaml", "--plot", tmp_path / "plan.txt", cwd=workdir, expect=None))
    assert "--plot: expected a .png, .svg, .pdf file" in line and not (tmp_path / "plan.txt").exists()
    line = one_error_line(run("render", "demo.yaml", "--out", tmp_path / "x.mp4", "--plot", tmp_path / "d.jpg", cwd=workdir, expect=None))
    assert "--plot: expected a .png, .svg, .pdf file, got" in line and sorted(tmp_path.iterdir()) == []
    # --plot onto a picture latentwalk did not draw: refused, untouched
    theirs = tmp_path / "holiday.png"
    theirs.write_bytes(b"someone's picture")
    line = one_error_line(run("plan", "demo.yaml", "--plot", theirs, cwd=workdir, expect=None))
    assert "exists and latentwalk did not draw it" in line and theirs.read_bytes() == b"someone's picture"
    # README's example: `file:line: field: reason`
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"fps: 12\naudio: {{path: {workdir / 'demo.wav'}}}\nkeyframes:\n  - {{beat: 0, prompt: a}}\n  - {{beat: 99, prompt: b}}\n")
    line = one_error_line(run("render", bad, "--out", tmp_path / "bad.mp4", cwd=workdir, expect=None))
    assert re.search(r"bad\.yaml:5: keyframes\[1\]\.beat: beat 99 is past the end of the audio \(it has 3[23] beats", line), line
    assert not (tmp_path / "bad.mp4").exists()
    assert "--end: must be greater than start" in one_error_line(run("beats", "demo.wav", "--start", "5", "--end", "2", cwd=workdir, expect=None))
    assert "--ray" in one_error_line(run("render", "demo.yaml", "--out", tmp_path / "r.mp4", "--ray", "not an address", cwd=workdir, expect=None))
    assert "not a frame store" in one_error_line(run("store", workdir, cwd=workdir, expect=None))
    assert "--prune: needs a timeline" in one_error_line(run("store", tmp_path, "--prune", cwd=workdir, expect=None))
    assert "--batch-size" in one_error_line(run("sweep", "sweep_daynight.yaml", "--batch-size", "0", cwd=workdir, expect=None))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "holiday.png"]


def test_plots_of_a_range_of_the_plan_keep_its_times_and_frames(workdir, tmp_path):
    """A plan of frames 96..191 only (what `--from`/`--to` cut): axes, waveform and curve sit on its own times."""
    from dataclasses import replace

    from latentwalk.api import load_timeline, plan
    from latentwalk.plot import draw_plan, plot_distances

    whole = plan(load_timeline(workdir / "demo.yaml"))
    part = replace(whole, frames=whole.frames[96:192], n_frames=96, duration=96 / whole.fps)
    fig = draw_plan(part, samples=np.ones(4 * 22050), sample_rate=22050)
    wave, travel = fig.axes[:2]
    assert wave.get_xlim() == pytest.approx((4.0, 8.0))
    assert wave.collections[0].get_paths()[0].vertices[:, 0].min() == pytest.approx(4.0)
    assert [t.get_text().split(":")[0].strip() for t in travel.texts] == ["1", "2"]  # bar 2 (4 s), bar 4 on its right edge; not 0, 3
    assert [t.get_text() for t in wave.texts] == ["bar 2", "bar 3", "bar 4"]
    path = plot_distances(part, np.linspace(0, 1, 95), tmp_path / "d.png")
    assert png_size(path) == (round(2 * PANEL_INCHES * DPI), round(WIDTH_INCHES * DPI))
