"""latentwalk: beat-synced prompt-travel music videos from a YAML timeline."""

__version__ = "0.1.0"

from latentwalk.api import analyze_audio, plan, render  # noqa: E402
from latentwalk.errors import UserError  # noqa: E402
from latentwalk.timeline import load_timeline, parse_timeline  # noqa: E402

__all__ = ["analyze_audio", "load_timeline", "parse_timeline", "plan", "render", "UserError", "__version__"]
