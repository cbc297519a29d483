"""Write configs/video/clip.mp4, the source clip of configs/video.yaml: 4 s at 12 fps, 128 x 128.

A day over the mountains with a sun, drawn by the embedded model's own world (latentwalk/toy/
world.py), seen by a camera that pans right and slowly zooms in, with two bars of the demo
drums at 120 bpm as its sound track. Run: python configs/video/make_clip.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

from latentwalk.encode import ffmpeg_exe
from latentwalk.toy.soundtrack import drum_track, write_wav
from latentwalk.toy.world import Attributes, render_scene

FPS, SECONDS, SIZE = 12, 4.0, 128
SCENE = Attributes("day", "clear", "mountains", ("sun",))
SEED = 7  # the layout of the scene (horizon, peaks, the sun's place)


def camera_frames() -> np.ndarray:
    """(48, 128, 128, 3) uint8: crops of the scene drawn twice as large, panning right while zooming in."""
    from PIL import Image

    scene = Image.fromarray(render_scene(SCENE, np.random.default_rng(SEED))).resize((2 * SIZE, 2 * SIZE), Image.Resampling.BICUBIC)
    frames = []
    n = round(FPS * SECONDS)
    for k in range(n):
        u = k / (n - 1)
        side = 2 * SIZE * (0.75 - 0.2 * u)  # the crop shrinks: the camera zooms in
        x0 = (2 * SIZE - side) * (0.15 + 0.7 * u)  # and moves right
        y0 = (2 * SIZE - side) * 0.5
        crop = scene.crop((x0, y0, x0 + side, y0 + side)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        frames.append(np.asarray(crop, dtype=np.uint8))
    return np.stack(frames)


def write_clip(path: Path) -> Path:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(drum_track(120.0, 2), Path(tmp) / "drums.wav")
        writer = imageio_ffmpeg.write_frames(
            str(path), (SIZE, SIZE), fps=FPS, codec="libx264", quality=None, output_params=["-crf", "20", "-preset", "slow"],
            macro_block_size=16, audio_path=str(wav), audio_codec="aac", ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in camera_frames():
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return path


if __name__ == "__main__":
    assert ffmpeg_exe()  # the imageio-ffmpeg binary latentwalk uses
    out = write_clip(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("clip.mp4"))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
