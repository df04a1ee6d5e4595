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
    def __init__(self, progress: bool = True, threads: int = 0) -> None:
        self.progress, self.threads = progress, threads

    def map(self, fn: Callable[..., R], items: Sequence[T], desc: str = "", shared: dict | None = None) -> list[R]:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        shared = shared or {}
        return [fn(item, **shared) for item in progress(items, desc=desc, unit="cand", enabled=self.progress)]

    def close(self) -> None:
        pass
