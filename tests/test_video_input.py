"""Video to video (latentwalk/video_input.py): the source's frames at the timeline's times, strength
as a track, bad videos caught when the timeline is read, and a render through the entry point."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentwalk.errors import UserError
from latentwalk.timeline import load_timeline
from latentwalk.video_input import VideoFrames, probe, source_frames, source_index

LATENTWALK = str(Path(sys.executable).parent / "latentwalk")
CLIP_FPS, CLIP_FRAMES = 10, 20  # a 2 s source clip


def clip_frames(n: int = CLIP_FRAMES, width: int = 48, height: int = 32) -> np.ndarray:
    """(n, H, W, 3) uint8: a bar moving right over a background that brightens, frame by frame."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 1] = (10 * i) % 256
        frames[i, :, (2 * i) % (width - 8) : (2 * i) % (width - 8) + 8] = 255
    return frames


def write_clip(path: Path, frames: np.ndarray, fps: float, audio: Path | None = None) -> Path:
    """Encode frames losslessly (x264, yuv444p, crf 0) with imageio-ffmpeg, optionally with a sound track."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv444p", output_params=["-crf", "0"],
        macro_block_size=8, audio_path=str(audio) if audio else None, audio_codec="aac" if audio else None,
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", clip_frames(), CLIP_FPS)


def timeline_text(model: str, video: str, extra: str = "", fps: str = "8") -> str:
    return (
        f"model: {model}\nwidth: 32\nheight: 32\nfps: {fps}\nsteps: 2\nbatch_size: 4\nscheduler: ddim\nvideo: {video}\n{extra}"
        "keyframes:\n  - {frame: 0, prompt: a cat in the snow, seed: 1}\n  - {frame: 5, prompt: a dog at night, seed: 2}\n"
    )


def plan_json(path: Path) -> dict:
    out = subprocess.run([LATENTWALK, "plan", str(path), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_source_frame_is_the_one_shown_at_the_frame_time():
    assert [source_index(f / 8, 10) for f in range(9)] == [0, 1, 2, 3, 5, 6, 7, 8, 10]  # 8 fps from 10: one skipped in five
    assert [source_index(f / 24, 12) for f in range(5)] == [0, 0, 1, 1, 2]  # 24 fps from 12: each held twice
    assert source_index(1.0, 30) == 30  # a time on a frame's start belongs to that frame, not the one before


def test_probe_reads_rate_size_and_frame_count(clip):
    info = probe(clip)
    assert (info.fps, info.n_frames, info.width, info.height) == (CLIP_FPS, CLIP_FRAMES, 48, 32)
    assert info.duration == pytest.approx(2.0)


def test_decoded_frames_are_the_source_scaled_and_cropped(clip):
    """Lossless source: frame k decodes (cover-scaled 48x32 -> 48x32) to the pixels written, wherever reading starts."""
    reader = VideoFrames(str(clip), 48, 32)
    frames = clip_frames()
    assert np.abs(reader.get(7).astype(int) - frames[7]).max() <= 2  # yuv444p round trip
    assert np.array_equal(reader.get(3), VideoFrames(str(clip), 48, 32).get(3))  # a restart decodes the same bytes
    square = VideoFrames(str(clip), 32, 32).get(7)  # centre crop of a 48x32 frame: columns 8..40
    assert square.shape == (32, 32, 3) and np.abs(square.astype(int) - frames[7][:, 8:40]).max() <= 2


def test_plan_json_has_the_source_frame_count_and_timing(clip, tmp_path):
    """`fps: video` with no end: the timeline is the clip, frame for frame; at 8 fps the source is resampled."""
    same = tmp_path / "same.yaml"
    same.write_text(timeline_text("toy", str(clip), fps="video"))
    data = plan_json(same)
    assert data["fps"] == CLIP_FPS and data["n_frames"] == CLIP_FRAMES and data["duration"] == pytest.approx(2.0)
    assert data["video"]["source_frames"] == list(range(CLIP_FRAMES))
    assert [f["time"] for f in data["frames"]] == pytest.approx([k / CLIP_FPS for k in range(CLIP_FRAMES)])
    resampled = tmp_path / "resampled.yaml"
    resampled.write_text(timeline_text("toy", f"{{path: {clip}, start: 0.5}}", extra="strength: 0.3\n"))
    data = plan_json(resampled)
    assert data["n_frames"] == 12  # the 1.5 s left of the clip at 8 fps
    assert data["video"]["source_frames"] == source_frames(load_timeline(resampled).settings.video, range(12), 8)
    assert data["video"]["source_frames"][:3] == [5, 6, 7] and data["video"]["source_frames"][-1] == 18  # 0.5 + 11/8 = 1.875 s
    assert all(f["strength"] == 0.3 for f in data["frames"])


BAD = [
    # (video value or None for the file's own, extra YAML, what the message says, field)
    ("{path: missing.mp4}", "", "video file not found", "video.path"),
    ("noise.mp4", "", "cannot read", "video.path"),
    ("sound.wav", "", "as a video", "video.path"),
    ("{path: CLIP, start: 5}", "", "past the end of the video", "video.start"),
    ("{path: CLIP, end: 3}", "", "past the end of the video", "video.end"),
    ("{path: CLIP, flow_blend: 0.2}", "", "only used with flow: true", "video.flow_blend"),
    ("CLIP", "strength: 1.5\n", "must be at most 1", "strength"),
    ("CLIP", "end: {time: 3}\n", "has no source frame", "end"),
    ("CLIP", "mode: feedback\n", "not yet with mode: feedback", "video"),
    ("CLIP", "spacing: perceptual\n", "use spacing: t", "spacing"),
    ("CLIP", "audio: {from_video: true, path: x.wav}\n", "not both", "audio.path"),
]


@pytest.mark.parametrize("video, extra, says, field", BAD, ids=[b[3] + ":" + b[2][:20] for b in BAD])
def test_bad_video_input_is_a_clear_error_before_any_model(clip, tmp_path, video, extra, says, field):
    from latentwalk.toy.soundtrack import drum_track, write_wav

    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    write_wav(drum_track(120.0, 1), tmp_path / "sound.wav")
    path = tmp_path / "t.yaml"
    path.write_text(timeline_text("toy", video.replace("CLIP", str(clip)), extra=extra))
    from latentwalk.api import plan

    with pytest.raises(UserError) as error:
        plan(load_timeline(path))
    message = str(error.value)
    assert message.startswith(f"{path}:") and f": {field}: " in message and says in message, message


def test_bad_video_exits_2_through_the_entry_point_and_changes_nothing(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(b"not a video at all" * 100)
    path = tmp_path / "t.yaml"
    path.write_text(timeline_text("toy", "noise.mp4"))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = subprocess.run([LATENTWALK, "render", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"latentwalk: error: {path}:8: video.path: cannot read {str(tmp_path / 'noise.mp4')!r} as a video: moov atom not found (see docs/video-and-control.md)"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no renders/ folder, nothing written


def test_render_restyles_each_frame_from_its_source_frame(tiny_model_dir, clip, tmp_path, one_thread):
    """Through `latentwalk render`: as many frames as plan --json says; a frame at strength 0 is its source
    frame's VAE round trip (so each frame starts from the right source frame), one above 0 is re-imagined."""
    import imageio.v3 as iio
    import torch

    from latentwalk.backends import ModelSpec, load_backend

    path = tmp_path / "v.yaml"
    path.write_text(timeline_text(tiny_model_dir, str(clip), extra="audio: {bpm: 240}\nstrength: 0.9 * pulse(1, 0.5)\nend: {frame: 8}\n"))
    data = plan_json(path)
    strengths = [f["strength"] for f in data["frames"]]
    assert data["n_frames"] == 8 and 0.0 in strengths and max(strengths) == pytest.approx(0.9)
    out = subprocess.run([LATENTWALK, "render", str(path), "--frames", str(tmp_path / "png")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert probe(tmp_path / "renders" / "v.mp4").n_frames == data["n_frames"]
    pngs = sorted((tmp_path / "png").glob("*.png"))
    frames = np.stack([iio.imread(p) for p in pngs])
    assert len(frames) == 8
    backend = load_backend(ModelSpec(str(tiny_model_dir)), "cpu", "float32")
    sources = VideoFrames(str(clip), 32, 32)
    with torch.no_grad():
        for f, (strength, index) in enumerate(zip(strengths, data["video"]["source_frames"])):
            trip = backend.decode(backend.encode_images(np.array(sources.get(index))[None]))[0].astype(int)
            other = backend.decode(backend.encode_images(np.array(sources.get(19 - index))[None]))[0].astype(int)
            diff = np.abs(frames[f].astype(int) - trip)
            if strength == 0:
                assert diff.max() <= 2 and np.abs(frames[f].astype(int) - other).mean() > 4 * diff.mean() + 1, f
            else:
                assert diff.mean() > 1.0, f  # re-imagined


def test_flow_chain_keys_change_from_the_edited_frame_on():
    from latentwalk.videoflow import chain_keys

    keys = chain_keys(["a", "b", "c", "d"], 0.5)
    edited = chain_keys(["a", "b", "X", "d"], 0.5)
    assert keys[0] == "a" and keys[:2] == edited[:2] and all(k != e for k, e in zip(keys[2:], edited[2:]))
    assert chain_keys(["a", "b"], 0.4)[1] != keys[1] and chain_keys(["a", "b"], 0.4)[0] == "a"


def test_flow_warp_follows_the_source_motion():
    """A textured picture moved 3 px right: the previous frame warped by the backward flow is the next one."""
    from latentwalk.videoflow import backward_flow, warp

    rng = np.random.default_rng(0)
    from PIL import Image

    texture = np.asarray(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((64, 64), Image.Resampling.BICUBIC))
    moved = np.roll(texture, 3, axis=1)
    warped = warp(texture, backward_flow(moved, texture))
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(warped[inner].astype(int) - moved[inner]).mean() < 0.25 * np.abs(texture[inner].astype(int) - moved[inner]).mean()


def test_flow_driver_resumes_from_the_stored_predecessor():
    """render_flow renders only the missing frames, each from the frame before it as stored."""
    from dataclasses import dataclass

    from latentwalk.videoflow import flow_plan, render_flow

    @dataclass(frozen=True)
    class Row:
        init: str

    sources = {f"s{k}": np.full((8, 8, 3), 10 * k, np.uint8) for k in range(4)}

    class Images:
        def load(self, ref):
            return sources[ref]

    rows = [Row(f"s{k}") for k in range(4)]
    store: dict[str, np.ndarray] = {}

    def render(row, init):  # the init itself (its source alone for frame 0), one level brighter
        return (sources[row.init] if init is None else init) + 1

    whole = flow_plan(rows, ["a", "b", "c", "d"], 1.0, lambda key: False)
    render_flow(whole, Images(), render, store.get, store.__setitem__)
    assert [int(store[k][0, 0, 0]) for k in whole.work.keys] == [1, 11, 21, 31]  # blend 1: each init is its source frame
    again = dict(store)
    del store[whole.work.keys[2]], store[whole.work.keys[3]]
    resumed = flow_plan(rows, ["a", "b", "c", "d"], 1.0, lambda key: key in store)
    assert resumed.missing == (2, 3)
    render_flow(resumed, Images(), render, store.get, store.__setitem__)
    assert all(np.array_equal(store[k], again[k]) for k in whole.work.keys)


def test_flow_render_starts_like_the_independent_one_and_then_follows(tiny_model_dir, clip, tmp_path, one_thread):
    """`video: {flow: true}` through `latentwalk render`: frame 0 is the independent frame 0 (the engine's, one
    level apart at most: the command runs torch on more threads); later frames start from the warped previous
    output, so they differ from the independent ones; the manifest counts the chain."""
    import imageio.v3 as iio

    from latentwalk.api import plan, schedule_inputs
    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.engine import render_frames
    from latentwalk.stages import engine_settings

    path = tmp_path / "flow.yaml"
    text = timeline_text(tiny_model_dir, f"{{path: {clip}, flow: true, flow_blend: 0.3}}", extra="strength: 0.6\nend: {frame: 6}\n")
    path.write_text(text.replace("batch_size: 4\n", ""))  # a chain: one row per UNet call by default
    out = subprocess.run([LATENTWALK, "render", str(path), "--frames", str(tmp_path / "png")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    flow = [iio.imread(p).astype(int) for p in sorted((tmp_path / "png").glob("*.png"))]
    timeline = load_timeline(path)
    frames = schedule_inputs(timeline, plan(timeline))  # each frame's own inputs: its source frame as init
    independent = {}
    backend = load_backend(ModelSpec(str(tiny_model_dir)), "cpu", "float32")
    render_frames(backend, frames, engine_settings(timeline.settings), lambda b, images: independent.update(zip(b, images)), overlap=False)
    assert len(flow) == 6 and np.abs(flow[0] - independent[frames[0]]).max() <= 1
    assert all(np.abs(a - independent[f]).mean() > 0.5 for a, f in zip(flow[1:], frames[1:]))
    manifest = json.loads((tmp_path / "renders" / "flow.json").read_text())
    assert manifest["video"]["flow"]["rendered"] == 6 and manifest["store"]["identity"]["batch_size"] == 1


def test_shipped_example_plans_frame_for_frame(tmp_path):
    """configs/video.yaml through `latentwalk plan --json`: its 48 frames are the clip's 48, at the clip's times."""
    root = Path(__file__).resolve().parents[1]
    data = plan_json(root / "configs" / "video.yaml")
    assert data["fps"] == 12 and data["n_frames"] == 48 and data["video"]["source_frames"] == list(range(48))
    strengths = [f["strength"] for f in data["frames"]]
    assert min(strengths) == pytest.approx(0.35) and max(strengths) == pytest.approx(0.7)  # pulsing on the beat
