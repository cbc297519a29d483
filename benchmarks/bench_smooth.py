"""Benchmark smooth travel on the embedded model: jumpiness of walks, midpoint detours, speed (through `latentwalk render`).

Not a test: it prints tables (and writes JSON with --json). Walks are one segment each
(prompt A, seed A → prompt B, seed B), 128x128, 12 fps × 4 s = 48 frames plus keyframe B,
20 DDIM steps, `easing: linear`, batch 8.

  (a) placement  per walk, adjacent-frame distance p95/median, max/median, PPL (sum), PDV
                 (variance) in pixel MAD and 1 − SSIM, uniform t against perceptual placement;
                 frames denoised (probes included); rank correlation of the placement
                 distance with pixel and SSIM distance over every adjacent pair
  (b) sharing    per walk and `share_steps`: the same smoothness figures, each shared frame's distance
                 from the same frame denoised from its own noise, UNet steps run, and wall time
                 against today's uniform render (`spacing: t`, no sharing)
  (c) detours    text slerp against `interpolation: blend` (blended guided noise predictions) at t = ¼, ½, ¾:
                 brightness outside the ends' range and the path's detour (d(A,M) + d(M,B)) / d(A,B)
  (d) speed      whole-process frames per second, `latentwalk render` against
                 nateraw/stable-diffusion-videos' walk() (benchmarks/nateraw_walk.py, run by
                 --nateraw-python), alternating A B A B; and render --overlap off against on
  (e) tune       generated walks (random prompt pairs of the toy world's captions, random seeds,
                 same-seed and different-seed pairs; a fixed split): on the tuning half only,
                 probing's stop targets and budget against every walk's evenness and UNet steps
  (f) heldout    the held-out half only, with the shipped defaults: `latentwalk render` whole
                 process, uniform (`spacing: t`) / adaptive probing / today's fixed rounds
                 (--today: a checkout of the code before adaptive probing) in turn per walk, A B C A B C;
                 evenness in both distances, probes, UNet steps, wall time

  python benchmarks/bench_smooth.py                        # every part
  python benchmarks/bench_smooth.py --parts placement,detours --walks 2
  python benchmarks/bench_smooth.py --parts sharing --walks 2 --depths 0,8,12
  python benchmarks/bench_smooth.py --parts speed --nateraw-python /path/to/venv/bin/python --runs 3
  nice -n 10 python benchmarks/bench_smooth.py --parts tune --json benchmarks/results-smooth-tune.json
  nice -n 10 python benchmarks/bench_smooth.py --parts heldout --today /tmp/lw-today --json benchmarks/results-smooth-heldout.json
"""

import argparse
import hashlib
import os
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
FPS, SECONDS, SIZE, STEPS, BATCH = 12, 4, 128, 20, 8

# Walks between scenes of the toy world (latentwalk/toy/world.py): time of day, weather, landscape.
WALKS = [
    ("mountains at sunset", 1, "mountains at night", 2),
    ("a sunset over the sea with a red sun", 12, "a clear night over the city with stars", 13),  # the demo's segment
    ("a clear day over the mountains with a sun", 11, "a snowy day over the mountains", 11),
    ("the forest in the rain", 3, "a desert during the day", 4),
    ("a foggy sea at dusk", 5, "a snowy city by night", 6),
]
# Detour cases: both ends dark or warm, where a text midpoint may pass through a bright day.
DETOURS = [
    ("a sunset over the sea with a red sun", 12, "a clear night over the city with stars", 13),
    ("mountains at sunset", 1, "mountains at night", 1),
    ("the sea at sunset", 5, "the city at night", 5),
]


# Generated walks: a fixed generator seed and a fixed split (the first half tunes, the second is held out).
GENERATED_WALKS = 20
GENERATOR_SEED = 24
GOAL_P95, GOAL_MAX = 2.0, 3.0
# Tuning grid: (p95 target, max target, budget) of probing's stopping rule (placement.P95_TARGET,
# MAX_TARGET, the timeline's placement_budget). Today: 8 coarse probes + 3 fixed rounds of 8 = 32.
TUNE_GRID = [(2.0, 3.0, 32), (1.6, 2.2, 32), (1.6, 2.2, 48)]


def generated_walks(n: int = GENERATED_WALKS, seed: int = GENERATOR_SEED) -> list[tuple]:
    """n walks (prompt A, seed A, prompt B, seed B) of the toy world's captions; even walks keep one seed."""
    from latentwalk.toy.world import caption, random_attributes

    rng = np.random.default_rng(seed)
    walks = []
    for i in range(n):
        a, b = caption(random_attributes(rng), rng), caption(random_attributes(rng), rng)
        while b == a:
            b = caption(random_attributes(rng), rng)
        seed_a = int(rng.integers(0, 100))
        seed_b = seed_a if i % 2 == 0 else int((seed_a + 1 + rng.integers(0, 99)) % 100)
        walks.append((a, seed_a, b, seed_b))
    return walks


