"""The Ray executor, a render farm: one actor per GPU (or per N CPU cores) renders batches into a shared store.

The driver plans exactly the batches a single-process render forms (`engine.plan_batches`),
hands each to whichever worker is free (work stealing: a slow worker simply takes fewer), and
assembles the video from the store as keys come back. Every worker pads to the same batch
size on the same device type, dtype and thread count as the render identity says, so the
frames are the bytes one process would make. A worker killed mid-batch loses only that batch:
Ray restarts the actor, the driver hands the batch to the next free worker and reports it.

Feedback timelines (camera motion) run one chain per actor: a chain is sequential, chains are
independent. The actor streams each round's keys back as it stores them (a Ray generator); an
actor lost mid-chain loses only the frames it had not stored, and the chain resumes on another
actor from its last stored frame (chain keys cover a frame's whole past, so resuming is exact).

The video is encoded where the frames are (latentwalk/chunks.py): as soon as every frame of a
contiguous chunk of `chunk_frames` frames is stored, an encoder task on the cluster reads them
from the store and encodes the chunk; the driver keeps each chunk in a chunk folder, joins them
without re-encoding and muxes the audio once. A lost or failed encoder task is retried like a
lost batch; a chunk that comes back short is encoded again.

Ray is imported only here and only when a farm is used (`pip install latentwalk[ray]`).
"""

import errno
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from latentwalk.errors import UserError
from latentwalk.executors.base import Done, Job
from latentwalk.frames import FrameInputs, RenderIdentity

PROBE_TIMEOUT_S = 3.0  # a cluster that does not answer a TCP connect in this long is a wrong address
MAX_RESTARTS = 3  # times Ray restarts a killed worker (each restart reloads the model)
MAX_ATTEMPTS = 3  # a batch that killed this many workers is a bug or an OOM, not bad luck


@dataclass(frozen=True)
class FarmSettings:
    address: str | None  # None: start a local cluster; "auto"; "host:port"; "ray://host:port"
    workers: int | None  # None: one per GPU, or as many as the cluster's CPUs allow
    cpus_per_worker: int


@dataclass(frozen=True)
class Placement:
    """Where the workers render: what the render identity must say about them."""

    device_type: str  # "cpu" or "cuda"
    cpu_threads: int  # torch threads per worker on CPU; 0 on GPUs
    workers: int
    address: str  # the cluster's GCS address, for the manifest


@dataclass(frozen=True)
class BatchDone:
    keys: tuple[str, ...]
    node: str
    pid: int
    seconds: float  # denoising, decoding and storing this batch


@dataclass
class WorkerStats:
    """Per-worker throughput, for the manifest."""

    node: str
    pid: int
    load_s: float
    batches: int = 0
    frames: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict:
        fps = self.frames / self.busy_s if self.busy_s else 0.0
        return {"node": self.node, "pid": self.pid, "load_s": round(self.load_s, 3), "batches": self.batches,
                "frames": self.frames, "busy_s": round(self.busy_s, 3), "frames_per_s": round(fps, 3)}


@dataclass
class FarmReport:
    placement: Placement
    workers: list[WorkerStats] = field(default_factory=list)
    retries: list[dict] = field(default_factory=list)  # {"node", "pid", "frames", "reason"} per lost batch
    chunks: dict | None = None  # chunked encoding: chunks, encoded, reused, encode seconds, join seconds, retries

    def as_dict(self) -> dict:
        p = self.placement
        data = {"address": p.address, "device_type": p.device_type, "cpu_threads": p.cpu_threads,
                "workers": [w.as_dict() for w in self.workers], "retries": self.retries}
        return data | ({"chunks": self.chunks} if self.chunks is not None else {})


# --- connecting ----------------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "host:port" or "ray://host:port"."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds, not minutes, when nothing listens at a cluster address."""
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise UserError(f"ray_address: no Ray cluster answers at {address!r} ({reason}); start one with `ray start --head`") from None


