"""Expert -> ONNX (opset 17, what JetPack 5/6 TensorRT parses), verified by numbers.

Decision: input normalisation is NOT inside the graph. The graph takes float32 NCHW already normalised; the
bundle manifest carries the input spec (mean, std, layout), and the device runtime offers the uint8 HWC ->
normalised NCHW step from it. This keeps every graph a plain Conv/Relu/Add/Pool/Gemm network that any
TensorRT version and Triton accept unchanged, and lets clients that already normalise skip the step.

BatchNorm is folded into the convolutions by the exporter (eval mode + constant folding); the graph has a
dynamic batch axis named ``batch``."""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(RuntimeError):
    """An export that failed or did not verify."""


@dataclass(frozen=True)
class Verification:
    checker: str  # "onnx.checker full_check"
    n_inputs: int
    n_real: int
    max_abs_diff: float
    tolerance: float
    onnxruntime: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx(net, input_shape: tuple[int, int, int], path: str | os.PathLike, opset: int = OPSET) -> bytes:
    """Export ``net`` (eval mode, on CPU) and return the serialized model; also written to ``path`` if given."""
    import onnx  # noqa: F401  (torch.onnx needs it; imported here so a missing one is a plain ImportError)
    import torch

    net = net.cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: opset 17, no onnxscript
        torch.onnx.export(net, (torch.zeros(1, *input_shape),), buf, opset_version=opset, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    data = buf.getvalue()
    if path is not None:
        from .._io import atomic_open

        with atomic_open(path, "wb") as fh:
            fh.write(data)
    return data


def verify_onnx(model: bytes, net, input_shape: tuple[int, int, int], real: np.ndarray | None = None,
                n_random: int = 64, tolerance: float = 1e-4, seed: int = 0) -> Verification:
    """``onnx.checker`` with full check, then onnxruntime (CPU) against PyTorch on ``n_random`` random inputs
    plus the given real (already normalised) samples; max |difference| must be <= ``tolerance``."""
    import onnx
    import torch

    from .._deps import import_onnxruntime

    ort = import_onnxruntime()

    try:
        onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the graph: {exc}") from None
    x = np.random.default_rng(seed).standard_normal((n_random, *input_shape)).astype(np.float32)
    n_real = 0
    if real is not None and len(real):
        x = np.concatenate([x, real.astype(np.float32)])
        n_real = len(real)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: x[i: i + 32]})[0] for i in range(0, len(x), 32)])
    with torch.no_grad():
        want = net.cpu().eval()(torch.from_numpy(x)).numpy()
    diff = float(np.max(np.abs(got - want)))
    return Verification(checker="onnx.checker full_check", n_inputs=len(x), n_real=n_real, max_abs_diff=diff,
                        tolerance=tolerance, onnxruntime=ort.__version__, passed=diff <= tolerance)
