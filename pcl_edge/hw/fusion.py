"""Kernels as the runtime runs them. A block of the search space is a few operators (``block_ops``: Conv, Relu, Add,
...); a runtime does not run those one by one, it fuses chains of them into one kernel (onnxruntime on x86 turns
Conv+Relu into one NCHWc Conv with an activation and Conv+Add+Relu into one Conv with a sum input; TensorRT fuses the
same chains). Latency is measured and predicted per **fused kernel**: ``lower`` applies a backend's fusion rules to
a block's operators, and ``detect_rules`` finds those rules on the backend itself, as nn-Meter does (MobiSys 2021),
by building probe networks and reading which operators the optimised graph kept.

Everything here is pure Python on the genome's cost model: the search lowers every candidate, and
``hw.onnx_graphs`` builds its graphs from the same ``block_ops`` (one source of truth for what a block is)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

from ..space.cost import Kernel, genome_kernels
from ..space.genome import Genome

# The chains a runtime may fuse, in the order they are tried. Only chains along single-consumer edges fuse; a Conv
# absorbs an Add only as the Add's first input (what onnxruntime's NCHWc transformer does; the profiler checks the
# lowering against the optimised graph of every network it times and records mismatches).
CANDIDATE_RULES: tuple[tuple[str, ...], ...] = (("Conv", "Relu"), ("Conv", "Add"), ("Conv", "Add", "Relu"),
                                                 ("Add", "Relu"))

# Rules assumed where nobody detected them: TensorRT's documented layer fusions (Convolution + ReLU activation;
# Convolution + ElementWise sum, optionally followed by ReLU; ElementWise + activation); TensorRT developer guide,
# "Types of Fusions". A profile measured on a device records the rules detected there instead.
TENSORRT_RULES = frozenset(CANDIDATE_RULES)
_TAG = re.compile(r"b(\d+)\.(\d+)(?!\d)")


@dataclass(frozen=True)
class Op:
    """One ONNX operator of a block. ``inputs`` index earlier ops of the same block; -1 is the block's input."""

    op: str  # Conv, Relu, Add, GlobalAveragePool, Flatten, Gemm
    inputs: tuple[int, ...]
    cin: int
    cout: int
    size: int  # input H (= W)
    stride: int = 1
    kernel: int = 1
    groups: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + self.stride - 1) // self.stride

    def flops_params(self) -> tuple[int, int]:
        o = self.out_size
        if self.op == "Conv":
            params = self.kernel ** 2 * (self.cin // self.groups) * self.cout
            return 2 * params * o * o, params + self.cout
        if self.op == "Gemm":
            return 2 * self.cin * self.cout, self.cin * self.cout + self.cout
        if self.op in ("Relu", "Add", "GlobalAveragePool"):
            return self.cin * self.size ** 2, 0
        return 0, 0  # Flatten: a view


@lru_cache(maxsize=65536)
def block_ops(k: Kernel) -> tuple[Op, ...]:
    """The operators a kernel of the cost model becomes in a deployed graph (BatchNorm folded into Conv)."""
    c, s, same = k.cin, k.size, k.cin == k.cout and k.stride == 1
    o = k.out_size
    if k.op == "stem":
        return Op("Conv", (-1,), c, k.cout, s, 1, k.kernel), Op("Relu", (0,), k.cout, k.cout, s)
    if k.op == "res":
        ops = [Op("Conv", (-1,), c, k.cout, s, k.stride, k.kernel), Op("Relu", (0,), k.cout, k.cout, o),
               Op("Conv", (1,), k.cout, k.cout, o, 1, k.kernel)]
        short = -1
        if not same:
            ops.append(Op("Conv", (-1,), c, k.cout, s, k.stride, 1))
            short = 3
        n = len(ops)
        return (*ops, Op("Add", (2, short), k.cout, k.cout, o), Op("Relu", (n,), k.cout, k.cout, o))
    if k.op == "dws":
        ops = [Op("Conv", (-1,), c, c, s, k.stride, k.kernel, c), Op("Relu", (0,), c, c, o),
               Op("Conv", (1,), c, k.cout, o, 1, 1)]
        if same:
            ops.append(Op("Add", (2, -1), k.cout, k.cout, o))
        return (*ops, Op("Relu", (len(ops) - 1,), k.cout, k.cout, o))
    if k.op == "mbconv":
        h = c * k.expansion
        ops = [Op("Conv", (-1,), c, h, s, 1, 1), Op("Relu", (0,), h, h, s)] if k.expansion > 1 else []
        x = len(ops) - 1
        ops += [Op("Conv", (x,), h, h, s, k.stride, k.kernel, h), Op("Relu", (x + 1,), h, h, o),
                Op("Conv", (x + 2,), h, k.cout, o, 1, 1)]
        if same:
            ops.append(Op("Add", (len(ops) - 1, -1), k.cout, k.cout, o))
        return tuple(ops)
    if k.op == "head":
        return (Op("GlobalAveragePool", (-1,), c, c, s), Op("Flatten", (0,), c, c, 1),
                Op("Gemm", (1,), c, k.cout, 1))
    raise KeyError(f"no operator model for op {k.op!r}")


@dataclass(frozen=True)
class FusedKernel:
    """What the runtime runs as one kernel: a chain of operators anchored at its first one."""

    ops: tuple[str, ...]
    cin: int
    cout: int
    size: int
    stride: int = 1
    kernel: int = 1
    groups: int = 1
    flops: int = 0
    params: int = 0
    out_size: int = 0  # 0: derived from size and stride
    sum_input: bool = False  # an Add folded in: one more activation read

    key: str = field(init=False, compare=False, repr=False)
    kind: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.out_size:
            object.__setattr__(self, "out_size", (self.size + self.stride - 1) // self.stride)
        chain = "+".join(self.ops)
        # ``Conv+Relu-k3-s1-g1:16x32x32->16``: THE key of measured tables (stable: profiles depend on it); computed
        # once, the search looks kernels up by it for every candidate
        object.__setattr__(self, "key", f"{chain}-k{self.kernel}-s{self.stride}-g{self.groups}:"
                                        f"{self.cin}x{self.size}x{self.size}->{self.cout}")
        # what the fallback regression pools over: the chain, kernel size, stride and depthwise or not
        dw = "dw" if self.groups > 1 and self.groups == self.cin else "g1"
        object.__setattr__(self, "kind", f"{chain}-k{self.kernel}-s{self.stride}-{dw}")

    @functools.cache  # noqa: B019 - frozen, hashable, and few distinct kernels: the cache is the point
    def features(self, block: int = 1) -> tuple[float, float, float]:
        """(MFLOPs, MB moved: weights + activations in and out, 1) for fallback regressions and rooflines. With
        ``block`` > 1, channel counts are rounded up to multiples of it first, as blocked layouts (onnxruntime's
        NCHWc: 8 or 16 channels per block) compute them; a count below one block (an RGB input) stays as it is."""
        if block <= 1:
            acts = self.cin * self.size ** 2 + self.cout * self.out_size ** 2 * (2 if self.sum_input else 1)
            return self.flops / 1e6, 4 * (self.params + acts) / 1e6, 1.0
        ci, co = _pad(self.cin, block), _pad(self.cout, block)
        o2 = self.out_size ** 2
        if self.ops[0] == "Conv":
            per_out = self.kernel ** 2 * (1 if self.groups > 1 and self.groups == self.cin else ci)
            flops = 2 * per_out * co * o2 + (len(self.ops) - 1) * co * o2
            params = per_out * co + co
        else:
            flops, params = self.flops * co / max(1, self.cout), self.params
        acts = ci * self.size ** 2 + co * o2 * (2 if self.sum_input else 1)
        return flops / 1e6, 4 * (params + acts) / 1e6, 1.0


def _pad(c: int, block: int) -> int:
    return c if c < block else -(-c // block) * block


Rules = frozenset  # of operator chains (tuples of op names)


def parse_rules(names: Iterable[str]) -> Rules:
    rules = frozenset(tuple(n.split("+")) for n in names)
    unknown = rules - set(CANDIDATE_RULES)
    if unknown:
        raise ValueError(f"unknown fusion rule(s) {sorted('+'.join(r) for r in unknown)}; "
                         f"known: {['+'.join(r) for r in CANDIDATE_RULES]}")
    return rules


def rule_names(rules: Rules) -> list[str]:
    return ["+".join(r) for r in CANDIDATE_RULES if r in rules]


def _groups(ops: tuple[Op, ...], rules: Rules) -> list[list[int]]:
    """Greedy: from each operator not yet taken, follow single-consumer edges while the chain stays a prefix of some
    rule; keep the longest prefix that is a rule."""
    consumers = [0] * len(ops)
    for op in ops:
        for j in op.inputs:
            if j >= 0:
                consumers[j] += 1
    consumers[-1] += 1  # the block's output feeds the next block
    prefixes = {r[:n] for r in rules for n in range(1, len(r) + 1)}
    taken, out = set(), []
    for i in range(len(ops)):
        if i in taken:
            continue
        chain = [i]
        while consumers[chain[-1]] == 1:
            nxt = next((j for j in range(chain[-1] + 1, len(ops)) if ops[j].inputs and ops[j].inputs[0] == chain[-1]),
                       None)
            if nxt is None or nxt in taken or tuple(ops[c].op for c in [*chain, nxt]) not in prefixes:
                break
            chain.append(nxt)
        while len(chain) > 1 and tuple(ops[c].op for c in chain) not in rules:
            chain.pop()
        taken.update(chain)
        out.append(chain)
    return out


@lru_cache(maxsize=65536)
def lower(k: Kernel, rules: Rules) -> tuple[tuple[FusedKernel, tuple[int, ...]], ...]:
    """The fused kernels of one block under ``rules``, each with the indices of the block operators it runs."""
    ops = block_ops(k)
    out = []
    for chain in _groups(ops, rules):
        first, last = ops[chain[0]], ops[chain[-1]]
        fp = [ops[c].flops_params() for c in chain]
        fk = FusedKernel(tuple(ops[c].op for c in chain), first.cin, last.cout, first.size, first.stride,
                         first.kernel, first.groups, sum(f for f, _ in fp), sum(p for _, p in fp), last.out_size,
                         sum_input=first.op == "Conv" and any(ops[c].op == "Add" for c in chain))
        out.append((fk, tuple(chain)))
    return tuple(out)


def genome_fused(genome: Genome, input_shape: tuple[int, int, int], rules: Rules,
                 num_classes: int = 2) -> list[FusedKernel]:
    """Every fused kernel a genome runs, in execution order."""
    return [fk for k in genome_kernels(genome, tuple(input_shape), num_classes) for fk in fused_of(k, rules)]


@lru_cache(maxsize=65536)
def fused_of(k: Kernel, rules: Rules) -> tuple[FusedKernel, ...]:
    """The fused kernels of one block, without the operator indices."""
    return tuple(fk for fk, _ in lower(k, rules))


def node_tags(name: str) -> list[tuple[int, int]]:
    """(block, operator) tags in a runtime node's name: onnxruntime keeps one member's name (``b3.1_nchwc``),
    TensorRT joins them (``b3.0 + b3.1``). Layout nodes the runtime adds (reorders) carry none."""
    return [(int(b), int(o)) for b, o in _TAG.findall(name)]


def assign_nodes(kernels: list[Kernel], rules: Rules, node_names: Iterable[str]) -> tuple[dict[str, int], int]:
    """Map each runtime node to the index of the fused kernel (flattened over the network) that it runs.

    Returns (node name -> fused index, mismatches): a mismatch is a node whose tags span two predicted kernels, or a
    predicted kernel that no node or several nodes ran. Nodes without tags (layout) map to nothing."""
    where, n = {}, 0
    for b, k in enumerate(kernels):
        for _, members in lower(k, rules):
            for o in members:
                where[(b, o)] = n
            n += 1
    out, hits, bad = {}, [0] * n, 0
    for name in node_names:
        idx = {where.get(t, -1) for t in node_tags(name)}
        if not idx:
            continue
        if len(idx) != 1 or -1 in idx:
            bad += 1
            continue
        i = idx.pop()
        out[name] = i
        hits[i] += 1
    return out, bad + sum(1 for h in hits if h != 1)


def probe_kernels(shape: tuple[int, int, int] = (3, 16, 16)) -> list[list[Kernel]]:
    """Small networks that tell the candidate rules apart: every block variant (same shape or not, expansion or
    not) after a stem, as the runtime meets them inside a network."""
    c, h, _ = shape
    stem = Kernel("stem", c, 16, h)
    blocks = [Kernel("res", 16, 16, h), Kernel("res", 16, 32, h, 2), Kernel("dws", 16, 16, h),
              Kernel("dws", 16, 32, h, 2), Kernel("mbconv", 16, 16, h, 1, 3, 3), Kernel("mbconv", 16, 32, h, 2, 3, 1)]
    return [[stem, b, Kernel("head", b.cout, 2, b.out_size)] for b in blocks]


def detect_rules(optimized_nodes: Callable[[list[Kernel]], list[str]]) -> tuple[Rules, dict]:
    """The smallest set of candidate rules under which every probe network's optimised graph is predicted exactly
    (one runtime node per predicted fused kernel). ``optimized_nodes`` builds a network of kernels on the backend
    and returns the names of the nodes it runs. Raises when no combination explains what the backend did."""
    probes = [(ks, optimized_nodes(ks)) for ks in probe_kernels()]
    for n in range(len(CANDIDATE_RULES) + 1):
        for combo in combinations(CANDIDATE_RULES, n):
            rules = frozenset(combo)
            if all(assign_nodes(ks, rules, names)[1] == 0 for ks, names in probes):
                return rules, {"probes": len(probes), "nodes": sum(len(names) for _, names in probes)}
    seen = {"/".join(k.key for k in ks): names for ks, names in probes}
    raise RuntimeError(f"no combination of fusion rules {['+'.join(r) for r in CANDIDATE_RULES]} explains the "
                       f"backend's optimised graphs: {seen}")
