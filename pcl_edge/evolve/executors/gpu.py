"""K candidates in flight in one process on one GPU (``pcl-edge evolve --executor gpu --slots K``).

A search's candidates are tiny (2-200 k parameters): trained one at a time, a large GPU idles between kernel
launches. Worker processes would each hold a CUDA context and take turns on the device. Here one process keeps
``slots`` trainings in flight, each with its own model, optimizer and CUDA stream: the executor advances them round
robin, one optimizer step each (a training is a step generator, ``candidate.candidate_steps``), so while the host
launches one candidate's step the device runs the others'; a finished slot is refilled at once with the next
candidate. With ``graphs`` a step is one CUDA graph replay (``cuda_graph.py``), which makes the launching cheap too.

Determinism is per candidate, as under the other executors: everything a candidate draws comes from its identity
(``derive_seed``), its model is built under a forked, seeded RNG, and cuDNN is set deterministic, so neither K nor
the interleaving changes a result; results come back in submission order. Without CUDA the same scheduler runs on
the CPU (streams are then no-ops): that is how its bookkeeping is tested, and it gives the local executor's numbers
bit for bit.

Every training a map is given goes through the slots, an expert's (one item) included, so a candidate computes
the same numbers whichever map it came in (graphs and the capturable SGD round like each other, not like torch's
SGD). ``train_s`` of a candidate counts the time its slot was waiting on the others too.

Failures: a candidate that runs the device out of memory is scored by ``on_failure`` (the learner passes
``failed_candidate``: accuracy 0, visibly) and its slot is refilled; any other error stops the map, after closing
the trainings in flight, and the run resumes from its last checkpoint as under the other executors.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..._progress import progress
from . import EXECUTORS

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Slot:
    index: int  # the item's position in the map: where its result goes
    item: Any
    steps: Generator
    stream: Any  # a torch.cuda.Stream, or None on the CPU
    advanced: int = 0


@dataclass
class SlotStats:
    """What a map did: how many trainings ran, the most in flight at once, refills, failures."""

    started: int = 0
    finished: int = 0
    failed: int = 0
    peak: int = 0
    refills: int = 0
    steps: int = 0
    order: list[int] = field(default_factory=list)  # item indices in the order they finished


def run_slots(items: Sequence[T], start: Callable[[T], Generator[None, None, R]], slots: int, *,
              stream: Callable[[], Any] = lambda: None,
              enter: Callable[[Any], Any] = lambda s: contextlib.nullcontext(),
              is_failure: Callable[[BaseException], bool] = lambda exc: False,
              on_failure: Callable[[T, BaseException], R] | None = None, on_done: Callable[[int], None] | None = None,
              stats: SlotStats | None = None) -> list[R]:
    """Run ``start(item)`` generators ``slots`` at a time, one ``next()`` each in turn (inside ``enter(stream)``);
    a slot that finishes is refilled from the remaining items before the next round. Returns the generators' return
    values in the order of ``items``. An exception for which ``is_failure`` is true becomes ``on_failure(item, exc)``;
    any other closes every training in flight and propagates."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1 (got {slots})")
    stats = stats if stats is not None else SlotStats()
    pending: deque[tuple[int, T]] = deque(enumerate(items))
    active: list[Slot] = []
    results: list[Any] = [None] * len(items)
    free_streams: list[Any] = []
    try:
        while pending or active:
            while pending and len(active) < slots:
                i, item = pending.popleft()
                s = free_streams.pop() if free_streams else stream()
                with enter(s):
                    active.append(Slot(i, item, start(item), s))
                stats.started += 1
                stats.refills += stats.started > slots
                stats.peak = max(stats.peak, len(active))
            for slot in list(active):
                try:
                    with enter(slot.stream):
                        next(slot.steps)
                    slot.advanced += 1
                    stats.steps += 1
                    continue
                except StopIteration as stop:
                    results[slot.index] = stop.value
                    stats.finished += 1
                except Exception as exc:  # noqa: BLE001 - sorted below: a failure to score or an error to raise
                    if on_failure is None or not is_failure(exc):
                        raise
                    log.warning("candidate %d failed after %d steps (%s: %s): scored as failed", slot.index,
                                slot.advanced, type(exc).__name__, exc)
                    results[slot.index] = on_failure(slot.item, exc)
                    stats.failed += 1
                active.remove(slot)
                free_streams.append(slot.stream)
                stats.order.append(slot.index)
                if on_done is not None:
                    on_done(slot.index)
    finally:
        for slot in active:  # an error or an interrupt: free what the trainings in flight hold
            slot.steps.close()
    return results


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


@EXECUTORS.register("gpu")
class GpuExecutor:
    """``slots``: trainings in flight at once; ``device``: default ``cuda`` when this process sees a GPU, else the
    CPU; ``graphs``: replay each training step as a CUDA graph (CUDA only); ``on_failure``: scores a candidate that
    ran the device out of memory (else the error stops the map)."""

    def __init__(self, progress: bool = True, slots: int = 16, device: str | None = None, graphs: bool = True,
                 on_failure: Callable | None = None) -> None:
        import torch

        if slots < 1:
            raise ValueError(f"the gpu executor needs at least one slot (got {slots})")
        self.progress = progress
        self.slots = slots
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.graphs = graphs and self.device.type == "cuda"
        self.on_failure = on_failure
        self.stats = SlotStats()  # of the last map
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True  # the same kernels whatever else is in flight
            torch.backends.cudnn.benchmark = False
        else:
            log.warning("gpu executor: no CUDA device in this process; running %d slots on the CPU", slots)

    def map(self, fn: Callable[..., R], items: Sequence[T], desc: str = "", shared: dict | None = None) -> list[R]:
        import torch

        from ..trainer import step_progress, torch_threads

        shared = shared or {}
        stepwise = getattr(fn, "stepwise", None)
        threads = getattr(shared.get("cfg"), "threads", 0)
        if stepwise is None:  # not a training this executor knows how to interleave: one after another, here
            with torch_threads(threads):
                return [fn(item, **shared) for item in progress(items, desc=desc, unit="cand",
                                                                enabled=self.progress)]
        cuda = self.device.type == "cuda"
        single = len(items) == 1  # an expert's training: its steps as the progress bar, not one candidate
        bar = progress(None, total=len(items), desc=desc, unit="cand", enabled=self.progress and not single)
        self.stats = SlotStats()
        failure = None if self.on_failure is None else (lambda item, exc: self._failed(fn, item, exc, shared))
        try:
            with torch_threads(threads), step_progress(desc, enabled=self.progress and single):
                return run_slots(items, lambda item: stepwise(item, **shared, device=self.device, graphs=self.graphs),
                                 self.slots, stream=(lambda: torch.cuda.Stream(self.device)) if cuda else lambda: None,
                                 enter=torch.cuda.stream if cuda else lambda s: contextlib.nullcontext(),
                                 is_failure=_is_out_of_memory, on_failure=failure,
                                 on_done=lambda i: bar.update(1), stats=self.stats)
        finally:
            bar.close()
            if cuda:
                torch.cuda.synchronize(self.device)

    def _failed(self, fn, item, exc, shared):
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self.on_failure(item, exc, **shared)

    def settings(self) -> dict:
        return {"slots": self.slots, "device": str(self.device), "graphs": self.graphs}

    def close(self) -> None:
        pass
