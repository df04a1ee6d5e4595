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


def cosine(step: float, horizon: float) -> float:
    """Cosine decay from 1 at step 0 to 0 at ``horizon`` (and after it)."""
    import math

    return 0.5 * (1 + math.cos(math.pi * min(step, horizon) / horizon)) if horizon > 0 else 1.0


@dataclass(frozen=True)
class Schedule:
    """Where one training sits in its lineage's learning-rate schedule. ``horizon`` 0: a schedule of its own (cosine
    over its steps, as every training once had). Otherwise one cosine over ``horizon`` lineage steps, entered at
    ``start`` (the steps the weights already took on this task), so the trainings of a lineage add up to one run;
    with ``anneal`` the training takes the rate where the lineage is and decays it to zero over its own steps (an
    expert's final training: it anneals what the lineage learned instead of restarting at the top)."""

    start: int = 0
    horizon: int = 0
    anneal: bool = False

    def factor(self, step: int, steps: int) -> float:
        """The learning-rate multiplier of optimizer step ``step`` of a training of ``steps`` steps."""
        if self.horizon <= 0:
            return cosine(step, max(1, steps))
        if self.anneal:
            return cosine(self.start, self.horizon) * cosine(step, max(1, steps))
        return cosine(self.start + step, self.horizon)
