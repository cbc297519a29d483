"""Camera motion for the feedback mode: one-resample warps, colour coherence and cadence fills.

Pure functions on the CPU, no model. Images are float32 in [0, 1], either NumPy (H, W, 3) /
(B, H, W, 3) or torch (B, 3, H, W); every function returns the kind it was given and never
changes its input in place.

Coordinates: x right, y down, in pixels, with pixel i covering [i, i + 1), so the picture's
centre is (W/2, H/2) — the convention of `grid_sample(..., align_corners=False)`. A camera
step is one 3x3 matrix mapping where content was to where it goes; steps compose by matrix
products, so a frame is warped with ONE bilinear resample however many steps it travels.
"""

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from latentwalk.params import CAMERA_BORDERS as BORDERS
from latentwalk.params import DEFAULT_FOV, MAX_SHARPEN


# CIELAB with the D65 white of sRGB (IEC 61966-2-1; CIE 15:2004).
RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
WHITE_D65 = RGB_TO_XYZ @ np.ones(3)  # the white of this matrix exactly, so RGB (1, 1, 1) → L 100, a = b = 0
LAB_EPSILON = (6 / 29) ** 3  # below it CIELAB's cube root turns into a line
LAB_KAPPA = (29 / 6) ** 2 / 3


@dataclass(frozen=True)
class Motion:
    """The camera's move from one frame to the next (Deforum's 2D and 3D animation keys)."""

    zoom: float = 1.0  # content scale per frame about the centre; > 1 flies in
    angle: float = 0.0  # degrees per frame, counter-clockwise on screen
    translate_x: float = 0.0  # pixels per frame the content moves right
    translate_y: float = 0.0  # pixels per frame the content moves down
    translate_z: float = 0.0  # pixels per frame the camera moves forward; f·(1 − 1/z) equals zoom z
    rotation_x: float = 0.0  # degrees per frame the camera tilts up (content moves down)
    rotation_y: float = 0.0  # degrees per frame the camera pans right (content moves left)


def focal_length(width: int, fov: float = DEFAULT_FOV) -> float:
    """Pinhole focal length in pixels for a horizontal field of view in degrees."""
    return (width / 2) / math.tan(math.radians(fov) / 2)


