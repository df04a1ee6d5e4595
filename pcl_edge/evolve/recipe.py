"""A training recipe: what one training of a candidate, an expert or a baseline does. Torch-free, so the run
configuration (and the CLI's help, which lists the presets) can be read without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100  # optimizer steps: a budget independent of the dataset's size, as NAS proxies use
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: str = "none"  # none | shift | shift-flip
    # torch intra-op threads for one training of this kind; 0 = every core this process may use. Part of the
    # recipe because float results depend on it: a candidate trains with the same count whichever executor runs it.
    threads: int = 0
