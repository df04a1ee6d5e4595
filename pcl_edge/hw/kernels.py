"""Kernels, the units latency is measured and predicted in. The definitions live with the genome's cost model
(``pcl_edge.space.cost``, pure Python); this module is where the hardware side reaches them."""

from ..space.cost import Kernel, genome_flops, genome_kernels, kernel_key


def graph_nodes(k: Kernel) -> int:
    """Operators the kernel becomes in a deployed graph (BatchNorm folded): per-operator dispatch is what small
    networks spend most of their time on, so the calibration uses this count. Tested against ``onnx_graphs``."""
    same = k.cin == k.cout and k.stride == 1
    if k.op == "stem":
        return 2  # Conv, Relu
    if k.op == "res":
        return 5 + (0 if same else 1)  # Conv, Relu, Conv, [Conv], Add, Relu
    if k.op == "dws":
        return 4 + (1 if same else 0)  # Conv, Relu, Conv, [Add], Relu
    if k.op == "mbconv":
        return (2 if k.expansion > 1 else 0) + 3 + (1 if same else 0)  # [Conv, Relu], Conv, Relu, Conv, [Add]
    if k.op == "head":
        return 3  # GlobalAveragePool, Flatten, Gemm
    raise KeyError(f"no graph model for op {k.op!r}")


__all__ = ["Kernel", "genome_flops", "genome_kernels", "graph_nodes", "kernel_key"]
