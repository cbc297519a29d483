"""Stubs for stable-diffusion-videos' imports that its walk() does not need, so it runs beside a CPU torch.

Imported by benchmarks/nateraw_walk.py before the package; a stub is only put in place where the
real module cannot be imported, so an environment that has them runs them untouched. torchvision
is the one walk() does use (its mp4 writer): PyPI has no CPU torchvision for a CPU torch wheel
(the CUDA one fails to load its operators), so the two functions it calls are given here,
writing with PyAV as torchvision's own write_video does.
"""

import importlib
import importlib.machinery
import sys
import types

OPTIONAL = ("realesrgan", "basicsr", "basicsr.archs", "basicsr.archs.rrdbnet_arch", "gradio", "cv2")


def _module(name: str) -> types.ModuleType:
    """An empty module with a spec, so libraries probing with importlib.util.find_spec see it."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _write_video(filename, video_array, fps, video_codec="libx264", options=None, **audio):
    """torchvision.io.write_video without audio: (T, H, W, C) uint8 frames → an H.264 mp4 via PyAV."""
    import av
    import numpy as np

    frames = np.asarray(video_array)
    with av.open(filename, mode="w") as container:
        stream = container.add_stream(video_codec, rate=round(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = (options or {}).get("pix_fmt", "yuv420p")
        stream.options = {k: v for k, v in (options or {}).items() if k != "pix_fmt"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _pil_to_tensor(image):
    """torchvision.transforms.functional.pil_to_tensor: a PIL image → (C, H, W) uint8 tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous()


def _torchvision_stub() -> None:
    modules = {name: _module(name) for name in ("torchvision", "torchvision.io", "torchvision.transforms",
                                               "torchvision.transforms.functional")}
    modules["torchvision.io"].write_video = _write_video
    modules["torchvision.transforms.functional"].pil_to_tensor = _pil_to_tensor
    modules["torchvision"].io = modules["torchvision.io"]
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)


def install() -> list[str]:
    """Register an empty module for each optional import that fails; returns the stubbed names."""
    stubbed = []
    for name in OPTIONAL:
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or a broken optional dependency failing at import
            sys.modules[name] = _module(name)
            stubbed.append(name)
    try:
        importlib.import_module("torchvision")
    except Exception:
        # diffusers and transformers decide once (at import; on a cached first call) whether
        # torchvision is there: let them see that it is not, before the stub appears.
        importlib.import_module("diffusers.utils.import_utils")
        importlib.import_module("transformers.utils.import_utils").is_torchvision_available()
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # a half-imported CUDA build
        _torchvision_stub()
        stubbed.append("torchvision")
    importlib.import_module("transformers")
    transformers = sys.modules["transformers"]  # the lazy module puts a new object there on first use
    try:
        from transformers import CLIPFeatureExtractor  # noqa: F401
    except ImportError:  # removed in transformers 5; it was CLIPImageProcessor's old name
        image_processor = transformers.CLIPImageProcessor
        setattr(sys.modules["transformers"], "CLIPFeatureExtractor", image_processor)
        stubbed.append("transformers.CLIPFeatureExtractor")
    return stubbed
