"""Exact beat grids from a tempo map: rows of (time, bpm, meter), as a DAW exports them.

`bpm` counts quarter notes per minute, as DAWs and MIDI files do; the grid's beats are the beat a
listener taps: the meter's note value (a quarter in 3/4, a half in 2/2), and the dotted quarter
in compound meters (6/8, 9/8, 12/8: 2, 3, 4 beats to the bar). Beat times are the row's time
plus whole beat periods, in float64, so a grid is the same to the bit wherever it is computed.
"""

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from latentwalk.errors import UserError

DEFAULT_BPM = 120.0  # a MIDI file without tempo events plays at 120 quarter notes per minute
DEFAULT_METER = (4, 4)
COMPOUND = (6, 9, 12)  # numerators over 8 (or 16) whose beat is a dotted note: three of the meter's notes
MAX_ROWS = 100_000
MAX_BPM = 2000.0
_METER = re.compile(r"^\s*(\d{1,2})\s*(?:/\s*(\d{1,2}))?\s*$")


@dataclass(frozen=True)
class TempoSection:
    time: float  # seconds from the map's zero where this tempo (and meter) starts
    bpm: float  # quarter notes per minute
    numerator: int = 4
    denominator: int = 4

    @property
    def beats_per_bar(self) -> int:
        return meter_beats(self.numerator, self.denominator)[0]

    @property
    def period(self) -> float:
        """Seconds per tapped beat."""
        return 60.0 / self.bpm * meter_beats(self.numerator, self.denominator)[1]

    @property
    def meter(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class Grid:
    beats: np.ndarray  # (N,) beat times, seconds
    downbeats: np.ndarray  # (D,) bar start times, a subset of beats
    bar_starts: np.ndarray  # (D,) beat index of each bar start
    meters: tuple[str, ...]  # the meter of each section, in order ("3/4", "6/8", ...)

    @property
    def beats_per_bar(self) -> int:
        """Beats in the first whole bar (the meter a single-meter song has throughout)."""
        return int(self.bar_starts[1] - self.bar_starts[0]) if len(self.bar_starts) > 1 else 4


def meter_beats(numerator: int, denominator: int) -> tuple[int, float]:
    """(tapped beats per bar, quarter notes per tapped beat) of a meter: 6/8 → (2, 1.5), 3/4 → (3, 1.0)."""
    if denominator >= 8 and numerator in COMPOUND:
        return numerator // 3, 3 * 4.0 / denominator
    return numerator, 4.0 / denominator


def parse_meter(value: object) -> tuple[int, int] | None:
    """(numerator, denominator) of '6/8', '3/4', 3 (= 3/4), or None when it is none of these."""
    if isinstance(value, bool):
        return None
    m = _METER.match(str(value)) if isinstance(value, (str, int)) else None
    if not m:
        return None
    num, den = int(m.group(1)), int(m.group(2) or 4)
    return (num, den) if num >= 1 and den in (1, 2, 4, 8, 16, 32) else None


def grid(sections: list[TempoSection], end: float) -> Grid:
    """Beats and bar starts of `sections` (in time order) from the first section's time up to `end` seconds.

    Each section lays beats from its own time at its period; a section whose meter differs from
    the one before starts a bar, one with the same meter (a tempo change) keeps counting the bar.
    """
    beats: list[np.ndarray] = []
    bar_starts: list[int] = []
    count, position = 0, 0  # beats so far; the next beat's place in its bar
    for i, s in enumerate(sections):
        stop = sections[i + 1].time if i + 1 < len(sections) else max(end, s.time)
        n = int(np.ceil((stop - s.time) / s.period - 1e-9)) if i + 1 < len(sections) else int(np.floor((stop - s.time) / s.period + 1e-9)) + 1
        n = max(n, 1)
        if i == 0 or (s.numerator, s.denominator) != (sections[i - 1].numerator, sections[i - 1].denominator):
            position = 0
        times = s.time + np.arange(n, dtype=np.float64) * s.period
        bpb = s.beats_per_bar
        bar_starts += [count + k for k in range(n) if (position + k) % bpb == 0]
        position = (position + n) % bpb
        count += n
        beats.append(times)
    all_beats = np.concatenate(beats) if beats else np.zeros(0)
    starts = np.asarray(bar_starts, dtype=int)
    return Grid(all_beats, all_beats[starts], starts, tuple(s.meter for s in sections))


def shifted(g: Grid, offset: float, duration: float | None) -> Grid:
    """The grid moved by `offset` seconds (clip time = map time + offset), keeping beats in [0, duration]."""
    beats = g.beats + offset if offset else g.beats
    keep = (beats >= -1e-9) & (beats <= (duration if duration is not None else np.inf) + 1e-9)
    index = np.flatnonzero(keep)
    if not len(index):
        return Grid(np.zeros(0), np.zeros(0), np.zeros(0, int), g.meters)
    first = index[0]
    starts = g.bar_starts[(g.bar_starts >= first) & (g.bar_starts <= index[-1])] - first
    kept = beats[index[0] : index[-1] + 1]
    return Grid(kept, kept[starts], starts, g.meters)


# Reading a tempo map file -----------------------------------------------------------------


def read_tempo_map(path: Path) -> list[TempoSection]:
    """Rows of a .yaml/.yml (a list of {time, bpm, meter}) or .csv (header time,bpm,meter) tempo map, checked."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the tempo map: {e}") from None
    rows = _yaml_rows(path, text) if path.suffix.lower() in (".yaml", ".yml") else _csv_rows(path, text)
    if not rows:
        raise UserError(f"{path}: the tempo map has no rows (expected rows of time, bpm, meter)")
    if len(rows) > MAX_ROWS:
        raise UserError(f"{path}: the tempo map has {len(rows):,} rows, more than {MAX_ROWS:,}")
    sections: list[TempoSection] = []
    for line, row in rows:
        where = f"{path}:{line}"
        unknown = sorted(set(row) - {"time", "bpm", "meter"})
        if unknown:
            raise UserError(f"{where}: {unknown[0]}: unknown column (expected time, bpm, meter)")
        time = _number(row.get("time"), f"{where}: time", minimum=0.0)
        bpm = _number(row.get("bpm", sections[-1].bpm if sections else None), f"{where}: bpm", minimum=0.0, exclusive=True)
        if bpm > MAX_BPM:
            raise UserError(f"{where}: bpm: must be at most {MAX_BPM:g}, got {bpm:g}")
        meter = row.get("meter")
        parsed = parse_meter(meter) if meter not in (None, "") else ((sections[-1].numerator, sections[-1].denominator) if sections else DEFAULT_METER)
        if parsed is None:
            raise UserError(f"{where}: meter: expected a meter such as 4/4, 3/4, 6/8 or a number of beats, got {meter!r}")
        if sections and time <= sections[-1].time:
            raise UserError(
                f"{where}: time: {time:g}s is not after the previous row's {sections[-1].time:g}s; rows must be in time order"
            )
        sections.append(TempoSection(time, bpm, *parsed))
    return sections


def _number(value: object, field: str, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"{field}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise UserError(f"{field}: expected a finite number, got {value!r}")
    if value < minimum or exclusive and value == minimum:
        raise UserError(f"{field}: must be {'greater than' if exclusive else 'at least'} {minimum:g}, got {value:g}")
    return float(value)


def _yaml_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if isinstance(data, dict) and "tempo_map" in data:
        data = data["tempo_map"]
        node = next(v for k, v in node.value if k.value == "tempo_map")
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise UserError(f"{path}: expected a list of rows such as - {{time: 0, bpm: 120, meter: 4/4}}")
    return [(item.start_mark.line + 1, row) for item, row in zip(node.value, data)]


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    header = [h.strip().lower() for h in next(csv.reader([lines[0][1]]))]
    if "time" not in header:
        raise UserError(f"{path}:{lines[0][0]}: the first row must name the columns, e.g. time,bpm,meter (got {lines[0][1]!r})")
    rows = []
    for number, line in lines[1:]:
        cells = [c.strip() for c in next(csv.reader(io.StringIO(line)))]
        if len(cells) > len(header):
            raise UserError(f"{path}:{number}: {len(cells)} cells, but the header names {len(header)} columns")
        rows.append((number, {h: c for h, c in zip(header, cells) if c != ""}))
    return rows
