"""The one place that knows TensorRT versions apart. Code elsewhere is written against the TensorRT 10 Python API;
the shims below let it run on TensorRT 8.6 (JetPack 5) too. Nothing here imports tensorrt at module import."""

from __future__ import annotations

import importlib
from types import ModuleType


class TensorRTUnavailable(RuntimeError):
    """TensorRT is not installed here (engines are built on the device that runs them)."""


def import_tensorrt() -> ModuleType:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed: build engines on the device (JetPack ships python3-libnvinfer), or install "
            f"the 'tensorrt' extra on a GPU workstation ({exc})") from None


def major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def create_network(trt: ModuleType, builder):
    """TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.6 needs the flag."""
    if major(trt) >= 10:
        return builder.create_network(0)
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


def set_workspace(trt: ModuleType, config, nbytes: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:  # pragma: no cover - pre-8.4
        config.max_workspace_size = nbytes


def set_calibrator(config, calibrator) -> None:
    """INT8 implicit quantisation: ``int8_calibrator`` exists in 8.6 and 10.x (deprecated from 10.1 in favour of
    explicit Q/DQ graphs, still honoured)."""
    config.int8_calibrator = calibrator


def entropy_calibrator_base(trt: ModuleType) -> type:
    return trt.IInt8EntropyCalibrator2
