"""Latency measurement backends, one file each, chosen by name. Measuring needs the device and its runtime;
predicting (``hw.predictor``) never imports these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..._registry import Registry


@dataclass(frozen=True)
class Measurement:
    median: float  # ms
    p90: float
    p99: float
    std: float
    count: int

    @classmethod
    def from_samples(cls, ms: np.ndarray) -> Measurement:
        ms = np.asarray(ms, float)
        return cls(median=float(np.median(ms)), p90=float(np.percentile(ms, 90)), p99=float(np.percentile(ms, 99)),
                   std=float(ms.std()), count=int(ms.size))


BACKENDS: Registry[Callable[..., object]] = Registry("backend")


def create_backend(name: str, **kwargs):
    from . import ort, tensorrt, trtexec  # noqa: F401  (registration)

    return BACKENDS.get(name)(**kwargs)
