"""Stage 4: per-frame model inputs. Seeded noise, slerp/lerp of noise and text conditioning."""

from typing import Callable

import torch

DOT_THRESHOLD = 0.9995  # above this |cos θ| slerp is numerically a lerp, and lerp is stabler


def seed_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise drawn on the CPU, so a seed gives the same noise on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t)·a + t·b, with t broadcast over trailing dims: a, b (..., D), t (...,) or scalar."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    t = t.reshape(t.shape + (1,) * (a.dim() - t.dim()))
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last dim (Shoemake 1985, "Animating rotation with quaternion curves").

    Keeps the norm of Gaussian noise between two seeds (a lerp midpoint has ~0.71× the norm
    and renders washed-out frames). a, b: (..., D); t: broadcastable to a.shape[:-1].
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    a64, b64 = a.double(), b.double()
    dot = (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1)).clamp_min(1e-12)
    dot = dot.clamp(-1.0, 1.0)
    theta = torch.arccos(dot)
    sin_theta = torch.sin(theta)
    t = torch.broadcast_to(t, theta.shape)
    wa = torch.sin((1.0 - t) * theta) / sin_theta
    wb = torch.sin(t * theta) / sin_theta
    near = dot.abs() > DOT_THRESHOLD
    wa = torch.where(near, 1.0 - t, wa)
    wb = torch.where(near, t, wb)
    out = wa.unsqueeze(-1) * a64 + wb.unsqueeze(-1) * b64
    return out.to(a.dtype)


INTERPOLATORS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "slerp": slerp,
    "lerp": lerp,
}


def slerp_noise(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Slerp whole noise tensors: a, b (C, H, W); t (B,) → (B, C, H, W)."""
    flat_a, flat_b = a.reshape(1, -1), b.reshape(1, -1)
    t = torch.as_tensor(t, dtype=torch.float64)
    return slerp(flat_a.expand(len(t), -1), flat_b.expand(len(t), -1), t).reshape(len(t), *a.shape)
