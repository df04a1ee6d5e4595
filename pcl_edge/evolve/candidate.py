"""One unit of search work: build a child, inherit its parent's weights, proxy-train, score on validation.

It is a pure function of the Candidate (plus the task's tensors), seeded from the candidate's identity, so any
executor (local, Ray) may run it anywhere, in any order, and get the same result."""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import Tensor

from ..space import Genome, inherit_weights
from .individual import Individual
from .trainer import TensorTask, TrainConfig, build_seeded, default_device, derive_seed, evaluate, reset_head, train


@dataclass(frozen=True)
class Candidate:
    uid: str
    genome: Genome
    op: str
    run_seed: int
    parent: str | None = None
    parent_genome: Genome | None = None
    parent_state: dict[str, Tensor] | None = None
    new_head: bool = False  # the parent's head belongs to another task: start a fresh one


def train_candidate(cand: Candidate, task: TensorTask, cfg: TrainConfig) -> Individual:
    start = time.perf_counter()
    seed = derive_seed(cand.run_seed, cand.uid)
    net = build_seeded(cand.genome, task.in_channels, task.num_classes, seed)
    inherited = 0.0
    if cand.parent_state is not None:
        inherited = inherit_weights(net, cand.genome, cand.parent_state, cand.parent_genome or cand.genome,
                                    include_head=not cand.new_head)
        if cand.new_head:
            reset_head(net, task.num_classes, derive_seed(seed, "head"))
    net.to(default_device())
    train(net, task.train, cfg, seed)
    val = evaluate(net, task.val)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return Individual(uid=cand.uid, genome=cand.genome, state=state, val_acc=val,
                      params=sum(p.numel() for p in net.parameters()), parent=cand.parent, op=cand.op,
                      inherited=inherited, train_s=time.perf_counter() - start)


def failed_candidate(cand: Candidate, exc: BaseException, task: TensorTask, **_: object) -> Individual:
    """What a candidate that could not be trained (its worker kept dying) scores: nothing, visibly. It keeps its
    parent's weights so that a later child of it still inherits something."""
    from ..space.cost import genome_params

    return Individual(uid=cand.uid, genome=cand.genome, state=dict(cand.parent_state or {}), val_acc=0.0,
                      params=genome_params(cand.genome, task.in_channels, task.num_classes), parent=cand.parent,
                      op=cand.op, extra={"failed": type(exc).__name__})
