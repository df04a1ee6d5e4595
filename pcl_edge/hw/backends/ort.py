"""onnxruntime timing: CPU, CUDA or TensorRT execution provider. Warm-up, then many timed ``run`` calls; threads
pinned (intra-op count fixed, sequential execution) and recorded in the profile. Also what runs inside a network:
the optimised graph (which operators onnxruntime fused, ``optimized_nodes``) and each of its nodes timed in place by
onnxruntime's own profiler (``measure_nodes``)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict

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

    def session(self, model: bytes, **options):
        so = self.ort.SessionOptions()
        for k, v in options.items():
            setattr(so, k, v)
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return self.ort.InferenceSession(model, so, providers=[self.provider])

    @staticmethod
    def _feed(sess) -> dict:
        inp = sess.get_inputs()[0]
        return {inp.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape])
                .astype(np.float32)}

    def optimized_nodes(self, model: bytes) -> list[str]:
        """Names of the nodes onnxruntime runs after its graph optimisations (fusions, NCHWc layout), in order."""
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            self.session(model, optimized_model_filepath=path)
            return [n.name for n in onnx.load(path).graph.node]

    def measure_nodes(self, model: bytes) -> dict[str, np.ndarray]:
        """Per-call kernel times (ms) of every node as it runs inside the whole model, from onnxruntime's profiler
        (microsecond resolution; the profiler's own cost lies between kernels, not inside these times)."""
        with tempfile.TemporaryDirectory() as tmp:
            sess = self.session(model, enable_profiling=True, profile_file_prefix=os.path.join(tmp, "p"))
            x = self._feed(sess)
            for _ in range(self.warmup):
                sess.run(None, x)
            for _ in range(self.iterations):
                sess.run(None, x)
            with open(sess.end_profiling()) as f:
                events = json.load(f)
        out: dict[str, list[float]] = defaultdict(list)
        for e in events:  # in call order: the last `iterations` of each node are the timed calls, not the warm-up
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                out[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1e3)
        return {k: np.asarray(v[-self.iterations:]) for k, v in out.items()}

    def measure(self, model: bytes) -> Measurement:
        sess = self.session(model)
        x = self._feed(sess)
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
