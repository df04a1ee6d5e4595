"""A bundle as a Triton model repository: ``task_XX/config.pbtxt`` + ``task_XX/1/model.onnx``.

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


def config_pbtxt(task: dict, max_batch_size: int = 64) -> str:
    def tensor(spec: dict, dims: list[int]) -> str:
        return (f"  {{\n    name: \"{spec['name']}\"\n    data_type: {_DTYPES[spec.get('dtype', 'float32')]}\n"
                f"    dims: [ {', '.join(map(str, dims))} ]\n  }}")

    def param(key: str, value: str) -> str:
        return f"parameters {{\n  key: \"{key}\"\n  value: {{ string_value: '{value}' }}\n}}\n"

    labels = ", ".join(f'"{c}"' for c in task["class_names"])
    return (f"name: \"{task['name']}\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: {max_batch_size}\n"
            f"input [\n{tensor(task['input'], task['input']['shape'])}\n]\n"
            f"output [\n{tensor(task['output'], task['output']['shape'])}\n]\n"
            + param("class_names", f"[{labels}]") + param("input_mean", json.dumps(task["input"]["mean"]))
            + param("input_std", json.dumps(task["input"]["std"]))
            + param("input_layout", "NCHW float32, normalised: (uint8 / 255 - mean) / std per channel"))


def bundle_to_triton(bundle: str | os.PathLike, out: str | os.PathLike, max_batch_size: int = 64) -> list[str]:
    """Write a Triton repository from a verified bundle (a directory or a .tar); returns the model names."""
    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} already exists; choose a new --out")
    with bundle_dir(bundle) as root:  # a .tar is verified and copied from the same unpacked files
        return _write(root, verify_dir(root), out, max_batch_size)


def _write(root: Path, manifest: dict, out: Path, max_batch_size: int) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for task in manifest["tasks"]:
            (tmp / task["name"] / "1").mkdir(parents=True)
            shutil.copyfile(root / task["model"], tmp / task["name"] / "1" / "model.onnx")
            (tmp / task["name"] / "config.pbtxt").write_text(config_pbtxt(task, max_batch_size))
        # the bundle's manifest travels along (Triton ignores files at the repository root): input specs,
        # class names, hashes and the digest that identifies the bundle
        shutil.copyfile(root / "manifest.json", tmp / "pcl_edge_manifest.json")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [t["name"] for t in manifest["tasks"]]
