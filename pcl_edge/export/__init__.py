"""Export: verified ONNX per task, versioned bundles, Triton repositories.

``manifest`` and ``bundle.verify_bundle`` / ``unpack_bundle`` need no torch (the device verifies bundles too);
exporting needs the ``train`` extra and onnxruntime."""

from .bundle import export_bundle, pack_bundle, unpack_bundle, verify_bundle
from .manifest import BundleError
from .onnx_export import ExportError
from .triton import bundle_to_triton

__all__ = ["BundleError", "ExportError", "bundle_to_triton", "export_bundle", "pack_bundle", "unpack_bundle",
           "verify_bundle"]
