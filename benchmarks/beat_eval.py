"""Beat-tracking evaluation on audio with exactly known beats, regenerated offline.

Two sets: synthesized drum patterns (half-time, swing, shuffle, 3/4, 5/4, a tempo ramp, a
silent lead-in) and MIDI pieces written here and rendered by fluidsynth with a General MIDI
soundfont (Debian: `apt-get install fluidsynth fluid-soundfont-gm`), their beats taken from
the tempo map. Scores: F-measure within ±70 ms (MIREX), at any metrical level (the beats,
double or half time), per track and mean, for each tracker.

    PYTHONPATH=. python benchmarks/beat_eval.py [--trackers librosa-0.1 librosa madmom] [--json out.json]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwalk import audio
from latentwalk.toy.soundtrack import SAMPLE_RATE, Track, _hat, _kick, _snare, write_wav

WINDOW = 0.07
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
PPQ = 480


# 1. Scoring ---------------------------------------------------------------------------------


def f_measure(reference: np.ndarray, estimated: np.ndarray, window: float = WINDOW) -> float:
    """Beat F-measure with one-to-one matching inside ±window."""
    if len(reference) == 0 or len(estimated) == 0:
        return 0.0
    used = np.zeros(len(estimated), dtype=bool)
    hits = 0
    for r in reference:
        candidates = np.where(~used & (np.abs(estimated - r) <= window))[0]
        if len(candidates):
            used[candidates[np.argmin(np.abs(estimated[candidates] - r))]] = True
            hits += 1
    if hits == 0:
        return 0.0
    precision, recall = hits / len(estimated), hits / len(reference)
    return 2 * precision * recall / (precision + recall)


def any_level_f(reference: np.ndarray, estimated: np.ndarray) -> float:
    """The best F-measure against the beats, double time or either half-time phase."""
    double = np.sort(np.concatenate([reference, (reference[:-1] + reference[1:]) / 2]))
    levels = [reference, double, reference[::2], reference[1::2]]
    return max(f_measure(level, estimated) for level in levels)


# 2. Drum patterns -----------------------------------------------------------------------------


def pattern_track(beat_times: np.ndarray, hits, lead_in: float = 0.0, seed: int = 0) -> Track:
    """Drums placed by `hits(i, t, period) -> [(sound, offset_in_beats, gain)]` at each beat."""
    rng = np.random.default_rng(seed)
    kick, snare = _kick(SAMPLE_RATE), _snare(SAMPLE_RATE, rng)
    beats = beat_times + lead_in
    out = np.zeros(int((beats[-1] + 1.5) * SAMPLE_RATE))
    periods = np.diff(np.append(beats, 2 * beats[-1] - beats[-2]))
    for i, (t, period) in enumerate(zip(beats, periods)):
        for sound, offset, gain in hits(i, period):
            s = {"k": kick, "s": snare, "h": _hat(SAMPLE_RATE, rng)}[sound]
            at = int(round((t + offset * period) * SAMPLE_RATE))
            n = min(len(s), len(out) - at)
            out[at : at + n] += gain * s[:n]
    out /= np.abs(out).max() / 0.9
    return Track(out.astype(np.float32), SAMPLE_RATE, 60 / np.median(periods), beats)


def steady(bpm: float, n: int) -> np.ndarray:
    return np.arange(n) * 60.0 / bpm


def ramp(bpm0: float, bpm1: float, n: int) -> np.ndarray:
    """Beat times whose tempo moves linearly from bpm0 to bpm1 over n beats."""
    tempi = np.linspace(bpm0, bpm1, n)
    return np.concatenate([[0.0], np.cumsum(60.0 / tempi[:-1])])


def drum_set() -> dict[str, Track]:
    eighths = lambda g: [("h", 0.0, g), ("h", 0.5, g)]  # noqa: E731
    rock = lambda i, p: [("k" if i % 2 == 0 else "s", 0.0, 0.9 if i % 2 == 0 else 0.5)] + eighths(0.25)  # noqa: E731
    return {
        "rock 4/4 120": pattern_track(steady(120, 48), rock),
        # kick on 1, snare on 3, hats on eighths: a tracker hearing the snare as the beat halves it
        "half-time 140": pattern_track(steady(140, 64), lambda i, p: ([("k", 0, 0.9)] if i % 4 == 0 else [("s", 0, 0.6)] if i % 4 == 2 else []) + eighths(0.2)),
        "swing 8ths 110": pattern_track(steady(110, 48), lambda i, p: [("k" if i % 2 == 0 else "s", 0, 0.8), ("h", 0, 0.25), ("h", 2 / 3, 0.2)]),
        "shuffle 96": pattern_track(steady(96, 40), lambda i, p: [("k" if i % 2 == 0 else "s", 0, 0.8), ("h", 0, 0.3), ("s", 2 / 3, 0.12), ("h", 2 / 3, 0.2)]),
        "waltz 3/4 150": pattern_track(steady(150, 72), lambda i, p: [("k", 0, 0.9)] if i % 3 == 0 else [("s", 0, 0.35), ("h", 0, 0.2)]),
        "5/4 130": pattern_track(steady(130, 60), lambda i, p: [("k" if i % 5 in (0, 3) else "s", 0, 0.8 if i % 5 in (0, 3) else 0.45)] + eighths(0.2)),
        "ramp 100->140": pattern_track(ramp(100, 140, 64), rock),
        "ramp 132->96": pattern_track(ramp(132, 96, 56), rock),
        "lead-in 3s 128": pattern_track(steady(128, 48), rock, lead_in=3.0),
        "16ths breakbeat 174": pattern_track(steady(174, 96), lambda i, p: [("k", 0, 0.9)] if i % 4 == 0 else [("s", 0, 0.6)] if i % 4 in (1, 3) else [("k", 0.5, 0.6), ("h", 0, 0.2)]),
    }


# 3. MIDI pieces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    name: str
    beats_per_bar: int
    bars: int
    tempo: tuple[tuple[float, float], ...]  # (beat, bpm): tempo from that beat on
    notes: tuple[tuple[int, int, float, float, int], ...]  # (channel, pitch, start beat, length beats, velocity)
    programs: dict[int, int]


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_bytes(piece: Piece) -> bytes:
    """A format-0 standard MIDI file: tempo map, time signature, programs, notes."""
    events = []  # (tick, order, bytes)
    for beat, bpm in piece.tempo:
        us = int(round(60e6 / bpm))
        events.append((int(round(beat * PPQ)), 0, b"\xff\x51\x03" + us.to_bytes(3, "big")))
    events.append((0, 0, bytes([0xFF, 0x58, 4, piece.beats_per_bar, 2, 24, 8])))
    for ch, prog in piece.programs.items():
        events.append((0, 1, bytes([0xC0 | ch, prog])))
    for ch, pitch, start, length, vel in piece.notes:
        events.append((int(round(start * PPQ)), 3, bytes([0x90 | ch, pitch, vel])))
        events.append((int(round((start + length) * PPQ)), 2, bytes([0x80 | ch, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track, now = b"", 0
    for tick, _, data in events:
        track += vlq(tick - now) + data
        now = tick
    track += b"\x00\xff\x2f\x00"
    return b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1]) + PPQ.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track


def tempo_map_beats(piece: Piece) -> np.ndarray:
    """Seconds of every beat from the tempo map."""
    n = piece.bars * piece.beats_per_bar
    times, t = [], 0.0
    changes = sorted(piece.tempo)
    for b in range(n):
        times.append(t)
        bpm = [bpm for beat, bpm in changes if beat <= b][-1]
        t += 60.0 / bpm
    return np.array(times)


def compose(name: str, seed: int, bpb: int, bars: int, tempo, drums: bool, style: str) -> Piece:
    """A small piece: chords, bass, a melody and (optionally) GM drums, in a given style."""
    rng = np.random.default_rng(seed)
    key = 48 + int(rng.integers(0, 12))
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    progression = [[0, 4, 7], [7, 11, 14], [9, 12, 16], [5, 9, 12]]
    notes = []
    for bar in range(bars):
        chord = progression[bar % 4]
        b0 = bar * bpb
        if style == "arpeggio":  # piano eighths, the only rhythm there is
            for k in range(bpb * 2):
                notes.append((0, key + 12 + chord[k % 3] + 12 * (k // 3 % 2), b0 + k / 2, 0.5, 70 + 20 * (k == 0)))
            notes.append((0, key - 12 + chord[0], b0, bpb, 80))
        elif style == "pads":  # sustained strings, melody in quarters
            for p in chord:
                notes.append((1, key + p, b0, bpb, 60))
            for k in range(bpb):
                notes.append((2, key + 24 + int(scale[rng.integers(0, 7)]), b0 + k, 0.9, 85))
        elif style == "waltz":
            notes.append((3, key - 12 + chord[0], b0, 1, 95))
            for k in range(1, bpb):
                for p in chord:
                    notes.append((0, key + 12 + p, b0 + k, 0.5, 65))
        else:  # "band": bass, chords, syncopated melody
            for k in range(bpb):
                notes.append((3, key - 12 + chord[0] + (7 if k % 2 else 0), b0 + k, 0.45, 100))
                if style == "funk":
                    notes.append((3, key - 12 + chord[0], b0 + k + 0.75, 0.2, 80))
            for p in chord:
                notes.append((4, key + 12 + p, b0 + (0.5 if style == "funk" else 0), 1.5, 70))
                notes.append((4, key + 12 + p, b0 + 2.5 if bpb >= 4 else b0 + 1.5, 1.0, 60))
            for k in range(bpb * 2):
                if rng.random() < 0.6:
                    notes.append((2, key + 24 + int(scale[rng.integers(0, 7)]), b0 + k / 2, 0.45, 80))
        if drums:
            for k in range(bpb):
                kick = k == 0 or (bpb == 4 and k == 2 and style != "halftime")
                snare = (bpb == 4 and k in (1, 3) and style != "halftime") or (style == "halftime" and k == 2) or (bpb == 3 and k > 0)
                if kick:
                    notes.append((9, 36, b0 + k, 0.25, 110))
                if snare:
                    notes.append((9, 38, b0 + k, 0.25, 90))
                for h in ((0, 2 / 3) if style == "shuffle" else (0, 0.5)):
                    notes.append((9, 42, b0 + k + h, 0.1, 60 if h else 75))
    programs = {0: 0, 1: 48, 2: 73 if style == "pads" else 65, 3: 33, 4: 4}
    return Piece(name, bpb, bars, tuple(tempo), tuple(notes), programs)


def music_set() -> dict[str, Piece]:
    pieces = [
        compose("pop band 4/4 112", 1, 4, 14, [(0, 112)], True, "band"),
        compose("funk 4/4 98", 2, 4, 12, [(0, 98)], True, "funk"),
        compose("half-time 4/4 144", 3, 4, 16, [(0, 144)], True, "halftime"),
        compose("shuffle 4/4 88", 4, 4, 10, [(0, 88)], True, "shuffle"),
        compose("waltz 3/4 168 (no drums)", 5, 3, 24, [(0, 168)], False, "waltz"),
        compose("piano arpeggio 4/4 76 (no drums)", 6, 4, 9, [(0, 76)], False, "arpeggio"),
        compose("strings + flute 4/4 92 (no drums)", 7, 4, 11, [(0, 92)], False, "pads"),
        compose("band, tempo steps 104->124", 8, 4, 16, [(0, 104), (16, 110), (32, 117), (48, 124)], True, "band"),
        compose("band 3/4 132", 9, 3, 20, [(0, 132)], True, "band"),
        compose("band no drums 4/4 120", 10, 4, 14, [(0, 120)], False, "band"),
    ]
    return {p.name: p for p in pieces}


def render_midi(piece: Piece, folder: Path, soundfont: str) -> Path:
    mid, wav = folder / "piece.mid", folder / f"{abs(hash(piece.name))}.wav"
    mid.write_bytes(midi_bytes(piece))
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SAMPLE_RATE), "-F", str(wav), soundfont, str(mid)], check=True, capture_output=True)
    return wav


# 4. Trackers --------------------------------------------------------------------------------


def librosa_v01(path: Path) -> np.ndarray:
    """latentwalk 0.1's tracker: librosa.beat.beat_track on the default onset envelope."""
    import librosa

    y, _ = librosa.load(str(path), sr=SAMPLE_RATE)
    onset = librosa.onset.onset_strength(y=y, sr=SAMPLE_RATE, hop_length=512)
    _, beats = librosa.beat.beat_track(onset_envelope=onset, sr=SAMPLE_RATE, hop_length=512, units="time", trim=False)
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=512)[0]
    return audio.audible_beats(np.asarray(beats, dtype=float), rms)


