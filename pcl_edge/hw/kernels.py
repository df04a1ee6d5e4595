"""Kernels, the units latency is measured and predicted in. The definitions live with the genome's cost model
(``pcl_edge.space.cost``, pure Python); this module is where the hardware side reaches them."""

from ..space.cost import Kernel, genome_flops, genome_kernels, kernel_key

__all__ = ["Kernel", "genome_flops", "genome_kernels", "kernel_key"]
