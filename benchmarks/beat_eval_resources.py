"""Time and peak memory of the audio analysis: cold vs cached `plan`, and `beats` on long audio.

    PYTHONPATH=. python benchmarks/beat_eval_resources.py [--minutes 1 10 60] [--trackers librosa]

Runs the CLI under /usr/bin/time -v (GNU time) with a fresh cache folder, so every figure is
a whole process: interpreter start, imports, decoding and analysis.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from latentwalk.toy.soundtrack import drum_track, write_wav


def measure(args: list[str], cache: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one latentwalk command."""
    env = {**os.environ, "LATENTWALK_CACHE": str(cache)}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "latentwalk.cli", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    h, m, s = (float(g) if g else 0.0 for g in wall.groups())
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024
    return h * 3600 + m * 60 + s, rss


def song(minutes: float, folder: Path) -> Path:
    """A drum + bass + pad track of `minutes`, a 1-minute 120 bpm song repeated."""
    path = folder / f"song-{minutes:g}min.wav"
    if not path.exists():
        one = drum_track(120.0, 30, musical=True)
        n = int(minutes * 60 * one.sample_rate)
        samples = np.tile(one.samples[: 60 * one.sample_rate], int(np.ceil(minutes)))[:n]
        write_wav(type(one)(samples, one.sample_rate, one.bpm, one.beats), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", nargs="+", type=float, default=[1, 10, 60])
    parser.add_argument("--trackers", nargs="+", default=["librosa"])
    parser.add_argument("--plan", action="store_true", help="also time cold and warm `plan` (demo and a 4-minute song)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.plan:
            four = song(4, folder)
            timeline = folder / "four.yaml"
            timeline.write_text(f"fps: 24\naudio: {{path: {four}}}\nkeyframes:\n  - {{bar: 0, prompt: a}}\n  - {{bar: 40, prompt: b}}\n")
            for name, path in [("demo (17 s)", Path("configs/demo.yaml")), ("4-minute song", timeline)]:
                cache = folder / f"cache-{name[:4]}"
                cold, warm = measure(["plan", str(path)], cache), measure(["plan", str(path)], cache)
                print(f"plan {name}: cold {cold[0]:.1f} s ({cold[1]:.0f} MB), warm {warm[0]:.1f} s ({warm[1]:.0f} MB)", flush=True)
        for tracker in args.trackers:
            for minutes in args.minutes:
                wall, rss = measure(["beats", str(song(minutes, folder)), "--tracker", tracker, "--json"], folder / f"cache-{tracker}-{minutes}")
                print(f"beats --tracker {tracker} {minutes:g} min: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
