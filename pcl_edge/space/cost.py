"""The analytic cost model of a genome, pure Python (no torch): its kernels (one block at one input shape, plus the
stem and the pooled head), their FLOPs and parameters (BatchNorm folded, as deployed), the feature-map elements a
training step stores (``genome_activations``, a training step's cost), and ``kernel_key``, THE
canonical key function that hardware-profile tables are keyed by. The search space counts parameters with it, so
sampling and mutating genomes needs no torch (``pcl-edge profile`` runs on the device)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .genome import Genome


@dataclass(frozen=True)
class Kernel:
    op: str  # "stem", "res", "dws", "mbconv", "head"
    cin: int
    cout: int
    size: int  # input H (= W)
    stride: int = 1
    kernel: int = 3
    expansion: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + self.stride - 1) // self.stride

    @property
    def key(self) -> str:
        return kernel_key(self)

    def features(self) -> tuple[float, float, float]:
        """(MFLOPs, weight+activation MB moved, 1) for the fallback regression."""
        flops, params = _flops_params(self)
        acts = self.cin * self.size**2 + self.cout * self.out_size**2
        return flops / 1e6, 4 * (params + acts) / 1e6, 1.0


def kernel_key(k: Kernel) -> str:
    """``op-k{k}-e{e}-s{s}:{cin}x{size}x{size}->{cout}``; stable across versions (profiles depend on it)."""
    return f"{k.op}-k{k.kernel}-e{k.expansion}-s{k.stride}:{k.cin}x{k.size}x{k.size}->{k.cout}"


def _conv(cin: int, cout: int, k: int, out: int, groups: int = 1) -> tuple[int, int]:
    params = k * k * (cin // groups) * cout
    return 2 * params * out * out, params + 2 * cout  # MACs x2; BN folded to a bias


COST_OPS = ("stem", "res", "dws", "mbconv", "head")  # ops this model can cost; blocks must be among them


def _flops_params(k: Kernel) -> tuple[int, int]:
    o = k.out_size
    parts: list[tuple[int, int]] = []
    if k.op == "stem":
        parts.append(_conv(k.cin, k.cout, k.kernel, o))
    elif k.op == "res":
        parts += [_conv(k.cin, k.cout, k.kernel, o), _conv(k.cout, k.cout, k.kernel, o)]
        if k.cin != k.cout or k.stride != 1:
            parts.append(_conv(k.cin, k.cout, 1, o))
    elif k.op == "dws":
        parts += [_conv(k.cin, k.cin, k.kernel, o, groups=k.cin), _conv(k.cin, k.cout, 1, o)]
    elif k.op == "mbconv":
        hidden = k.cin * k.expansion
        if k.expansion > 1:
            parts.append(_conv(k.cin, hidden, 1, k.size))
        parts += [_conv(hidden, hidden, k.kernel, o, groups=hidden), _conv(hidden, k.cout, 1, o)]
    elif k.op == "head":
        parts.append((k.cin * k.size**2 + 2 * k.cin * k.cout, k.cin * k.cout + k.cout))
    else:
        raise KeyError(f"no kernel model for op {k.op!r}")
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


@lru_cache(maxsize=65536)
def genome_kernels(genome: Genome, input_shape: tuple[int, int, int], num_classes: int = 2) -> tuple[Kernel, ...]:
    """The kernels of a genome at an input shape (C, H, W), in execution order."""
    c, h, _ = input_shape
    out = [Kernel("stem", c, genome.width, h)]
    size = h
    for cin, cout, stride, gene in genome.layer_plan():
        out.append(Kernel(gene.op, cin, cout, size, stride, gene.kernel, gene.expansion))
        size = (size + stride - 1) // stride
    out.append(Kernel("head", genome.out_channels, num_classes, size, kernel=1))
    return tuple(out)


def _activations(k: Kernel) -> int:
    """Feature-map elements one sample leaves for backward in this kernel: the outputs of its convolutions,
    BatchNorms and ReLUs, counted as the torch network's leaf modules produce them."""
    o2, hw = k.out_size**2, k.size**2
    if k.op == "stem":
        return 3 * k.cout * o2
    if k.op == "res":
        return (3 + 2 + 1 + (2 if k.cin != k.cout or k.stride != 1 else 0)) * k.cout * o2
    if k.op == "dws":
        return 3 * k.cin * o2 + 3 * k.cout * o2
    if k.op == "mbconv":
        hidden = k.cin * k.expansion
        return (3 * hidden * hw if k.expansion > 1 else 0) + 3 * hidden * o2 + 2 * k.cout * o2
    if k.op == "head":
        return k.cin + k.cout  # pooled features, logits
    raise KeyError(f"no kernel model for op {k.op!r}")


def genome_activations(genome: Genome, input_shape: tuple[int, int, int], num_classes: int = 2) -> int:
    """Feature-map elements per sample that a training step writes and reads back: what a step costs on a CPU,
    where small networks are bound by memory traffic, not arithmetic (BENCHMARKS.md, issue 21: over 198 candidates'
    measured seconds per step, Pearson r 0.93 against this and 0.37 against FLOPs; a full-resolution inverted
    residual net with fewer FLOPs than the hand-picked net trained 4x slower per step)."""
    return sum(_activations(k) for k in genome_kernels(genome, input_shape, num_classes))


def genome_flops(genome: Genome, input_shape: tuple[int, int, int], num_classes: int = 2) -> int:
    return sum(_flops_params(k)[0] for k in genome_kernels(genome, input_shape, num_classes))


def genome_params(genome: Genome, in_channels: int, num_classes: int = 2) -> int:
    """Exactly the parameter count of the torch network (tested against it)."""
    return sum(_flops_params(k)[1] for k in genome_kernels(genome, (in_channels, 8, 8), num_classes))
