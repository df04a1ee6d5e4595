"""Export (training side, needs torch): verified ONNX per task, bundle writing, Triton repositories. The bundle
format itself, verification, packing and TensorRT engines live in ``pcl_edge.bundle``, which the device imports;
this package sits above ``evolve`` and ``data`` and is never imported by the device side."""

from ..bundle.archive import pack_bundle, unpack_bundle, verify_bundle
from ..bundle.manifest import BundleError
from .bundle import export_bundle
from .onnx_export import ExportError
from .triton import bundle_to_triton

__all__ = ["BundleError", "ExportError", "bundle_to_triton", "export_bundle", "pack_bundle", "unpack_bundle",
           "verify_bundle"]
