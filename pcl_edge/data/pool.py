"""A labelled image pool as loaded from a source, before it is cut into tasks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pool:
    """Everything a source provides: uint8 NHWC images and integer labels, and the source's own test split if any."""

    x_train: np.ndarray
    y_train: np.ndarray
    class_names: tuple[str, ...]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x_train.dtype != np.uint8 or self.x_train.ndim != 4:
            raise ValueError(f"pool images must be uint8 NHWC, got {self.x_train.dtype} {self.x_train.shape}")
        if len(self.x_train) != len(self.y_train):
            raise ValueError("pool images and labels differ in length")
        for y in (self.y_train, self.y_test):
            if y is not None and len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(self.class_names):
                raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1} (one per class name)")

    @property
    def has_test(self) -> bool:
        return self.x_test is not None
