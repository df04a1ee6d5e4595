"""Executors run candidates; the learner only sees this protocol: worker processes on this machine (``local``),
K trainings in flight on one GPU (``gpu``), Ray tasks (``ray``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ..._registry import Registry

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    progress: bool  # progress bars shown (the learner's own long trainings follow it too)

    def map(self, fn: Callable[..., R], items: Sequence[T], desc: str = "", shared: dict | None = None) -> list[R]:
        """``[fn(item, **shared) for item in items]``, in the order of ``items`` whatever order they were computed
        in. ``shared`` holds what every call needs (a task's data): a distributed executor ships it once."""
        ...

    def close(self) -> None: ...

    def settings(self) -> dict:
        """What the executor runs with, resolved (defaults and environment applied), for the run's record."""
        ...


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")


def create_executor(name: str = "local", **kwargs) -> Executor:
    from . import gpu, local, ray  # noqa: F401  (registration; ray itself is imported only when used)

    return EXECUTORS.get(name)(**kwargs)
