"""Hostile files around a render: links where latentwalk writes (class 1), frame files moved, renamed
or damaged inside the store (class 2), and huge or deeply nested track expressions (class 4).

Every case runs the real entry point (`latentwalk.cli.main`), checks the exit status, that the
message names the file or the field, that no traceback or internal error is printed, and that
every file that existed before (the user's photos, videos and notes, reached through the links)
is byte-identical afterwards. Renders use the embedded toy model on four 128 px frames.
"""

import hashlib
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentwalk.cli import main
from latentwalk.errors import UserError
from latentwalk.outputs import open_output, write_atomic
from latentwalk.store import HEADER_V2, MARKER, FrameStore, encode_frame
from latentwalk.tracks import MAX_CHARS, MAX_DEPTH

FRAMES = 4
TIMELINE = (
    "model: toy\ndevice: cpu\nfps: 4\nsteps: 2\nbatch_size: 2\nspacing: t\n{extra}end: {{frame: %d}}\n"
    "keyframes:\n  - {{frame: 0, prompt: a cat, seed: 1}}\n  - {{frame: %d, prompt: the sea, seed: 2}}\n" % (FRAMES, FRAMES - 1)
)
LINK = "is a symbolic link; latentwalk does not write through links"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def timeline_text(extra: str = "") -> str:
    return TIMELINE.format(extra=extra)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` by relative path: a file's sha256, a link's target (never followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link -> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return status, out, err


def user_files(root: Path) -> Path:
    """The user's own files, which links below point at."""
    home = root / "home"
    home.mkdir()
    (home / "photo.png").write_bytes(b"\x89PNG a holiday photo")
    (home / "notes.txt").write_text("my notes\n")
    (home / "film.mp4").write_bytes(b"the user's own film")
    return home


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished render (video, manifest, store, --frames PNGs) to copy into each test."""
    folder = tmp_path_factory.mktemp("base")
    (folder / "t.yaml").write_text(timeline_text())
    old = os.umask(0o027)  # outputs follow the umask like any new file
    try:
        assert main(["render", str(folder / "t.yaml"), "--out", str(folder / "t.mp4"), "--frames", str(folder / "pngs"), "--quiet"]) == 0
    finally:
        os.umask(old)
    return folder


@pytest.fixture
def rendered(base, tmp_path) -> Path:
    """A copy of the base render in this test's folder, plus the user's files."""
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=True)
    user_files(tmp_path)
    return work


def render_args(work: Path, *extra: str) -> list[str]:
    return ["render", work / "t.yaml", "--out", work / "t.mp4", "--frames", work / "pngs", "--quiet", *extra]


def pngs(work: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((work / "pngs").glob("frame_*.png"))}


def fresh(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with a timeline and the user's files, nothing rendered yet."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "t.yaml").write_text(timeline_text())
    return work, user_files(tmp_path)


# --- class 1: nothing is written through a link -------------------------------------------------


@pytest.mark.parametrize("target", ["photo.png", "missing-file"])
def test_a_symlinked_video_lock_is_refused(tmp_path, capsys, target):
    work, home = fresh(tmp_path)
    (work / ".t.mp4.lock").symlink_to(home / target)  # an existing file, or a dangling link
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "render", work / "t.yaml", "--out", work / "t.mp4")
    assert status == 2 and f"{work / '.t.mp4.lock'}: {LINK}" in err and "--out" in err
    assert snapshot(tmp_path) == before and not (home / "missing-file").exists()


def test_a_hard_linked_lock_is_refused(tmp_path, capsys):
    work, home = fresh(tmp_path)
    os.link(home / "notes.txt", work / ".t.mp4.lock")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "render", work / "t.yaml", "--out", work / "t.mp4")
    assert status == 2 and ".t.mp4.lock: has 2 names (a hard link" in err
    assert snapshot(tmp_path) == before


def test_a_lock_name_holding_someone_elses_file_is_left_alone(tmp_path, capsys):
    work, _ = fresh(tmp_path)
    (work / ".t.mp4.lock").write_text("not a pid: the user's file\n")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "render", work / "t.yaml", "--out", work / "t.mp4")
    assert status == 2 and ".t.mp4.lock: exists and is not a latentwalk lock file" in err
    assert snapshot(tmp_path) == before


def test_a_symlinked_store_lock_is_refused(rendered, tmp_path, capsys):
    lock = rendered / "t.frames" / ".latentwalk-store.lock"
    lock.symlink_to(tmp_path / "home" / "notes.txt")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, *render_args(rendered))
    assert status == 2 and f"{lock}: {LINK}" in err and "--store" in err
    assert snapshot(tmp_path) == before


def test_a_symlinked_store_marker_is_refused(tmp_path, capsys):
    work, home = fresh(tmp_path)
    (work / "t.frames").mkdir()
    (work / "t.frames" / MARKER).symlink_to(home / "notes.txt")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "render", work / "t.yaml", "--out", work / "t.mp4")
    assert status == 2 and f"{work / 't.frames' / MARKER}: {LINK}" in err
    assert snapshot(tmp_path) == before


def test_a_symlinked_frame_in_the_store_is_refused(rendered, tmp_path, capsys):
    store = FrameStore(rendered / "t.frames")
    key = sorted(store.keys())[1]
    store.path(key).unlink()
    store.path(key).symlink_to(tmp_path / "home" / "photo.png")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, *render_args(rendered))
    assert status == 2 and f"{store.path(key)}: {LINK}" in err and "--store" in err
    assert snapshot(tmp_path) == before


def test_prune_leaves_a_symlinked_temp_file_and_its_target(rendered, tmp_path, capsys):
    store = rendered / "t.frames"
    temp = store / f".{'e' * 64}.frame.abc123.tmp"  # named like a temp file a killed write leaves
    temp.symlink_to(tmp_path / "home" / "film.mp4")
    (store / f".{'f' * 64}.frame.def456.tmp").write_bytes(b"a killed write")  # a real leftover: pruned
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "store", rendered / "t.yaml", "--out", rendered / "t.mp4", "--prune")
    assert status == 0, err
    after = snapshot(tmp_path)
    assert after.pop("work/t.frames/." + "f" * 64 + ".frame.def456.tmp", None) is None  # removed
    del before["work/t.frames/." + "f" * 64 + ".frame.def456.tmp"]
    assert after == before and temp.is_symlink()


def test_a_symlinked_png_in_a_marked_frames_folder_is_refused(rendered, tmp_path, capsys):
    png = rendered / "pngs" / "frame_000002.png"
    png.unlink()
    png.symlink_to(tmp_path / "home" / "photo.png")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, *render_args(rendered))
    assert status == 2 and f"{png}: {LINK}" in err and "--frames" in err
    assert snapshot(tmp_path) == before


def test_a_symlinked_png_with_overwrite_frames_is_refused(tmp_path, capsys):
    work, home = fresh(tmp_path)
    photos = work / "photos"
    photos.mkdir()
    (photos / "index.txt").write_text("the user's folder")
    (photos / "frame_000000.png").symlink_to(home / "photo.png")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "render", work / "t.yaml", "--out", work / "t.mp4", "--frames", photos, "--overwrite-frames")
    assert status == 2 and f"{photos / 'frame_000000.png'}: {LINK}" in err
    assert snapshot(tmp_path) == before


def test_a_symlinked_frames_marker_is_refused(rendered, tmp_path, capsys):
    marker = rendered / "pngs" / ".latentwalk-frames"
    marker.unlink()
    marker.symlink_to(tmp_path / "home" / "notes.txt")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, *render_args(rendered))
    assert status == 2 and f"{marker}: {LINK}" in err
    assert snapshot(tmp_path) == before


def test_a_symlinked_manifest_is_refused(rendered, tmp_path, capsys):
    manifest = rendered / "t.json"
    shutil.copy(manifest, tmp_path / "home" / "kept.json")
    manifest.unlink()
    manifest.symlink_to(tmp_path / "home" / "kept.json")  # a latentwalk manifest, reached through a link
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, *render_args(rendered))
    assert status == 2 and f"{manifest}: {LINK}" in err
    assert snapshot(tmp_path) == before


def test_a_dangling_manifest_link_is_refused(tmp_path, capsys):
    work, home = fresh(tmp_path)
    (work / "t.json").symlink_to(home / "would-be-created.json")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, "render", work / "t.yaml", "--out", work / "t.mp4")
    assert status == 2 and f"{work / 't.json'}: {LINK}" in err
    assert snapshot(tmp_path) == before and not (home / "would-be-created.json").exists()


def test_a_symlinked_video_is_refused(rendered, tmp_path, capsys):
    video = rendered / "t.mp4"
    video.unlink()
    video.symlink_to(tmp_path / "home" / "film.mp4")
    before = snapshot(tmp_path)
    status, _, err = cli(capsys, *render_args(rendered))
    assert status == 2 and f"{video}: {LINK}" in err and "--out" in err
    assert snapshot(tmp_path) == before


def test_outputs_follow_the_umask(base):
    """The base render ran under umask 027: every file it wrote is 0640, as a new file would be."""
    written = [base / "t.mp4", base / "t.json", base / "pngs" / "frame_000000.png", base / "pngs" / ".latentwalk-frames", base / "t.frames" / MARKER]
    written += list((base / "t.frames").glob("*.frame"))
    modes = {str(p.relative_to(base)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert set(modes.values()) == {"0o640"}, modes


def test_the_output_helper_refuses_links_and_leaves_no_temp_file(tmp_path):
    home = user_files(tmp_path)
    plot = tmp_path / "plan.png"
    plot.symlink_to(home / "photo.png")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=re.escape(f"{plot}: {LINK}: remove it or choose another --plot")):
        with open_output(plot, "--plot") as f:
            f.write(b"a plot")
    with pytest.raises(UserError, match="--plot"):
        write_atomic(plot, b"a plot", "--plot")
    assert snapshot(tmp_path) == before
    plot.unlink()
    old = os.umask(0o002)
    try:
        with pytest.raises(ZeroDivisionError):
            with open_output(tmp_path / "new.png", "--plot") as f:
                f.write(b"half")
                1 / 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no target, no temp file
        with open_output(tmp_path / "new.png", "--plot") as f:
            f.write(b"a plot")
    finally:
        os.umask(old)
    assert (tmp_path / "new.png").read_bytes() == b"a plot" and stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o664


def test_a_link_swapped_in_after_the_checks_is_still_not_written_through(tmp_path):
    """The last check sits right before the rename; a rename never writes into a link's target anyway."""
    home = user_files(tmp_path)
    target = tmp_path / "out.json"
    with pytest.raises(UserError, match=LINK):
        with open_output(target) as f:
            f.write(b"{}")
            target.symlink_to(home / "notes.txt")  # appears while the contents are written
    assert (home / "notes.txt").read_text() == "my notes\n" and target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out.json"]


# --- class 2: a stored frame is trusted only under its own key ----------------------------------


def test_swapped_frames_are_rendered_again_not_reused(rendered, tmp_path, capsys):
    store = FrameStore(rendered / "t.frames")
    a, b = sorted(store.keys())[:2]
    good = {k: store.path(k).read_bytes() for k in (a, b)}
    images = pngs(rendered)
    os.rename(store.path(a), rendered / "swap")
    os.rename(store.path(b), store.path(a))
    os.rename(rendered / "swap", store.path(b))
    user = snapshot(tmp_path / "home")
    status, out, err = cli(capsys, *render_args(rendered))
    assert status == 0 and "2 frames reused, 2 rendered" in out, out + err
    warnings = [line for line in err.splitlines() if line.startswith("latentwalk: warning: ") and "another key" in line]
    assert len(warnings) == 2 and any(f"{a}.frame" in w for w in warnings) and any(f"{b}.frame" in w for w in warnings)
    assert all("rendering it again" in w for w in warnings)
    assert {k: store.path(k).read_bytes() for k in (a, b)} == good and pngs(rendered) == images  # the right frames
    assert snapshot(tmp_path / "home") == user


def test_a_frame_copied_under_another_key_is_rendered_again(rendered, tmp_path, capsys):
    store = FrameStore(rendered / "t.frames")
    a, b = sorted(store.keys())[:2]
    good = store.path(b).read_bytes()
    images = pngs(rendered)
    shutil.copy(store.path(a), store.path(b))  # a "renamed" frame: a's pixels under b's name
    status, out, err = cli(capsys, *render_args(rendered))
    assert status == 0 and "3 frames reused, 1 rendered" in out, out + err
    assert f"{b}.frame: holds the frame of another key ({a[:16]}" in err
    assert store.path(b).read_bytes() == good and pngs(rendered) == images


def damage_frames(store: FrameStore) -> dict[str, str]:
    """One stored frame truncated in its header, one short of pixels, one of an unknown format, one foreign: key -> reason."""
    keys = sorted(store.keys())
    data = store.path(keys[0]).read_bytes()
    store.path(keys[0]).write_bytes(data[:5])
    store.path(keys[1]).write_bytes(data[:-1])
    store.path(keys[2]).write_bytes(b"LWFRAME\x07" + data[8:])
    store.path(keys[3]).write_bytes(os.urandom(len(data)))
    return {keys[0]: "truncated", keys[1]: "truncated", keys[2]: "store format version 7", keys[3]: "wrong magic bytes"}


def test_truncated_foreign_and_future_frames_are_rendered_again(rendered, tmp_path, capsys):
    store = FrameStore(rendered / "t.frames")
    good = {k: store.path(k).read_bytes() for k in store.keys()}
    images = pngs(rendered)
    reasons = damage_frames(store)
    status, out, err = cli(capsys, *render_args(rendered))
    assert status == 0 and "0 frames reused, 4 rendered" in out, out + err
    messages = [line for line in err.splitlines() if line.startswith("latentwalk: warning: ")]
    for key, reason in reasons.items():
        assert any(f"{key}.frame: " in m and reason in m and "rendering it again" in m for m in messages), (reason, messages)
    assert {k: store.path(k).read_bytes() for k in store.keys()} == good and pngs(rendered) == images


def test_damaged_pixels_are_named_and_the_frame_made_again_in_the_same_run(rendered, tmp_path, capsys):
    store = FrameStore(rendered / "t.frames")
    key = sorted(store.keys())[2]
    good = store.path(key).read_bytes()
    damaged = bytearray(good)
    damaged[-7] ^= 0x40
    store.path(key).write_bytes(bytes(damaged))
    images = pngs(rendered)
    status, out, err = cli(capsys, *render_args(rendered))
    assert status == 0 and f"{key}.frame: checksum mismatch" in err and "rendering it again" in err
    assert "3 frames reused, 1 rendered" in out, out + err
    # The same frames (the video's bytes differ: its metadata names this copy's folder).
    assert store.path(key).read_bytes() == good and pngs(rendered) == images


def test_version_2_frames_are_still_reused(rendered, capsys):
    store = FrameStore(rendered / "t.frames")
    images = pngs(rendered)
    for key in store.keys():  # rewrite every frame in the format before key binding
        pixels = store.load(key, (128, 128, 3)).tobytes()
        store.path(key).write_bytes(HEADER_V2.pack(b"LWFRAME\x02", 128, 128, 3, hashlib.sha256(pixels).digest()) + pixels)
    status, out, err = cli(capsys, *render_args(rendered))
    assert status == 0 and "4 frames reused, 0 rendered" in out, out + err
    assert pngs(rendered) == images


def test_a_frame_of_another_size_under_the_key_is_rendered_again(rendered, capsys):
    store = FrameStore(rendered / "t.frames")
    key = sorted(store.keys())[0]
    good = store.path(key).read_bytes()
    store.path(key).write_bytes(encode_frame(np.zeros((64, 64, 3), np.uint8), key))  # bound to the key, wrong shape
    status, out, err = cli(capsys, *render_args(rendered))
    assert status == 0 and "3 frames reused, 1 rendered" in out, out + err
    assert f"{key}.frame: holds a (64, 64, 3) frame, expected (128, 128, 3); rendering it again" in err
    assert store.path(key).read_bytes() == good


def test_the_header_binds_key_format_and_shape(tmp_path):
    store = FrameStore(tmp_path / "s")
    key = "ab" * 32
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    store.save(key, frame)
    data = store.path(key).read_bytes()
    magic, h, w, c, codec, length, bound, digest = struct.unpack_from("<8sIIIIQ32s32s", data)
    assert (magic, h, w, c, bound) == (b"LWFRAME\x04", 4, 6, 3, bytes.fromhex(key)) and len(data) == 96 + length
    assert codec in (0, 1) and length <= frame.size  # raw, or compressed (up+zlib): never larger than the pixels
    assert digest == hashlib.sha256(data[:64] + frame.tobytes()).digest()  # the header and the decoded pixels
    assert '"version": 4' in (tmp_path / "s" / MARKER).read_text()


# --- class 4: long and deep track expressions -----------------------------------------------------


def plan_with(tmp_path: Path, capsys, guidance: str) -> tuple[int, str, str]:
    path = tmp_path / "t.yaml"
    path.write_text(timeline_text(f'guidance: "{guidance}"\n'))
    before = snapshot(tmp_path)
    result = cli(capsys, "plan", path)
    assert snapshot(tmp_path) == before
    assert len(result[2]) < 2000  # the message shows a window of the expression, not all of it
    return result


FLAT = 20_000


@pytest.mark.parametrize(
    "guidance",
    [
        "7" + " + 0" * FLAT,
        "7" + " * 1" * FLAT,
        "7" + " / 1" * FLAT,
        "7" + " + t - t" * (FLAT // 2),
        "3.5 + 3.5" + " - 1 + 1" * (FLAT // 2),
    ],
    ids=["sum", "product", "quotient", "variables", "mixed"],
)
def test_twenty_thousand_terms_plan(tmp_path, capsys, guidance):
    status, out, err = plan_with(tmp_path, capsys, guidance)
    assert status == 0 and " 7.00" in out, err


@pytest.mark.parametrize(
    "guidance, needle",
    [
        (" + ".join(["1"] * FLAT), "t.yaml:7: guidance: must be at most 100, but its expression gives 20000"),
        ("7" + " + 0" * FLAT + " + *", "t.yaml:7: guidance: unexpected '*' at column 80005"),
        ("7" + " + 0" * FLAT + " + 1 / (frame - 2)", "t.yaml:7: guidance: division by zero at frame 2 (0.500s) at column 80007"),
        ("7" + " + 0" * FLAT + " + lwo", "t.yaml:7: guidance: unknown variable 'lwo' (did you mean 'low'?) at column 80005"),
        ("1" + " + 1" * MAX_CHARS, f"t.yaml:7: guidance: expression longer than {MAX_CHARS:,} characters"),
        ("(" * 150 + "7" + ")" * 150, f"t.yaml:7: guidance: expression nested too deeply (more than {MAX_DEPTH} levels) at column 101"),
        ("-" * FLAT + "7", f"t.yaml:7: guidance: expression nested too deeply (more than {MAX_DEPTH} levels)"),
        ("2^" * FLAT + "1", f"t.yaml:7: guidance: expression nested too deeply (more than {MAX_DEPTH} levels)"),
        ("abs(" * 500 + "7" + ")" * 500, f"t.yaml:7: guidance: expression nested too deeply (more than {MAX_DEPTH} levels)"),
        ("1e300" + " * 1e300" * 10, "t.yaml:7: guidance: '*' is not a finite number at frame 0 (0.000s) at column 7"),
    ],
    ids=["sum-out-of-range", "syntax-at-the-end", "division-by-zero-at-the-end", "typo-at-the-end", "too-long", "deep-parens", "deep-signs", "deep-powers", "deep-calls", "overflow"],
)
def test_long_and_deep_expressions_fail_with_field_line_and_limit(tmp_path, capsys, guidance, needle):
    status, _, err = plan_with(tmp_path, capsys, guidance)
    assert status == 2 and needle in err, err[:600]


def test_nesting_just_under_the_cap_plans(tmp_path, capsys):
    depth = MAX_DEPTH - 1
    status, out, err = plan_with(tmp_path, capsys, "(" * depth + "7" + ")" * depth)
    assert status == 0 and " 7.00" in out, err


def test_a_twenty_thousand_term_guidance_renders_through_the_real_entry_point(tmp_path):
    work, _ = fresh(tmp_path)
    (work / "t.yaml").write_text(timeline_text('guidance: "7' + " + 0" * FLAT + '"\n'))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-m", "latentwalk.cli", "render", str(work / "t.yaml"), "--out", str(work / "t.mp4"), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{FRAMES} rendered" in result.stdout and (work / "t.mp4").exists() and (work / "t.json").exists()
