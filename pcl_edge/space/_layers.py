"""A per-layer view of a genome, where structural edits (insert/remove a layer, toggle a downsampling or a
doubling) are one-liners; ``compress`` turns it back into a valid Genome."""

from __future__ import annotations

from typing import NamedTuple

from .genome import BlockGene, Genome


class Layer(NamedTuple):
    down: bool
    double: bool
    gene: BlockGene


def expand(g: Genome) -> list[Layer]:
    return [Layer(i in g.down, i in g.double, g.stages[g.stage_of(i)]) for i in range(g.depth)]


def compress(layers: list[Layer], width: int) -> Genome:
    """Layer 0 never downsamples (the stem feeds it); a stage's block is the block of its first layer."""
    if layers and layers[0].down:
        layers = [layers[0]._replace(down=False), *layers[1:]]
    down = tuple(i for i, la in enumerate(layers) if la.down)
    stages = (layers[0].gene, *(layers[i].gene for i in down))
    return Genome(depth=len(layers), width=width, down=down,
                  double=tuple(i for i, la in enumerate(layers) if la.double), stages=stages)


def drop_layer(g: Genome, index: int) -> Genome:
    layers = expand(g)
    del layers[index]
    return compress(layers, g.width)


def set_flag(g: Genome, index: int, flag: str, value: bool) -> Genome:
    layers = expand(g)
    layers[index] = layers[index]._replace(**{flag: value})
    return compress(layers, g.width)
