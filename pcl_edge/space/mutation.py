"""Mutation operators (a registry: each returns a NEW genome or None when it does not apply) and crossover.

``mutate`` draws operators with an explicit ``numpy.random.Generator`` and gives up after ``max_tries``
draws, returning the parent: no unbounded sampling loop anywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .._registry import Registry
from ._layers import compress, drop_layer, expand, set_flag
from .genome import Genome
from .search_space import SearchSpace

MutationOp = Callable[[Genome, SearchSpace, np.random.Generator], "Genome | None"]
MUTATIONS: Registry[MutationOp] = Registry("mutation")


def _pick(rng: np.random.Generator, options) -> int | None:
    options = list(options)
    return int(options[int(rng.integers(len(options)))]) if options else None


@MUTATIONS.register("depth_up")
def depth_up(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    """Insert a copy of a layer right after it (same block, no stride, no doubling). Inheritance aligns the other
    layers around it and starts it as the identity, so the child computes its parent's function."""
    if g.depth >= space.max_depth:
        return None
    layers = expand(g)
    i = int(rng.integers(g.depth))
    layers.insert(i + 1, layers[i]._replace(down=False, double=False))
    return compress(layers, g.width)


@MUTATIONS.register("depth_down")
def depth_down(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    if g.depth <= space.min_depth:
        return None
    return drop_layer(g, int(rng.integers(g.depth)))


def _width_step(g: Genome, space: SearchSpace, step: int) -> Genome | None:
    widths = sorted(space.widths)
    j = widths.index(g.width) + step if g.width in widths else -1
    return replace(g, width=widths[j]) if 0 <= j < len(widths) else None


@MUTATIONS.register("width_up")
def width_up(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return _width_step(g, space, +1)


@MUTATIONS.register("width_down")
def width_down(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return _width_step(g, space, -1)


def _toggle(g: Genome, flag: str, rng: np.random.Generator, on: bool, lo: int) -> Genome | None:
    current = g.down if flag == "down" else g.double
    choices = [i for i in range(lo, g.depth) if (i in current) != on]
    i = _pick(rng, choices)
    return None if i is None else set_flag(g, i, flag, on)


@MUTATIONS.register("add_down")
def add_down(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return None if len(g.down) >= space.max_down else _toggle(g, "down", rng, True, lo=1)


@MUTATIONS.register("remove_down")
def remove_down(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return _toggle(g, "down", rng, False, lo=1)


@MUTATIONS.register("add_double")
def add_double(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return None if g.out_channels * 2 > space.max_channels else _toggle(g, "double", rng, True, lo=0)


@MUTATIONS.register("remove_double")
def remove_double(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return _toggle(g, "double", rng, False, lo=0)


def _move(g: Genome, flag: str, rng: np.random.Generator, lo: int) -> Genome | None:
    """Shift one downsampling / doubling by one layer, keeping the stage blocks."""
    current = g.down if flag == "down" else g.double
    moves = [(p, p + d) for p in current for d in (-1, 1) if lo <= p + d < g.depth and p + d not in current]
    if not moves:
        return None
    src, dst = moves[int(rng.integers(len(moves)))]
    layers = expand(g)
    genes = list(g.stages)
    layers[src] = layers[src]._replace(**{flag: False})
    layers[dst] = layers[dst]._replace(**{flag: True})
    out = compress(layers, g.width)
    return replace(out, stages=tuple(genes)) if flag == "down" else out


@MUTATIONS.register("move_down")
def move_down(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return _move(g, "down", rng, lo=1)


@MUTATIONS.register("move_double")
def move_double(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    return _move(g, "double", rng, lo=0)


def _set_stage(g: Genome, s: int, **changes) -> Genome:
    stages = list(g.stages)
    stages[s] = replace(stages[s], **changes)
    return replace(g, stages=tuple(stages))


@MUTATIONS.register("change_block")
def change_block(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    s = int(rng.integers(len(g.stages)))
    ops = [op for op in space.ops if op != g.stages[s].op]
    if not ops:
        return None
    op = ops[int(rng.integers(len(ops)))]
    expansion = int(rng.choice(space.expansions)) if op == "mbconv" else 1
    return _set_stage(g, s, op=op, expansion=expansion)


@MUTATIONS.register("change_kernel")
def change_kernel(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    s = int(rng.integers(len(g.stages)))
    k = _pick(rng, [k for k in space.kernels if k != g.stages[s].kernel])
    return None if k is None else _set_stage(g, s, kernel=k)


@MUTATIONS.register("change_expansion")
def change_expansion(g: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome | None:
    s = _pick(rng, [i for i, st in enumerate(g.stages) if st.op == "mbconv"])
    if s is None:
        return None
    e = _pick(rng, [e for e in space.expansions if e != g.stages[s].expansion])
    return None if e is None else _set_stage(g, s, expansion=e)


def mutate(g: Genome, space: SearchSpace, rng: np.random.Generator, max_tries: int = 16) -> tuple[Genome, str]:
    """One admissible mutation of ``g`` and the operator's name; ``(g, "none")`` if ``max_tries`` draws all fail."""
    names = MUTATIONS.names()
    for _ in range(max_tries):
        name = names[int(rng.integers(len(names)))]
        child = MUTATIONS.get(name)(g, space, rng)
        if child is not None and child != g and space.is_valid(child):
            return child, name
    return g, "none"


def crossover(a: Genome, b: Genome, space: SearchSpace, rng: np.random.Generator) -> Genome:
    """Macro structure (depth, width, positions) from ``a``; each stage's block from ``a`` or ``b`` uniformly
    (b's stages are aligned by index, its last stage standing in for missing ones). ``a`` is the weight donor."""
    stages = tuple(b.stages[min(i, len(b.stages) - 1)] if rng.random() < 0.5 else sa for i, sa in enumerate(a.stages))
    child = replace(a, stages=stages)
    return child if space.is_valid(child) else a
