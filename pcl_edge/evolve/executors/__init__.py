"""Executors run candidates; the learner only sees this protocol (a local loop today, Ray behind the same
interface)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ..._registry import Registry

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "") -> list[R]:
        """Results in the order of ``items``, whatever order they were computed in."""
        ...

    def close(self) -> None: ...


EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")


def create_executor(name: str = "local", **kwargs) -> Executor:
    from . import local  # noqa: F401  (registration)

    return EXECUTORS.get(name)(**kwargs)
