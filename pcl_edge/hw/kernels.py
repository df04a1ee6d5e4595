"""Blocks at one input shape, the units the search space and the cost model speak in. The definitions live with the
genome's cost model (``pcl_edge.space.cost``, pure Python); this module is where the hardware side reaches them.
What a runtime runs of them, fused kernels, is ``hw.fusion``."""

from ..space.cost import Kernel, genome_flops, genome_kernels, kernel_key

__all__ = ["Kernel", "genome_flops", "genome_kernels", "kernel_key"]
