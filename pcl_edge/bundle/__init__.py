"""Bundles, torch-free, shared by the training side (``pcl_edge.export`` writes them) and the device
(``pcl_edge.runtime`` serves them): the manifest and its digest, verification, safe pack/unpack, the one
``EngineSpec`` and engine files, the TensorRT builder (TensorRT 10 API; 8.6 shims in ``_trt_compat``) and INT8
calibration. Nothing here imports torch or ``pcl_edge.export``; nothing here imports upward."""

from .archive import bundle_dir, pack_bundle, task_files, unpack_bundle, verify_bundle, verify_dir
from .engine import DEFAULT_MAX_BATCH, EngineHeader, EngineMismatch, EngineSpec, engine_dir
from .manifest import MANIFEST, SCHEMA_VERSION, BundleError, read_manifest, seal

__all__ = ["DEFAULT_MAX_BATCH", "MANIFEST", "SCHEMA_VERSION", "BundleError", "EngineHeader", "EngineMismatch",
           "EngineSpec", "bundle_dir", "engine_dir", "pack_bundle", "read_manifest", "seal", "task_files",
           "unpack_bundle", "verify_bundle", "verify_dir"]
