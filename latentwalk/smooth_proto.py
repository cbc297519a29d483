"""Prototype of perceptually even travel on today's render pieces, one segment at a time.

Not wired into `render`: the engine is being redesigned, and this module shows what it needs
from it (render arbitrary t values per frame; capture latents at a step; start a batch from
given latents at a step; a second conditioning per row). Only DDIM is exercised here: a
multistep scheduler started mid-way would need its history (see `denoise_steps`).
"""

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from latentwalk.interpolation import INTERPOLATORS, seed_noise, slerp, slerp_noise
from latentwalk.render import Conditioning, Model, decode, encode_keyframes, latent_shape, make_scheduler
from latentwalk.smooth import (
    DISTANCES,
    ProbePlan,
    adjacent_distances,
    coarse_probes,
    place_frames,
    refine_probes,
    reused_probes,
    segment_progress,
    snap_to_probes,
)


@dataclass(frozen=True)
class Segment:
    """One travel from keyframe A to keyframe B; frames 0..n-1 are the segment, frame n is B itself."""

    prompt_a: str
    seed_a: int
    prompt_b: str
    seed_b: int
    n_frames: int  # fps × seconds
    guidance: float = 7.5
    steps: int = 20
    scheduler: str = "ddim"
    width: int = 128
    height: int = 128
    interpolation: str = "slerp"


@dataclass(frozen=True)
class Context:
    """What every render of a segment shares: the encoded prompts and both seeds' noise."""

    conditioning: Conditioning  # rows: A, B
    noise_a: torch.Tensor  # (C, h, w)
    noise_b: torch.Tensor


def segment_context(model: Model, seg: Segment) -> Context:
    conditioning = encode_keyframes(model, [seg.prompt_a, seg.prompt_b], ["", ""])
    shape = latent_shape(model, seg.width, seg.height)
    return Context(conditioning, seed_noise(seg.seed_a, shape), seed_noise(seg.seed_b, shape))


# ---------------------------------------------------------------------------- the loop variant


EpsFn = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]  # (latents (B, C, h, w), timestep, scheduler) → guided ε


def text_eps(model: Model, cond: torch.Tensor, uncond: torch.Tensor, guidance: torch.Tensor) -> EpsFn:
    """Classifier-free guidance with one UNet call per step, exactly as `render.denoise` computes it."""
    context = torch.cat([uncond, cond]).to(model.device, model.dtype)  # (2B, L, D)
    scale = guidance.to(model.device).view(-1, 1, 1, 1)

    def eps(latents: torch.Tensor, t: torch.Tensor, scheduler) -> torch.Tensor:
        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        e = model.unet(x.to(model.dtype), t, encoder_hidden_states=context).sample.float()
        e_uncond, e_cond = e.chunk(2)
        return e_uncond + scale * (e_cond - e_uncond)

    return eps


def blended_eps(model: Model, cond_a: torch.Tensor, cond_b: torch.Tensor, uncond: torch.Tensor, weight: torch.Tensor,
                guidance: torch.Tensor) -> EpsFn:
    """(1 − w)·guided ε(A) + w·guided ε(B), one more UNet row per sample (Liu et al. 2022, composable diffusion)."""
    context = torch.cat([uncond, cond_a, cond_b]).to(model.device, model.dtype)  # (3B, L, D)
    scale = guidance.to(model.device).view(-1, 1, 1, 1)
    w = weight.to(model.device, torch.float32).view(-1, 1, 1, 1)

    def eps(latents: torch.Tensor, t: torch.Tensor, scheduler) -> torch.Tensor:
        x = scheduler.scale_model_input(torch.cat([latents, latents, latents]), t)
        e = model.unet(x.to(model.dtype), t, encoder_hidden_states=context).sample.float()
        e_uncond, e_a, e_b = e.chunk(3)
        return e_uncond + scale * ((1 - w) * e_a + w * e_b - e_uncond)

    return eps


