"""Genome -> torch network: stem, one block per layer, global average pool, a linear head per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import ConvBN, create_block
from .genome import Genome


class Net(nn.Module):
    """``trunk`` (stem + layers) and a single classification ``head``; a new task gets a new head."""

    def __init__(self, genome: Genome, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.genome = genome
        self.stem = ConvBN(in_channels, genome.width, 3)
        self.layers = nn.Sequential(*(create_block(g.op, cin, cout, stride, g.kernel, g.expansion)
                                      for cin, cout, stride, g in genome.layer_plan()))
        self.pool = nn.AdaptiveAvgPool2d(1)  # exports as GlobalAveragePool
        self.head = nn.Linear(genome.out_channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def new_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.genome.out_channels, num_classes)


def build_network(genome: Genome, in_channels: int, num_classes: int) -> Net:
    return Net(genome, in_channels, num_classes)


def count_params(genome: Genome, in_channels: int, num_classes: int) -> int:
    """Parameter count without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        net = Net(genome, in_channels, num_classes)
    return sum(p.numel() for p in net.parameters())
