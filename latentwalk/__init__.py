"""latentwalk: beat-synced prompt-travel music videos from a YAML timeline.

The API loads on first use: `import latentwalk` stays light (no torch, no audio libraries),
and torch loads where rendering starts.
"""

from latentwalk.errors import UserError
from latentwalk.version import __version__

__all__ = ["analyze_audio", "load_timeline", "parse_timeline", "plan", "render", "UserError", "__version__"]


def __getattr__(name: str):
    if name in ("analyze_audio", "plan", "render"):
        from latentwalk import api

        return getattr(api, name)
    if name in ("load_timeline", "parse_timeline"):
        from latentwalk import timeline

        return getattr(timeline, name)
    raise AttributeError(f"module 'latentwalk' has no attribute {name!r}")
