"""Start-up cost of the torch-free core, side by side with `import torch` in the same run.

    python benchmarks/bench_startup.py [--runs 7]

Times whole processes, interleaved (help, plan, torch, help, plan, torch, ...), after one warm-up
run of each so the analysis cache and the OS file cache are warm. Prints each command's minimum
and median, and the ratio of the medians to `import torch`'s. Goals (issue: a solid base):
`latentwalk --help` <= 0.3 s, a warm `plan configs/demo.yaml` <= 1 s, both <= 0.5x import torch.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands() -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    latentwalk = str(bin_dir / "latentwalk") if (bin_dir / "latentwalk").exists() else None
    cli = [latentwalk] if latentwalk else [sys.executable, "-m", "latentwalk.cli"]
    return {
        "latentwalk --help": cli + ["--help"],
        "latentwalk plan configs/demo.yaml": cli + ["plan", "configs/demo.yaml"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not (ROOT / "configs" / "demo.wav").exists():
        subprocess.run([sys.executable, "-m", "latentwalk.toy.soundtrack", "configs/demo.wav"], cwd=ROOT, check=True)
    cmds = commands()
    for cmd in cmds.values():  # warm-up: analysis cache, page cache, .pyc files
        timed(cmd)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            times[name].append(timed(cmd))
    torch_median = statistics.median(times['python -c "import torch"'])
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end; {args.runs} interleaved runs")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:40s} min {min(values):6.3f} s  median {median:6.3f} s  {median / torch_median:5.2f}x import torch")


if __name__ == "__main__":
    main()
