"""Optional dependencies imported in one place, with the install hint a user needs."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from types import ModuleType

log = logging.getLogger(__name__)


def installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def import_onnxruntime() -> ModuleType:
    """onnxruntime and onnxruntime-gpu install the same module and must never be installed together."""
    if installed("onnxruntime") and installed("onnxruntime-gpu"):
        raise ImportError("both onnxruntime and onnxruntime-gpu are installed; they overwrite each other: "
                          "pip uninstall -y onnxruntime onnxruntime-gpu, then install ONE of the extras "
                          "'pcl-edge[ort]' or 'pcl-edge[ort-gpu]'")
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise ImportError("onnxruntime is not installed: pip install 'pcl-edge[ort]' (CPU) or "
                          "'pcl-edge[ort-gpu]' (CUDA / TensorRT execution providers), never both") from None
