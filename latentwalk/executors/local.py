"""The local executor: frames denoised in this process, batch after batch, on the picked device."""

import time
from typing import Sequence

import numpy as np
import torch

from latentwalk.backends import Backend, load_backend
from latentwalk.device import pick_device
from latentwalk.engine import Trajectories, render_frames
from latentwalk.executors.base import Done, Job
from latentwalk.frames import FrameInputs, RenderIdentity


class LocalExecutor:
    def __init__(self, job: Job):
        self.job = job
        device = pick_device(job.device)
        self.device_type = device.type
        self.cpu_threads = torch.get_num_threads() if device.type == "cpu" else 0
        self.backend: Backend | None = None
        self.load_s = 0.0  # seconds `start` took to load the model
        self.trajectories = Trajectories()  # probes' early latents, which the frames between them start from

    def start(self, identity: RenderIdentity) -> None:
        if self.backend is not None:
            return
        clock = time.perf_counter()
        if self.job.before_load is not None:
            self.job.before_load(identity.device_type, identity.dtype)
        options = self.job.options_for(identity.device_type) if self.job.options_for else None
        self.backend = load_backend(self.job.spec, self.job.device, self.job.dtype, *([options] if options is not None else []))
        self.load_s = time.perf_counter() - clock

    def render(self, frames: Sequence[FrameInputs], keys: Sequence[str], done: Done, *, capture: int = 0) -> None:
        key_of = dict(zip(frames, keys))

        def decoded(batch: Sequence[FrameInputs], images: np.ndarray) -> None:
            done([key_of[f] for f in batch], images)

        render_frames(
            self.backend, frames, self.job.engine, decoded, overlap=self.job.overlap, trajectories=self.trajectories, capture=capture
        )

    def render_chains(self, chains, done: Done) -> None:
        """Chains side by side in one batch; a frame stored earlier in this run (or before, unless fresh) is read back."""
        from latentwalk.feedback import engine_fns, render_feedback
        from latentwalk.store import open_store
        from latentwalk.videoflow import FlowPlan

        if isinstance(chains, FlowPlan):  # video flow: one chain, frame after frame
            return self.render_flow(chains, done)
        store = open_store(self.job.store_root)
        shape = (self.job.engine.height, self.job.engine.width, 3)
        first_fn, img2img_fn = engine_fns(self.backend, chains.frames, self.job.engine)
        made: set[str] = set()  # with `fresh`, only frames of this run count as stored

        def stored(key: str) -> bool:
            return (key in made or not self.job.fresh) and store.has(key, shape)

        def save(key: str, image: np.ndarray) -> None:
            done([key], image[None])  # the caller stores it before anything reads it back
            made.add(key)

        render_feedback(
            chains.frames, img2img_fn, first_fn, lambda key: store.load(key, shape) if stored(key) else None, save,
            batch_size=self.job.engine.batch_size, stored=stored,
        )

    def render_flow(self, plan, done: Done) -> None:
        """A video flow chain's missing frames (videoflow.render_flow), each predecessor as stored or just made."""
        from latentwalk.store import open_store
        from latentwalk.videoflow import engine_render, render_flow

        store = open_store(self.job.store_root)
        shape = (self.job.engine.height, self.job.engine.width, 3)
        made: set[str] = set()

        def load(key: str) -> np.ndarray | None:
            return store.load(key, shape) if (key in made or not self.job.fresh) and store.has(key, shape) else None

        def save(key: str, image: np.ndarray) -> None:
            done([key], image[None])
            made.add(key)

        render_flow(plan, self.job.engine.images, engine_render(self.backend, self.job.engine), load, save)

    def report(self) -> dict | None:
        return None

    def model_info(self, identity: RenderIdentity) -> tuple[str, str, str]:
        if self.backend is None:  # every frame was stored: nothing loaded
            return identity.model, identity.device_type, identity.dtype
        return self.backend.source, str(self.backend.device), str(self.backend.dtype)

    def close(self) -> None:
        self.backend = None
