"""Stubs for stable-diffusion-videos' optional imports that its walk() never uses (upscaling, the web app).

Imported by benchmarks/nateraw_walk.py before the package; a stub is only put in place where the
real module cannot be imported, so an environment that has them runs them untouched.
"""

import importlib
import sys
import types

OPTIONAL = ("realesrgan", "basicsr", "basicsr.archs", "basicsr.archs.rrdbnet_arch", "gradio", "cv2")


def install() -> list[str]:
    """Register an empty module for each optional import that fails; returns the stubbed names."""
    stubbed = []
    for name in OPTIONAL:
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or a broken optional dependency failing at import
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    return stubbed
