"""The search space: genome, cost model, limits, mutation/crossover (pure Python), and the torch side (block
registry, network builder, weight inheritance), imported only when used so that genomes, sampling and latency
prediction work on a device without torch."""

from .genome import BlockGene, Genome
from .mutation import MUTATIONS, crossover, mutate
from .search_space import SearchSpace

_TORCH = {"BLOCKS": "blocks", "create_block": "blocks", "register_block": "blocks", "Net": "network",
          "build_network": "network", "count_params": "network", "inherit_weights": "inherit"}


def __getattr__(name: str):
    if name in _TORCH:
        import importlib

        return getattr(importlib.import_module(f".{_TORCH[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BLOCKS", "MUTATIONS", "BlockGene", "Genome", "Net", "SearchSpace", "build_network", "count_params",
           "create_block", "crossover", "inherit_weights", "mutate", "register_block"]
