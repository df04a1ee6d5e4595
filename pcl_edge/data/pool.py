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


def resize_image(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One uint8 HWC image resized to (H, W) (bilinear; PIL antialiases when it shrinks), as torchvision's
    ``Resize((h, w))`` does: no crop, the aspect ratio follows the target."""
    from PIL import Image

    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR))
    return out[..., None] if out.ndim == 2 else out


def resize_pool(pool: Pool, size: tuple[int, int] | None) -> Pool:
    """``pool`` with every image at (H, W); the pool itself when it already is (or no size is asked)."""
    if size is None or tuple(pool.x_train.shape[1:3]) == tuple(size):
        return pool

    def resize(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.stack([resize_image(a, size) for a in x])

    return Pool(resize(pool.x_train), pool.y_train, pool.class_names, resize(pool.x_test), pool.y_test)