def connect(address: str | None) -> bool:
    """Join a cluster (or start a local one when `address` is None); True when this call started Ray."""
    import ray

    if address not in (None, "auto"):
        probe(address)
    if ray.is_initialized():  # a caller (or a test) connected this process already: use that cluster
        return False
    try:
        # Ray's own lines stay out of the render's output: its banners ("Started a local Ray
        # instance", the token-authentication notice) go to its logger, which says only errors;
        # workers' stderr is not forwarded. Failures come back as exceptions and lost work as
        # latentwalk's own retry lines.
        quiet_ray_logs()
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # Ray >= 2.59 authenticates with a token by default: a joining machine needs the cluster's.
        hint = "" if address is None else "; if the cluster uses token authentication, this machine needs its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        raise UserError(f"ray_address: cannot join a Ray cluster at {address!r}: {first}{hint}") from None
    return True


def quiet_ray_logs() -> None:
    """Ray's Python loggers: errors only (Ray's CLI and a caller's own `ray.init` configure their own)."""
    logging.getLogger("ray").setLevel(logging.ERROR)


def place(settings: FarmSettings, device: str) -> Placement:
    """How many workers of which device type the cluster holds; a UserError when they cannot fit."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "mps":
        raise UserError("device: 'mps' renders on one Mac; a Ray farm runs on cpu or cuda workers")
    if device == "cuda" and gpus == 0:
        raise UserError(f"device: 'cuda' was asked for, but the Ray cluster has no GPUs ({cpus} CPUs)")
    device_type = "cuda" if device in ("auto", "cuda") and gpus else "cpu"
    fit = gpus if device_type == "cuda" else cpus // settings.cpus_per_worker
    workers = settings.workers or fit
    if workers < 1 or workers > fit:
        need = f"{workers} GPUs" if device_type == "cuda" else f"{workers * settings.cpus_per_worker or settings.cpus_per_worker} CPUs"
        raise UserError(f"ray_workers: {workers or 1} workers need {need}, but the cluster has {gpus} GPUs and {cpus} CPUs")
    threads = settings.cpus_per_worker if device_type == "cpu" else 0
    return Placement(device_type, threads, workers, ray.get_runtime_context().gcs_address)


# --- the worker ------------------------------------------------------------------------------------


class FrameWorker:
    """A Ray actor: loads the model once, then renders whole batches into a store."""

    def __init__(self, spec, dtype: str, options, identity: RenderIdentity):
        import ray

        self.node = ray.util.get_node_ip_address()
        self.pid = os.getpid()
        self.error: tuple[bool, str] | None = None  # (is a configuration error, message)
        self.stores: dict = {}
        t0 = time.perf_counter()
        try:
            self.backend = self.load(spec, dtype, options, identity)
        except Exception as e:  # kept for info(): an actor that raised here would be restarted in a loop
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.error = (isinstance(e, UserError), first if isinstance(e, UserError) else f"{type(e).__name__}: {first}")
        self.load_s = time.perf_counter() - t0

    @staticmethod
    def load(spec, dtype: str, options, identity: RenderIdentity):
        import diffusers
        import torch

        from latentwalk.backends import load_backend

        mine = (("diffusers", diffusers.__version__), ("torch", torch.__version__))
        if mine != identity.versions:  # other kernels, other last bits: the keys would lie
            raise UserError(f"library versions {dict(mine)} differ from the driver's {dict(identity.versions)}")
        if identity.device_type == "cpu":
            torch.set_num_threads(identity.cpu_threads)  # the thread count the keys were made with
        return load_backend(spec, identity.device_type, dtype, options)

    def info(self) -> tuple[str, int, float, tuple[bool, str] | None]:
        return self.node, self.pid, self.load_s, self.error

    def render(self, frames: Sequence[FrameInputs], keys: Sequence[str], settings, store_root: str, fault: str | None = None) -> BatchDone:
        """Render one batch (as plan_batches formed it), store its frames, return their keys.

        `fault` (tests only, see FAULT_ENV): "store-full" makes the store refuse this batch's frames as a full disk does.
        """
        from latentwalk.engine import render_frames
        from latentwalk.store import open_store

        t0 = time.perf_counter()
        store = self.stores.setdefault(store_root, open_store(store_root))
        key_of = dict(zip(frames, keys))

        def stored(batch: Sequence[FrameInputs], images) -> None:
            for frame, image in zip(batch, images):
                if fault == "store-full":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(store.path(key_of[frame])))
                store.save(key_of[frame], image)

        render_frames(self.backend, frames, settings, stored)
        return BatchDone(tuple(keys), self.node, self.pid, time.perf_counter() - t0)

    def render_chain(self, frames: Sequence, settings, store_root: str, made: Sequence[str] | None) -> Iterator[BatchDone]:
        """Render one feedback chain (feedback.chain_frames) into a store; yield each round's new video keys.

        `made`: with `fresh`, the keys this render already made (only those count as stored);
        None: any stored key counts. Resumes from the chain's last stored frame either way.
        """
        from latentwalk.feedback import engine_fns, feedback_keys, render_feedback
        from latentwalk.store import open_store

        store = self.stores.setdefault(store_root, open_store(store_root))
        shape = (settings.height, settings.width, 3)
        video = set(feedback_keys(frames))
        made_here = None if made is None else set(made)
        pending: list[str] = []
        clock = [time.perf_counter()]

        def stored(key: str) -> bool:
            return (made_here is None or key in made_here) and store.has(key, shape)

        def save(key: str, image) -> None:
            store.save(key, image)
            if made_here is not None:
                made_here.add(key)
            if key in video:  # not a colour reference's independent render
                pending.append(key)

        def round_done() -> BatchDone:
            now = time.perf_counter()
            done = BatchDone(tuple(pending), self.node, self.pid, now - clock[0])
            pending.clear()
            clock[0] = now
            return done

        def run(emit: Callable[[BatchDone], None]) -> None:
            first_fn, img2img_fn = engine_fns(self.backend, frames, settings)
            render_feedback(
                frames, img2img_fn, first_fn, lambda key: store.load(key, shape) if stored(key) else None, save,
                batch_size=settings.batch_size, on_step=lambda _: emit(round_done()), stored=stored,
            )
            emit(round_done())  # in-betweens filled after the last round

        yield from (done for done in streamed(run) if done.keys)


def streamed(run: Callable[[Callable], None]) -> Iterator:
    """What `run(emit)` emits, as an iterator: `run` goes on a thread so a generator can yield from its callbacks."""
    items: queue.Queue = queue.Queue()
    finished = object()

    def work() -> None:
        try:
            run(items.put)
            items.put(finished)
        except BaseException as e:  # raised again on the caller's thread
            items.put(e)

    threading.Thread(target=work, name="latentwalk-chain", daemon=True).start()
    while (item := items.get()) is not finished:
        if isinstance(item, BaseException):
            raise item
        yield item


# --- the driver --------------------------------------------------------------------------------

# Workers kept loaded between renders of one driver process that joined a cluster it did not
# start (a notebook, a service, tests): (what they were loaded with, their actors). One set at
# a time, since idle workers hold the cluster's CPUs and GPUs.
_warm: tuple[tuple, list] | None = None


def start_workers(placement: Placement, cpus_per_worker: int, spec, dtype: str, options, identity: RenderIdentity) -> tuple[list, FarmReport, tuple]:
    """The workers, loaded (warm ones when loaded alike); errors name the node."""
    import ray

    global _warm
    # 1. Reuse warm workers loaded with the same model, numerics and placement on this connection.
    recipe = (ray.get_runtime_context().get_job_id(), placement, cpus_per_worker, spec, dtype, options,
              identity.model_fingerprint, identity.versions)
    actors = []
    if _warm is not None:
        (warm_recipe, warm_actors), _warm = _warm, None
        if warm_recipe == recipe:
            actors = warm_actors
        else:
            stop_workers(warm_actors)
    # 2. Or start one actor per GPU (or per `cpus_per_worker` cores).
    if not actors:
        actor = ray.remote(FrameWorker).options(
            num_cpus=cpus_per_worker,
            num_gpus=1 if placement.device_type == "cuda" else 0,
            max_restarts=MAX_RESTARTS,
            max_task_retries=0,  # the driver resubmits lost batches itself, to another worker, and says so
        )
        actors = [actor.remote(spec, dtype, options, identity) for _ in range(placement.workers)]
    # 3. Wait until every one has the model loaded (a restarting one reloads it first).
    report = FarmReport(placement)
    try:
        infos = ray.get([a.info.options(max_task_retries=-1).remote() for a in actors])
    except ray.exceptions.RayError as e:
        stop_workers(actors)
        raise RuntimeError(f"a Ray worker failed to start: {e}") from None
    for node, pid, load_s, error in infos:
        if error is not None:
            stop_workers(actors)
            config, message = error
            raise (UserError if config else RuntimeError)(f"Ray worker on node {node} (pid {pid}): {message}")
        report.workers.append(WorkerStats(node, pid, load_s))
    return actors, report, recipe


def stop_workers(actors: list) -> None:
    import ray

    for actor in actors:
        ray.kill(actor, no_restart=True)


def run_batches(
    actors: list,
    report: FarmReport,
    batches: Sequence[Sequence[FrameInputs]],
    keys: Sequence[Sequence[str]],
    settings,
    store_root: str,
    on_done: Callable[[BatchDone], None],
    log: Callable[[str], None],
) -> None:
    """Hand each batch to the next free worker until all are stored; lost batches go to another worker."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from latentwalk.chunks import FAULT_ENV, parse_faults

    todo = deque(range(len(batches)))
    idle = list(range(len(actors)))
    in_flight: dict = {}  # object ref -> (worker index, batch index); batch None: a restart being awaited
    attempts = [0] * len(batches)
    faults = {b: kind for b, (kind, _) in parse_faults(os.environ.get(FAULT_ENV)).items() if kind == "store-full"}  # tests only
    while todo or any(b is not None for _, b in in_flight.values()):
        # 1. One batch in flight per worker: a free worker takes the next batch (work stealing).
        while todo and idle:
            w, b = idle.pop(0), todo.popleft()
            attempts[b] += 1
            in_flight[actors[w].render.remote(list(batches[b]), list(keys[b]), settings, store_root, faults.get(b))] = (w, b)
        if not in_flight:
            raise RuntimeError(f"every Ray worker died; {sum(len(batches[b]) for b in todo)} frames were not rendered")
        # 2. Wait for any batch (or a restarted worker); store-visible keys go to the assembler at once.
        [ref], _ = ray.wait(list(in_flight), num_returns=1)
        w, b = in_flight.pop(ref)
        stats = report.workers[w]
        try:
            done = ray.get(ref)
        except RayActorError as e:
            if b is None:  # its restarts are used up: carry on with the others
                log(f"latentwalk: Ray worker on node {stats.node} is gone for good ({type(e).__name__})")
                continue
            # 3. The worker died (SIGKILL, OOM killer, node gone): only this batch is lost. Ray
            # restarts the actor; it takes batches again once `info` answers (the model reloaded).
            reason = type(e).__name__
            report.retries.append({"node": stats.node, "pid": stats.pid, "frames": len(batches[b]), "reason": reason})
            log(f"latentwalk: Ray worker on node {stats.node} (pid {stats.pid}) died mid-batch ({reason}); "
                f"its {len(batches[b])} frames go to another worker")
            if attempts[b] >= MAX_ATTEMPTS:
                raise RuntimeError(f"a batch of {len(batches[b])} frames killed {attempts[b]} Ray workers in a row (out of memory?)") from None
            todo.appendleft(b)
            in_flight[actors[w].info.options(max_task_retries=-1).remote()] = (w, None)
            continue
        except RayTaskError as e:
            # 4. The worker raised (out of GPU memory, a full disk): the same batch would fail again.
            raise_cause(e.cause if getattr(e, "cause", None) is not None else e, f"Ray worker on node {stats.node} (pid {stats.pid})")
        if b is None:  # a restarted worker, model loaded
            stats.node, stats.pid, _, error = done
            if error is None:
                idle.append(w)
            else:
                log(f"latentwalk: Ray worker on node {stats.node} (pid {stats.pid}) could not restart: {error[1]}")
            continue
        stats.batches += 1
        stats.frames += len(done.keys)
        stats.busy_s += done.seconds
        idle.append(w)
        on_done(done)


