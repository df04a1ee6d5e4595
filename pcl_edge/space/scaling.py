"""Width and depth multipliers of one architecture (MobileNet's width multiplier, EfficientNet's depth scaling):
the hand-picked net's smaller siblings, what a search seeds its first population with under a latency budget and
what a benchmark compares against at a tighter one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ._layers import drop_layer
from .genome import Genome
from .search_space import SearchSpace


def shallower(g: Genome) -> Genome | None:
    """``g`` less one layer: the last plain layer (no downsampling, no doubling) of its longest stage."""
    stages: dict[int, list[int]] = {}
    for i in range(g.depth):
        if i not in g.down and i not in g.double:
            stages.setdefault(g.stage_of(i), []).append(i)
    if not stages:
        return None
    longest = max(stages, key=lambda s: (sum(g.stage_of(i) == s for i in range(g.depth)), -s))
    return drop_layer(g, stages[longest][-1])


def scaled_variants(g: Genome, space: SearchSpace) -> list[Genome]:
    """``g`` at every width of the space up to its own, and every depth down to the space's minimum: each admissible
    variant once, ``g`` itself first when it is admissible."""
    widths = [w for w in sorted(space.widths, reverse=True) if w <= g.width] or [g.width]
    out: list[Genome] = []
    depth_variants, d = [], g
    while d is not None and d.depth >= space.min_depth:
        depth_variants.append(d)
        d = shallower(d)
    for base in depth_variants:
        for w in widths:
            v = replace(base, width=w)
            if v not in out and space.is_valid(v):
                out.append(v)
    return out


def largest_fitting(g: Genome, space: SearchSpace, fits: Callable[[Genome], bool]) -> Genome | None:
    """The scaled variant of ``g`` with the most parameters that ``fits`` (e.g. a latency budget); None if none."""
    ok = [v for v in scaled_variants(g, space) if fits(v)]
    return max(ok, key=lambda v: (space.params(v), v.depth, v.width)) if ok else None