def split_walks(walks: list) -> tuple[list, list]:
    """(tuning, held out): the first half and the second."""
    return walks[: len(walks) // 2], walks[len(walks) // 2 :]


def model_fingerprint() -> str:
    """sha256 of the embedded model's UNet weights (the toy model may be retrained between runs)."""
    from latentwalk import toy

    digest = hashlib.sha256()
    for f in sorted((Path(toy.__file__).parent / "model" / "unet").iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()[:16]


def goal_met(m: dict) -> bool:
    return all(m[k]["p95_over_median"] <= GOAL_P95 and m[k]["max_over_median"] <= GOAL_MAX for k in ("pixel", "ssim"))


def unet_steps(manifest: dict) -> int:
    """UNet steps per row that a fresh render ran (a guidance pair counted once): probes and video frames.

    Keyframes and coarse probes run every step; bisection probes and other frames of a perceptual
    segment run only their unshared steps; a frame on a probe is that probe.
    """
    resolved = manifest["timeline"]["resolved"]
    steps, share = resolved["steps"], resolved["share_steps"]
    frames = manifest["plan"]["frames"]
    segments = manifest.get("placement", {}).get("segments", [])
    if not segments:
        return len(frames) * steps
    total = 0
    for seg in segments:
        probe_t = seg["probe_t"]
        coarse = int(min(BATCH, len(probe_t), seg.get("budget", BATCH)))
        total += coarse * steps + (len(probe_t) - coarse) * (steps - share)
        on_probe = {t for t in probe_t}
        mine = [f for f in frames if f["segment"] == seg["index"]]
        total += sum(steps - share for f in mine if f["t"] not in on_probe)
    return total


def hold_out_timeline(folder: Path, walk: tuple, spacing: str, budget: int | None = None) -> Path:
    """The defaults: linear easing, 12 fps, 4 s (48 frames + keyframe B), no audio, toy model at 128 px."""
    path = walk_timeline(folder, walk, spacing)
    if budget is not None:
        path.write_text(path.read_text() + f"placement_budget: {budget}\n")
    return path


def part_tune(walks: list, grid: list = TUNE_GRID, stores: Path | None = None, save=None) -> dict:
    """(e) on the tuning half: each (p95 target, max target, budget) of TUNE_GRID against evenness and UNet steps.

    In-process renders; one store per walk across the grid (a probe or frame another setting
    already made is read, as a resumed render would), so only figures, not seconds, are compared.
    `stores`: keep those stores there (a rerun reads them), else in a temporary folder.
    `save(rows)`: called after every render (a long run killed part-way keeps its rows).
    """
    import latentwalk.placement as placement

    targets = placement.P95_TARGET, placement.MAX_TARGET
    print(f"\n(e) grid: {len(walks)} walks, targets (p95, max, budget) {grid}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for w, walk in enumerate(walks):
            name = f"{walk[0]} ({walk[1]}) -> {walk[2]} ({walk[3]})"
            print(name, flush=True)
            store_dir = (stores or tmp) / ("store-" + hashlib.sha256(name.encode()).hexdigest()[:12])
            for p95, max_, budget in grid:
                placement.P95_TARGET, placement.MAX_TARGET = p95, max_
                folder = tmp / f"{w}-{p95}-{max_}-{budget}"
                folder.mkdir()
                path = hold_out_timeline(folder, walk, "perceptual", budget)
                render_out = folder / "w.mp4"
                from latentwalk.api import render

                result = render(path, render_out, store_dir=store_dir, progress=False)
                from latentwalk.api import frame_plan
                from latentwalk.store import FrameStore
                from latentwalk.timeline import load_timeline

                store = FrameStore(result.store)
                keys = frame_plan(load_timeline(path), result.plan, store).keys
                frames = np.stack([store.load(k, (SIZE, SIZE, 3)) for k in keys])
                manifest = json.loads(result.manifest.read_text())
                m = metrics_row(frames)
                seg = manifest["placement"]["segments"][0] if manifest["placement"]["segments"] else {}
                row = {"walk": name, "p95_target": p95, "max_target": max_, "budget": budget, "metrics": m,
                       "goal_met": goal_met(m), "unet_steps": unet_steps(manifest), "probes": seg.get("probes", 0),
                       "predicted": seg.get("predicted"), "stopped": seg.get("stopped")}
                rows.append(row)
                print(f"  {str((p95, max_, budget)):18s} | {fmt(m)} | probes {row['probes']:3d} "
                      f"steps {row['unet_steps']:5d} {'ok' if row['goal_met'] else 'NOT met'} {row['stopped'] or ''}", flush=True)
                if save is not None:
                    save(rows)
    placement.P95_TARGET, placement.MAX_TARGET = targets
    return {"rows": rows, "summary": tune_summary(rows)}


def tune_summary(rows: list) -> list:
    """Per grid setting: walks meeting the goal, mean UNet steps and probes, worst figures; the choice marked.

    The choice: the fewest mean UNet steps among the settings that meet the goal on the most walks.
    """
    walks = len({r["walk"] for r in rows})
    summary = []
    for p95, max_, budget in dict.fromkeys((r["p95_target"], r["max_target"], r["budget"]) for r in rows):
        mine = [r for r in rows if (r["p95_target"], r["max_target"], r["budget"]) == (p95, max_, budget)]
        summary.append({"p95_target": p95, "max_target": max_, "budget": budget, "walks_met": sum(r["goal_met"] for r in mine),
                        "mean_unet_steps": float(np.mean([r["unet_steps"] for r in mine])),
                        "mean_probes": float(np.mean([r["probes"] for r in mine])),
                        "worst": {k: {q: max(r["metrics"][k][q] for r in mine) for q in ("p95_over_median", "max_over_median")}
                                  for k in ("pixel", "ssim")}})
    best = max(r["walks_met"] for r in summary)
    chosen = min((r for r in summary if r["walks_met"] == best), key=lambda r: r["mean_unet_steps"])
    for r in summary:
        r["chosen"] = r is chosen
    print(f"{'p95 max budget':18s} walks met  mean steps  mean probes | worst pixel p95 max | worst ssim p95 max")
    for r in summary:
        w = r["worst"]
        print(f"{r['p95_target']:4.1f} {r['max_target']:4.1f} {r['budget']:4d}     {r['walks_met']:2d}/{walks}  {r['mean_unet_steps']:8.0f}"
              f"  {r['mean_probes']:8.1f}    | {w['pixel']['p95_over_median']:5.2f} {w['pixel']['max_over_median']:5.2f}"
              f" | {w['ssim']['p95_over_median']:5.2f} {w['ssim']['max_over_median']:5.2f}{'  <- chosen' if r['chosen'] else ''}")
    return summary


def cli_render(python: str, path: Path, out: Path, store: Path, env: dict | None = None) -> float:
    """Whole-process wall seconds of one fresh `latentwalk render` (start-up, model load, placement, encode)."""
    cmd = [python, "-m", "latentwalk.cli", "render", str(path), "--out", str(out), "--store", str(store), "--fresh", "--quiet"]
    clock = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - clock
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def video_frames_of(manifest: dict, store: Path) -> np.ndarray:
    """The video's frames from the store, by the manifest's placed plan (any version's: keys recomputed)."""
    from dataclasses import replace

    from latentwalk.api import frame_plan, plan
    from latentwalk.store import FrameStore
    from latentwalk.timeline import parse_timeline

    timeline = parse_timeline(manifest["timeline"]["yaml"], manifest["timeline"]["source"])
    schedule = plan(timeline)
    share = lambda f: tuple(f["share"]) if f.get("share") else None  # noqa: E731
    placed = replace(schedule, frames=tuple(replace(r, t=f["t"], noise_t=f["noise_t"], share=share(f))
                                            for r, f in zip(schedule.frames, manifest["plan"]["frames"])))
    fs = FrameStore(store)
    return np.stack([fs.load(k, (SIZE, SIZE, 3)) for k in frame_plan(timeline, placed, fs).keys])


def part_heldout(walks: list, today: Path | None, timed: int | None = None) -> dict:
    """(f) the held-out half: uniform, adaptive probing and today's fixed rounds, whole process, in turn per walk."""
    import shutil

    from latentwalk import toy

    runs = [("uniform", "t", None), ("adaptive", "perceptual", None)]
    if today is not None:
        model = Path(toy.__file__).parent / "model"
        theirs = Path(today) / "latentwalk" / "toy" / "model"
        if theirs.resolve() != model.resolve():  # today's code on today's model file: the same weights as ours
            shutil.rmtree(theirs)
            shutil.copytree(model, theirs)
        runs.append(("today", "perceptual", dict(os.environ, PYTHONPATH=str(today))))
    print(f"\n(f) held-out half: {len(walks)} walks, whole process `latentwalk render --fresh`, "
          f"{' / '.join(r[0] for r in runs)} in turn per walk")
    print(f"{'walk':50s} {'run':8s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV | probes steps  wall s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = hold_out_timeline(tmp, walks[0], "t")
        cli_render(sys.executable, warm, tmp / "warm.mp4", tmp / "warm-store")  # uncounted: file caches warm for every run
        for w, walk in enumerate(walks):
            name = f"{walk[0]} ({walk[1]}) -> {walk[2]} ({walk[3]})"
            for label, spacing, env in runs:
                if label != "adaptive" and timed is not None and w >= timed:
                    continue
                folder = tmp / f"{w}-{label}"
                folder.mkdir()
                path = hold_out_timeline(folder, walk, spacing)
                wall = cli_render(sys.executable, path, folder / "w.mp4", folder / "store", env)
                manifest = json.loads((folder / "w.json").read_text())
                frames = video_frames_of(manifest, folder / "store")
                m = metrics_row(frames)
                segs = manifest.get("placement", {}).get("segments", [])
                row = {"walk": name, "run": label, "metrics": m, "goal_met": goal_met(m), "wall_s": wall,
                       "unet_steps": unet_steps(manifest), "probes": len(segs[0]["probe_t"]) if segs else 0,
                       "predicted": segs[0].get("predicted") if segs else None, "measured": segs[0].get("measured") if segs else None,
                       "stopped": segs[0].get("stopped") if segs else None}
                rows.append(row)
                print(f"{name[:50]:50s} {label:8s} | {fmt(m)} | {row['probes']:4d} {row['unet_steps']:5d} {wall:6.1f}"
                      f" {'' if row['goal_met'] or label == 'uniform' else 'NOT met'}", flush=True)
    return {"rows": rows, "summary": heldout_summary(rows)}


def heldout_summary(rows: list) -> dict:
    """Per run (uniform, adaptive, today): walks meeting the goal, worst and median figures, probes, steps, wall / uniform."""
    summary = {}
    uniform = {r["walk"]: r for r in rows if r["run"] == "uniform"}
    for label in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == label]
        summary[label] = {
            "walks": len(mine),
            "walks_met": sum(r["goal_met"] for r in mine),
            "worst": {k: {q: max(r["metrics"][k][q] for r in mine) for q in ("p95_over_median", "max_over_median")} for k in ("pixel", "ssim")},
            "median": {k: {q: float(np.median([r["metrics"][k][q] for r in mine])) for q in ("p95_over_median", "max_over_median")}
                       for k in ("pixel", "ssim")},
            "mean_probes": float(np.mean([r["probes"] for r in mine])),
            "mean_unet_steps": float(np.mean([r["unet_steps"] for r in mine])),
            "wall_over_uniform": [r["wall_s"] / uniform[r["walk"]]["wall_s"] for r in mine if r["walk"] in uniform],
            "steps_over_uniform": [r["unet_steps"] / uniform[r["walk"]]["unet_steps"] for r in mine if r["walk"] in uniform],
        }
    print(f"{'run':8s} met  | worst pixel p95 max | worst ssim p95 max | median pixel p95 max | median ssim p95 max | "
          "probes  steps  wall/uniform median (min-max)")
    for label, r in summary.items():
        w, md, ratio = r["worst"], r["median"], r["wall_over_uniform"]
        print(f"{label:8s} {r['walks_met']:2d}/{r['walks']} | {w['pixel']['p95_over_median']:5.2f} {w['pixel']['max_over_median']:5.2f}"
              f"        | {w['ssim']['p95_over_median']:5.2f} {w['ssim']['max_over_median']:5.2f}       "
              f"| {md['pixel']['p95_over_median']:5.2f} {md['pixel']['max_over_median']:5.2f}         "
              f"| {md['ssim']['p95_over_median']:5.2f} {md['ssim']['max_over_median']:5.2f}        "
              f"| {r['mean_probes']:5.1f} {r['mean_unet_steps']:6.0f}  "
              + (f"{statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})" if ratio else "-"))
    return summary


def luma(frames: np.ndarray) -> np.ndarray:
    """Mean BT.601 luma per frame in [0, 1]."""
    return (np.asarray(frames, np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])).mean(axis=(-2, -1))


def metrics_row(frames: np.ndarray) -> dict:
    from latentwalk.smooth import DISTANCES, adjacent_distances, walk_metrics

    return {name: asdict(walk_metrics(adjacent_distances(frames, DISTANCES[name]))) for name in ("pixel", "ssim")}


def fmt(m: dict) -> str:
    return " ".join(f"{m[k]['p95_over_median']:5.2f} {m[k]['max_over_median']:5.2f} {m[k]['ppl']:6.3f} {m[k]['pdv']:.1e}"
                    for k in ("pixel", "ssim"))


def walk_timeline(folder: Path, walk: tuple, spacing: str, interpolation: str = "slerp", frames: int = FPS * SECONDS + 1,
                  share_steps: int | str = "auto") -> Path:
    """One segment A → B of `frames` frames (keyframe B last), linear easing, as `latentwalk render` reads it."""
    prompt_a, seed_a, prompt_b, seed_b = walk
    path = folder / f"walk-{spacing}-{interpolation}-{share_steps}.yaml"
    path.write_text("\n".join([
        "model: toy", f"width: {SIZE}", f"height: {SIZE}", f"fps: {FPS}", f"steps: {STEPS}", "scheduler: ddim",
        f"batch_size: {BATCH}", "device: cpu", f"spacing: {spacing}", f"interpolation: {interpolation}", f"share_steps: {share_steps}",
        f"end: {{frame: {frames}}}", "keyframes:",
        f"  - {{frame: 0, prompt: '{prompt_a}', seed: {seed_a}}}",
        f"  - {{frame: {frames - 1}, prompt: '{prompt_b}', seed: {seed_b}}}",
    ]) + "\n")
    return path


def rendered_frames(path: Path, out: Path) -> tuple[np.ndarray, object, float]:
    """Render through the engine (api.render); (frames, result, wall seconds)."""
    from latentwalk.api import frame_plan, render
    from latentwalk.store import FrameStore
    from latentwalk.timeline import load_timeline

    clock = time.perf_counter()
    result = render(path, out, progress=False)
    wall = time.perf_counter() - clock
    store = FrameStore(result.store)
    keys = frame_plan(load_timeline(path), result.plan, store).keys
    return np.stack([store.load(k, (SIZE, SIZE, 3)) for k in keys]), result, wall


def part_placement(walks: list, plots: Path | None = None) -> dict:
    """(a) `spacing: t` against `spacing: perceptual`, per walk, rendered by `latentwalk render`'s engine."""
    from latentwalk.smooth import DISTANCES, adjacent_distances, rank_correlation

    print(f"\n(a) placement: {FPS} fps x {SECONDS} s, {SIZE}px, {STEPS} DDIM steps, linear easing, batch {BATCH}")
    print(f"{'walk':58s} {'spacing':10s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV | denoised  wall s")
    rows, pooled = [], {"perceptual": [], "pixel": [], "ssim": []}
    for walk in walks:
        name = f"{walk[0]} ({walk[1]}) -> {walk[2]} ({walk[3]})"
        for spacing in ("t", "perceptual"):
            with tempfile.TemporaryDirectory() as tmp:
                frames, result, wall = rendered_frames(walk_timeline(Path(tmp), walk, spacing), Path(tmp) / "w.mp4")
            m = metrics_row(frames)
            print(f"{name[:58]:58s} {spacing:10s} | {fmt(m)} | {result.frames_rendered:5d} {wall:7.1f}")
            if plots is not None:
                from latentwalk.placement import frame_distances
                from latentwalk.plot import plot_distances

                out = plots / f"walk{walks.index(walk)}-{spacing}.png"
                plot_distances(result.plan, frame_distances(frames), out, title=f"{name}, spacing: {spacing}")
            rows.append({"walk": name, "spacing": spacing, "metrics": m, "frames_rendered": result.frames_rendered,
                         "probes_rendered": result.probes_rendered, "wall_s": wall, "t": [f.t for f in result.plan.frames]})
            if spacing == "t":
                for name_d in pooled:
                    pooled[name_d].extend(adjacent_distances(frames, DISTANCES[name_d]).tolist())
    rho = {k: rank_correlation(pooled["perceptual"], pooled[k]) for k in ("pixel", "ssim")}
    print(f"rank correlation of the placement distance over {len(pooled['pixel'])} adjacent pairs: "
          f"pixel {rho['pixel']:.3f}, ssim {rho['ssim']:.3f} (pixel vs ssim {rank_correlation(pooled['pixel'], pooled['ssim']):.3f})")
    goal = all(r["metrics"][k]["p95_over_median"] <= 2.0 and r["metrics"][k]["max_over_median"] <= 3.0
               for r in rows if r["spacing"] == "perceptual" for k in ("pixel", "ssim"))
    print(f"goal p95/median <= 2.0 and max/median <= 3.0 on every walk, both distances: {'met' if goal else 'NOT met'}")
    return {"walks": rows, "rank_correlation": rho, "goal_met": goal}


def steps_denoised(timeline, inputs, manifest: dict) -> int:
    """UNet steps per row (a guidance pair counted once) the render ran: every distinct probe and video frame."""
    from latentwalk.api import frame_plan, plan
    from latentwalk.placement import placed_segments
    from latentwalk.store import FrameStore

    schedule = plan(timeline)
    unplaced = frame_plan(timeline, schedule, FrameStore(tempfile.mkdtemp())).inputs
    segments = {s.index: s for s in placed_segments(schedule, unplaced, timeline.settings.share_steps)}
    probes = [segments[seg["index"]].probe(t) for seg in manifest["placement"]["segments"] for t in seg["probe_t"]]
    return sum(f.steps - (f.share[2] if f.share else 0) for f in set(probes) | set(inputs))


def part_sharing(walks: list, depths: list[int]) -> dict:
    """(b) shared trajectories: share_steps against smoothness, closeness to from-scratch frames, and wall time."""
    from latentwalk.api import frame_plan
    from latentwalk.stages import engine_settings
    from latentwalk.backends import ModelSpec, load_backend
    from latentwalk.engine import render_frames
    from latentwalk.smooth import pixel_distance, ssim
    from latentwalk.store import FrameStore
    from latentwalk.timeline import load_timeline

    print(f"\n(b) shared trajectories: {FPS} fps x {SECONDS} s, {SIZE}px, {STEPS} DDIM steps, linear easing, batch {BATCH};"
          " `spacing: t` with no sharing is today's uniform render")
    print(f"{'walk':40s} {'spacing':10s} {'share':>5s} | pixel: p95/med max/med PPL PDV | ssim: p95/med max/med PPL PDV |"
          " vs scratch: pixel med/max  1-SSIM med | steps  wall s  wall/uniform")
    backend = load_backend(ModelSpec("toy"), device="cpu")
    rows = []
    for walk in walks:
        name = f"{walk[0]} -> {walk[2]}"
        uniform_wall = None
        for spacing, depth in [("t", 0)] + [("perceptual", d) for d in depths]:
            with tempfile.TemporaryDirectory() as tmp:
                path = walk_timeline(Path(tmp), walk, spacing, share_steps=depth)
                frames, result, wall = rendered_frames(path, Path(tmp) / "w.mp4")
                manifest = json.loads(result.manifest.read_text())
                timeline = load_timeline(path)
                inputs = frame_plan(timeline, result.plan, FrameStore(result.store)).inputs
            uniform_wall = wall if spacing == "t" else uniform_wall
            m = metrics_row(frames)
            # Every shared frame against the same frame denoised from its own noise.
            shared = [i for i, f in enumerate(inputs) if f.share]
            scratch: dict = {}
            if shared:
                wanted = list(dict.fromkeys(replace_share(inputs[i]) for i in shared))
                render_frames(backend, wanted, engine_settings(timeline.settings),
                              lambda batch, images: scratch.update(zip(batch, images)))
            ref = np.stack([scratch[replace_share(inputs[i])] for i in shared]) if shared else np.empty((0,))
            adj = np.median(np.abs(np.diff(frames.astype(np.float64) / 255, axis=0)).mean(axis=(1, 2, 3)))
            vs_pixel = pixel_distance(frames[shared], ref) / adj if shared else np.zeros(1)
            vs_ssim = 1 - ssim(frames[shared], ref) if shared else np.zeros(1)
            steps = steps_denoised(timeline, inputs, manifest)
            print(f"{name[:40]:40s} {spacing:10s} {depth:5d} | {fmt(m)} | {np.median(vs_pixel):5.2f} {np.max(vs_pixel):5.2f}"
                  f"  {np.median(vs_ssim):.3f}        | {steps:5d} {wall:6.1f}  {wall / uniform_wall:5.2f}")
            rows.append({"walk": name, "spacing": spacing, "share_steps": depth, "metrics": m, "wall_s": wall,
                         "wall_over_uniform": wall / uniform_wall, "steps_denoised": steps, "shared_frames": len(shared),
                         "vs_scratch_pixel_over_adjacent_median": [float(np.median(vs_pixel)), float(np.max(vs_pixel))],
                         "vs_scratch_1_minus_ssim_median": float(np.median(vs_ssim))})
    print("vs scratch: a shared frame's pixel distance to the same frame denoised from its own noise, in units of the"
          " walk's median adjacent-frame pixel distance; wall: in-process render (model loaded per render), this machine")
    return {"rows": rows}


def replace_share(frame):
    from dataclasses import replace

    return replace(frame, share=None)


def part_detours(midpoints: int = 3) -> dict:
    """(c) midpoint detours: text slerp against the blended guided noise predictions (`interpolation: blend`)."""
    from latentwalk.smooth import pixel_distance

    print(f"\n(c) midpoint detours at {midpoints} evenly spaced middles: 'above' = brightest middle frame above the "
          "brighter end (luma); detour = max over middles of (d(A,M) + d(M,B)) / d(A,B) in pixel MAD (1 = on the way)")
    rows = []
    for walk in DETOURS:
        for method in ("slerp", "blend"):
            with tempfile.TemporaryDirectory() as tmp:
                path = walk_timeline(Path(tmp), walk, "t", method, frames=midpoints + 2)
                frames, result, wall = rendered_frames(path, Path(tmp) / "w.mp4")
            y = luma(frames)
            above = float(max(y[1:-1].max() - max(y[0], y[-1]), 0.0))
            base = float(pixel_distance(frames[0], frames[-1]))
            detour = float(max((pixel_distance(frames[0], f) + pixel_distance(f, frames[-1])) / base for f in frames[1:-1]))
            print(f"{walk[0][:24] + ' -> ' + walk[2][:26]:54s} {method:6s} luma {' '.join(f'{v:.3f}' for v in y)} "
                  f"above {above:.3f} detour {detour:.2f} ({wall:.1f} s)")
            rows.append({"case": f"{walk[0]} ({walk[1]}) -> {walk[2]} ({walk[3]})", "method": method, "luma": y.tolist(),
                         "above_ends": above, "detour": detour, "wall_s": wall})
    for method in ("slerp", "blend"):
        mine = [r for r in rows if r["method"] == method]
        print(f"  {method:6s} mean detour {np.mean([r['detour'] for r in mine]):.2f}, "
              f"mean brightness above the ends {np.mean([r['above_ends'] for r in mine]):.3f}, "
              f"wall {np.sum([r['wall_s'] for r in mine]):.1f} s")
    return {"rows": rows}


def write_timeline(folder: Path, prompts: tuple[str, str], seeds: tuple[int, int], frames: int, spacing: str) -> Path:
    path = folder / "walk.yaml"
    path.write_text("\n".join([
        "model: toy", f"width: {SIZE}", f"height: {SIZE}", f"fps: {FPS}", f"steps: {STEPS}", "scheduler: ddim",
        f"batch_size: {BATCH}", "device: cpu", f"spacing: {spacing}", f"end: {{frame: {frames}}}", "keyframes:",
        f"  - {{frame: 0, prompt: '{prompts[0]}', seed: {seeds[0]}}}",
        f"  - {{frame: {frames - 1}, prompt: '{prompts[1]}', seed: {seeds[1]}}}",
    ]) + "\n")
    return path


def timed(cmd: list[str]) -> float:
    """Whole-process wall seconds of one run (start-up, model load and encoding included)."""
    clock = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - clock
    if done.returncode:
        raise SystemExit(f"{cmd[0]} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def alternate(a: list[str], b: list[str], runs: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Run A and B in turn (A B A B ...) after `warmup` uncounted pairs, so drift hits both alike."""
    wall_a, wall_b = [], []
    for i in range(warmup + runs):
        x, y = timed(a), timed(b)
        if i >= warmup:
            wall_a.append(x)
            wall_b.append(y)
    return wall_a, wall_b


def part_speed(nateraw_python: str | None, runs: int, frames: int, spacing: str = "perceptual") -> dict:
    """(d) whole-process frames per second against nateraw's walk(), and overlap on/off."""
    prompts, seeds = (WALKS[0][0], WALKS[0][2]), (WALKS[0][1], WALKS[0][3])
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timeline = write_timeline(tmp, prompts, seeds, frames, spacing)
        ours = [sys.executable, "-m", "latentwalk.cli", "render", str(timeline), "--out", str(tmp / "a.mp4"), "--fresh", "--quiet"]
        theirs_spacing = "same spacing as nateraw (uniform t): `spacing: t`" if spacing == "t" else "`spacing: perceptual` (probes included)"
        print(f"  latentwalk runs with {theirs_spacing}")
        print(f"\n(d) speed, whole process: {frames} frames, {SIZE}px, {STEPS} DDIM steps, batch {BATCH}, {runs} pairs A B A B")
        if nateraw_python:
            theirs = [nateraw_python, str(HERE / "nateraw_walk.py"), "--model", "toy", "--prompts", *prompts,
                      "--seeds", *map(str, seeds), "--frames", str(frames), "--size", str(SIZE), "--steps", str(STEPS),
                      "--batch-size", str(BATCH), "--out", str(tmp / "nateraw")]
            wa, wb = alternate(ours, theirs, runs)
            ratio = [b / a for a, b in zip(wa, wb)]  # fps(ours) / fps(theirs), pair by pair
            print(f"  latentwalk render   median {statistics.median(wa):6.1f} s  {frames / statistics.median(wa):5.2f} fps")
            print(f"  nateraw walk()      median {statistics.median(wb):6.1f} s  {frames / statistics.median(wb):5.2f} fps")
            print(f"  ratio (fps latentwalk / fps nateraw), median of pairs: {statistics.median(ratio):.2f}x "
                  f"(min {min(ratio):.2f}, max {max(ratio):.2f})")
            result["vs_nateraw"] = {"latentwalk_s": wa, "nateraw_s": wb, "ratio_median": statistics.median(ratio)}
        wa, wb = alternate(ours + ["--overlap", "off"], ours + ["--overlap", "on"], runs)
        ratio = [b / a for a, b in zip(wa, wb)]
        print(f"  render --overlap off median {statistics.median(wa):6.1f} s  {frames / statistics.median(wa):5.2f} fps")
        print(f"  render --overlap on  median {statistics.median(wb):6.1f} s  {frames / statistics.median(wb):5.2f} fps")
        print(f"  ratio (fps off / fps on), median of pairs: {statistics.median(ratio):.2f}x")
        result["overlap"] = {"no_overlap_s": wa, "overlap_s": wb, "ratio_median": statistics.median(ratio)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="placement,sharing,detours,speed")
    parser.add_argument("--walks", type=int, default=len(WALKS), help="how many of the walks to run (placement)")
    parser.add_argument("--nateraw-python", help="python of a virtualenv with stable-diffusion-videos installed")
    parser.add_argument("--runs", type=int, default=3, help="counted A B pairs per speed comparison")
    parser.add_argument("--frames", type=int, default=96, help="frames per speed run")
    parser.add_argument("--speed-spacing", default="perceptual", choices=["perceptual", "t"], help="latentwalk's spacing in the speed runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--depths", default="0,6,8,10,12,14", help="share_steps values of the sharing part")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plots", type=Path, help="write each placement walk's distance plot into this folder")
    parser.add_argument("--today", type=Path, help="a checkout of the code before adaptive probing (heldout: its fixed rounds)")
    parser.add_argument("--generated", type=int, default=GENERATED_WALKS, help="generated walks (tune, heldout): half each")
    parser.add_argument("--grid", default=";".join(",".join(map(str, g)) for g in TUNE_GRID),
                        help="tune: settings 'p95,max,budget;...' of the stopping rule")
    parser.add_argument("--half", default="tuning", choices=["tuning", "heldout"],
                        help="tune: the walks it runs the grid on (heldout: the figures of every setting on the held-out "
                        "walks, of which only the setting chosen on the tuning half is reported)")
    parser.add_argument("--stores", type=Path, help="tune: keep each walk's frame store in this folder (a rerun reads them)")
    parser.add_argument("--slice", default=":", help="tune/heldout: only these walks of the half (python slice, e.g. 0:6)")
    parser.add_argument("--timed", type=int, default=None, help="heldout: time uniform against adaptive on the first N walks only")
    parser.add_argument("--merge", nargs="*", type=Path, default=[], help="JSON files of tune/heldout slices to merge into --json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"settings": {"fps": FPS, "seconds": SECONDS, "size": SIZE, "steps": STEPS, "batch": BATCH,
                                  "threads": torch.get_num_threads(), "load": os.getloadavg(), "nice": os.nice(0),
                                  "model_unet_sha256": model_fingerprint(), "cpus": os.cpu_count()}}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "placement" in parts:
        results["placement"] = part_placement(WALKS[: args.walks], args.plots)
    if "sharing" in parts:
        results["sharing"] = part_sharing(WALKS[: args.walks], [int(d) for d in args.depths.split(",")])
    if "detours" in parts:
        results["detours"] = part_detours()
    if "speed" in parts:
        results["speed"] = part_speed(args.nateraw_python, args.runs, args.frames, args.speed_spacing)
    tuning, held_out = split_walks(generated_walks(args.generated))
    part = slice(*[int(x) if x else None for x in args.slice.split(":")])
    if "tune" in parts:
        grid = [(float(a), float(b), int(c)) for a, b, c in (g.split(",") for g in args.grid.split(";"))]
        def save(rows: list) -> None:
            if args.json:
                args.json.write_text(json.dumps(results | {"tune": {"rows": rows, "half": args.half, "partial": True}}, indent=1))

        results["tune"] = part_tune((tuning if args.half == "tuning" else held_out)[part], grid, args.stores, save)
        results["tune"]["half"] = args.half
    if "heldout" in parts:
        results["heldout"] = part_heldout(held_out[part], args.today, args.timed)
    if args.merge:  # slices run side by side: their rows together, summaries of all
        loaded = [json.loads(f.read_text()) for f in args.merge]
        results["settings"]["merged"] = [x["settings"] for x in loaded]
        for key, summarise in (("tune", tune_summary), ("heldout", heldout_summary)):
            rows = [r for x in loaded if key in x for r in x[key]["rows"]]
            if rows:
                print(f"\n{key}: {len(rows)} rows from {len(args.merge)} files")
                results[key] = {"rows": rows, "summary": summarise(rows)}
    results["settings"]["load_end"] = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