def run_chains(
    actors: list,
    report: FarmReport,
    chains: Sequence[Sequence],
    missing: Sequence[Sequence[tuple[int, str]]],
    starts: Sequence[int],
    settings,
    store_root: str,
    fresh: bool,
    on_done: Callable[[BatchDone], None],
    log: Callable[[str], None],
) -> None:
    """Hand each feedback chain to the next free worker, one chain per worker; a lost chain resumes elsewhere.

    `missing`: per chain, (video frame, key) of the frames this render makes, in order; `starts`:
    each chain's first video frame.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    todo = deque(range(len(chains)))
    idle = list(range(len(actors)))
    in_flight: dict = {}  # chain generator (or a restart's `info` ref) -> (worker index, chain index or None)
    arrived: list[set[str]] = [set() for _ in chains]  # keys each chain has streamed back
    attempts = [0] * len(chains)
    while todo or any(c is not None for _, c in in_flight.values()):
        # 1. A free worker takes the next chain and keeps it to its end.
        while todo and idle:
            w, c = idle.pop(0), todo.popleft()
            attempts[c] += 1
            made = sorted(arrived[c]) if fresh else None
            in_flight[actors[w].render_chain.remote(list(chains[c]), settings, store_root, made)] = (w, c)
        if not in_flight:
            raise RuntimeError(f"every Ray worker died; {len(todo)} feedback chains were not rendered")
        # 2. Wait for any chain's next round (or a restarted worker).
        [ready], _ = ray.wait(list(in_flight), num_returns=1)
        w, c = in_flight[ready]
        stats = report.workers[w]
        try:
            done = ray.get(ready if c is None else next(ready))
        except StopIteration:  # the chain is complete
            del in_flight[ready]
            idle.append(w)
            # A lost worker may have stored frames it never reported; the chain is in the store now.
            unreported = tuple(key for _, key in missing[c] if key not in arrived[c])
            if unreported:
                arrived[c].update(unreported)
                on_done(BatchDone(unreported, stats.node, stats.pid, 0.0))
            continue
        except RayActorError as e:
            del in_flight[ready]
            if c is None:
                log(f"latentwalk: Ray worker on node {stats.node} is gone for good ({type(e).__name__})")
                continue
            # 3. The worker died: the chain's stored frames stand; it resumes from the last of them.
            reason = type(e).__name__
            lost = [frame for frame, key in missing[c] if key not in arrived[c]]
            in_flight[actors[w].info.options(max_task_retries=-1).remote()] = (w, None)
            if not lost:  # it died after its last round: nothing to redo
                continue
            report.retries.append({"node": stats.node, "pid": stats.pid, "frames": len(lost), "reason": reason,
                                   "chain": starts[c], "resumed_at": lost[0]})
            log(f"latentwalk: Ray worker on node {stats.node} (pid {stats.pid}) died mid-chain ({reason}); "
                f"the feedback chain from frame {starts[c]} resumes at frame {lost[0]} or later on another worker")
            if attempts[c] >= MAX_ATTEMPTS:
                raise RuntimeError(f"the feedback chain from frame {starts[c]} killed {attempts[c]} Ray workers in a row (out of memory?)") from None
            todo.appendleft(c)
            continue
        except RayTaskError as e:
            raise_cause(e.cause if getattr(e, "cause", None) is not None else e, f"Ray worker on node {stats.node} (pid {stats.pid})")
        if c is None:  # a restarted worker, model loaded
            del in_flight[ready]
            stats.node, stats.pid, _, error = done
            if error is None:
                idle.append(w)
            else:
                log(f"latentwalk: Ray worker on node {stats.node} (pid {stats.pid}) could not restart: {error[1]}")
            continue
        # 4. A round of the chain is stored: its keys go to the assembler.
        stats.batches += 1
        stats.frames += len(done.keys)
        stats.busy_s += done.seconds
        arrived[c].update(done.keys)
        on_done(done)


# --- chunked encoding: encoder tasks where the frames are ------------------------------------------


def encode_chunk_task(store_root: str, keys: Sequence[str], settings, fault: str | None) -> tuple[str, int, bytes, float]:
    """A Ray task: one chunk of the video from the store (chunks.encode_chunk); (node, pid, the chunk's bytes, seconds)."""
    import ray

    from latentwalk.chunks import encode_chunk

    t0 = time.perf_counter()
    data = encode_chunk(store_root, keys, settings, fault)
    return ray.util.get_node_ip_address(), os.getpid(), data, time.perf_counter() - t0


class ChunkEncoders:
    """The video's chunks, each encoded by a task on the cluster once all its frames are stored.

    `arrived(keys)` as frames are stored (it submits every chunk that is now complete and keeps
    what finished); `finish()` waits for the rest and returns the chunk files in video order.
    Chunks already in the folder (same keys, same settings) are reused. A task whose worker died,
    or whose chunk failed or came back short, is submitted again (MAX_ATTEMPTS in all, then a clear
    error); a worker without ffmpeg, a damaged stored frame or a full disk stop the render.
    """

    def __init__(self, store_root: str, settings, folder, video_keys: Sequence[str], waiting: set[str],
                 report: FarmReport, log: Callable[[str], None], max_in_flight: int):
        from latentwalk.chunks import FAULT_ENV, parse_faults, plan_chunks

        self.store_root, self.settings, self.folder, self.report, self.log = store_root, settings, folder, report, log
        self.chunks = plan_chunks(list(video_keys), settings.chunk_frames)
        self.names = [settings.name(chunk) for chunk in self.chunks]
        self.firsts = [i * settings.chunk_frames for i in range(len(self.chunks))]  # each chunk's first video frame
        self.faults = parse_faults(os.environ.get(FAULT_ENV))
        self.max_in_flight = max(1, max_in_flight)
        # 1. Chunks kept by an earlier run are reused; the others wait for their frames.
        self.done = [folder.has(name, len(chunk)) for name, chunk in zip(self.names, self.chunks)]
        self.reused = sum(self.done)
        self.pending = [set(chunk) & waiting if not done else set() for chunk, done in zip(self.chunks, self.done)]
        self.chunks_of: dict[str, list[int]] = {}
        for c, keys in enumerate(self.pending):
            for key in keys:
                self.chunks_of.setdefault(key, []).append(c)
        self.ready = deque(c for c, keys in enumerate(self.pending) if not keys and not self.done[c])
        self.in_flight: dict = {}  # object ref -> chunk index
        self.attempts = [0] * len(self.chunks)
        self.encode_s = 0.0
        self.retries: list[dict] = []
        self.task = None

    def arrived(self, keys: Sequence[str]) -> None:
        """Frames now stored: submit the chunks they complete, keep the chunks that are done."""
        for key in keys:
            for c in self.chunks_of.pop(key, ()):
                self.pending[c].discard(key)
                if not self.pending[c]:
                    self.ready.append(c)
        self.pump(block=False)

    def finish(self) -> list:
        """Wait for every chunk; the chunk files in video order."""
        while not all(self.done):
            if not self.ready and not self.in_flight:
                missing = sum(len(p) for p in self.pending)
                raise RuntimeError(f"{missing} frames of the video's chunks were never reported stored")
            self.pump(block=True)
        self.report.chunks = {"chunks": len(self.chunks), "chunk_frames": self.settings.chunk_frames, "encoded": len(self.chunks) - self.reused,
                              "reused": self.reused, "encode_s": round(self.encode_s, 3), "retries": self.retries, "folder": str(self.folder.root)}
        return [self.folder.path(name) for name in self.names]

    def pump(self, block: bool) -> None:
        """Submit ready chunks (at most `max_in_flight` at a time); collect the finished ones (wait for one when `block`)."""
        import ray

        while self.ready and len(self.in_flight) < self.max_in_flight:
            self.submit(self.ready.popleft())
        if not self.in_flight:
            return
        finished, _ = ray.wait(list(self.in_flight), num_returns=1 if block else len(self.in_flight), timeout=None if block else 0)
        for ref in finished:
            self.collect(ref)

    def submit(self, c: int) -> None:
        import ray

        if self.task is None:
            # No CPUs reserved: the frame workers hold them, and an encoder must run beside them as frames complete.
            self.task = ray.remote(encode_chunk_task).options(num_cpus=0, max_retries=0)
        self.attempts[c] += 1
        kind, always = self.faults.get(c, (None, False))
        fault = kind if always or self.attempts[c] == 1 else None
        self.in_flight[self.task.remote(self.store_root, list(self.chunks[c]), self.settings, fault)] = c

    def collect(self, ref) -> None:
        import ray
        from ray.exceptions import RayError, RayTaskError

        from latentwalk.chunks import ChunkError

        c = self.in_flight.pop(ref)
        first, last = self.firsts[c], self.firsts[c] + len(self.chunks[c]) - 1
        try:
            node, pid, data, seconds = ray.get(ref)
            self.folder.save(self.names[c], data, len(self.chunks[c]))
        except RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            where = f"the chunk encoder on node {getattr(e, 'ip', None) or '?'} (pid {getattr(e, 'pid', None) or '?'})"
            if not isinstance(cause, ChunkError) or type(cause).__name__ == "NoFFmpeg":
                raise_cause(cause, where)
            self.retry(c, first, last, f"{where} failed: {cause}")
            return
        except ChunkError as e:  # it came back short
            self.retry(c, first, last, f"the chunk of frames {first}-{last} is not whole: {e}")
            return
        except RayError as e:  # the task's worker died (SIGKILL, the OOM killer, its node gone)
            self.retry(c, first, last, f"a chunk encoder died mid-chunk ({type(e).__name__})")
            return
        self.encode_s += seconds
        self.done[c] = True

    def retry(self, c: int, first: int, last: int, reason: str) -> None:
        from latentwalk.chunks import ChunkError

        if self.attempts[c] >= MAX_ATTEMPTS:
            raise ChunkError(f"the chunk of frames {first}-{last} failed {self.attempts[c]} times; last: {reason}; "
                             "frames already stored are kept and the earlier video, if any, is untouched") from None
        self.retries.append({"chunk": first, "frames": len(self.chunks[c]), "reason": reason})
        self.log(f"latentwalk: {reason}; encoding frames {first}-{last} again")
        self.ready.appendleft(c)


def raise_cause(cause: BaseException, where: str) -> None:
    """Raise a remote failure on the driver as what it means: a UserError or OSError (a full disk) as itself, with where."""
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if isinstance(cause, OSError):
        raise OSError(cause.errno, f"{cause.strerror or first} (in {where})", cause.filename) from None
    if isinstance(cause, UserError):
        raise type(cause)(f"{where}: {first}") from None
    raise RuntimeError(f"{where} failed: {type(cause).__name__}: {first}") from None


class Farm:
    """A render's use of a Ray cluster, from joining it to stopping its workers (`close`)."""

    def __init__(self, settings: FarmSettings, device: str, store_root: str):
        # 1. Configuration a worker cannot fix, before joining the cluster.
        if store_root.startswith("memory://"):
            raise UserError(f"store: {store_root!r} lives in one process's memory; Ray workers need a shared folder or an object store (s3://...)")
        self.settings, self.store_root = settings, store_root
        # 2. Join (or start) the cluster and decide where workers run.
        self.started = connect(settings.address)
        self.actors: list = []
        try:
            self.placement = place(settings, device)
        except BaseException:
            self.close()
            raise
        self.report = FarmReport(self.placement)

    def start(self, spec, dtype: str, options, identity: RenderIdentity) -> None:
        """One worker per GPU (or per `cpus_per_worker` cores), each with the model loaded."""
        self.actors, self.report, self.recipe = start_workers(self.placement, self.settings.cpus_per_worker, spec, dtype, options, identity)

    def render(self, frames: Sequence[FrameInputs], keys: Sequence[str], settings, on_done: Callable[[BatchDone], None], log: Callable[[str], None]) -> None:
        """Render `frames` (missing, in video order) in the batches one process would form, with `settings`."""
        from latentwalk.engine import plan_batches

        key_of = dict(zip(frames, keys))
        batches = plan_batches(frames, settings.batch_size)
        run_batches(self.actors, self.report, batches, [[key_of[f] for f in b] for b in batches], settings, self.store_root, on_done, log)

    def render_chains(self, frames: Sequence, work, settings, fresh: bool, on_done: Callable[[BatchDone], None], log: Callable[[str], None]) -> None:
        """Render a feedback plan's incomplete chains (feedback.FeedbackWork), one chain per worker."""
        from latentwalk.feedback import chain_frames

        todo = [c for c, resume in enumerate(work.resume_at()) if resume is not None]
        chains = [chain_frames(frames, work.chains[c]) for c in todo]
        missing = [[(i, work.keys[i]) for i in sorted(work.diffuse[c] + work.fill[c])] for c in todo]
        starts = [work.chains[c][0] for c in todo]
        run_chains(self.actors, self.report, chains, missing, starts, settings, self.store_root, fresh, on_done, log)

    def check_visible(self, store, done: BatchDone, shape: tuple[int, int, int]) -> None:
        """A worker's frames must be readable here: a local folder on another node is not."""
        if not store.has(done.keys[0], shape) and not _readable(store, done.keys[0], shape):
            raise UserError(
                f"store: frames that the Ray worker on node {done.node} stored in {self.store_root!r} are not visible on the "
                "driver; on several machines use a shared folder (NFS) or an object store (--store s3://bucket/prefix)"
            )

    def close(self) -> None:
        """Stop the workers and the cluster this render started; keep workers warm on a cluster it joined."""
        import ray

        global _warm
        if self.actors and not self.started and ray.is_initialized():
            _warm = (self.recipe, self.actors)
        elif self.actors:
            stop_workers(self.actors)
        self.actors = []
        if self.started and ray.is_initialized():
            ray.shutdown()
            self.started = False


def _readable(store, key: str, shape: tuple[int, int, int]) -> bool:
    try:
        store.load(key, shape)
        return True
    except FileNotFoundError:
        return False


def shared_root(root: str | Path) -> str:
    """A store root other processes can open: URLs as they are, folders made absolute (workers run elsewhere)."""
    return root if isinstance(root, str) and "://" in root else str(Path(root).absolute())


class RayExecutor:
    """The farm behind the executor interface: workers store the frames, the driver hears their keys."""

    def __init__(self, job: Job):
        from latentwalk.store import open_store

        self.job = job
        self.farm = Farm(FarmSettings(job.ray_address, job.ray_workers, job.ray_cpus_per_worker), job.device, shared_root(job.store_root))
        self.device_type, self.cpu_threads = self.farm.placement.device_type, self.farm.placement.cpu_threads
        self.store = open_store(job.store_root)
        self.shape = (job.engine.height, job.engine.width, 3)
        self.started = False
        self.load_s = 0.0  # seconds `start` took: workers started, models loaded

    def start(self, identity: RenderIdentity) -> None:
        if not self.started:
            clock = time.perf_counter()
            options = self.job.options_for(identity.device_type) if self.job.options_for else None
            self.farm.start(self.job.spec, self.job.dtype, options, identity)
            self.started = True
            self.load_s = time.perf_counter() - clock

    def arrived(self, done: Done) -> Callable[[BatchDone], None]:
        def heard(batch: BatchDone) -> None:
            self.farm.check_visible(self.store, batch, self.shape)
            done(batch.keys, None)

        return heard

    def render(self, frames: Sequence[FrameInputs], keys: Sequence[str], done: Done, *, capture: int = 0) -> None:
        # `capture` is local: each worker starts a shared frame from its own probes' latents.
        self.farm.render(list(frames), list(keys), self.job.engine, self.arrived(done), self.job.log)

    def render_chains(self, chains, done: Done) -> None:
        self.farm.render_chains(chains.frames, chains.work, self.job.engine, self.job.fresh, self.arrived(done), self.job.log)

    def chunk_encoders(self, video_keys: Sequence[str], waiting: set[str], settings, folder) -> ChunkEncoders:
        """Encoder tasks for the video's chunks (chunks.ChunkSettings, chunks.ChunkFolder): see ChunkEncoders."""
        workers = self.farm.placement.workers
        return ChunkEncoders(self.farm.store_root, settings, folder, video_keys, waiting, self.farm.report, self.job.log, workers)

    def report(self) -> dict | None:
        return self.farm.report.as_dict()

    def model_info(self, identity: RenderIdentity) -> tuple[str, str, str]:
        return identity.model, identity.device_type, identity.dtype

    def close(self) -> None:
        self.farm.close()
