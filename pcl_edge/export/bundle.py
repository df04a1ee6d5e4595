"""Writing bundles (``pcl_edge.bundle`` has the format, verification and packing; this side needs torch).

``export_bundle(run_dir, out, base=OLD)`` adds the tasks learned since OLD and copies OLD's models
byte-identical (task T+1 arrives weeks later); nothing is ever written in place: a temporary directory is
filled, verified, then renamed to ``out``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from .._io import sha256_file, write_json
from ..bundle.archive import bundle_dir, pack_bundle, task_files, verify_dir
from ..bundle.manifest import MANIFEST, SCHEMA_VERSION, BundleError, seal, sha256_bytes
from ..preprocess import normalize
from .onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, ExportError

log = logging.getLogger(__name__)


def _task_entry(run, task_id: int, model_rel: str, model_bytes: bytes, verification: dict,
                calibration: dict | None) -> dict:
    meta = run.load_expert(task_id)["metrics"]
    spec = meta["input_spec"]
    return {"id": task_id, "name": f"task_{task_id:02d}", "classes": meta.get("classes"),
            "class_names": meta["class_names"],
            "input": {"name": INPUT_NAME, "shape": spec["shape"], "dtype": spec["dtype"], "layout": spec["layout"],
                      "mean": spec["mean"], "std": spec["std"]},
            "output": {"name": OUTPUT_NAME, "shape": [meta["num_classes"]], "dtype": "float32"},
            "model": model_rel, "sha256": sha256_bytes(model_bytes), "size": len(model_bytes), "opset": OPSET,
            "genome": meta["genome"],
            "expert_sha256": meta["model_sha256"], "source": meta.get("source"),
            "metrics": {"val_acc": meta.get("val_acc"), "test_acc": meta.get("test_acc"), "params": meta.get("params"),
                        "latency_ms": meta.get("latency_ms", {})},
            "verification": verification, **({"calibration": calibration} if calibration else {})}


def export_bundle(run_dir: str | os.PathLike, out: str | os.PathLike, base: str | os.PathLike | None = None,
                  n_real: int = 64, fmt: str = "bundle", calib_samples: int = 0,
                  sign_key: str | os.PathLike | None = None, triton_tensorrt: str | None = None) -> dict:
    """Export every archived expert of ``run_dir`` (those not already in ``base``) into a new bundle ``out``
    (a directory, or a tar when ``out`` ends in .tar); ``fmt="triton"`` writes a Triton model repository.

    ``calib_samples`` > 0 stores that many validation images per task in the bundle for INT8 calibration on the
    device. Off by default: samples of every task travelling with the models are a form of rehearsal data.
    ``sign_key``: an ed25519 private key (``pcl-edge keygen``) that signs the bundle before it appears at ``out``.
    ``triton_tensorrt`` ("FP16" / "FP32", Triton repositories only): the ONNX Runtime backend's TensorRT accelerator."""
    if fmt == "triton":
        from .triton import bundle_to_triton

        if Path(out).exists():
            raise BundleError(f"{out} already exists; exports never overwrite: choose a new --out")
        with tempfile.TemporaryDirectory() as tmp:
            manifest = export_bundle(run_dir, Path(tmp) / "bundle", base=base, n_real=n_real)
            bundle_to_triton(Path(tmp) / "bundle", out, tensorrt=triton_tensorrt)
        return manifest
    if fmt != "bundle":
        raise BundleError(f"unknown export format {fmt!r}; choose bundle or triton")
    from ..evolve.rundir import RunDir

    out = Path(out)
    pack = out.suffix == ".tar"
    if out.exists():
        raise BundleError(f"{out} already exists; exports never overwrite: choose a new --out")
    run, _ = RunDir.open(run_dir)
    task_ids = run.expert_ids()
    if not task_ids:
        raise BundleError(f"{run.path} has no archived experts yet; run or resume pcl-edge evolve first")
    if not (run.path / "summary.json").exists():  # only frozen experts leave; a task still learning has none
        log.warning("%s is unfinished: exporting the archived experts of tasks %s only", run.path, task_ids)
    with contextlib.ExitStack() as stack:
        base_path = stack.enter_context(bundle_dir(base)) if base is not None else None
        return _export(run, task_ids, out, base_path, n_real, pack, calib_samples, sign_key)


