"""Power readers, one file each, by name: ``ina-sysfs`` and ``tegrastats`` on a Jetson, ``serial-meter`` for an
external USB power meter. A reader samples in a background thread between ``start()`` and ``stop()``; energy per
inference is mean power x window / inferences, and the profile records which reader produced it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..._registry import Registry

POWER_READERS: Registry[Callable[..., PowerReader]] = Registry("power reader")


class PowerReaderError(RuntimeError):
    pass


@dataclass(frozen=True)
class PowerTrace:
    t: np.ndarray  # seconds
    watts: np.ndarray

    @property
    def mean_w(self) -> float:
        return float(np.mean(self.watts)) if self.watts.size else float("nan")

    def energy_j(self) -> float:
        """Trapezoidal integral of power over the sampled window."""
        return float(np.trapezoid(self.watts, self.t)) if self.t.size > 1 else 0.0


class PowerReader:
    """Subclasses implement ``sample() -> watts``; the base class runs it every ``interval_s`` in a thread."""

    source = "unknown"

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> float:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append((time.perf_counter(), self.sample()))
            except Exception as exc:  # noqa: BLE001 - reported by stop(), never lost in the thread
                self._error = exc
                return
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"power-{self.source}", daemon=True)
        self._thread.start()

    def stop(self) -> PowerTrace:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._error is not None:
            raise PowerReaderError(f"{self.source}: reading failed: {self._error}") from self._error
        if not self._samples:
            raise PowerReaderError(f"{self.source}: no power samples were read")
        t, w = np.array(self._samples).T
        return PowerTrace(t - t[0], w)


def energy_per_inference(trace: PowerTrace, inferences: int, idle_w: float = 0.0) -> dict:
    """Energy of one inference (J): total or above an idle baseline; what a profile's optional energy block holds."""
    window = float(trace.t[-1] - trace.t[0]) if trace.t.size > 1 else 0.0
    total = trace.energy_j()
    return {"mean_w": round(trace.mean_w, 4), "window_s": round(window, 4), "inferences": inferences,
            "j_per_inference": round(total / max(1, inferences), 9),
            "dynamic_j_per_inference": round(max(0.0, total - idle_w * window) / max(1, inferences), 9)}


def create_power_reader(name: str, **kwargs) -> PowerReader:
    from . import ina_sysfs, serial_meter, tegrastats  # noqa: F401  (registration)

    return POWER_READERS.get(name)(**kwargs)
