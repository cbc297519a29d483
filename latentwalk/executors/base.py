"""The executor interface: what every executor is given (`Job`) and what it offers (`Executor`)."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from latentwalk.frames import FrameInputs, RenderIdentity

if TYPE_CHECKING:
    from latentwalk.engine import EngineSettings
    from latentwalk.modelspec import ModelSpec

Done = Callable[[Sequence[str], "np.ndarray | None"], None]  # (keys, (b, H, W, 3) uint8 images or None)


@dataclass(frozen=True)
class Job:
    """What every executor of one render is given."""

    spec: "ModelSpec"
    device: str  # asked for: auto, cpu, cuda, mps
    dtype: str  # asked for: auto, float32, ...
    engine: "EngineSettings"
    store_root: str | Path  # a folder or a URL: where an executor that stores frames itself puts them
    fresh: bool = False
    overlap: bool | None = None  # local: decode batch k-1 on a thread while batch k denoises
    log: Callable[[str], None] = print
    # Options the executor resolves for its device (`auto` switches): settings -> ModelOptions.
    options_for: Callable[[str], object] | None = None
    # Checked before a model loads in this process (memory budget), with the device type and dtype.
    before_load: Callable[[str, str], None] | None = None
    ray_address: str | None = None
    ray_workers: int | None = None
    ray_cpus_per_worker: int = 1


class Executor(Protocol):
    device_type: str  # where frames are denoised: "cpu", "cuda", "mps"
    cpu_threads: int  # torch threads of a CPU executor (they change the last bits); 0 on GPUs
    load_s: float  # seconds `start` took (0 until it ran), for the manifest's timings

    def start(self, identity: RenderIdentity) -> None:
        """Load the model (or start the workers); called before the first frame to denoise, once."""

    def render(self, frames: Sequence[FrameInputs], keys: Sequence[str], done: Done, *, capture: int = 0) -> None:
        """Denoise `frames` (keyed `keys`) in the batches one process forms; `capture`: keep step-k latents for shared frames."""

    def render_chains(self, chains, done: Done) -> None:
        """Render a feedback plan's missing frames (api.ChainPlan), its chains side by side."""

    def report(self) -> dict | None:
        """For the manifest: workers and their throughput, or None."""

    def model_info(self, identity: RenderIdentity) -> tuple[str, str, str]:
        """(source, device, dtype) of the model that rendered, for the manifest."""

    def close(self) -> None:
        """Release what `start` took (workers, a cluster); safe to call at any point."""

    # Optional: an executor whose workers can encode (a farm) also offers
    # `chunk_encoders(video_keys, waiting, settings, folder)`, encoder tasks that encode the video in
    # chunks where the frames are (executors/ray.py); the render then joins the chunks (chunks.py).