def _check_base(run, old: dict, base: Path) -> None:
    """The base bundle's tasks must be this run's experts (the same archived weights): a bundle of another run would
    keep foreign models under this run's task ids."""
    for t in old["tasks"]:
        if not run.has_expert(t["id"]):
            raise BundleError(f"{base} has task {t['id']}, which {run.path} has no expert for: the base bundle comes "
                              "from another run")
        meta = run.verify_expert(t["id"])
        want = t.get("expert_sha256")
        # bundles made before expert_sha256 was recorded: the metrics the weights produced stand in for them
        scores = [(t.get("metrics") or {}).get(k) for k in ("val_acc", "test_acc", "params")]
        same_scores = want is not None or scores == [meta.get("val_acc"), meta.get("test_acc"), meta.get("params")]
        if (want is not None and want != meta["model_sha256"]) or t["genome"] != meta["genome"] or \
                list(t["class_names"]) != list(meta["class_names"]) or not same_scores:
            raise BundleError(f"{base}: task {t['id']} is not {run.path}'s expert of that task (genome, classes or "
                              "weights differ): export against a bundle of this run")


def _write_calibration(root: Path, task_id: int, images) -> dict:
    import numpy as np

    rel = f"calib/task_{task_id:02d}.npy"
    (root / "calib").mkdir(exist_ok=True)
    np.save(root / rel, images, allow_pickle=False)
    return {"file": rel, "sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size, "count": len(images),
            "split": "validation", "layout": "NHWC uint8"}


def _export(run, task_ids: list[int], out: Path, base: Path | None, n_real: int, pack: bool,
            calib_samples: int = 0, sign_key: str | os.PathLike | None = None) -> dict:
    from .expert import load_expert_net, validation_images
    from .onnx_export import export_onnx, verify_onnx

    old = verify_dir(base) if base is not None else None
    if old is not None:
        _check_base(run, old, base)
    old_ids = {t["id"] for t in old["tasks"]} if old else set()
    new_ids = [i for i in task_ids if i not in old_ids]
    if old is not None and not new_ids:
        raise BundleError(f"{run.path} has no task beyond those in {base} (tasks {sorted(old_ids)})")
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        (tmp / "models").mkdir()
        tasks = []
        if old is not None:
            for t in old["tasks"]:  # byte-identical copies: what the device already trusts stays the same
                for rel, _ in task_files(t):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(base / rel, tmp / rel)
                tasks.append(t)
        images = validation_images(run, max(n_real, calib_samples))
        for task_id in new_ids:
            start = time.perf_counter()
            net, spec = load_expert_net(run, task_id)
            rel = f"models/task_{task_id:02d}.onnx"
            data = export_onnx(net, tuple(spec["shape"]), tmp / rel)
            real = images.get(task_id)
            real = None if real is None else normalize(real[:n_real], spec["mean"], spec["std"])
            check = verify_onnx(data, net, tuple(spec["shape"]), real)
            if not check.passed:
                raise ExportError(f"task {task_id}: onnxruntime differs from PyTorch by {check.max_abs_diff:.2e} "
                                  f"> {check.tolerance:.0e}")
            calibration = None
            if calib_samples > 0 and task_id in images:  # opt-in: stored samples are a form of rehearsal data
                calibration = _write_calibration(tmp, task_id, images[task_id][:calib_samples])
            tasks.append(_task_entry(run, task_id, rel, data, check.to_dict(), calibration))
            log.info("task %d exported in %.2fs, max |onnx - torch| = %.1e over %d inputs", task_id,
                     time.perf_counter() - start, check.max_abs_diff, check.n_inputs)
        manifest = seal({
            "schema_version": SCHEMA_VERSION, "tool": "pcl-edge", "tool_version": __version__,
            "bundle_version": (old["bundle_version"] + 1) if old else 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source_run": str(run.path.resolve()),
            "base_bundle_version": old["bundle_version"] if old else None,
            "tasks": sorted(tasks, key=lambda t: t["id"]),
        })
        write_json(tmp / MANIFEST, manifest)
        verify_dir(tmp)
        if sign_key is not None:
            from ..bundle.signing import sign_dir

            sign_dir(tmp, sign_key)
        if pack:
            pack_bundle(tmp, out)
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
