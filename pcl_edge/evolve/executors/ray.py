"""Candidates as Ray tasks, for a multi-GPU workstation or a cluster (``pcl-edge evolve --executor ray``).

- A task's data goes into the object store once per ``map`` call (``ray.put``), not once per candidate; Ray hands
  workers the object, zero-copy for numpy/torch buffers on the same node.
- Each candidate asks for ``num_cpus`` / ``num_gpus``; its torch thread count comes from its training recipe
  (``TrainConfig.threads``), as under the local executor, so a candidate computes the same numbers wherever it runs:
  candidates are seeded from their identity, never from which worker picks them up, and results come back in
  submission order.
- A worker that dies mid-candidate is retried by Ray (``max_retries``, bounded); a candidate that still fails is
  scored as failed (validation accuracy 0, ``extra.failed``) and the run goes on, checkpointed as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..._progress import progress
from . import EXECUTORS

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def _run_candidate(fn: Callable, item, threads: int, **shared):
    import torch

    torch.set_num_threads(max(1, threads))
    return fn(item, **shared)


@EXECUTORS.register("ray")
class RayExecutor:
    def __init__(self, address: str | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
                 max_retries: int = 2, num_cpus: int | None = None, progress: bool = True,
                 on_failure: Callable | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("Ray is not installed: pip install 'pcl-edge[ray]'") from None
        self.ray, self.address = ray, address
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": num_cpus}  # no address: a local instance
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            self._owns = True
        else:
            self._owns = False
        self.cpus, self.gpus, self.max_retries, self.progress = cpus_per_trial, gpus_per_trial, max_retries, progress
        self.on_failure = on_failure
        self._remote = ray.remote(_run_candidate)
        self._refs: dict[int, tuple[object, object]] = {}  # id(obj) -> (obj, ObjectRef): each object put once

    def _ref(self, obj):
        hit = self._refs.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = self._refs[id(obj)] = (obj, self.ray.put(obj))
        return hit[1]

    def map(self, fn: Callable[..., R], items: Sequence[T], desc: str = "", shared: dict | None = None) -> list[R]:
        ray = self.ray
        shared_refs = {k: self._ref(v) for k, v in (shared or {}).items()}  # a task's data: put once, reused
        task = self._remote.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
                                    retry_exceptions=False)
        refs = [task.remote(fn, item, int(max(1, self.cpus)), **shared_refs) for item in items]
        out: list = []
        for item, ref in progress(list(zip(items, refs)), desc=desc, unit="cand", enabled=self.progress):
            try:
                out.append(ray.get(ref))
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.RayTaskError) as exc:
                if self.on_failure is None:
                    raise
                log.warning("candidate %s failed after %d retries: %s", getattr(item, "uid", item), self.max_retries,
                            type(exc).__name__)
                out.append(self.on_failure(item, exc, **(shared or {})))
        return out

    def settings(self) -> dict:
        where = self.address or ("a local instance" if self._owns else "the caller's instance")
        return {"address": where, "cpus_per_trial": self.cpus, "gpus_per_trial": self.gpus,
                "max_retries": self.max_retries}

    def close(self) -> None:
        self._refs.clear()
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
