"""ONNX graphs of kernels and whole genomes built directly with ``onnx.helper``: no torch, so ``pcl-edge profile``
runs on the target device itself. The graphs have the structure the exporter produces after BatchNorm folding
(Conv with bias, Relu, Add, GlobalAveragePool, Flatten, Gemm) with random weights: latency does not depend on the
values."""

from __future__ import annotations

import numpy as np

from ..space.genome import Genome
from .kernels import Kernel, genome_kernels

OPSET = 17


class _Graph:
    def __init__(self, rng: np.random.Generator) -> None:
        self.nodes, self.inits, self.rng, self.n = [], [], rng, 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, shape: tuple[int, ...]) -> str:
        from onnx import numpy_helper

        n = self.name("w")
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * 0.1).astype(np.float32), n))
        return n

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> str:
        p = k // 2
        y = self.node("Conv", [x, self.const((cout, cin // groups, k, k)), self.const((cout,))], kernel_shape=[k, k],
                      strides=[stride, stride], pads=[p, p, p, p], group=groups)
        return self.node("Relu", [y]) if act else y

    def kernel(self, x: str, k: Kernel) -> str:
        if k.op == "stem":
            return self.conv(x, k.cin, k.cout, k.kernel)
        if k.op == "res":
            y = self.conv(self.conv(x, k.cin, k.cout, k.kernel, k.stride), k.cout, k.cout, k.kernel, act=False)
            short = x if (k.cin == k.cout and k.stride == 1) else self.conv(x, k.cin, k.cout, 1, k.stride, act=False)
            return self.node("Relu", [self.node("Add", [y, short])])
        if k.op == "dws":
            y = self.conv(self.conv(x, k.cin, k.cin, k.kernel, k.stride, groups=k.cin), k.cin, k.cout, 1, act=False)
            return self.node("Relu", [self.node("Add", [y, x]) if (k.cin == k.cout and k.stride == 1) else y])
        if k.op == "mbconv":
            hidden = k.cin * k.expansion
            y = self.conv(x, k.cin, hidden, 1) if k.expansion > 1 else x
            y = self.conv(self.conv(y, hidden, hidden, k.kernel, k.stride, groups=hidden), hidden, k.cout, 1, act=False)
            return self.node("Add", [y, x]) if (k.cin == k.cout and k.stride == 1) else y
        if k.op == "head":
            y = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
            return self.node("Gemm", [y, self.const((k.cout, k.cin)), self.const((k.cout,))], transB=1)
        raise KeyError(f"no ONNX graph for op {k.op!r}")


def _model(kernels: list[Kernel], seed: int) -> bytes:
    from onnx import TensorProto, helper

    g = _Graph(np.random.default_rng(seed))
    first, last = kernels[0], kernels[-1]
    x = "input"
    for k in kernels:
        x = g.kernel(x, k)
    out_shape = [1, last.cout] if last.op == "head" else [1, last.cout, last.out_size, last.out_size]
    graph = helper.make_graph(
        g.nodes, "pcl_edge_kernel",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, first.cin, first.size, first.size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, out_shape)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pcl-edge")
    model.ir_version = 8  # readable by onnxruntime >= 1.11 and TensorRT 8.6 / 10
    return model.SerializeToString()


def kernel_model(k: Kernel, seed: int = 0) -> bytes:
    """One kernel as a whole model (input -> kernel -> output)."""
    return _model([k], seed)


def genome_model(genome: Genome, input_shape: tuple[int, int, int], num_classes: int = 2, seed: int = 0) -> bytes:
    return _model(list(genome_kernels(genome, tuple(input_shape), num_classes)), seed)
