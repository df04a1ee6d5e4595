"""TensorRT Python API timing: build an engine per model (batch 1, the same builder as ``build-engines``), then
time ``execute_async_v3`` with CUDA events on a stream, in a run with no profiler attached. The layers TensorRT
kept after fusing (``optimized_nodes``) come from the engine inspector: fused layers are named by joining their
members' names (``b1.0 + b1.1``), which is how ``hw.fusion`` detects TensorRT's fusion rules on the device.
TensorRT 10 API; what 8.6 needs differently lives in ``bundle._trt_compat``. Device memory through cuda-python, never
torch."""

from __future__ import annotations

import numpy as np

from ...bundle import _trt_compat as compat
from . import BACKENDS, Measurement


def _io(model: bytes) -> tuple[str, tuple[int, ...]]:
    import onnx

    inp = onnx.load_from_string(model).graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return inp.name, tuple(dims[1:])


class TensorRTBackend:
    def __init__(self, precision: str = "fp16", warmup: int = 50, iterations: int = 200, workspace_mb: int = 256,
                 trt=None, cuda=None, **_: object) -> None:
        self.trt = trt or compat.import_tensorrt()
        if cuda is None:
            from ..._cuda import Cuda

            cuda = Cuda()
        self.cuda, self.precision, self.warmup, self.iterations = cuda, precision, warmup, iterations
        self.workspace_mb = workspace_mb
        self.timing_cache = b""

    def settings(self) -> dict:
        return {"tool": f"TensorRT {self.trt.__version__} Python API, execute_async_v3, CUDA events",
                "precision": self.precision, "warmup": self.warmup, "iterations": self.iterations, "batch": 1,
                "statistic": "median of per-inference CUDA event time", "profiler": "none attached"}

    def _engine(self, model: bytes, detailed: bool = False):
        from ...bundle.engine import EngineSpec
        from ...bundle.tensorrt_builder import build_plan

        trt = self.trt
        name, chw = _io(model)
        opts = EngineSpec(self.precision if self.precision != "int8" else "fp16", max_batch=1,
                          workspace_mb=self.workspace_mb)
        plan, self.timing_cache = build_plan(trt, model, name, chw, opts, self.timing_cache, detailed=detailed)
        return trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan), name, chw

    def optimized_nodes(self, model: bytes) -> list[str]:
        """Names of the layers the engine runs, reformatting (layout copy) layers left out."""
        import json

        engine, _, _ = self._engine(model, detailed=True)
        info = json.loads(engine.create_engine_inspector().get_engine_information(self.trt.LayerInformationFormat.JSON))
        names = [layer["Name"] if isinstance(layer, dict) else str(layer) for layer in info.get("Layers", [])]
        return [n for n in names if not n.startswith("Reformatting CopyNode")]

    def measure(self, model: bytes) -> Measurement:
        cuda = self.cuda
        engine, name, chw = self._engine(model)
        ctx = engine.create_execution_context()
        ctx.set_input_shape(name, (1, *chw))
        buffers = []
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            shape = ctx.get_tensor_shape(tensor)
            ptr = cuda.malloc(int(np.prod(shape)) * 4)  # fp32 I/O (the graphs' input and output dtypes)
            buffers.append(ptr)
            ctx.set_tensor_address(tensor, ptr)
        stream, start, end = cuda.stream(), cuda.event(), cuda.event()
        try:
            for _ in range(self.warmup):
                ctx.execute_async_v3(stream)
            cuda.sync(stream)
            ms = np.empty(self.iterations)
            for i in range(self.iterations):
                cuda.record(start, stream)
                ctx.execute_async_v3(stream)
                cuda.record(end, stream)
                ms[i] = cuda.elapsed_ms(start, end)
        finally:
            for ptr in buffers:
                cuda.free(ptr)
            cuda.destroy_stream(stream)
            for event in (start, end):
                cuda.destroy_event(event)
        return Measurement.from_samples(ms)


BACKENDS.register("tensorrt")(TensorRTBackend)
