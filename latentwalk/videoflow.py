"""Video to video with temporal consistency (`video: {flow: true}`): each frame follows the last.

As Deforum's hybrid video mode: frame k's init is the previous output warped by the source's
own motion from frame k-1 to k (OpenCV's dense optical flow, Farnebäck 2003; no model
weights), blended with source frame k by `flow_blend`, then img2img at frame k's strength
under its own prompt and seed. Frame 0 starts from its source frame alone, so it is exactly
the frame an independent video-to-video render makes.

So frames form one chain, like feedback mode's (feedback.py): frame k's key is
sha256(key k-1, frame k's own key, the blend), a stored frame is valid as it is (its key covers
its whole past), and a resumed render starts at the first missing frame from its stored
predecessor, whose bytes an unbroken run saw too. A chain is sequential: one frame per UNet
call (batch_size defaults to 1); the Ray farm does not render chains of this kind yet.
"""

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# Farnebäck's parameters as Deforum's hybrid mode passes them: pyramid scale 0.5, 3 levels,
# window 15, 3 iterations, poly_n 5, poly_sigma 1.2.
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def chain_keys(own_keys: Sequence[str], blend: float) -> tuple[str, ...]:
    """The store key of every frame: frame 0's own key, then sha256 of the previous key, the frame's own and the blend."""
    keys: list[str] = []
    for k, own in enumerate(own_keys):
        keys.append(own if k == 0 else hashlib.sha256(f"flow\n{keys[-1]}\n{own}\n{blend!r}".encode()).hexdigest())
    return tuple(keys)


@dataclass(frozen=True)
class FlowWork:
    keys: tuple[str, ...]  # chain keys, in video order (what stream_video writes)


@dataclass(frozen=True)
class FlowPlan:
    """A flow render: every frame's own inputs and chain key against the store (api's ChainPlan for feedback)."""

    frames: tuple  # (n,) frames.FrameInputs, each with its source frame as init
    work: FlowWork
    missing: tuple[int, ...]  # frames to render, in order
    blend: float

    def missing_keys(self) -> set[str]:
        return {self.work.keys[i] for i in self.missing}

    def keep(self) -> set[str]:
        return set(self.work.keys)

    def manifest(self, timeline) -> dict:
        first = self.missing[0] if self.missing else None
        return {"flow": {"blend": self.blend, "frames": len(self.frames), "rendered": len(self.missing), "resumed_at": first}}


def flow_plan(frames: Sequence, own_keys: Sequence[str], blend: float, stored: Callable[[str], bool]) -> FlowPlan:
    keys = chain_keys(own_keys, blend)
    return FlowPlan(tuple(frames), FlowWork(keys), tuple(i for i, key in enumerate(keys) if not stored(key)), blend)


def backward_flow(source: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32: for each pixel of `source`, where it was in `previous` (relative, x then y)."""
    import cv2

    grey = [cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) for image in (source, previous)]
    return cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, *FARNEBACK)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 `image` moved along a backward flow (bilinear, edges reflected)."""
    import cv2

    height, width = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=-1)
    where = grid + flow
    return cv2.remap(np.ascontiguousarray(image), where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def flow_init(previous_output: np.ndarray, previous_source: np.ndarray, source: np.ndarray, blend: float) -> np.ndarray:
    """(H, W, 3) uint8: the previous output warped by the source's motion, blended with the source frame."""
    warped = warp(previous_output, backward_flow(source, previous_source)).astype(np.float32)
    return np.clip((1.0 - blend) * warped + blend * source.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def render_flow(
    plan: FlowPlan,
    images,
    render: Callable[[object, np.ndarray | None], np.ndarray],
    load: Callable[[str], np.ndarray | None],
    save: Callable[[str, np.ndarray], None],
) -> None:
    """Render the plan's missing frames in order. `images`: control.InputImages (the source frames);
    `render(row, init)`: one frame as uint8, from its own source frame when init is None."""
    latest: tuple[int, np.ndarray] | None = None
    for k in plan.missing:
        row = plan.frames[k]
        init = None
        if k > 0:
            previous = latest[1] if latest is not None and latest[0] == k - 1 else load(plan.work.keys[k - 1])
            if previous is None:
                raise RuntimeError(f"video flow: frame {k - 1} is neither stored nor rendered, so frame {k} cannot follow it")
            init = flow_init(previous, images.load(plan.frames[k - 1].init), images.load(row.init), plan.blend)
        image = render(row, init)
        save(plan.work.keys[k], image)
        latest = (k, image)


def engine_render(backend, settings) -> Callable[[object, np.ndarray | None], np.ndarray]:
    """`render` for render_flow through the engine: the row as it is, or with `init` as its init image."""
    from dataclasses import replace

    from latentwalk.engine import image_key, render_frames

    def render(row, init: np.ndarray | None) -> np.ndarray:
        out: list[np.ndarray] = []
        inits = None
        if init is not None:
            key = image_key(init)
            row, inits = replace(row, init=key), {key: init}
        render_frames(backend, [row], settings, lambda batch, pixels: out.append(pixels[0]), init_images=inits, overlap=False)
        return out[0]

    return render
