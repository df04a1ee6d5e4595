"""The search space: genome, block registry, network builder, mutation/crossover, weight inheritance."""

from .blocks import BLOCKS, create_block, register_block
from .genome import BlockGene, Genome
from .inherit import inherit_weights
from .mutation import MUTATIONS, crossover, mutate
from .network import Net, build_network, count_params
from .search_space import SearchSpace

__all__ = ["BLOCKS", "MUTATIONS", "BlockGene", "Genome", "Net", "SearchSpace", "build_network", "count_params",
           "create_block", "crossover", "inherit_weights", "mutate", "register_block"]
