"""The architecture genome: a frozen dataclass with a compact string form that round-trips.

Macro structure as in ArchCraft: ``depth`` layers after a stem, a base ``width``, the layer positions that
downsample (stride 2) and the positions that double the width. Downsampling positions cut the layers into
stages; each stage picks one block (op, kernel, expansion) from the block registry.

String form (``str(genome)``, parsed by ``Genome.parse``)::

    d6_w16_p2.4_x2.4_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3

``p`` lists downsampling positions, ``x`` width-doubling positions (``-`` when empty), ``sI`` stage I's block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BLOCK_RE = re.compile(r"(?P<op>[a-z][a-z0-9]*)-k(?P<k>\d+)(?:-e(?P<e>\d+))?")


@dataclass(frozen=True)
class BlockGene:
    op: str
    kernel: int = 3
    expansion: int = 1

    def __str__(self) -> str:
        return f"{self.op}-k{self.kernel}" + (f"-e{self.expansion}" if self.op == "mbconv" else "")

    @classmethod
    def parse(cls, text: str) -> BlockGene:
        m = _BLOCK_RE.fullmatch(text)
        if not m:
            raise ValueError(f"bad block gene {text!r}; expected e.g. res-k3 or mbconv-k5-e6")
        return cls(op=m["op"], kernel=int(m["k"]), expansion=int(m["e"] or 1))


def _positions(text: str) -> tuple[int, ...]:
    return () if text == "-" else tuple(int(t) for t in text.split("."))


@dataclass(frozen=True)
class Genome:
    depth: int
    width: int
    down: tuple[int, ...]
    double: tuple[int, ...]
    stages: tuple[BlockGene, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Structural invariants hold for every Genome; search-space limits are checked by SearchSpace.
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"depth and width must be positive, got d{self.depth} w{self.width}")
        if tuple(sorted(set(self.down))) != self.down or any(not 1 <= p < self.depth for p in self.down):
            raise ValueError(f"downsampling positions {self.down} must be sorted, distinct, in 1..{self.depth - 1}")
        if tuple(sorted(set(self.double))) != self.double or any(not 0 <= p < self.depth for p in self.double):
            raise ValueError(f"doubling positions {self.double} must be sorted, distinct, in 0..{self.depth - 1}")
        if len(self.stages) != len(self.down) + 1:
            raise ValueError(f"{len(self.down)} downsamplings make {len(self.down) + 1} stages, "
                             f"got {len(self.stages)} stage genes")

    def __str__(self) -> str:
        pos = lambda ps: ".".join(map(str, ps)) or "-"  # noqa: E731
        stages = "_".join(f"s{i}:{g}" for i, g in enumerate(self.stages))
        return f"d{self.depth}_w{self.width}_p{pos(self.down)}_x{pos(self.double)}_{stages}"

    @classmethod
    def parse(cls, text: str) -> Genome:
        m = re.fullmatch(r"d(\d+)_w(\d+)_p([\d.]+|-)_x([\d.]+|-)_(s0:.+)", text.strip())
        if not m:
            example = "d6_w16_p2.4_x2.4_s0:res-k3_s1:dws-k3_s2:dws-k5"
            raise ValueError(f"bad genome string {text!r}; expected e.g. {example}")
        stage_parts = re.split(r"_(?=s\d+:)", m[5])
        stages = []
        for i, part in enumerate(stage_parts):
            idx, _, gene = part.partition(":")
            if idx != f"s{i}":
                raise ValueError(f"bad genome string {text!r}: stage {idx!r} out of order")
            stages.append(BlockGene.parse(gene))
        try:
            return cls(depth=int(m[1]), width=int(m[2]), down=_positions(m[3]), double=_positions(m[4]),
                       stages=tuple(stages))
        except ValueError as exc:
            raise ValueError(f"bad genome string {text!r}: {exc}") from None

    def stage_of(self, layer: int) -> int:
        return sum(p <= layer for p in self.down)

    def layer_plan(self) -> list[tuple[int, int, int, BlockGene]]:
        """Per layer: (in_channels, out_channels, stride, block gene); the stem outputs ``width`` channels."""
        plan, c = [], self.width
        for i in range(self.depth):
            out = c * 2 if i in self.double else c
            plan.append((c, out, 2 if i in self.down else 1, self.stages[self.stage_of(i)]))
            c = out
        return plan

    @property
    def out_channels(self) -> int:
        return self.width * 2 ** len(self.double)
