"""Search-space limits: which genomes are admissible for a given input, sampling, and bounded repair."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ._layers import drop_layer, set_flag
from .cost import COST_OPS, genome_activations, genome_params
from .genome import BlockGene, Genome


@dataclass(frozen=True)
class SearchSpace:
    in_channels: int
    input_size: int  # min(H, W)
    num_classes: int = 2
    min_depth: int = 2
    max_depth: int = 10
    widths: tuple[int, ...] = (8, 12, 16, 24, 32, 48, 64)
    ops: tuple[str, ...] = ("res", "dws", "mbconv")
    kernels: tuple[int, ...] = (3, 5)
    expansions: tuple[int, ...] = (1, 3, 6)
    max_channels: int = 256
    max_params: int = 500_000
    # feature-map elements per sample a training step stores (cost.genome_activations): a cap on training cost
    max_activations: int | None = None

    def __post_init__(self) -> None:
        for op in self.ops:
            if op not in COST_OPS or op in ("stem", "head"):
                raise KeyError(f"unknown block {op!r}; the search space knows {list(COST_OPS[1:-1])}")

    @property
    def max_down(self) -> int:
        """Downsamplings that keep the last feature map at >= 2x2 (8x8 digits: 2; 32x32 CIFAR: 4)."""
        return max(0, int(math.log2(self.input_size)) - 1)

    def violations(self, g: Genome) -> list[str]:
        out = []
        if not self.min_depth <= g.depth <= self.max_depth:
            out.append(f"depth {g.depth} outside {self.min_depth}..{self.max_depth}")
        if g.width not in self.widths:
            out.append(f"width {g.width} not in {self.widths}")
        if len(g.down) > self.max_down:
            out.append(f"{len(g.down)} downsamplings > {self.max_down} for input size {self.input_size}")
        if g.out_channels > self.max_channels:
            out.append(f"{g.out_channels} channels > {self.max_channels}")
        for s in g.stages:
            if s.op not in self.ops or s.kernel not in self.kernels or s.expansion not in self.expansions:
                out.append(f"stage gene {s} outside the space")
            elif s.op != "mbconv" and s.expansion != 1:
                out.append(f"stage gene {s}: only mbconv has an expansion")
        if not out and self.params(g) > self.max_params:
            out.append(f"{self.params(g)} parameters > cap {self.max_params}")
        if not out and self.max_activations is not None and self.activations(g) > self.max_activations:
            out.append(f"{self.activations(g)} activation elements per sample > training-cost cap "
                       f"{self.max_activations}")
        return out

    def is_valid(self, g: Genome) -> bool:
        return not self.violations(g)

    def params(self, g: Genome) -> int:
        return genome_params(g, self.in_channels, self.num_classes)

    def activations(self, g: Genome) -> int:
        return genome_activations(g, (self.in_channels, self.input_size, self.input_size), self.num_classes)

    def _too_big(self, g: Genome) -> bool:
        return self.params(g) > self.max_params or (self.max_activations is not None
                                                    and self.activations(g) > self.max_activations)

    def smallest(self) -> Genome:
        """The cheapest genome the space admits: fewest, narrowest layers, as many downsamplings as allowed, the
        lightest block (what a latency budget is checked against before any training)."""
        depth = self.min_depth
        n_down = min(self.max_down, depth - 1)
        op = "dws" if "dws" in self.ops else self.ops[0]
        gene = BlockGene(op, min(self.kernels), 1 if op != "mbconv" else min(self.expansions))
        return Genome(depth, min(self.widths), tuple(range(1, n_down + 1)), (), (gene,) * (n_down + 1))

    def cheapest_to_train(self) -> Genome:
        """``smallest()``'s shape with whichever block stores the fewest activations per sample (an expansion-1
        inverted residual stores fewer than a depthwise-separable block)."""
        g = self.smallest()
        genes = [BlockGene(op, min(self.kernels), min(self.expansions) if op == "mbconv" else 1) for op in self.ops]
        return min((replace(g, stages=(gene,) * len(g.stages)) for gene in genes), key=self.activations)

    def random_gene(self, rng: np.random.Generator) -> BlockGene:
        op = str(rng.choice(self.ops))
        return BlockGene(op, int(rng.choice(self.kernels)), int(rng.choice(self.expansions)) if op == "mbconv" else 1)

    def sample(self, rng: np.random.Generator, max_depth: int | None = None, tries: int = 32) -> Genome:
        """A random admissible genome (small by default: initial populations start shallow, as in ArchCraft). A
        draw that repair cannot bring inside the limits (a training-cost cap that no narrower or shallower version
        of it meets) is drawn again, ``tries`` times at most; then the smallest genome (or the cheapest to train)."""
        for _ in range(tries):
            try:
                return self._draw(rng, max_depth)
            except ValueError:
                continue
        try:
            return self.repair(self.smallest())
        except ValueError:
            return self.repair(self.cheapest_to_train())

    def _draw(self, rng: np.random.Generator, max_depth: int | None) -> Genome:
        depth = int(rng.integers(self.min_depth, (max_depth or self.max_depth) + 1))
        n_down = int(rng.integers(0, min(self.max_down, depth - 1) + 1))
        down = tuple(sorted(int(p) for p in rng.choice(np.arange(1, depth), n_down, replace=False)))
        n_double = int(rng.integers(0, min(n_down, int(math.log2(self.max_channels / min(self.widths)))) + 1))
        double = tuple(sorted(int(p) for p in rng.choice(np.arange(depth), n_double, replace=False)))
        g = Genome(depth=depth, width=int(rng.choice(self.widths[: max(1, len(self.widths) // 2)])), down=down,
                   double=double, stages=tuple(self.random_gene(rng) for _ in range(n_down + 1)))
        return self.repair(g)

    def repair(self, g: Genome) -> Genome:
        """Bring ``g`` inside the limits: at most len(widths) + max_depth steps, never an unbounded loop."""
        widths = sorted(self.widths)
        if g.width not in widths:
            g = replace(g, width=max([w for w in widths if w <= g.width] or [widths[0]]))
        while len(g.down) > self.max_down:
            g = set_flag(g, g.down[-1], "down", False)
        while g.out_channels > self.max_channels and g.double:
            g = set_flag(g, g.double[-1], "double", False)
        for _ in range(len(widths) + self.max_depth):
            if g.depth > self.max_depth or (self._too_big(g) and g.width == widths[0]):
                if g.depth <= self.min_depth:
                    break
                g = drop_layer(g, g.depth - 1)
            elif self._too_big(g):
                g = replace(g, width=widths[widths.index(g.width) - 1])
            else:
                break
        if not self.is_valid(g):
            raise ValueError(f"cannot repair genome {g}: {'; '.join(self.violations(g))}")
        return g
