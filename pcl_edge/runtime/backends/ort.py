"""onnxruntime sessions with the best execution provider this build offers: TensorRT EP, then CUDA, then CPU
(``ort``), or the TensorRT EP only (``ort-trt``). The TensorRT EP is configured from the one ``EngineSpec``: its
engines and timing cache live on disk under the router's engine cache (so a session that opens again does not
rebuild), FP16/INT8 from the spec's precision, the optimisation profile from its batch range, and a DLA core when
the spec names one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...bundle.archive import read_verified
from ...bundle.engine import EngineSpec
from . import BACKENDS, rss_bytes

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def tensorrt_provider_options(task: dict, spec: EngineSpec | None, cache_dir: str | Path | None) -> dict[str, str]:
    """The TensorRT execution provider's options for one task (onnxruntime's documented ``trt_*`` keys)."""
    spec = spec or EngineSpec()
    opts = {"trt_max_workspace_size": str(spec.workspace_mb << 20),
            "trt_fp16_enable": "True" if spec.precision in ("fp16", "int8") else "False",
            "trt_int8_enable": "True" if spec.precision == "int8" else "False"}
    if cache_dir is not None:
        path = str(Path(cache_dir) / "ort-trt")
        Path(path).mkdir(parents=True, exist_ok=True)
        opts |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": path, "trt_timing_cache_enable": "True",
                 "trt_timing_cache_path": path}
    name, chw = task["input"]["name"], "x".join(map(str, task["input"]["shape"]))
    opts |= {"trt_profile_min_shapes": f"{name}:{spec.min_batch}x{chw}",
             "trt_profile_opt_shapes": f"{name}:{spec.opt_batch}x{chw}",
             "trt_profile_max_shapes": f"{name}:{spec.max_batch}x{chw}"}
    if spec.dla_core is not None:
        opts |= {"trt_dla_enable": "True", "trt_dla_core": str(spec.dla_core)}
    return opts


@BACKENDS.register("ort")
class OrtSession:
    providers: tuple[str, ...] = PREFERRED

    def __init__(self, bundle_root: Path, task: dict, providers: tuple[str, ...] | None = None, threads: int = 0,
                 spec: EngineSpec | None = None, cache_dir: str | Path | None = None, **_: object) -> None:
        from ..._deps import import_onnxruntime

        ort = import_onnxruntime()
        available = set(ort.get_available_providers())
        wanted = providers or self.providers
        chosen: list = [p for p in wanted if p in available]
        if not chosen:
            raise RuntimeError(f"none of {wanted} in this onnxruntime ({sorted(available)})")
        chosen = [(p, tensorrt_provider_options(task, spec, cache_dir)) if p == "TensorrtExecutionProvider" else p
                  for p in chosen]
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


@BACKENDS.register("ort-trt")
class OrtTensorRTSession(OrtSession):
    """onnxruntime with the TensorRT execution provider only (CUDA for what TensorRT leaves): never the CPU."""

    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


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
