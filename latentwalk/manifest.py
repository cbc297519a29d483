"""The one manifest writer: what produced a video or a sweep, saved as JSON beside it.

Renders and sweeps build their own sections (plan, store, cells); the part every manifest
shares (library versions, timings, the command) and the write itself are here.
"""

import platform
import sys
from pathlib import Path

import numpy as np


def library_versions() -> dict[str, str]:
    """Versions that can change a render's numbers, from the packages' metadata (importing none of them)."""
    from importlib import metadata

    from latentwalk.version import __version__

    return {
        "latentwalk": __version__,
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in ("torch", "diffusers", "transformers")},
        "numpy": np.__version__,
    }


def provenance(timings: dict[str, float]) -> dict:
    """What every manifest records besides its own sections."""
    return {"versions": library_versions(), "timings": timings, "command": sys.argv}


def to_jsonable(value):
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write(path: Path, data: dict) -> Path:
    """Write the manifest atomically beside its outputs (never through a link, never over a user's file)."""
    from latentwalk import outputs

    return outputs.write_manifest(path, to_jsonable(data))
