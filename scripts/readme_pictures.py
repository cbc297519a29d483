"""Regenerate the pictures the README and docs/ show, from this version, through the `latentwalk` command.

    .venv/bin/python scripts/readme_pictures.py            # strips, plans, the sweep sheet (a few minutes on 2 cores)
    .venv/bin/python scripts/readme_pictures.py --walks    # also the smoothness plots of benchmarks/bench_smooth.py (slow)

Writes renders/readme/{demo_strip,feedback_strip,reactive_plan,sweep_daynight}.png,
docs/images/pictures-strip.png (configs/pictures.yaml) and docs/images/song-plan.png (the README
walk-through's song.yaml, with the demo soundtrack as its song). Renders go to the default stores
under renders/, so a second run reuses their frames.
Prints each picture with the command that made it and the machine it ran on.
"""

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
READ_ME = ROOT / "renders" / "readme"
STRIPS = {"demo": 32, "feedback": 8}  # configs/NAME.yaml: every Nth frame of its video


def latentwalk(*args: str, cwd: Path = ROOT) -> None:
    """Run the real entry point (its tables to /dev/null); a failure stops the script with latentwalk's own message."""
    command = [sys.executable, "-m", "latentwalk.cli", *args]
    print("$ latentwalk " + " ".join(args), flush=True)
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def strip(name: str, every: int, work: Path) -> Path:
    """Every `every`-th frame of configs/NAME.yaml's video, side by side."""
    from PIL import Image

    frames = work / f"{name}-frames"
    latentwalk("render", f"configs/{name}.yaml", "--frames", str(frames), "--quiet")
    files = sorted(frames.glob("frame_*.png"))[::every]
    picture = np.concatenate([np.asarray(Image.open(f).convert("RGB")) for f in files], axis=1)
    out = READ_ME / f"{name}_strip.png"
    Image.fromarray(picture).save(out)
    return out


def pictures_strip(work: Path, every: int = 6) -> Path:
    """configs/pictures.yaml (docs/pictures.md): its two pictures as given, fitted, beside every 6th frame of its video."""
    from PIL import Image

    from latentwalk.images import fit_picture

    frames = work / "pictures-frames"
    latentwalk("render", "configs/pictures.yaml", "--frames", str(frames), "--quiet")
    shown = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(frames.glob("frame_*.png"))[::every]]
    size = shown[0].shape[0]
    given = [fit_picture(ROOT / "configs" / "pictures" / name, size, size) for name in ("sunset-ridge.png", "sea-sail.png")]
    gap = np.full((size, size // 8, 3), 255, dtype=np.uint8)
    out = ROOT / "docs" / "images" / "pictures-strip.png"
    Image.fromarray(np.concatenate([given[0], gap, *shown, gap, given[1]], axis=1)).save(out)
    return out


def song_plan(work: Path) -> Path:
    """The README walk-through: its song.yaml (the yaml block marked `# save as: song.yaml`) planned with --plot."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n# save as: song.yaml\n(.*?)```", readme, re.S)
    if block is None:
        raise SystemExit("README.md has no ```yaml block starting with '# save as: song.yaml'")
    (work / "song.yaml").write_text(block.group(1))
    shutil.copy(ROOT / "configs" / "demo.wav", work / "song.wav")
    out = ROOT / "docs" / "images" / "song-plan.png"
    if out.exists():
        out.unlink()  # ours: --plot refuses to replace a picture it cannot tell is a plot
    latentwalk("plan", "song.yaml", "--plot", str(out), cwd=work)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walks", action="store_true", help="also the walk plots (benchmarks/bench_smooth.py --parts placement)")
    args = parser.parse_args()
    if not (ROOT / "configs" / "demo.wav").exists():
        subprocess.run([sys.executable, "-m", "latentwalk.toy.soundtrack", "configs/demo.wav"], cwd=ROOT, check=True)
    READ_ME.mkdir(parents=True, exist_ok=True)
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made += [strip(name, every, work) for name, every in STRIPS.items()]
        latentwalk("plan", "configs/reactive.yaml", "--plot", "renders/readme/reactive_plan.png")
        made.append(READ_ME / "reactive_plan.png")
        latentwalk("sweep", "configs/sweep_daynight.yaml", "--out", str(work / "sweep"), "--quiet")
        shutil.copy(work / "sweep" / "sheet.png", READ_ME / "sweep_daynight.png")
        made.append(READ_ME / "sweep_daynight.png")
        made.append(song_plan(work))
        made.append(pictures_strip(work))
    if args.walks:
        subprocess.run([sys.executable, "benchmarks/bench_smooth.py", "--parts", "placement", "--plots", str(READ_ME)], cwd=ROOT, check=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    for path in made:
        print(f"{path.relative_to(ROOT)} ({machine})")


if __name__ == "__main__":
    main()
