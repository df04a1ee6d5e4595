"""The default executor: candidates on this machine, in worker processes when more than one core is usable.

Why processes and not threads inside one torch process: the search trains many tiny networks, where one torch
process with N intra-op threads scales poorly and collapses when anything else runs on the machine (OpenMP threads
spin at barriers waiting for a core that is busy elsewhere). N single-threaded workers, each training its own
candidate, keep every core busy and degrade gracefully under contention (BENCHMARKS.md, "Using both cores").

Determinism: a candidate's torch thread count comes from its training recipe (``TrainConfig.threads``), never from
the executor, and its seed from its identity, so the results are bit-identical to running the same candidates one
after another in this process (``workers=1``), whatever the number of workers.

Data: the task's tensors are moved to shared memory once (torch.multiprocessing), so a worker receives a handle,
not a copy, per candidate. The caller moves what it ships there on its own thread (``share``), not on the pool's
feeder thread, where the copy would start an OpenMP team that slows every 2-thread training in the process (a
worker pickles its result on its own main thread: the result queue has no feeder).
Workers are spawned (not forked: forking a process whose OpenMP pool already ran can deadlock) once per run and live
until ``close()``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from ..._progress import progress
from . import EXECUTORS

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """A worker process ended without an answer (killed, out of memory)."""


def _init_worker(log_level: int, parent: int) -> None:
    import threading

    import torch

    torch.set_num_threads(1)  # a candidate sets its own count from its recipe; this is only the idle default
    logging.getLogger("pcl_edge").setLevel(log_level)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent-watchdog").start()


def _exit_with(parent: int, every_s: float = 0.5) -> None:
    """End this worker within ``every_s`` of its parent's death (kill -9 included): an orphan would go on training
    and steal the cores of the run that resumes."""
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(1)


def share(obj: object) -> None:
    """Move every CPU tensor reachable from ``obj`` to shared memory, on this thread. The walk goes through dicts,
    lists, tuples and dataclasses (what ``LocalExecutor.map`` ships); a tensor anywhere else is still shipped, but
    moved on the feeder thread.

    Why here: pickling for a process pool does it otherwise on the pool's feeder thread, and the copy of a large
    tensor runs in parallel, in an OpenMP team of that thread's own. libgomp then manages more threads than there are
    cores and spins only briefly at barriers in every team of the process: the main process's 2-thread trainings (an
    expert's) ran at 43 ms a step instead of 17 on Split Digits (BENCHMARKS.md, "An expert's steps in the main
    process"). A full shared-memory mount now fails here, in ``map``, rather than on a future."""
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu" and not obj.is_shared():
            obj.share_memory_()
    elif isinstance(obj, dict):
        for value in obj.values():
            share(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            share(value)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            share(getattr(obj, field.name))


def _warm() -> None:
    from .. import candidate  # noqa: F401  (imports what a candidate needs)


@EXECUTORS.register("local")
class LocalExecutor:
    """``workers``: processes that train candidates (1 = in this process; 0 = ``$PCL_EDGE_WORKERS`` if set, else one
    per usable core)."""

    def __init__(self, progress: bool = True, workers: int = 0) -> None:
        from ..trainer import usable_cores

        self.progress = progress
        workers = workers or int(os.environ.get("PCL_EDGE_WORKERS", "0") or 0)
        self.workers = workers if workers > 0 else usable_cores()
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1:  # start the workers now: importing torch in them overlaps the caller's data loading
            pool = self._get_pool()
            for _ in range(self.workers):
                pool.submit(_warm)

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import torch.multiprocessing as tmp

            log.debug("starting %d worker processes", self.workers)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=tmp.get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(logging.getLogger("pcl_edge").getEffectiveLevel(),
                                                       os.getpid()))
        return self._pool

    def map(self, fn: Callable[..., R], items: Sequence[T], desc: str = "", shared: dict | None = None) -> list[R]:
        shared = shared or {}
        if len(items) == 1:  # one training (an expert's): here, no hand-over, its steps as the progress bar
            from ..trainer import step_progress

            with step_progress(desc, enabled=self.progress):
                return [fn(items[0], **shared)]
        if self.workers <= 1:
            return [fn(item, **shared) for item in progress(items, desc=desc, unit="cand", enabled=self.progress)]
        if not items:
            return []
        pool = self._get_pool()
        share([list(items), shared])
        futures: list[Future] = [pool.submit(fn, item, **shared) for item in items]
        try:
            return [f.result() for f in progress(futures, desc=desc, unit="cand", enabled=self.progress)]
        except BrokenProcessPool as exc:
            self.close()
            raise WorkerDied(f"a worker process died while running {desc or 'candidates'} (killed or out of "
                             "memory); the run state is saved: continue it with --resume") from exc
        finally:
            for f in futures:
                f.cancel()

    def settings(self) -> dict:
        return {"workers": self.workers}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
