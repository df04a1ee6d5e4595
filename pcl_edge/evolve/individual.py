"""One member of the population: a genome, its weights for the current task, and how it scored."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..space import Genome


@dataclass
class Individual:
    uid: str  # identity, e.g. "t2-g3-c1"; seeds this individual's training
    genome: Genome
    state: dict[str, Tensor]  # weights of trunk + the current task's head (CPU tensors)
    val_acc: float = 0.0  # on the task's VALIDATION split
    params: int = 0
    parent: str | None = None
    op: str = "init"  # how it was made: init, inherited, mutation name, crossover+...
    inherited: float = 0.0  # fraction of parameters copied from the parent
    train_s: float = 0.0
    extra: dict = field(default_factory=dict)
    position: int = 0  # optimizer steps its weights took on the current task (its lineage's schedule position)

    def record(self) -> dict:
        """What the event log and the Pareto CSV say about it (no weights)."""
        return {"uid": self.uid, "genome": str(self.genome), "val_acc": round(self.val_acc, 6), "params": self.params,
                "parent": self.parent, "op": self.op, "inherited": round(self.inherited, 4),
                "train_s": round(self.train_s, 3), "position": self.position,
                **{k: v for k, v in self.extra.items() if k != "features"}}
