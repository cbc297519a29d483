"""Where the missing frames of a render are denoised: one small interface, picked by name from a dict.

An executor gets the frames a render lacks (`FrameInputs` with their store keys) and hands back
each batch as it is done: `done(keys, images)` with the decoded images when they are in this
process (the caller stores and streams them), or `done(keys, None)` when the executor stored
them itself (a farm's workers write into the shared store). It also says where frames are made
(`device_type`, `cpu_threads`), since that is part of every frame's key.

A new executor is one file here with a class of this shape and one entry in EXECUTORS.
Torch-free at import: executors load their model code when they are made.
"""

from typing import Callable

from latentwalk.executors.base import Done, Executor, Job

__all__ = ["EXECUTORS", "Done", "Executor", "Job"]


def _local(job: Job) -> Executor:
    from latentwalk.executors.local import LocalExecutor

    return LocalExecutor(job)


def _ray(job: Job) -> Executor:
    from latentwalk.executors.ray import RayExecutor

    return RayExecutor(job)


# Each entry imports its module when picked: `local` needs torch, `ray` needs the ray extra.
EXECUTORS: dict[str, Callable[[Job], Executor]] = {"local": _local, "ray": _ray}
