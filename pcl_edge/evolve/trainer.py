"""The one trainer every strategy shares: seeded SGD with a cosine schedule and cheap batch augmentation.

Determinism: all randomness (init, shuffling, augmentation) comes from ``seed``, which callers derive from
an individual's identity, so a result does not depend on which worker ran it or in which order."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._progress import progress
from ..data import Split, Task
from .recipe import Schedule, TrainConfig  # noqa: F401  (TrainConfig re-exported: the recipe is torch-free)

R = TypeVar("R")

# The label of a step progress bar for trainings run in this thread (None: no bar). Set by step_progress() around a
# long training done in this process (an expert's final training, a baseline's); a worker process never sets it, so
# proxy trainings in parallel keep their one bar per batch of candidates.
_STEP_BAR: contextvars.ContextVar[str | None] = contextvars.ContextVar("pcl_edge_step_bar", default=None)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int) -> int:
    return threads if threads > 0 else usable_cores()


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run a block with ``threads`` torch intra-op threads (0 = usable cores), then restore the previous count."""
    n, before = resolve_threads(threads), torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def step_progress(desc: str, enabled: bool = True) -> Iterator[None]:
    """Trainings inside this block show a bar of their optimizer steps labelled ``desc`` (with ETA)."""
    token = _STEP_BAR.set(desc if enabled else None)
    try:
        yield
    finally:
        _STEP_BAR.reset(token)


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any identity (run seed, task, generation, child ...)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class TensorSplit:
    x: Tensor  # float32 NCHW, normalised
    y: Tensor  # int64

    @classmethod
    def from_split(cls, split: Split, task: Task) -> TensorSplit:
        return cls(torch.from_numpy(task.spec.normalize(split.x)), torch.from_numpy(split.y.astype(np.int64)))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class SearchTask:
    """What search work sees of a task: its training and validation tensors. The type has no test split, so what
    is shipped to a worker (``TensorTask.search_view``) cannot carry test data into fitness."""

    id: int
    num_classes: int
    in_channels: int
    train: TensorSplit
    val: TensorSplit


@dataclass(frozen=True)
class TensorTask:
    """A task's splits decoded to tensors once, shared by every candidate trained on it (through ``search_view``);
    the test split stays with the learner, for the accuracy matrix of frozen experts."""

    id: int
    num_classes: int
    in_channels: int
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit

    @classmethod
    def from_task(cls, task: Task) -> TensorTask:
        return cls(task.id, task.num_classes, task.spec.shape[0], TensorSplit.from_split(task.train, task),
                   TensorSplit.from_split(task.val, task), TensorSplit.from_split(task.test, task))

    def search_view(self) -> SearchTask:
        """The same object on every call, so an executor that ships data once per object (Ray's object store)
        ships it once per task."""
        return self._search_view

    @functools.cached_property
    def _search_view(self) -> SearchTask:
        return SearchTask(self.id, self.num_classes, self.in_channels, self.train, self.val)


def train(net: nn.Module, data: TensorSplit, cfg: TrainConfig, seed: int, schedule: Schedule | None = None,
          *, resident: bool = True) -> float:
    """Train ``net`` in place for ``cfg.steps`` optimizer steps; returns the mean training loss. ``schedule``: where
    this training sits in its lineage's learning-rate schedule (default: a cosine of its own)."""
    return train_multi(net, [(net, data)], cfg, seed, schedule, resident=resident)


def train_multi(module: nn.Module, views: list[tuple[nn.Module, TensorSplit]], cfg: TrainConfig, seed: int,
                schedule: Schedule | None = None, *, resident: bool = True) -> float:
    """Train all parameters of ``module``; step s uses ``views[s % len(views)]`` (a forward and its data), so
    several task heads on one trunk train jointly, round robin."""
    return drain(training_steps(module, views, cfg, seed, schedule, resident=resident))


