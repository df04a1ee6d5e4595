"""The default executor: candidates one after another in this process, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ..._progress import progress
from . import EXECUTORS

T = TypeVar("T")
R = TypeVar("R")


@EXECUTORS.register("local")
class LocalExecutor:
    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "") -> list[R]:
        return [fn(item) for item in progress(items, desc=desc, unit="cand", enabled=self.progress)]

    def close(self) -> None:
        pass
