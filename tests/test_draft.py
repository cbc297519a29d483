"""Draft and range renders through the CLI: `--draft`, `--size/--steps/--fps`, `--from/--to`.

A draft keeps the timing (its keyframes are where `plan --json --draft` puts them, within one
draft frame of the full plan's times); a range's frames are the whole render's frames, bit for
bit, from its store; bad flags exit 2 naming the flag, before any model loads, changing no file.
"""

import hashlib
import json
from pathlib import Path

import pytest

from conftest import walk_timeline

from latentwalk.cli import main
from latentwalk.encode import probe
from latentwalk.store import MARKER, FrameStore


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def beat_timeline(model_dir, wav) -> str:
    """4 s of the drum track (8 beats at 120 bpm) at 8 fps; keyframes on beats, a bar and a time."""
    return (
        f"model: {model_dir}\nwidth: 32\nheight: 32\nfps: 8\nsteps: 8\nbatch_size: 4\nscheduler: ddim\n"
        f"audio: {{path: {wav}, end: 4, tracker: librosa}}\n"
        "keyframes:\n"
        "  - {beat: 0, prompt: a cat in the snow, seed: 1}\n"
        "  - {beat: 3, prompt: a dog at night, seed: 2}\n"
        "  - {bar: 1, prompt: a city, seed: 3}\n"
        "  - {time: 2.9, prompt: a sunset over the sea, seed: 4}\n"
    )