def run_tracker(name: str, path: Path) -> np.ndarray:
    if name == "librosa-0.1":
        return librosa_v01(path)
    return audio.analyze_file(path, audio.AnalysisSettings(tracker=name)).beats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ["librosa-0.1", "librosa"] + (["madmom"] if audio.madmom_available() else [])
    parser.add_argument("--trackers", nargs="+", default=default)
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args()
    soundfont = next((s for s in SOUNDFONTS if Path(s).is_file()), None)
    rows: list[tuple[str, str, dict[str, float]]] = []
    seconds = {t: 0.0 for t in args.trackers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases: list[tuple[str, str, Path, np.ndarray]] = []
        for name, track in drum_set().items():
            cases.append(("drums", name, write_wav(track, folder / f"d{len(cases)}.wav"), track.beats))
        if soundfont and shutil.which("fluidsynth"):
            for name, piece in music_set().items():
                cases.append(("music", name, render_midi(piece, folder, soundfont), tempo_map_beats(piece)))
        else:
            print("fluidsynth or a GM soundfont is missing: music set skipped", file=sys.stderr)
        for group, name, path, truth in cases:
            scores = {}
            for t in args.trackers:
                t0 = time.perf_counter()
                scores[t] = any_level_f(truth, run_tracker(t, path))
                seconds[t] += time.perf_counter() - t0
            rows.append((group, name, scores))
            print(f"{group:6s} {name:36s} " + " ".join(f"{scores[t]:.3f}" for t in args.trackers), flush=True)
    print(f"\n| set | track | {' | '.join(args.trackers)} |\n|---|---|{'---|' * len(args.trackers)}")
    for group, name, scores in rows:
        print(f"| {group} | {name} | " + " | ".join(f"{scores[t]:.3f}" for t in args.trackers) + " |")
    for group in ("drums", "music"):
        sel = [s for g, _, s in rows if g == group]
        if sel:
            print(f"| **{group} mean** | {len(sel)} tracks | " + " | ".join(f"**{np.mean([s[t] for s in sel]):.3f}**" for t in args.trackers) + " |")
    print("\ntracker seconds: " + ", ".join(f"{t} {s:.1f}" for t, s in seconds.items()))
    if args.json:
        Path(args.json).write_text(json.dumps([{"set": g, "track": n, **s} for g, n, s in rows], indent=1))


if __name__ == "__main__":
    main()
