"""How soon the progress display's ETA is right: its prediction against the real end of the frames.

    python benchmarks/bench_eta.py [--timeline configs/demo.yaml] [--draft] [--out results.json]

Runs `latentwalk render` as a user would (stderr not a terminal, so the display prints plain
lines: one every 5 s or each further 10 % of a stage), fresh, into a temporary folder, and
stamps every line as it arrives. Each progress line carries "overall D/P frames ... ETA 1m05s";
its predicted end is (arrival time + ETA). The real end is the arrival of the last counted line
of the frame stage (`frames: done`), i.e. the ETA is judged on what it covers: the probes and
frames still to denoise, not the encode after them.

For each line the error is |predicted end - real end| / (real end - first batch), the share of the
denoising time it was off by. Printed: the error of the first line at or past 5, 10, 25 and 50 %
of the work, and the worst error of all lines from 10 % on. Goal (issue: drafts and progress):
within 10 % of the time from the first 10 % of the frames on.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"overall (\d+)/(\d+) frames.*ETA (\?|(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?)\s*$")
CHECKPOINTS = (0.05, 0.10, 0.25, 0.50)


def seconds(match: re.Match) -> float | None:
    if match.group(3) == "?":
        return None
    h, m, s = (int(g) if g else 0 for g in match.group(4, 5, 6))
    return 3600 * h + 60 * m + s


def run(timeline: str, draft: bool) -> list[tuple[float, str]]:
    cli = Path(sys.executable).with_name("latentwalk")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(cli), "render", timeline, "--out", f"{tmp}/eta.mp4", "--fresh"] + (["--draft"] if draft else [])
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        lines = []
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))
        if proc.wait() != 0:
            raise SystemExit("render failed:\n" + "\n".join(text for _, text in lines[-20:]))
    return lines


def evaluate(lines: list[tuple[float, str]]) -> dict:
    points = []  # (arrival, done, planned, eta)
    end = None
    for t, text in lines:
        match = LINE.search(text)
        if match:
            points.append((t, int(match.group(1)), int(match.group(2)), seconds(match)))
        if "frames: done" in text:
            end = t
    if end is None or not points:
        raise SystemExit("no frame stage in the render's output")
    total = points[-1][2]
    start = next(t for t, *_ in points)  # the first progress line: the first batch has arrived
    span = end - start
    rows = [(done / total, abs(t + eta - end) / span) for t, done, _, eta in points if eta is not None and t < end]
    at = {}
    for c in CHECKPOINTS:
        hit = next((err for share, err in rows if share >= c), None)
        at[f"{c:.0%}"] = None if hit is None else round(hit, 3)
    later = [err for share, err in rows if share >= 0.10]
    return {"frames_and_probes": total, "denoise_s": round(span, 1), "lines": len(rows), "error_at": at,
            "worst_from_10%": round(max(later), 3) if later else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeline", default="configs/demo.yaml")
    parser.add_argument("--draft", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"timeline": args.timeline, "draft": args.draft, **evaluate(run(args.timeline, args.draft))}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
