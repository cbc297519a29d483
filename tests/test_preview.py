"""`render --preview FILE.png`: a complete PNG at every update, showing the latest frames; a user's file is never replaced."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import WALK_FRAMES, walk_timeline

from latentwalk import preview as preview_module
from latentwalk.cli import main
from latentwalk.preview import PREVIEW_MARK, shrink


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def opened(path: Path) -> Image.Image:
    """The PNG at `path`, fully decoded (a truncated file raises)."""
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.info["Software"] == PREVIEW_MARK
        return image.copy()


def test_preview_is_whole_at_every_update_and_shows_the_latest_frames(tiny_model_dir, tmp_path, monkeypatch):
    timeline = tmp_path / "t.yaml"
    timeline.write_text(walk_timeline(tiny_model_dir, extra="spacing: t\n"))
    target = tmp_path / "live.png"
    updates: list[Image.Image] = []
    replace = os.replace

    def recording(src, dst, *args, **kwargs):
        if Path(dst) == target:  # what is about to appear at the path, and what is there after
            updates.append(opened(Path(src)))
            replace(src, dst, *args, **kwargs)
            opened(target)
        else:
            replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording)
    monkeypatch.setattr(preview_module, "INTERVAL", 0.0)  # every frame, to see each one
    args = ["render", str(timeline), "--out", str(tmp_path / "v.mp4"), "--frames", str(tmp_path / "png"), "--preview", str(target), "--quiet"]
    assert main(args) == 0
    assert len(updates) == WALK_FRAMES
    frames = [np.asarray(Image.open(tmp_path / "png" / f"frame_{i:06d}.png")) for i in range(WALK_FRAMES)]
    for n, update in enumerate(updates):  # the newest frame at full size, the last 8 in a 2 x 4 grid beside it
        pixels = np.asarray(update)
        assert pixels.shape == (32, 32 + 16, 3)
        assert np.array_equal(pixels[:, :32], frames[n])
        shown = frames[max(0, n - 7) : n + 1]
        r, c = divmod(len(shown) - 1, 2)
        assert np.array_equal(pixels[r * 8 : (r + 1) * 8, 32 + c * 8 : 32 + (c + 1) * 8], shrink(frames[n], 8, 8))
        assert update.info["Comment"] == f"frame {n} ({n + 1} of {WALK_FRAMES})"
    assert np.array_equal(np.asarray(opened(target)), np.asarray(updates[-1]))
    # Its own file is replaced by the next render (here every frame reused), throttled: fewer updates, the last one whole.
    monkeypatch.setattr(preview_module, "INTERVAL", 60.0)
    updates.clear()
    assert main(args) == 0
    assert len(updates) == 2 and np.array_equal(np.asarray(opened(target))[:, :32], frames[-1])  # the first frame, then the last
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".live.png")]  # no temp file left


def users_files(folder: Path) -> dict[str, Path]:
    photo = folder / "photo.png"
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(photo)
    notes = folder / "notes.png"
    notes.write_text("not an image\n")
    marked_text = folder / "fake.png"  # the mark as plain text is not a preview
    marked_text.write_bytes(PREVIEW_MARK.encode() * 3)
    plot = folder / "plot.png"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "latentwalk plot")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(plot, pnginfo=info)
    (folder / "shots.png").mkdir()
    (folder / "link.png").symlink_to(photo)
    return {"photo": photo, "notes": notes, "fake": marked_text, "plot": plot}


@pytest.mark.parametrize(
    "name, says",
    [
        ("photo.png", "is not a preview latentwalk wrote"),
        ("notes.png", "is not a preview latentwalk wrote"),
        ("fake.png", "is not a preview latentwalk wrote"),
        ("plot.png", "is not a preview latentwalk wrote"),
        ("shots.png", "is a folder"),
        ("link.png", "symbolic link"),
        ("live.jpg", "expected a .png"),
        ("missing/live.png", "does not exist"),
        ("t.yaml.png", None),  # fine by itself; here named as the --plot file too
    ],
)
def test_preview_refuses_what_is_not_its_own(tiny_model_dir, tmp_path, monkeypatch, capsys, name, says):
    import latentwalk.executors.local as local

    monkeypatch.setattr(local, "load_backend", lambda *a, **k: pytest.fail("a model was loaded"))
    timeline = tmp_path / "t.yaml"
    timeline.write_text(walk_timeline(tiny_model_dir, extra="spacing: t\n"))
    users_files(tmp_path)
    before = snapshot(tmp_path)
    extra = ["--plot", str(tmp_path / name)] if says is None else []
    assert main(["render", str(timeline), "--out", str(tmp_path / "v.mp4"), "--preview", str(tmp_path / name), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert "--preview" in err and (says or "--plot") in err, err
    assert snapshot(tmp_path) == before
