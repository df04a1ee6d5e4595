"""Search objectives by name. Each maps an individual to a number and says which way is better; selection sees
only a matrix to MINIMISE, so adding one (predicted latency, energy) is a registration, not a change to NSGA-II."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._registry import Registry
from .individual import Individual


@dataclass(frozen=True)
class Objective:
    value: Callable[[Individual], float]
    maximize: bool = False


OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.register("val_acc")(Objective(lambda ind: ind.val_acc, maximize=True))
OBJECTIVES.register("params")(Objective(lambda ind: float(ind.params)))
OBJECTIVES.register("latency")(Objective(lambda ind: float(ind.extra["latency_ms"])))  # predicted, batch 1


def objective_matrix(pop: Sequence[Individual], names: Sequence[str]) -> np.ndarray:
    """Rows = individuals, columns = objectives, every column to be minimised."""
    objs = [OBJECTIVES.get(n) for n in names]
    return np.array([[-o.value(ind) if o.maximize else o.value(ind) for o in objs] for ind in pop], float)
