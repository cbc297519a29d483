"""A synthesized soundtrack with known beat times: drums, bass and a pad at a set tempo.

Used by the demo (`python -m latentwalk.toy.soundtrack configs/demo.wav`) and by the beat
tracking tests, which need ground truth that no recorded track gives.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
DEMO_BPM = 120.0
DEMO_BARS = 8
BASS_NOTES = (55.0, 55.0, 65.41, 49.0)  # A1 A1 C2 G1, one per bar
PAD_CHORDS = ((220.0, 261.63, 329.63), (220.0, 261.63, 329.63), (261.63, 329.63, 392.0), (196.0, 246.94, 293.66))


@dataclass(frozen=True)
class Track:
    samples: np.ndarray  # (N,) float32 in [-1, 1]
    sample_rate: int
    bpm: float
    beats: np.ndarray  # beat times in seconds (every kick and snare)


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    freq = 50 + 100 * np.exp(-t * 30)  # pitch drop gives the thump
    click = np.random.default_rng(1).standard_normal(len(t)) * np.exp(-t * 400)  # the beater's attack
    return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t * 12) + 0.5 * click


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.2 * sr)) / sr
    return (0.7 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 180 * t)) * np.exp(-t * 20)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.05 * sr)) / sr
    return np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t * 80) * 0.3


def _place(out: np.ndarray, sound: np.ndarray, at: float, sr: int, gain: float) -> None:
    i = int(round(at * sr))
    n = min(len(sound), len(out) - i)
    if n > 0:
        out[i : i + n] += gain * sound[:n]


def drum_track(bpm: float, bars: int, beats_per_bar: int = 4, seed: int = 0, lead_in: float = 0.0, musical: bool = False) -> Track:
    """Kick on beats 1 and 3, snare on 2 and 4, hats on eighths; `musical` adds bass and pad."""
    sr = SAMPLE_RATE
    rng = np.random.default_rng(seed)
    period = 60.0 / bpm
    n_beats = bars * beats_per_bar
    total = lead_in + n_beats * period + 1.0  # a second of tail so the last hit rings out
    out = np.zeros(int(total * sr))
    beats = lead_in + np.arange(n_beats) * period
    kick, snare = _kick(sr), _snare(sr, rng)
    for i, at in enumerate(beats):
        _place(out, kick if i % 2 == 0 else snare, at, sr, 0.9 if i % 2 == 0 else 0.4)
        _place(out, _hat(sr, rng), at + period / 2, sr, 0.25)
    if musical:
        bar_len = period * beats_per_bar
        for bar in range(bars):
            t0 = lead_in + bar * bar_len
            t = np.arange(int(bar_len * sr)) / sr
            note = BASS_NOTES[bar % len(BASS_NOTES)]
            bass = np.sin(2 * np.pi * note * t) * np.exp(-(t % period) * 4)  # re-struck each beat
            pad = sum(np.sin(2 * np.pi * f * t) for f in PAD_CHORDS[bar % len(PAD_CHORDS)])
            pad *= np.minimum(1.0, np.minimum(t, bar_len - t) / 0.3)  # soft attack and release
            _place(out, 0.35 * bass + 0.06 * pad, t0, sr, 1.0)
    out /= max(1e-9, np.abs(out).max()) / 0.9
    return Track(out.astype(np.float32), sr, bpm, beats)


def write_wav(track: Track, path: str | Path) -> Path:
    """16-bit PCM WAV, readable by librosa and ffmpeg."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), track.samples, track.sample_rate, subtype="PCM_16")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the demo soundtrack (drums, bass, pad).")
    parser.add_argument("out", nargs="?", default="configs/demo.wav")
    parser.add_argument("--bpm", type=float, default=DEMO_BPM)
    parser.add_argument("--bars", type=int, default=DEMO_BARS)
    args = parser.parse_args()
    track = drum_track(args.bpm, args.bars, musical=True)
    print(f"wrote {write_wav(track, args.out)}: {args.bars} bars at {args.bpm:g} bpm, {len(track.samples) / track.sample_rate:.2f}s")


if __name__ == "__main__":
    main()
