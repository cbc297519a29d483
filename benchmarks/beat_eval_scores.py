"""Beats, downbeats and meter on real compositions with exact truth: scores from music21's corpus
(Bach chorales in 4/4 and 3/4, folk tunes in 3/4 and 6/8), rendered here by a small additive
synth, some with a tempo step, their beats and bars taken from the score.

These are synthetic renders of real scores, not recordings: no performer's timing, dynamics or
room, no drums; the folk tunes are a single melody line. music21 (BSD) is not a latentwalk
dependency: install it beside it (`pip install music21`, its corpus ships in the wheel, offline).

    PYTHONPATH=. python benchmarks/beat_eval_scores.py [--trackers librosa madmom] [--seconds 40] [--json out.json]
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwalk import audio
from latentwalk.toy.soundtrack import SAMPLE_RATE

sys.path.insert(0, str(Path(__file__).parent))
from beat_eval import any_level_f, f_measure  # noqa: E402

HARMONICS = np.array([1.0, 0.5, 0.33, 0.25, 0.2, 0.14])  # a soft plucked/organ-like timbre
DECAY = 0.8  # seconds: the notes' exponential decay
GAIN = 0.25


@dataclass(frozen=True)
class Case:
    name: str
    meter: str  # "4/4", "3/4", "6/8"
    notes: list  # (start quarter, length quarters, midi pitch)
    beats_q: np.ndarray  # beat positions in quarter notes (the tapped beat)
    downbeats_q: np.ndarray  # bar starts in quarter notes
    tempo: tuple  # (quarter, bpm) steps: bpm of quarter notes from that position on


def quarters_to_seconds(q: np.ndarray, tempo: tuple) -> np.ndarray:
    """Seconds of quarter-note positions through (quarter, bpm) tempo steps."""
    q = np.asarray(q, dtype=np.float64)
    starts = np.array([s for s, _ in tempo], dtype=np.float64)
    periods = np.array([60.0 / b for _, b in tempo])
    at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * periods[:-1])])
    j = np.searchsorted(starts, q, side="right") - 1
    return at[j] + (q - starts[j]) * periods[j]


def case_from_score(name: str, score, bpm: float, tempo_step: float | None = None) -> Case:
    """Notes, tapped beats and bar starts of a music21 score (its first part's measures and meter)."""
    ts = score.recurse().getElementsByClass("TimeSignature")[0]
    beat = float(ts.beatDuration.quarterLength)  # 1.5 in 6/8: the dotted quarter
    bar = float(ts.barDuration.quarterLength)
    measures = list(score.parts[0].getElementsByClass("Measure"))
    end = float(score.highestTime)
    first = float(measures[1].offset) if measures and float(measures[0].paddingLeft) > 0 and len(measures) > 1 else 0.0
    downbeats = np.arange(first, end - 1e-9, bar)
    beats = np.arange(first - beat * np.floor(first / beat + 1e-9), end - 1e-9, beat)
    notes = []
    for n in score.flatten().notes:
        for p in getattr(n, "pitches", ()):
            notes.append((float(n.offset), float(n.quarterLength), int(p.midi)))
    tempo = ((0.0, bpm),) if tempo_step is None else ((0.0, bpm), (float(downbeats[len(downbeats) // 2]), bpm * tempo_step))
    return Case(name, ts.ratioString, notes, beats, downbeats, tempo)


def render(case: Case, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(samples, beat times, downbeat times) of the case's first `seconds`."""
    starts = quarters_to_seconds(np.array([n[0] for n in case.notes]), case.tempo)
    ends = quarters_to_seconds(np.array([n[0] + n[1] for n in case.notes]), case.tempo)
    total = min(seconds, float(ends.max()) + 0.5)
    out = np.zeros(int(total * SAMPLE_RATE) + 1)
    for (_, _, pitch), t0, t1 in zip(case.notes, starts, ends):
        if t0 >= total:
            continue
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        length = min(t1 - t0, total - t0) + 0.05
        t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        env = np.minimum(1.0, t / 0.005) * np.exp(-t / DECAY) * np.clip((length - t) / 0.05, 0.0, 1.0)
        tone = sum(a * np.sin(2 * np.pi * f0 * k * t) for k, a in enumerate(HARMONICS, start=1) if f0 * k < SAMPLE_RATE / 2)
        i = int(round(t0 * SAMPLE_RATE))
        n = min(len(t), len(out) - i)
        out[i : i + n] += GAIN * (env * tone)[:n]
    out = (out / max(1e-9, np.abs(out).max()) * 0.8).astype(np.float32)
    beats = quarters_to_seconds(case.beats_q, case.tempo)
    downbeats = quarters_to_seconds(case.downbeats_q, case.tempo)
    return out, beats[beats < total - 0.1], downbeats[downbeats < total - 0.1]


def corpus_cases() -> list[Case]:
    """A fixed, deterministic selection of the corpus (the first pieces of each kind in path order)."""
    from music21 import corpus

    cases = []
    chorales = sorted(str(p) for p in corpus.getComposer("bach") if str(p).endswith(".mxl"))
    found = {"4/4": 0, "3/4": 0}
    for path in chorales:
        score = corpus.parse(path)
        meter = score.recurse().getElementsByClass("TimeSignature")[0].ratioString
        if meter in found and found[meter] < (5 if meter == "4/4" else 3) and len(score.parts) >= 4:
            step = 1.2 if found[meter] == 1 else None
            cases.append(case_from_score(f"chorale {Path(path).stem} {meter}" + (" (tempo 84->101)" if step else ""), score, 84.0, step))
            found[meter] += 1
        if all(v >= (5 if k == "4/4" else 3) for k, v in found.items()):
            break
    for meter, count, bpm in (("6/8", 5, 165.0), ("3/4", 3, 132.0)):
        hits = sorted(corpus.search(meter, "timeSignature"), key=lambda m: (str(m.sourcePath), str(m.number)))
        taken = 0
        for entry in hits:
            if taken >= count:
                break
            try:
                score = entry.parse()
            except Exception:
                continue
            if not hasattr(score, "parts") or not len(score.parts) or len(list(score.parts[0].getElementsByClass("Measure"))) < 12:
                continue
            step = 1.15 if taken == 1 else None
            label = f"folk {Path(str(entry.sourcePath)).stem} #{entry.number} {meter}" + (" (tempo step)" if step else "")
            cases.append(case_from_score(label, score, bpm, step))
            taken += 1
    return cases


def bars_per_meter(meter: str) -> int:
    num, den = map(int, meter.split("/"))
    return num // 3 if den == 8 and num in (6, 9, 12) else num


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ["librosa"] + (["madmom"] if audio.madmom_available() else [])
    parser.add_argument("--trackers", nargs="+", default=default)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    import soundfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(corpus_cases()):
            samples, beats, downbeats = render(case, args.seconds)
            path = Path(tmp) / f"c{k}.wav"
            soundfile.write(path, samples, SAMPLE_RATE)
            for t in args.trackers:
                t0 = time.perf_counter()
                a = audio.analyze_file(path, audio.AnalysisSettings(tracker=t))
                row = {
                    "case": case.name, "meter": case.meter, "tracker": t, "seconds": round(len(samples) / SAMPLE_RATE, 1),
                    "beat_f": f_measure(beats, a.beats), "beat_f_any": any_level_f(beats, a.beats),
                    "downbeat_f": f_measure(downbeats, a.downbeats), "meter_found": a.meter, "meter_ok": a.beats_per_bar == bars_per_meter(case.meter),
                    "confidence": a.meter_confidence, "run_s": time.perf_counter() - t0,
                }
                rows.append(row)
                print(f"{case.name:48s} {t:8s} beat {row['beat_f']:.3f} (any {row['beat_f_any']:.3f}) downbeat {row['downbeat_f']:.3f} "
                      f"meter {a.meter or '-'} ({row['confidence']:.2f})", flush=True)
    for t in args.trackers:
        print(f"\n{t}: | meter | pieces | beat F | beat F any level | downbeat F | meter right |\n|---|---|---|---|---|---|")
        for meter in sorted({r["meter"] for r in rows}) + ["all"]:
            sel = [r for r in rows if r["tracker"] == t and (meter == "all" or r["meter"] == meter)]
            if sel:
                print(f"| {meter} | {len(sel)} | {np.mean([r['beat_f'] for r in sel]):.3f} | {np.mean([r['beat_f_any'] for r in sel]):.3f} | "
                      f"{np.mean([r['downbeat_f'] for r in sel]):.3f} | {sum(r['meter_ok'] for r in sel)}/{len(sel)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
