"""Inference backends, one file each, by name: ``ort`` (onnxruntime: TensorRT EP -> CUDA -> CPU, whichever this
build has), ``tensorrt`` (engines built on this device and cached). ``auto`` takes the first that passes a
self-test inference: a listed provider can still fail at run time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from ..._registry import Registry
from ..errors import ServiceUnavailable

log = logging.getLogger(__name__)


class Session(Protocol):
    name: str  # backend + provider actually used
    nbytes: int  # memory it holds, measured when it was opened

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


BACKENDS: Registry = Registry("backend")
_SAID: set[tuple[str, str, str]] = set()  # backend failures already logged
AUTO_ORDER = ("tensorrt", "ort-trt", "ort")


def _register() -> None:
    from . import ort, tensorrt  # noqa: F401  (registration)


def open_session(backend: str, bundle_root: Path, task: dict, **options) -> Session:
    """A self-tested session for one task; ``auto`` tries the backends best-first."""
    _register()
    names = AUTO_ORDER if backend == "auto" else (backend,)
    errors = []
    for name in names:
        try:
            session = BACKENDS.get(name)(bundle_root, task, **options)
            try:
                self_test(session, task)
            except BaseException:
                session.close()  # a session that failed its self-test gives back what it holds (GPU buffers too)
                raise
            return session
        except KeyError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next backend may work; all failures are reported below
            errors.append(f"{name}: {exc}")
            said = (name, type(exc).__name__, str(exc))
            if said not in _SAID:  # once per backend and reason, not on every load of every task
                _SAID.add(said)
                log.info("backend %s unavailable (first seen on task %s): %s", name, task["id"], exc)
    raise ServiceUnavailable(f"no backend can run task {task['id']}: " + "; ".join(errors))


def self_test(session: Session, task: dict) -> None:
    """One inference on zeros: the output must have the manifest's shape and be finite."""
    x = np.zeros((1, *task["input"]["shape"]), np.float32)
    y = session.run(x)
    want = (1, *task["output"]["shape"])
    if tuple(y.shape) != want or not np.all(np.isfinite(y)):
        raise RuntimeError(f"self-test failed: output {tuple(y.shape)}, expected {want} and finite values")


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc), to measure what a session costs."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
