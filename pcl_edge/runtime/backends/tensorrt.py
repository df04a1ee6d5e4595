"""TensorRT engines on this device: built from the bundle's ONNX on first use (or reused from the engine cache when
the header matches this GPU and TensorRT), run with ``execute_async_v3``, tensors addressed by name, device memory
through cuda-python (no torch)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...bundle.engine import EngineLedger, EngineSpec, engine_dir
from . import BACKENDS


@BACKENDS.register("tensorrt")
class TensorRTSession:
    def __init__(self, bundle_root: Path, task: dict, spec: EngineSpec | None = None,
                 cache_dir: str | Path | None = None, trt=None, cuda=None, ledger: EngineLedger | None = None,
                 **_: object) -> None:
        from ...bundle import _trt_compat as compat
        from ...bundle.tensorrt_builder import ensure_engine, load_engine_plan

        self.trt = trt = trt or compat.import_tensorrt()
        if cuda is None:
            from ..._cuda import Cuda

            cuda = Cuda()
        self.cuda = cuda
        spec = (spec or EngineSpec()).for_device(trt)
        cache = Path(cache_dir) if cache_dir else engine_dir(bundle_root)
        path, header = ensure_engine(trt, Path(bundle_root), task, spec, cache, ledger=ledger)
        precision, max_batch = spec.precision, spec.max_batch
        plan = load_engine_plan(path, header, ledger)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.ctx = self.engine.create_execution_context()
        self._in, self._out = task["input"]["name"], task["output"]["name"]
        self._chw, self._classes, self.max_batch = tuple(task["input"]["shape"]), task["output"]["shape"][0], max_batch
        self._in_ptr = cuda.malloc(max_batch * int(np.prod(self._chw)) * 4)
        self._out_ptr = cuda.malloc(max_batch * self._classes * 4)
        self.ctx.set_tensor_address(self._in, self._in_ptr)
        self.ctx.set_tensor_address(self._out, self._out_ptr)
        self.stream = cuda.stream()
        self._lock = threading.Lock()  # one execution context: one request at a time on it
        self.name = f"tensorrt:{precision}"
        device_mem = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine,
                                                                                    "device_memory_size", 0)
        self.nbytes = int(device_mem) + len(plan) + (max_batch * (int(np.prod(self._chw)) + self._classes) * 4)

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n > self.max_batch:  # the engine's profile limit; the router splits larger batches before this
            raise ValueError(f"batch {n} > engine max batch {self.max_batch}")
        x = np.ascontiguousarray(x, np.float32)
        out = np.empty((n, self._classes), np.float32)
        with self._lock:
            self.ctx.set_input_shape(self._in, (n, *self._chw))
            self.cuda.upload(self._in_ptr, x)
            if not self.ctx.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self.cuda.sync(self.stream)
            self.cuda.download(out, self._out_ptr)
        return out

    def close(self) -> None:
        """Free the I/O buffers and the stream, drop the context and the engine (their device memory goes with
        them); idempotent. On a Jetson this memory is the system's RAM."""
        with self._lock:
            if self.ctx is None:
                return
            for ptr in (self._in_ptr, self._out_ptr):
                self.cuda.free(ptr)
            self.cuda.destroy_stream(self.stream)
            self.ctx = self.engine = None
