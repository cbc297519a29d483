"""Output stage: frame interpolation. Denoise one frame in `factor`, make the frames between.

The outline (pure: frame numbers only) picks the frames the engine denoises, the anchors: frame
0, every keyframe's frame (so beat-locked keyframes never move), the frame nearest every beat when
a track is an expression (it may pulse there), the last frame of the video (or, with `loop`, none:
the frames after the last anchor travel on to frame 0) and, in feedback mode, the frame before
every cut (a chain's last). Between two fixed frames the anchors are spread evenly, at most
`factor` frames apart; the frames between are interpolated from their two anchors at weight
w = (frame - left) / (right - left).

Interpolated frames are kept in the frame store like any other, under a key of their method and
their two anchors' keys (`fill_key`), so a resumed render neither denoises nor interpolates again;
anchors are ordinary frames, bit-identical to a render without interpolation.

Every method has one signature, `f(a, b, weights) -> images`: a, b (H, W, 3) uint8, weights (k,)
in (0, 1), images (k, H, W, 3) uint8.
"""

import hashlib
import importlib.util
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from latentwalk.schedule import Plan
from latentwalk.timeline import InterpolateSpec, Timeline

Method = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# Bump when a method changes the pixels it makes: every stored in-between is then a miss.
FILL_VERSION = 1


@dataclass(frozen=True)
class Gap:
    """Frames strictly between two anchors (video frame numbers); `right` is n_frames for a loop's wrap to frame 0."""

    left: int
    right: int

    @property
    def frames(self) -> range:
        return range(self.left + 1, self.right)

    def weight(self, frame: int) -> float:
        return (frame - self.left) / (self.right - self.left)


@dataclass(frozen=True)
class Outline:
    n_frames: int
    anchors: tuple[int, ...]  # frames the engine denoises, ascending
    gaps: tuple[Gap, ...]  # the runs of interpolated frames between them

    def interpolated(self) -> int:
        return self.n_frames - len(self.anchors)


def fixed_frames(schedule: Plan, timeline: Timeline) -> set[int]:
    """Frames that are always denoised: 0, keyframes', beats' where a track is an expression, chain ends."""
    n = schedule.n_frames
    fixed = {0} | {k.frame for k in schedule.keyframes}
    if not wraps(schedule, timeline):
        fixed.add(n - 1)
    if reacts(timeline) and len(schedule.beats):
        beat_frames = np.round(np.asarray(schedule.beats) * schedule.fps).astype(int)
        fixed |= {int(f) for f in beat_frames if 0 <= f < n}
    if timeline.mode == "feedback":  # a chain's last frame: nothing is interpolated across a cut
        fixed |= {k.frame - 1 for k in schedule.keyframes if k.keyframe.cut and k.frame > 0}
    return fixed


def wraps(schedule: Plan, timeline: Timeline) -> bool:
    """A travel loop's last frames are interpolated toward frame 0; a feedback chain ends on its last frame."""
    return schedule.loop and timeline.mode == "travel"


def reacts(timeline: Timeline) -> bool:
    """True when some track is an expression (of time, beats or audio), not a constant."""
    values = [v for _, v in timeline.tracks] + [v for k in timeline.keyframes + timeline.lyrics for _, v in k.tracks]
    return any(not isinstance(v, (int, float)) for v in values)