def plan_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["plan", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: sha256 of files, 'dir' for folders."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def drafted(tiny_model_dir, drum_wav, tmp_path_factory):
    """A folder with t.yaml and its draft rendered by `latentwalk render t.yaml --draft` into renders/."""
    folder = tmp_path_factory.mktemp("draft")
    (folder / "t.yaml").write_text(beat_timeline(tiny_model_dir, drum_wav[0]))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert main(["render", "t.yaml", "--draft", "--quiet"]) == 0
    return folder


def test_draft_matches_its_plan_and_keeps_the_timing(drafted, capsys, monkeypatch):
    monkeypatch.chdir(drafted)
    full, draft = plan_json(capsys, "t.yaml"), plan_json(capsys, "t.yaml", "--draft")
    assert (draft["fps"], full["fps"]) == (4, 8) and draft["n_frames"] == full["n_frames"] // 2 == 16
    assert {k["spacing"] for k in draft["keyframes"]} == {"t"} and {k["spacing"] for k in full["keyframes"]} == {"perceptual"}
    for d, f in zip(draft["keyframes"], full["keyframes"], strict=True):  # on their beats at either rate
        assert abs(d["frame"] / draft["fps"] - f["time"]) <= 1 / draft["fps"] / 2 + 1e-9
    # What was rendered is that plan, under its own names.
    data = manifest(drafted / "renders" / "t.draft.json")
    assert (data["plan"]["fps"], data["plan"]["n_frames"]) == (draft["fps"], draft["n_frames"])
    assert [k["frame"] for k in data["plan"]["keyframes"]] == [k["frame"] for k in draft["keyframes"]]
    assert [r["t"] for r in data["plan"]["frames"]] == [r["t"] for r in draft["frames"]]
    resolved = data["timeline"]["resolved"]
    assert (resolved["width"], resolved["height"], resolved["steps"], resolved["fps"]) == (32, 32, 4, 4)  # 32 px: below the 64 px floor, kept
    assert data["overrides"]["draft"] is True and data["store"]["probes_rendered"] == 0
    assert (drafted / "renders" / "t.draft.frames" / MARKER).is_file() and not (drafted / "renders" / "t.frames").exists()
    info = probe(drafted / "renders" / "t.draft.mp4")
    assert (info.frames, info.fps, info.width) == (16, 4, 32)
    assert info.has_audio and abs(info.audio_duration - 4.0) < 0.1  # the whole clip muxed


def test_overrides_enter_the_plan(drafted, capsys, monkeypatch):
    monkeypatch.chdir(drafted)
    data = plan_json(capsys, "t.yaml", "--fps", "6", "--steps", "3", "--size", "64x48", "--from", "beat:2", "--to", "bar:1.5")
    assert data["fps"] == 6 and data["n_frames"] == 12  # 1 s to 3 s at 6 fps
    assert [r["frame"] for r in data["frames"]] == list(range(6, 18))  # numbered as in the whole plan
    assert data["frames"][0]["time"] == 1.0


def test_range_of_the_draft_reuses_its_store_with_its_audio(drafted, monkeypatch, capsys):
    monkeypatch.chdir(drafted)
    assert main(["render", "t.yaml", "--draft", "--from", "beat:2", "--to", "beat:6", "--quiet"]) == 0
    out = drafted / "renders" / "t.draft.beat2-beat6.mp4"
    data = manifest(out.with_suffix(".json"))
    assert data["store"]["path"] == str(Path("renders") / "t.draft.frames")
    assert (data["store"]["frames_reused"], data["store"]["frames_rendered"]) == (8, 0)  # 1 s .. 3 s at 4 fps
    assert data["overrides"]["frames"] == {"first": 4, "stop": 12}
    info = probe(out)
    assert info.frames == 8 and info.has_audio and abs(info.audio_duration - 2.0) < 0.1


def test_range_frames_are_the_whole_renders_frames(tiny_model_dir, tmp_path, monkeypatch):
    """A placed (`spacing: perceptual`) walk: a range rendered alone places and keys its frames as the whole render does."""
    monkeypatch.chdir(tmp_path)
    Path("t.yaml").write_text(walk_timeline(tiny_model_dir))
    # 0.25 s .. 1 s at 8 fps: frames 2..7, inside segment 0 (segment 1 is not probed for it)
    assert main(["render", "t.yaml", "--from", "0.25", "--to", "1", "--store", "alone", "--quiet"]) == 0
    assert main(["render", "t.yaml", "--quiet"]) == 0
    part, whole = manifest(Path("renders/t.0.25s-1s.json")), manifest(Path("renders/t.json"))
    assert [r["frame"] for r in part["plan"]["frames"]] == list(range(2, 8))
    assert [s["index"] for s in part["placement"]["segments"]] == [0] and len(whole["placement"]["segments"]) == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "distance"} for r in rows]  # noqa: E731
    assert strip(part["plan"]["frames"]) == strip(whole["plan"]["frames"][2:8])  # placed alike
    assert probe(Path("renders/t.0.25s-1s.mp4")).frames == 6
    alone, store = FrameStore("alone"), FrameStore("renders/t.frames")
    assert alone.keys() and alone.keys() <= store.keys()  # the range's frames and probes, under the whole render's keys
    for key in alone.keys():
        assert alone.path(key).read_bytes() == store.path(key).read_bytes()  # bit for bit
    # Again, from the whole render's store (the default for a range): nothing to render.
    assert main(["render", "t.yaml", "--from", "0.25", "--to", "1", "--quiet"]) == 0
    again = manifest(Path("renders/t.0.25s-1s.json"))["store"]
    assert (again["frames_reused"], again["frames_rendered"], again["path"]) == (6, 0, str(Path("renders") / "t.frames"))


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--from", "bar:3"], "--from"),  # 6 s into a 4 s video
        (["--to", "9"], "--to"),
        (["--from", "beat:6", "--to", "beat:2"], "--from"),
        (["--from", "2", "--to", "2.05"], "--from/--to"),  # no frame between
        (["--from", "soon"], "--from"),
        (["--size", "36x32"], "--size"),
        (["--size", "0x32"], "--size"),
        (["--size", "32"], "--size"),
        (["--steps", "0"], "--steps"),
        (["--fps", "0"], "--fps"),
        (["--steps", "two"], "--steps"),
        (["--prune", "--from", "1"], "--prune"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(drafted, monkeypatch, capsys, args, flag):
    import latentwalk.executors.local as local

    monkeypatch.chdir(drafted)
    monkeypatch.setattr(local, "load_backend", lambda *a, **k: pytest.fail("a model was loaded"))
    before = snapshot(drafted)
    capsys.readouterr()
    assert main(["render", "t.yaml", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}:" in err or f"argument {flag}" in err, err
    assert snapshot(drafted) == before
