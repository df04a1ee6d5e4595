"""ONNX graphs of kernels and whole genomes built directly with ``onnx.helper``: no torch, so ``pcl-edge profile``
runs on the target device itself. The operators are ``fusion.block_ops`` (the structure the exporter produces after
BatchNorm folding: Conv with bias, Relu, Add, GlobalAveragePool, Flatten, Gemm) with random weights: latency does
not depend on the values. Every node is named ``b{block}.{operator}``, so the nodes a runtime runs after fusing
them can be traced back to the operators they came from (``fusion.assign_nodes``)."""

from __future__ import annotations

import numpy as np

from ..space.genome import Genome
from .fusion import FusedKernel, Op, block_ops
from .kernels import Kernel, genome_kernels

OPSET = 17


class _Graph:
    def __init__(self, rng: np.random.Generator) -> None:
        self.nodes, self.inits, self.rng, self.n = [], [], rng, 0

    def const(self, shape: tuple[int, ...]) -> str:
        from onnx import numpy_helper

        self.n += 1
        n = f"w{self.n}"
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * 0.1).astype(np.float32), n))
        return n

    def op(self, name: str, op: Op, inputs: list[str]) -> str:
        from onnx import helper

        attrs = {}
        if op.op == "Conv":
            p = op.kernel // 2
            inputs = [*inputs, self.const((op.cout, op.cin // op.groups, op.kernel, op.kernel)), self.const((op.cout,))]
            attrs = dict(kernel_shape=[op.kernel] * 2, strides=[op.stride] * 2, pads=[p] * 4, group=op.groups)
        elif op.op == "Gemm":
            inputs = [*inputs, self.const((op.cout, op.cin)), self.const((op.cout,))]
            attrs = dict(transB=1)
        elif op.op == "Flatten":
            attrs = dict(axis=1)
        self.nodes.append(helper.make_node(op.op, inputs, [name], name=name, **attrs))
        return name

    def ops(self, x: str, ops: tuple[Op, ...] | list[Op], b: int, extra: str = "") -> str:
        """Nodes for ``ops`` named ``b{b}.{j}``; input -1 is ``x``, -2 is ``extra`` (a second graph input)."""
        outs: list[str] = []
        for j, op in enumerate(ops):
            outs.append(self.op(f"b{b}.{j}", op, [x if i == -1 else extra if i == -2 else outs[i] for i in op.inputs]))
        return outs[-1]

    def kernel(self, x: str, k: Kernel, b: int) -> str:
        return self.ops(x, block_ops(k), b)


def _model(kernels: list[Kernel], seed: int) -> bytes:
    from onnx import TensorProto, helper

    g = _Graph(np.random.default_rng(seed))
    first, last = kernels[0], kernels[-1]
    x = "input"
    for b, k in enumerate(kernels):
        x = g.kernel(x, k, b)
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


def kernels_model(kernels: list[Kernel], seed: int = 0) -> bytes:
    """A chain of kernels as one model (fusion probes, networks given as kernels)."""
    return _model(list(kernels), seed)


def genome_model(genome: Genome, input_shape: tuple[int, int, int], num_classes: int = 2, seed: int = 0) -> bytes:
    return _model(list(genome_kernels(genome, tuple(input_shape), num_classes)), seed)


def fused_ops(fk: FusedKernel) -> list[Op]:
    """The operators of one fused kernel on their own: an Add's other operand is a second graph input."""
    o, c = fk.out_size, fk.cout
    first = fk.ops[0]
    if first == "Conv":
        ops = [Op("Conv", (-1,), fk.cin, c, fk.size, fk.stride, fk.kernel, fk.groups)]
    elif first == "Gemm":
        ops = [Op("Gemm", (-1,), fk.cin, c, 1)]
    else:
        ops = [Op(first, (-1, -2) if first == "Add" else (-1,), fk.cin, c, fk.size)]
    for name in fk.ops[1:]:
        ops.append(Op(name, (len(ops) - 1, -2) if name == "Add" else (len(ops) - 1,), c, c, o))
    return ops


def fused_model(fk: FusedKernel, seed: int = 0) -> bytes:
    """One fused kernel as a whole model, for backends that cannot time kernels in place (timed alone, less the
    measured empty call). Inputs: ``input`` and, when the chain has an Add, ``sum``."""
    from onnx import TensorProto, helper

    g = _Graph(np.random.default_rng(seed))
    ops = fused_ops(fk)
    x = g.ops("input", ops, 0, extra="sum")
    flat = fk.ops[0] in ("Gemm", "Flatten")
    in_shape = [1, fk.cin] if fk.ops[0] == "Gemm" else [1, fk.cin, fk.size, fk.size]
    out_shape = [1, fk.cout] if flat else [1, fk.cout, fk.out_size, fk.out_size] if fk.ops[0] != "GlobalAveragePool" \
        else [1, fk.cout, 1, 1]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)]
    if "Add" in fk.ops:
        inputs.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, fk.cout, fk.out_size, fk.out_size]))
    graph = helper.make_graph(g.nodes, "pcl_edge_fused_kernel", inputs,
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, out_shape)], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pcl-edge")
    model.ir_version = 8
    return model.SerializeToString()