def outline(n_frames: int, fixed: set[int], factor: int, loop: bool = False) -> Outline:
    """Anchors at the fixed frames and evenly between them, at most `factor` apart (a loop wraps to n_frames ≡ 0)."""
    ends = sorted(f for f in fixed if 0 <= f < n_frames)
    ends += [n_frames] if loop else []
    anchors: list[int] = []
    for start, stop in zip(ends, ends[1:]):
        parts = -(-(stop - start) // factor)  # ceil: every part at most `factor` frames
        anchors += [start + round(i * (stop - start) / parts) for i in range(parts)]
    if not loop:
        anchors.append(ends[-1])
    anchors = sorted(set(anchors))
    rights = anchors[1:] + ([n_frames] if loop else [])
    gaps = tuple(Gap(a, b) for a, b in zip(anchors, rights) if b - a > 1)
    return Outline(n_frames, tuple(anchors), gaps)


def timeline_outline(timeline: Timeline, schedule: Plan) -> Outline:
    """The outline of a planned timeline with `output.interpolate`, checked: some frame must be interpolated."""
    from latentwalk.errors import UserError

    spec: InterpolateSpec = timeline.output.interpolate
    out = outline(schedule.n_frames, fixed_frames(schedule, timeline), spec.factor, wraps(schedule, timeline))
    if not out.gaps:
        raise UserError(
            f"{timeline.at('output', 'interpolate', 'factor')}: factor {spec.factor} leaves no frame to interpolate: "
            f"all {schedule.n_frames} frames are keyframe{', beat' if reacts(timeline) else ''} or end frames; "
            "leave output.interpolate out"
        )
    return out


# --------------------------------------------------------------------------- keys and fills


def fill_key(method_id: str, key_a: str, key_b: str, weight: float) -> str:
    """The store key of an in-between: its method and the keys of its two anchors (which cover model and inputs)."""
    return hashlib.sha256(f"interpolate/{FILL_VERSION}\n{method_id}\n{key_a}\n{key_b}\n{weight!r}".encode()).hexdigest()


@dataclass(frozen=True)
class Fill:
    """The in-betweens of one gap: their keys, made from the anchors keyed `a` and `b`."""

    a: str
    b: str
    keys: tuple[str, ...]
    weights: tuple[float, ...]


def video_fills(out: Outline, anchor_keys: Sequence[str], method_id: str) -> tuple[tuple[str, ...], tuple[Fill, ...]]:
    """Every video frame's key (anchors' and in-betweens') and the fills that make the in-betweens."""
    keys: list[str] = [""] * out.n_frames
    for frame, key in zip(out.anchors, anchor_keys):
        keys[frame] = key
    fills = []
    for gap in out.gaps:
        a, b = keys[gap.left], keys[gap.right % out.n_frames]
        weights = tuple(gap.weight(f) for f in gap.frames)
        fill = Fill(a, b, tuple(fill_key(method_id, a, b, w) for w in weights), weights)
        for f, key in zip(gap.frames, fill.keys):
            keys[f] = key
        fills.append(fill)
    return tuple(keys), tuple(fills)


class Filler:
    """Makes each fill once both its anchors are there: as they arrive, or from the store."""

    def __init__(self, fills: Sequence[Fill], missing: set[str], load: Callable[[str], np.ndarray], method: Callable[[], Method]):
        self.all = tuple(fills)
        self.pending = [f for f in fills if any(k in missing for k in f.keys)]
        self.load, self.method = load, method
        self.recent: dict[str, np.ndarray] = {}  # anchors that arrived and a fill still needs

    def arrived(self, keys: Sequence[str], images: np.ndarray | None, ready: Callable[[str], bool]) -> list[tuple[list[str], np.ndarray]]:
        """(keys, images) of the fills whose two anchors are now ready."""
        needed = {f.a for f in self.pending} | {f.b for f in self.pending}
        if images is not None:
            self.recent.update((k, im) for k, im in zip(keys, images) if k in needed)
        made, waiting = [], []
        for fill in self.pending:
            if ready(fill.a) and ready(fill.b):
                a, b = (self.recent[k] if k in self.recent else self.load(k) for k in (fill.a, fill.b))
                made.append((list(fill.keys), self.method()(a, b, np.array(fill.weights))))
            else:
                waiting.append(fill)
        self.pending = waiting
        still = {f.a for f in waiting} | {f.b for f in waiting}
        self.recent = {k: v for k, v in self.recent.items() if k in still}
        return made

    def redo(self, lost: Sequence[str], done: Callable[[Sequence[str], np.ndarray | None], None]) -> list[str]:
        """Make the fills of damaged in-betweens again (through `done`); returns the lost keys that are anchors."""
        fills = [f for f in self.all if any(k in lost for k in f.keys)]
        self.pending += [f for f in fills if f not in self.pending]
        done([], None)
        ours = {k for f in fills for k in f.keys}
        return [k for k in lost if k not in ours]


# --------------------------------------------------------------------------- methods


def flow_backend() -> str:
    """What `flow` runs on: OpenCV's dense optical flow when installed, else ffmpeg's minterpolate."""
    if importlib.util.find_spec("cv2") is not None:
        import cv2

        return f"opencv-{cv2.__version__}"
    return "ffmpeg-minterpolate"


def method_id(spec: InterpolateSpec) -> str:
    return f"flow:{flow_backend()}" if spec.method == "flow" else spec.method


def latent_method(backend) -> Method:
    """Decode the slerp of the two anchors' latents (their VAE encodings), plus each anchor's reconstruction residual.

    The residual (anchor − decode(encode(anchor))) blended by the weights makes w → 0 and w → 1
    meet the anchors' own pixels, so in-betweens keep their neighbours' fine detail instead of
    flickering to the VAE's blur; the in-between content is the latent slerp (Shoemake 1985).
    """
    import torch

    from latentwalk.interpolation import slerp

    cache: dict[bytes, tuple[torch.Tensor, np.ndarray]] = {}

    def encoded(image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        key = hashlib.sha256(image.tobytes()).digest()
        if key not in cache:
            cache.clear()  # anchors arrive in order: only the last one is needed again
            with torch.no_grad():
                z = backend.encode_images(image[None])  # (1, C, h, w)
                residual = image.astype(np.float32) - backend.decode(z)[0].astype(np.float32)
            cache[key] = (z, residual)
        return cache[key]

    def latent(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
        (za, ra), (zb, rb) = encoded(a), encoded(b)
        t = torch.as_tensor(weights, dtype=torch.float64)
        flat = slerp(za.reshape(1, -1).expand(len(t), -1), zb.reshape(1, -1).expand(len(t), -1), t)
        with torch.no_grad():
            decoded = backend.decode(flat.reshape(len(t), *za.shape[1:])).astype(np.float32)  # (k, H, W, 3)
        w = weights.astype(np.float32)[:, None, None, None]
        return np.clip(decoded + (1 - w) * ra + w * rb, 0, 255).round().astype(np.uint8)

    latent.cache = cache  # type: ignore[attr-defined]
    return latent


# Farneback dense flow (Farnebäck 2003, "Two-frame motion estimation based on polynomial expansion"),
# OpenCV's documented example parameters; the window grows with the picture.
FLOW_PYR_SCALE, FLOW_LEVELS, FLOW_ITERATIONS, FLOW_POLY_N, FLOW_POLY_SIGMA = 0.5, 4, 3, 5, 1.2


def opencv_flow(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bidirectional flow: each anchor warped toward time w along its flow, then blended by w."""
    import cv2

    gray_a, gray_b = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    window = max(9, min(a.shape[:2]) // 12 | 1)
    args = (None, FLOW_PYR_SCALE, FLOW_LEVELS, window, FLOW_ITERATIONS, FLOW_POLY_N, FLOW_POLY_SIGMA, 0)
    ab = cv2.calcOpticalFlowFarneback(gray_a, gray_b, *args)  # (H, W, 2): where a's pixel moves in b
    ba = cv2.calcOpticalFlowFarneback(gray_b, gray_a, *args)
    h, w = gray_a.shape
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    out = []
    for t in weights.astype(np.float32):
        # backward warps: the pixel at x at time t came from x - t·flow(a→b) in a and x - (1 - t)·flow(b→a) in b
        from_a = cv2.remap(a, *np.moveaxis(grid - t * ab, -1, 0), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        from_b = cv2.remap(b, *np.moveaxis(grid - (1 - t) * ba, -1, 0), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip((1 - t) * from_a.astype(np.float32) + t * from_b.astype(np.float32), 0, 255).round().astype(np.uint8))
    return np.stack(out)


def ffmpeg_flow(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ffmpeg's motion-compensated `minterpolate` between the two frames, sampled at the weights."""
    import subprocess

    from latentwalk.encode import ffmpeg_exe

    h, w = a.shape[:2]
    steps = 2 * 3 * 4  # output frames per input interval: every weight of factors 2, 3 and 4 lands on one
    # Three inputs (a, b, b): minterpolate holds the last frame back, so b is given twice.
    cmd = [
        ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "1", "-i", "-",
        "-vf", f"minterpolate=fps={steps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=none",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]
    run = subprocess.run(cmd, input=np.stack([a, b, b]).tobytes(), capture_output=True)
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg minterpolate failed: {run.stderr.decode(errors='replace')[-500:]}")
    frames = np.frombuffer(run.stdout, np.uint8).reshape(-1, h, w, 3)
    return np.stack([frames[min(round(t * steps), len(frames) - 1)] for t in weights])


def method_fn(spec: InterpolateSpec, backend: Callable[[], object]) -> Method:
    """The spec's method; `backend()` gives the loaded model (latent only: its VAE)."""
    if spec.method == "latent":
        return latent_method(backend())
    return opencv_flow if flow_backend().startswith("opencv") else ffmpeg_flow


# --------------------------------------------------------------------------- a render's fills


@dataclass(frozen=True)
class Fills:
    """What the stage adds to a render: every video frame's key, the fills, and which in-betweens this run makes."""

    spec: InterpolateSpec
    outline: Outline
    video_keys: tuple[str, ...]  # (n_frames,) anchors' keys and in-betweens' fill keys
    fills: tuple[Fill, ...]
    made: frozenset[str]  # in-betweens missing from the store (all of them with `fresh`)
    missing_keys: frozenset[str]  # what the video waits for: missing anchors and `made`

    def filler(self, store, shape: tuple[int, int, int], runner, identity, job) -> Filler:
        """A Filler over the store; `latent` loads the model (the executor's, else its own) only when a fill needs it."""
        made: dict[str, Method] = {}

        def backend():
            if hasattr(runner, "backend"):  # the local executor: its model
                runner.start(identity)
                return runner.backend
            from latentwalk.backends import load_backend  # a farm: the model in this process, for its VAE

            options = job.options_for(identity.device_type) if job.options_for else None
            return load_backend(job.spec, job.device, job.dtype, *([options] if options is not None else []))

        def method() -> Method:
            if "fn" not in made:
                made["fn"] = method_fn(self.spec, backend)
            return made["fn"]

        return Filler(self.fills, set(self.made), lambda key: store.load(key, shape), method)

    def manifest(self, made: int) -> dict:
        return {
            "factor": self.spec.factor,
            "method": self.spec.method,
            "implementation": method_id(self.spec),
            "denoised_frames": list(self.outline.anchors),
            "interpolated_frames": self.outline.interpolated(),
            "interpolated_this_run": made,
        }


def render_fills(spec: InterpolateSpec, out: Outline, anchor_keys: Sequence[str], missing: set[str], has: Callable[[str], bool], fresh: bool) -> Fills:
    """The fills of a render whose anchors are keyed `anchor_keys` (`missing`: the anchors the store lacks)."""
    keys, fills = video_fills(out, anchor_keys, method_id(spec))
    made = frozenset(k for fill in fills for k in fill.keys if fresh or not has(k))
    anchors = set(anchor_keys)
    return Fills(spec, out, keys, fills, made, frozenset({k for k in missing if k in anchors} | made))
