"""onnxruntime sessions with the best execution provider this build offers: TensorRT EP, then CUDA, then CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        before = rss_bytes()
        model = Path(bundle_root) / task["model"]
        self._sess = ort.InferenceSession(str(model), so, providers=chosen)
        self._in, self._out = task["input"]["name"], task["output"]["name"]
        self.name = f"ort:{self._sess.get_providers()[0]}"
        self._sess.run([self._out], {self._in: np.zeros((1, *task["input"]["shape"]), np.float32)})  # allocate
        self.nbytes = max(rss_bytes() - before, model.stat().st_size)  # measured; never below the weights

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([self._out], {self._in: x})[0]

    def close(self) -> None:
        self._sess = None
