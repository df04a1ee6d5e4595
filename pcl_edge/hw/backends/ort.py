"""onnxruntime timing: CPU, CUDA or TensorRT execution provider. Warm-up, then many timed ``run`` calls; threads
pinned (intra-op count fixed, sequential execution) and recorded in the profile."""

from __future__ import annotations

import time

import numpy as np

from . import BACKENDS, Measurement

PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
             "ort-trt": "TensorrtExecutionProvider"}


class BackendUnavailable(RuntimeError):
    pass


class OrtBackend:
    def __init__(self, name: str = "ort-cpu", threads: int = 1, warmup: int = 20, iterations: int = 200,
                 **_: object) -> None:
        from ..._deps import import_onnxruntime

        try:
            ort = import_onnxruntime()
        except ImportError as exc:
            raise BackendUnavailable(str(exc)) from None
        provider = PROVIDERS[name]
        if provider not in ort.get_available_providers():
            raise BackendUnavailable(f"{name}: onnxruntime here has no {provider} "
                                     f"(available: {ort.get_available_providers()})")
        self.ort, self.name, self.provider = ort, name, provider
        self.threads, self.warmup, self.iterations = threads, warmup, iterations

    def settings(self) -> dict:
        import os

        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return {"tool": f"onnxruntime {self.ort.__version__} {self.provider}", "intra_op_threads": self.threads,
                "cpu_affinity": affinity,
                "execution_mode": "sequential", "warmup": self.warmup, "iterations": self.iterations,
                "statistic": "median of per-call wall time (time.perf_counter)", "batch": 1, "precision": "fp32"}

    def session(self, model: bytes):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return self.ort.InferenceSession(model, so, providers=[self.provider])

    def measure(self, model: bytes) -> Measurement:
        sess = self.session(model)
        inp = sess.get_inputs()[0]
        x = {inp.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape])
             .astype(np.float32)}
        for _ in range(self.warmup):
            sess.run(None, x)
        ms = np.empty(self.iterations)
        for i in range(self.iterations):
            t0 = time.perf_counter()
            sess.run(None, x)
            ms[i] = (time.perf_counter() - t0) * 1e3
        return Measurement.from_samples(ms)


for _name in PROVIDERS:
    BACKENDS.register(_name)(lambda _n=_name, **kw: OrtBackend(_n, **kw))