def drain(steps: Generator[None, None, R]) -> R:
    """Run a step generator (``training_steps``, ``candidate.candidate_steps``) to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def training_steps(module: nn.Module, views: list[tuple[nn.Module, TensorSplit]], cfg: TrainConfig, seed: int,
                   schedule: Schedule | None = None, *, resident: bool = True,
                   graphs: bool = False) -> Generator[None, None, float]:
    """``train_multi`` one optimizer step per ``next()``; returns the mean training loss. An executor that keeps
    several trainings in flight in one process (the ``gpu`` executor) interleaves these generators.

    Every draw (batch indices, shifts, flips) is made up front from ``seed`` (``batches.draw``), in the order the
    per-step trainer made them. ``resident``: the data is on the model's device (``resident.on_device``) and each
    batch is gathered and augmented there; the losses stay there until the end (no device sync per step). Otherwise
    each batch is built on the host and copied over, and each loss read back (the path this trainer had first; same
    numbers on the CPU). ``graphs`` (CUDA only): after a few eager steps, one whole step (batch, forward, backward,
    SGD) is captured in a CUDA graph and replayed (``cuda_graph.GraphedStep``)."""
    from .batches import Grid, augment, draw
    from .resident import on_device

    total = max(1, cfg.steps)
    schedule = schedule or Schedule()
    dev = next(module.parameters()).device
    plan = draw([len(d) for _, d in views], [d.x.shape[2] for _, d in views], total, cfg.batch_size, cfg.augment,
                seed)
    cuda = dev.type == "cuda"
    if cuda:
        module.to(memory_format=torch.channels_last)
    module.train()
    if graphs and cuda and resident and len(views) == 1 and plan.uniform:
        from .cuda_graph import graphed_training

        return (yield from graphed_training(module, views[0][0], on_device(views[0][1], dev), plan.to(dev), cfg,
                                            schedule))
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    data = [on_device(d, dev) if resident else d for _, d in views]
    grids = [Grid.for_batch(d.x) for d in data]
    steps_plan = plan.to(dev) if resident else plan
    losses = torch.zeros(total, device=dev) if resident else np.zeros(total, dtype=np.float32)
    desc = _STEP_BAR.get()
    steps = range(total) if desc is None else progress(range(total), desc=desc, unit="step")
    for step in steps:
        k = plan.view[step]
        forward, split = views[k][0], data[k]
        idx, dy, dx, flip = steps_plan.rows(step)
        x = augment(split.x.index_select(0, idx), plan.augment, dy, dx, flip, grids[k])
        x = x.to(dev, torch.float32, memory_format=torch.channels_last if cuda else torch.preserve_format)
        y = split.y.index_select(0, idx).to(dev)
        for group in opt.param_groups:  # what LambdaLR(base lr x factor) set, computed here
            group["lr"] = cfg.lr * schedule.factor(step, total)
        loss = F.cross_entropy(forward(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach() if resident else float(loss.detach())
        yield
    module.eval()
    return mean_loss(losses)


def mean_loss(losses: Tensor | np.ndarray) -> float:
    """The mean of a training's float32 step losses, in float64 (one read-back when they are on a device)."""
    values = losses.detach().cpu().numpy() if isinstance(losses, Tensor) else losses
    return float(np.mean(values.astype(np.float64)))


@torch.inference_mode()
def evaluate(net: nn.Module, data: TensorSplit, batch_size: int = 512) -> float:
    """Accuracy of ``net`` on ``data``, computed where the net is (on the data's resident copy there); one read-back
    at the end."""
    from .resident import on_device

    net.eval()
    dev = next(net.parameters()).device
    data = on_device(data, dev, torch.float32)  # float32 even on a GPU: scored on the values the export sees
    memory = torch.channels_last if dev.type == "cuda" else torch.preserve_format
    correct = torch.zeros((), dtype=torch.long, device=dev)
    for i in range(0, len(data), batch_size):
        x = data.x[i: i + batch_size].contiguous(memory_format=memory)
        correct += (net(x).argmax(1) == data.y[i: i + batch_size]).sum()
    return int(correct) / max(1, len(data))


def default_device() -> torch.device:
    """CUDA when this process sees a GPU (a Ray worker sees the ones it was given), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reset_head(net: nn.Module, num_classes: int, seed: int) -> None:
    """A fresh, seeded head for a new task."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net.new_head(num_classes)


def build_seeded(genome, in_channels: int, num_classes: int, seed: int) -> nn.Module:
    from ..space import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(genome, in_channels, num_classes)
