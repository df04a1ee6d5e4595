"""The one input transform, shared by training, export checks, calibration and the device runtime (numpy only):
uint8 images NHWC -> float32 NCHW, ``(x / 255 - mean) / std`` per channel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
