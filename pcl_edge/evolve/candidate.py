"""One unit of search work: build a child, inherit its parent's weights, proxy-train, score on validation.

It is a pure function of the Candidate (plus the task's tensors and the training recipe, whose thread count it
applies itself), seeded from the candidate's identity and rung, so any executor (local, worker processes, Ray) may
run it anywhere, in any order, and get bit-identical results.

Multi-fidelity: a candidate promoted to rung r > 0 carries its own weights (``resume_state``) and trains further
from them; no step it already took is repeated. Its ``schedule`` says where it enters its lineage's learning-rate
schedule (``recipe.Schedule``), so the steps of a lineage add up to one cosine instead of warm restarts."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..space import Genome, inherit_weights
from .individual import Individual
from .recipe import Schedule
from .trainer import (
    SearchTask,
    TrainConfig,
    build_seeded,
    default_device,
    derive_seed,
    drain,
    evaluate,
    reset_head,
    torch_threads,
    training_steps,
)


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
    rung: int = 0  # multi-fidelity rung; > 0: continue from resume_state
    resume_state: dict[str, Tensor] | None = None  # this candidate's own weights after its previous rung
    inherited: float = 0.0  # carried over from rung 0 (what it took from its parent)
    train_s: float = 0.0  # seconds spent on earlier rungs
    extra: dict | None = None  # carried over from earlier rungs (e.g. the performance predictor's score)
    schedule: Schedule = Schedule()  # where this training sits in its lineage's learning-rate schedule
    preserve_depth: bool = True  # inheritance: an inserted layer starts as the identity (``inherit_weights``)


def train_candidate(cand: Candidate, task: SearchTask, cfg: TrainConfig) -> Individual:
    with torch_threads(cfg.threads):
        return drain(candidate_steps(cand, task, cfg))


def candidate_steps(cand: Candidate, task: SearchTask, cfg: TrainConfig, *, device: torch.device | None = None,
                    graphs: bool = False) -> Generator[None, None, Individual]:
    """``train_candidate`` one optimizer step per ``next()`` (the ``gpu`` executor interleaves several), on
    ``device`` (default: ``default_device()``); ``graphs``: replay each step as a CUDA graph. The thread count is
    the caller's to set."""
    if not isinstance(task, SearchTask):  # a TensorTask carries the test split: never into search work
        raise TypeError(f"search work takes a SearchTask (train and validation only), not {type(task).__name__}")
    start = time.perf_counter()
    seed = derive_seed(cand.run_seed, cand.uid) if cand.rung == 0 else derive_seed(cand.run_seed, cand.uid, cand.rung)
    net = build_seeded(cand.genome, task.in_channels, task.num_classes, seed)
    inherited = cand.inherited
    if cand.resume_state is not None:
        net.load_state_dict(cand.resume_state)
    elif cand.parent_state is not None:
        inherited = inherit_weights(net, cand.genome, cand.parent_state, cand.parent_genome or cand.genome,
                                    include_head=not cand.new_head, preserve_depth=cand.preserve_depth)
        if cand.new_head:
            reset_head(net, task.num_classes, derive_seed(seed, "head"))
    net.to(device or default_device())
    yield from training_steps(net, [(net, task.train)], cfg, seed, cand.schedule, graphs=graphs)
    val = evaluate(net, task.val)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    extra = dict(cand.extra or {})
    if cand.rung:
        extra["rung"] = cand.rung
    return Individual(uid=cand.uid, genome=cand.genome, state=state, val_acc=val,
                      params=sum(p.numel() for p in net.parameters()), parent=cand.parent, op=cand.op,
                      inherited=inherited, train_s=cand.train_s + time.perf_counter() - start, extra=extra,
                      position=cand.schedule.start + cfg.steps)


def failed_candidate(cand: Candidate, exc: BaseException, task: SearchTask, **_: object) -> Individual:
    """What a candidate that could not be trained (its worker kept dying) scores: nothing, visibly. It keeps its
    parent's weights so that a later child of it still inherits something."""
    from ..space.cost import genome_params

    return Individual(uid=cand.uid, genome=cand.genome, state=dict(cand.parent_state or {}), val_acc=0.0,
                      params=genome_params(cand.genome, task.in_channels, task.num_classes), parent=cand.parent,
                      op=cand.op, extra={"failed": type(exc).__name__}, position=cand.schedule.start)


# train_candidate as a step generator, for executors that interleave trainings (executors/gpu.py)
train_candidate.stepwise = candidate_steps  # type: ignore[attr-defined]
