"""A bundle as a Triton model repository: ``task_XX/config.pbtxt`` + ``task_XX/labels.txt`` +
``task_XX/1/model.onnx``.

The ONNX graphs have a dynamic batch axis, so each config declares ``max_batch_size`` and dims without the batch
dimension, as Triton expects. Each config carries the input normalisation (``input_mean`` / ``input_std``) a
Triton user needs, and the bundle's manifest is copied to the repository root as ``pcl_edge_manifest.json``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..bundle.archive import bundle_dir, verify_dir
from ..bundle.manifest import BundleError

_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64"}
ACCELERATOR_PRECISIONS = ("FP32", "FP16")


def _model_config():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ImportError(f"a Triton repository is written with Triton's own model_config proto: pip install "
                          f"'pcl-edge[grpc]' ({exc})") from None
    return model_config_pb2, text_format


def config_pbtxt(task: dict, max_batch_size: int = 64, tensorrt: str | None = None,
                 max_queue_delay_us: int = 100) -> str:
    """``config.pbtxt`` of one task: Triton's ``ModelConfig`` message in the protobuf text format (every string
    escaped by the library): dynamic batching, ``labels.txt`` as the output's label file (the classification
    extension answers with class names), the input normalisation, and with ``tensorrt`` ("FP16" or "FP32") the
    TensorRT accelerator of the ONNX Runtime backend."""
    mc, text_format = _model_config()
    c = mc.ModelConfig(name=task["name"], platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    c.input.add(name=task["input"]["name"], data_type=getattr(mc, _DTYPES[task["input"].get("dtype", "float32")]),
                dims=task["input"]["shape"])
    c.output.add(name=task["output"]["name"], data_type=getattr(mc, _DTYPES[task["output"].get("dtype", "float32")]),
                 dims=task["output"]["shape"], label_filename="labels.txt")
    c.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    if tensorrt is not None:
        if tensorrt.upper() not in ACCELERATOR_PRECISIONS:
            raise BundleError(f"TensorRT accelerator precision {tensorrt!r}: choose one of {ACCELERATOR_PRECISIONS}")
        acc = c.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = tensorrt.upper()
        acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
    for key, value in (("class_names", json.dumps(task["class_names"])),
                       ("input_mean", json.dumps(task["input"]["mean"])),
                       ("input_std", json.dumps(task["input"]["std"])),
                       ("input_layout", "NCHW float32, normalised: (uint8 / 255 - mean) / std per channel")):
        c.parameters[key].string_value = value
    return text_format.MessageToString(c)


def labels_txt(task: dict) -> str:
    """One class name per line, in output order (a name's own line breaks become spaces)."""
    return "".join(" ".join(str(c).splitlines()) + "\n" for c in task["class_names"])


def bundle_to_triton(bundle: str | os.PathLike, out: str | os.PathLike, max_batch_size: int = 64,
                     tensorrt: str | None = None) -> list[str]:
    """Write a Triton repository from a verified bundle (a directory or a .tar); returns the model names.
    ``tensorrt``: "FP16" or "FP32" turns on the TensorRT accelerator of the ONNX Runtime backend (on a Jetson, say)."""
    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} already exists; choose a new --out")
    with bundle_dir(bundle) as root:  # a .tar is verified and copied from the same unpacked files
        return _write(root, verify_dir(root), out, max_batch_size, tensorrt)


def _write(root: Path, manifest: dict, out: Path, max_batch_size: int, tensorrt: str | None = None) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for task in manifest["tasks"]:
            (tmp / task["name"] / "1").mkdir(parents=True)
            shutil.copyfile(root / task["model"], tmp / task["name"] / "1" / "model.onnx")
            (tmp / task["name"] / "config.pbtxt").write_text(config_pbtxt(task, max_batch_size, tensorrt))
            (tmp / task["name"] / "labels.txt").write_text(labels_txt(task))
        # the bundle's manifest travels along (Triton ignores files at the repository root): input specs,
        # class names, hashes and the digest that identifies the bundle
        shutil.copyfile(root / "manifest.json", tmp / "pcl_edge_manifest.json")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [t["name"] for t in manifest["tasks"]]
