"""The user's stems (drums.wav, bass.wav, ... exported beside the mix): checked against the mix,
analysed like it, their features named `rms.drums`, `onset.bass`, ... for tracks.

No separation model: the stems are the user's own files, which any DAW exports.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from latentwalk.audio import FEATURES, AnalysisSettings, cached_analysis
from latentwalk.errors import UserError

LENGTH_TOLERANCE = 0.05  # seconds: stems rendered from one session are the mix's length to the sample


def file_format(path: Path) -> tuple[float | None, int | None]:
    """(seconds, sample rate) from the file's header; (None, None) where libsndfile cannot read it."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        return float(info.duration), int(info.samplerate)
    except Exception:  # m4a, mp3 on old libsndfile, ...: the decoder reports real problems later
        return None, None


def check_stems(mix: Path, stems: tuple[tuple[str, Path], ...], where: dict[str, str]) -> None:
    """Every stem as long as the mix (within LENGTH_TOLERANCE) and at its sample rate; `where[name]` prefixes errors."""
    length, rate = file_format(mix)
    for name, path in stems:
        stem_length, stem_rate = file_format(path)
        if rate is not None and stem_rate is not None and stem_rate != rate:
            raise UserError(f"{where[name]}: {path.name} is at {stem_rate} Hz, the mix ({mix.name}) at {rate} Hz; export the stems at the mix's rate")
        if length is not None and stem_length is not None and abs(stem_length - length) > LENGTH_TOLERANCE:
            raise UserError(
                f"{where[name]}: {path.name} is {stem_length:.3f}s long, the mix ({mix.name}) {length:.3f}s; "
                "stems must start with the mix and be as long (export them from the same session)"
            )


def stem_features(stems: tuple[tuple[str, Path], ...], settings: AnalysisSettings, frames: int) -> dict[str, np.ndarray]:
    """FEATURES of every stem as `feature.name` (e.g. rms.drums), each cut or padded to the mix's `frames`."""
    out = {}
    for name, path in stems:
        analysis = cached_analysis(path, replace(settings, tracker="none"))
        for feature in FEATURES:
            values = np.asarray(analysis.features[feature], dtype=np.float32)[:frames]
            out[f"{feature}.{name}"] = np.pad(values, (0, frames - len(values)))
    return out
