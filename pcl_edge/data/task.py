"""What a task stream is: ordered tasks, each with its classes, splits and input spec."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..preprocess import normalize


@dataclass(frozen=True)
class InputSpec:
    """How a model input is laid out and normalised: x_float = (uint8 / 255 - mean) / std, NCHW float32."""

    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str = "float32"
    layout: str = "NCHW"

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "mean": list(self.mean), "std": list(self.std),
                "dtype": self.dtype, "layout": self.layout}

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW, normalised."""
        return normalize(images, self.mean, self.std)


@dataclass(frozen=True)
class Split:
    """Images as uint8 NHWC and labels local to the task (0..k-1)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Task:
    id: int  # 1-based, the id a device routes by
    classes: tuple[int, ...]  # class indices in the source
    class_names: tuple[str, ...]
    train: Split  # what proxy and final training see
    val: Split  # carved from the source's TRAIN data; what fitness sees
    test: Split  # only for the accuracy matrix after an expert is frozen
    spec: InputSpec
    source: str = ""  # where its images come from (``plan.TaskDef.source``)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def name(self) -> str:
        return f"task_{self.id:02d}"


@dataclass(frozen=True)
class TaskStream:
    name: str  # e.g. "digits" or "imagefolder:/data/cifar"
    tasks: tuple[Task, ...]
    test_split: str  # how the test data was obtained, said plainly in the summary
    summary: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)