@torch.no_grad()
def denoise_steps(
    model: Model,
    noise: torch.Tensor,
    eps: EpsFn,
    scheduler_name: str,
    steps: int,
    start: torch.Tensor | None = None,
    start_step: int = 0,
    capture_steps: tuple[int, ...] = (),
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """`render.denoise`'s loop that can start from latents at step `start_step` and return those at `capture_steps`.

    Returns (final latents, {step: latents before that step}). Starting mid-way restarts the
    scheduler's state, exact for DDIM (stateless); a multistep solver would need its history.
    """
    scheduler = make_scheduler(scheduler_name, model.scheduler_config)
    scheduler.set_timesteps(steps, device="cpu")
    latents = noise.to(model.device, torch.float32) * scheduler.init_noise_sigma if start is None else start.to(model.device)
    captured = {start_step: latents.clone()} if start_step in capture_steps else {}
    for i, t in enumerate(scheduler.timesteps[start_step:], start=start_step):
        latents = scheduler.step(eps(latents, t, scheduler), t, latents).prev_sample
        if i + 1 in capture_steps:
            captured[i + 1] = latents.clone()
    return latents, captured


# ---------------------------------------------------------------------------- rendering t values


@dataclass
class Renders:
    """Frames of a segment rendered so far, by t, and what they cost."""

    frames: dict[float, np.ndarray] = field(default_factory=dict)  # t → (H, W, 3) uint8
    captured: dict[tuple[int, float], torch.Tensor] = field(default_factory=dict)  # (step, t) → (C, h, w) latents
    unet_rows: int = 0  # UNet sample evaluations (rows × steps, CFG pair counted once), padding included
    batches: int = 0


def row_conditioning(ctx: Context, t: torch.Tensor, interpolation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) of each row at weight t, as `render.batch_inputs` interpolates them: (B, L, D) each."""
    interpolate = INTERPOLATORS[interpolation]
    c, rows = ctx.conditioning, len(t)
    a, b = torch.zeros(rows, dtype=torch.long), torch.ones(rows, dtype=torch.long)
    return interpolate(c.cond[a], c.cond[b], t[:, None]), interpolate(c.uncond[a], c.uncond[b], t[:, None])


def _pad(rows: list, batch_size: int) -> list:
    return rows + [rows[-1]] * (batch_size - len(rows))


def render_ts(model: Model, ctx: Context, seg: Segment, ts: np.ndarray, renders: Renders, batch_size: int,
              capture_steps: tuple[int, ...] = ()) -> None:
    """Render frames at the given t values from scratch (noise and prompt both at t), in padded batches."""
    for s in range(0, len(ts), batch_size):
        chunk = [float(t) for t in ts[s : s + batch_size]]
        t = torch.tensor(_pad(chunk, batch_size), dtype=torch.float64)
        noise = slerp_noise(ctx.noise_a, ctx.noise_b, t)
        eps = text_eps(model, *row_conditioning(ctx, t, seg.interpolation), torch.full((batch_size,), seg.guidance))
        latents, captured = denoise_steps(model, noise, eps, seg.scheduler, seg.steps, capture_steps=capture_steps)
        images = decode(model, latents)
        for i, tv in enumerate(chunk):
            renders.frames[tv] = images[i]
            for step, lat in captured.items():
                renders.captured[step, tv] = lat[i].cpu()
        renders.unet_rows += batch_size * seg.steps
        renders.batches += 1


def render_shared(model: Model, ctx: Context, seg: Segment, ts: np.ndarray, renders: Renders, batch_size: int,
                  depth: int) -> None:
    """Render frames starting at step `depth` from a slerp of the two nearest captured neighbours' latents.

    latentblending's shared trajectories (Lunarring 2023): each frame pays steps − depth UNet steps.
    """
    held = {t: lat for (step, t), lat in renders.captured.items() if step == depth}
    anchors = np.array(sorted(held))
    for s in range(0, len(ts), batch_size):
        chunk = [float(t) for t in ts[s : s + batch_size]]
        t = torch.tensor(_pad(chunk, batch_size), dtype=torch.float64)
        right = np.clip(np.searchsorted(anchors, t.numpy(), side="right"), 1, len(anchors) - 1)
        lo, hi = anchors[right - 1], anchors[right]
        w = torch.tensor((t.numpy() - lo) / (hi - lo))
        start = torch.stack([
            slerp(held[float(a)].reshape(1, -1), held[float(b)].reshape(1, -1), wi).reshape(held[float(a)].shape)
            for a, b, wi in zip(lo, hi, w)
        ])
        eps = text_eps(model, *row_conditioning(ctx, t, seg.interpolation), torch.full((batch_size,), seg.guidance))
        latents, _ = denoise_steps(model, start, eps, seg.scheduler, seg.steps, start=start, start_step=depth)
        images = decode(model, latents)
        for i, tv in enumerate(chunk):
            renders.frames[tv] = images[i]
        renders.unet_rows += batch_size * (seg.steps - depth)
        renders.batches += 1


def render_blended(model: Model, ctx: Context, seg: Segment, ts: np.ndarray, renders: Renders, batch_size: int) -> None:
    """Frames at t whose guided noise predictions are blended, (1 − t)·ε(A) + t·ε(B), instead of their prompts."""
    c = ctx.conditioning
    for s in range(0, len(ts), batch_size):
        chunk = [float(t) for t in ts[s : s + batch_size]]
        t = torch.tensor(_pad(chunk, batch_size), dtype=torch.float64)
        rows_a, rows_b = torch.zeros(len(t), dtype=torch.long), torch.ones(len(t), dtype=torch.long)
        _, uncond = row_conditioning(ctx, t, seg.interpolation)
        eps = blended_eps(model, c.cond[rows_a], c.cond[rows_b], uncond, t, torch.full((batch_size,), seg.guidance))
        latents, _ = denoise_steps(model, slerp_noise(ctx.noise_a, ctx.noise_b, t), eps, seg.scheduler, seg.steps)
        images = decode(model, latents)
        for i, tv in enumerate(chunk):
            renders.frames[tv] = images[i]
        renders.unet_rows += batch_size * seg.steps * 3 // 2  # three UNet rows per sample instead of two
        renders.batches += 1


# ---------------------------------------------------------------------------- one segment


@dataclass(frozen=True)
class SegmentResult:
    frames: np.ndarray  # (n + 1, H, W, 3): the segment's n frames, then keyframe B
    t: np.ndarray  # (n + 1,)
    distances: np.ndarray  # (n,) perceptual distance between adjacent frames
    probe_t: np.ndarray
    probe_distances: np.ndarray
    reused: int  # final frames taken from probes
    unet_rows: int  # sample-steps denoised (× 2 UNet rows with CFG), padding included
    wall_s: float


def uniform_segment(model: Model, ctx: Context, seg: Segment, batch_size: int, easing: str = "linear") -> SegmentResult:
    """Today's placement: t = ease(k / n), every frame from scratch."""
    clock = time.perf_counter()
    t = np.append(segment_progress(seg.n_frames, easing), 1.0)
    renders = Renders()
    render_ts(model, ctx, seg, t, renders, batch_size)
    frames = np.stack([renders.frames[float(x)] for x in t])
    d = adjacent_distances(frames, DISTANCES["perceptual"])
    return SegmentResult(frames, t, d, t, d, 0, renders.unet_rows, time.perf_counter() - clock)


@dataclass(frozen=True)
class Probed:
    """A probed segment: probe t values, adjacent perceptual distances, and the renders behind them."""

    probe_t: np.ndarray
    distances: np.ndarray
    renders: Renders
    wall_s: float


def probe_segment(model: Model, ctx: Context, seg: Segment, plan: ProbePlan, capture_steps: tuple[int, ...] = ()) -> Probed:
    """Coarse pass, then bisection rounds of the largest gaps, each a full batch, all from scratch."""
    clock = time.perf_counter()
    renders = Renders()
    new = coarse_probes(plan)
    for _ in range(plan.rounds + 1):
        render_ts(model, ctx, seg, new, renders, plan.batch_size, capture_steps)
        probe_t = np.array(sorted(renders.frames))
        d = adjacent_distances(np.stack([renders.frames[float(x)] for x in probe_t]), DISTANCES["perceptual"])
        new = refine_probes(probe_t, d, seg.n_frames, plan)
        if len(new) == 0:
            break
    return Probed(probe_t, d, renders, time.perf_counter() - clock)


def smooth_segment(model: Model, ctx: Context, seg: Segment, plan: ProbePlan = ProbePlan(), easing: str = "linear",
                   snap: float = 0.0, share_depth: int = 0, probed: Probed | None = None) -> SegmentResult:
    """Perceptually even placement: probe, place t = P⁻¹(ease(progress)), render the frames not probed.

    `probed`: a probing already done (with latents captured at `share_depth`), reused and its
    cost counted, so several depths can be compared on the same probes.
    """
    # 1. Probe the path (keyframes included: they are frames 0 and n).
    if probed is None:
        probed = probe_segment(model, ctx, seg, plan, (share_depth,) if share_depth > 0 else ())
    renders = Renders(dict(probed.renders.frames), probed.renders.captured, probed.renders.unet_rows, probed.renders.batches)
    probe_t, probe_d = probed.probe_t, probed.distances
    # 2. Place the frames on the perceived progress; optionally snap onto nearby probes.
    t = np.append(place_frames(probe_t, probe_d, segment_progress(seg.n_frames, easing)), 1.0)
    t = snap_to_probes(t, probe_t, snap) if snap > 0 else t
    t[0], t[-1] = 0.0, 1.0
    # 3. Render what the probes did not: from scratch, or from neighbours' latents at step `share_depth`.
    probe_of = reused_probes(t, probe_t)
    todo = t[probe_of < 0]
    render_clock = time.perf_counter()
    if len(todo):
        if share_depth > 0:
            render_shared(model, ctx, seg, todo, renders, plan.batch_size, share_depth)
        else:
            render_ts(model, ctx, seg, todo, renders, plan.batch_size)
    frames = np.stack([renders.frames[float(probe_t[j]) if j >= 0 else float(x)] for x, j in zip(t, probe_of)])
    d = adjacent_distances(frames, DISTANCES["perceptual"])
    wall = probed.wall_s + time.perf_counter() - render_clock
    return SegmentResult(frames, t, d, probe_t, probe_d, int((probe_of >= 0).sum()), renders.unet_rows, wall)
