"""onnxruntime sessions with the best execution provider this build offers: TensorRT EP, then CUDA, then CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...bundle.archive import read_verified
from . import BACKENDS, rss_bytes

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@BACKENDS.register("ort")
class OrtSession:
    def __init__(self, bundle_root: Path, task: dict, providers: tuple[str, ...] | None = None, threads: int = 0,
                 **_: object) -> None:
        from ..._deps import import_onnxruntime

        ort = import_onnxruntime()
        available = set(ort.get_available_providers())
        chosen = [p for p in (providers or PREFERRED) if p in available]
        if not chosen:
            raise RuntimeError(f"none of {providers or PREFERRED} in this onnxruntime ({sorted(available)})")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        gpu = _device_meter() if chosen[0] != "CPUExecutionProvider" else None
        before, device_before = rss_bytes(), gpu() if gpu else 0
        data = read_verified(bundle_root, task["model"], task["sha256"])  # exactly the bytes that were verified
        self._sess = ort.InferenceSession(data, so, providers=chosen)
        self._in, self._out = task["input"]["name"], task["output"]["name"]
        self.name = f"ort:{self._sess.get_providers()[0]}"
        self._sess.run([self._out], {self._in: np.zeros((1, *task["input"]["shape"]), np.float32)})  # allocate
        # measured, never below the weights; on a GPU provider device memory counts too (RSS misses CUDA allocations,
        # which on a Jetson come out of the same RAM)
        device = max(0, gpu() - device_before) if gpu else 0
        self.nbytes = max(max(rss_bytes() - before, 0) + device, len(data))

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([self._out], {self._in: x})[0]

    def close(self) -> None:
        self._sess = None


def _device_meter():
    """A callable giving device memory in use (cuda-python), or None where it cannot be read (then the budget counts
    RSS and the weights only, and says so once)."""
    try:
        from ..._cuda import Cuda

        cuda = Cuda()
        cuda.mem_used()
        return cuda.mem_used
    except Exception as exc:  # noqa: BLE001 - no cuda-python, no device: the meter is optional
        if not _device_meter.__dict__.get("said"):
            _device_meter.said = True
            import logging

            logging.getLogger(__name__).info("device memory cannot be measured (%s): the memory budget counts host "
                                             "memory only", exc)
        return None