def motion_matrix(motion: Motion, width: int, height: int, fov: float = DEFAULT_FOV) -> np.ndarray:
    """3x3 float64 map from a pixel's old position to its new one: the 2D move, then the 3D camera.

    The 3D part treats the picture as a plane facing the camera at depth f (the focal length),
    so moving or turning the camera is the plane-induced homography K·Rᵀ·(I − c·nᵀ/f)·K⁻¹
    (Hartley & Zisserman, "Multiple View Geometry", 2nd ed., §13.1); no depth model.
    """
    cx, cy = width / 2, height / 2
    a = math.radians(motion.angle)
    cos, sin = math.cos(a), math.sin(a)
    if motion.angle % 90 == 0:  # exact quarter turns: cos(90°) is 6e-17 in floats, not 0
        cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(motion.angle // 90) % 4]
    s = motion.zoom
    # y points down, so a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]].
    linear = s * np.array([[cos, sin], [-sin, cos]])
    centre = np.array([cx, cy])
    plane = np.eye(3)
    plane[:2, :2] = linear
    plane[:2, 2] = centre - linear @ centre + [motion.translate_x, motion.translate_y]
    if (motion.translate_z, motion.rotation_x, motion.rotation_y) == (0.0, 0.0, 0.0):
        return plane
    f = focal_length(width, fov)
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    tilt, pan = math.radians(motion.rotation_x), math.radians(motion.rotation_y)
    rot_x = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    rot_y = np.array([[math.cos(pan), 0, math.sin(pan)], [0, 1, 0], [-math.sin(pan), 0, math.cos(pan)]])
    camera = rot_y @ rot_x  # the camera's new orientation in its old coordinates
    moved = np.eye(3) - np.outer([0.0, 0.0, motion.translate_z], [0.0, 0.0, 1.0]) / f
    return k @ camera.T @ moved @ np.linalg.inv(k) @ plane


def compose(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """One matrix for several steps in order (the first step applied first)."""
    out = np.eye(3)
    for m in matrices:
        out = m @ out
    return out


def _as_batch(image) -> tuple[torch.Tensor, str]:
    """(B, 3, H, W) float32 torch view of any supported image kind, and how to give it back."""
    if isinstance(image, torch.Tensor):
        return image, "torch"
    array = np.asarray(image, dtype=np.float32)
    kind = "hwc" if array.ndim == 3 else "bhwc"
    batch = array[None] if array.ndim == 3 else array
    return torch.from_numpy(np.array(batch, dtype=np.float32)).permute(0, 3, 1, 2), kind  # a copy: inputs may be read-only views


def _from_batch(batch: torch.Tensor, kind: str):
    if kind == "torch":
        return batch
    out = batch.permute(0, 2, 3, 1).numpy()
    return out[0] if kind == "hwc" else out


def warp_matrix(image, matrix: np.ndarray, border: str = "reflect"):
    """Resample so content at p moves to matrix·p: one bilinear `grid_sample`, borders reflected or replicated.

    `matrix` is (3, 3) for every image or (B, 3, 3) per image. The exact identity returns a copy.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, got {border!r}")
    batch, kind = _as_batch(image)
    b, _, h, w = batch.shape
    matrices = np.broadcast_to(np.asarray(matrix, dtype=np.float64), (b, 3, 3))
    if all(np.array_equal(m, np.eye(3)) for m in matrices):
        return _from_batch(batch.clone(), kind)
    # 1. Pixel centres of the output, as homogeneous (3, H·W) points.
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    # 2. Where each output pixel comes from: the inverse map, divided by w for homographies.
    source = np.linalg.inv(matrices) @ points  # (B, 3, H·W)
    source = source[:, :2] / source[:, 2:]
    # 3. Normalised to grid_sample's [-1, 1] (align_corners=False: -1 and 1 are the outer pixel edges).
    grid = np.stack([source[:, 0] * 2 / w - 1, source[:, 1] * 2 / h - 1], axis=-1).reshape(b, h, w, 2)
    grid = torch.from_numpy(grid).to(batch.dtype)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode=BORDERS[border], align_corners=False)
    return _from_batch(out, kind)


def warp(
    image,
    zoom: float = 1.0,
    angle_deg: float = 0.0,
    tx: float = 0.0,
    ty: float = 0.0,
    border: str = "reflect",
    *,
    translate_z: float = 0.0,
    rotation_x: float = 0.0,
    rotation_y: float = 0.0,
    fov: float = DEFAULT_FOV,
):
    """One camera step (see `Motion`) applied to an image or batch; zoom 1, angle 0, no move is exactly the identity."""
    batch, _ = _as_batch(image)
    motion = Motion(zoom, angle_deg, tx, ty, translate_z, rotation_x, rotation_y)
    return warp_matrix(image, motion_matrix(motion, batch.shape[-1], batch.shape[-2], fov), border)


# --- colour ----------------------------------------------------------------------------------


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) → CIELAB (..., 3) with L in [0, 100], in float64."""
    c = np.asarray(rgb, dtype=np.float64)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ RGB_TO_XYZ.T / WHITE_D65
    f = np.where(xyz > LAB_EPSILON, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) → sRGB (..., 3) in float64, not clipped (out-of-gamut colours leave [0, 1])."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * WHITE_D65
    linear = xyz @ XYZ_TO_RGB.T
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.abs(linear) ** (1 / 2.4) * np.sign(linear) - 0.055)


@dataclass(frozen=True)
class ColourStats:
    """Per-channel CIELAB mean and standard deviation of one picture: what coherence matches to."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def colour_stats(image: np.ndarray) -> ColourStats:
    """LAB mean and std of an (H, W, 3) image in [0, 1]."""
    lab = rgb_to_lab(image).reshape(-1, 3)
    return ColourStats(tuple(lab.mean(0).tolist()), tuple(lab.std(0).tolist()))


def match_colour(image: np.ndarray, reference: ColourStats, amount: float = 1.0) -> np.ndarray:
    """Shift and scale each LAB channel to the reference's mean and std (Reinhard et al. 2001, "Color Transfer between Images").

    `amount` blends from the image (0) to the fully matched one (1). (H, W, 3) float32 in [0, 1].
    """
    lab = rgb_to_lab(image)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    matched = (lab - mean) / np.maximum(std, 1e-6) * np.asarray(reference.std) + np.asarray(reference.mean)
    lab = lab + amount * (matched - lab)
    return np.clip(lab_to_rgb(lab), 0, 1).astype(np.float32)


def add_noise(image: np.ndarray, amount: float, seed: int) -> np.ndarray:
    """Gaussian pixel noise of std `amount`, the same for the same seed on any machine (PCG64), clipped to [0, 1]."""
    if amount == 0:
        return np.array(image, dtype=np.float32)
    noise = np.random.default_rng(seed).standard_normal(np.shape(image))
    return np.clip(image + amount * noise, 0, 1).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Separable Gaussian blur of (H, W, 3), radius 3σ, borders reflected."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(k * np.take(padded, range(i, i + out.shape[axis]), axis=axis) for i, k in enumerate(kernel))
    return out




def guard(image: np.ndarray, reference: ColourStats, sharpen: float = 0.0, max_contrast: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """The sharpening and contrast guard: a bounded unsharp mask, then L's std held within ×max_contrast of the reference's.

    Feedback through a VAE blurs a little each frame; a small unsharp mask puts the edge back
    (as Deforum's anti-blur). Sharpening also raises contrast, so lightness spread is clamped to
    [ref / max_contrast, ref · max_contrast] about the frame's own mean (0: no clamp).
    """
    out = np.asarray(image, dtype=np.float64)
    amount = min(max(sharpen, 0.0), MAX_SHARPEN)
    if amount > 0:
        out = np.clip(out + amount * (out - gaussian_blur(out, sigma)), 0, 1)
    if max_contrast > 0:
        lab = rgb_to_lab(out)
        light = lab[..., 0]
        std, ref = light.std(), reference.std[0]
        target = min(max(std, ref / max_contrast), ref * max_contrast)
        if std > 1e-6 and target != std:
            lab[..., 0] = light.mean() + (light - light.mean()) * (target / std)
            out = np.clip(lab_to_rgb(lab), 0, 1)
    return out.astype(np.float32)


# --- cadence ---------------------------------------------------------------------------------


def cadence_fill(
    frame_a: np.ndarray, frame_b: np.ndarray, n_between: int, camera_path: Sequence[np.ndarray], border: str = "reflect"
) -> np.ndarray:
    """The `n_between` frames between two diffused frames: each warped along the camera path to that moment, cross-faded.

    `camera_path` holds the n_between + 1 step matrices from a to b. Frame j sees a carried
    forward by steps 1..j and b carried back by steps j+1..N (inverted), each in one resample,
    mixed with weight j / N on b (Deforum's "turbo" cadence, made two-sided).
    Returns (n_between, H, W, 3) float32.
    """
    if len(camera_path) != n_between + 1:
        raise ValueError(f"camera_path needs {n_between + 1} steps for {n_between} frames between, got {len(camera_path)}")
    n = n_between + 1
    forward = np.stack([compose(camera_path[:j]) for j in range(1, n)])
    backward = np.stack([np.linalg.inv(compose(camera_path[j:])) for j in range(1, n)])
    from_a = warp_matrix(np.broadcast_to(frame_a, (n_between, *np.shape(frame_a))), forward, border)
    from_b = warp_matrix(np.broadcast_to(frame_b, (n_between, *np.shape(frame_b))), backward, border)
    weight = (np.arange(1, n) / n).reshape(-1, 1, 1, 1).astype(np.float32)
    return ((1 - weight) * from_a + weight * from_b).astype(np.float32)


def diffused_indices(n_frames: int, cadence: int) -> tuple[int, ...]:
    """Which of a chain's frames are diffused with cadence N: every Nth from the first, and always the last."""
    if cadence < 1:
        raise ValueError(f"cadence must be at least 1, got {cadence}")
    picked = list(range(0, n_frames, cadence))
    if n_frames and picked[-1] != n_frames - 1:
        picked.append(n_frames - 1)  # every in-between frame then has a diffused frame on each side
    return tuple(picked)
