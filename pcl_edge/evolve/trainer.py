"""The one trainer every strategy shares: seeded SGD with a cosine schedule and cheap batch augmentation.

Determinism: all randomness (init, shuffling, augmentation) comes from ``seed``, which callers derive from
an individual's identity, so a result does not depend on which worker ran it or in which order."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._progress import progress
from ..data import Split, Task
from .recipe import Schedule, TrainConfig  # noqa: F401  (TrainConfig re-exported: the recipe is torch-free)

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


def _augment(x: Tensor, mode: str, gen: torch.Generator) -> Tensor:
    """Random shift by up to h/8 px (zero padded), and a horizontal flip for ``shift-flip``; per sample."""
    if mode == "none":
        return x
    n, c, h, w = x.shape
    pad = max(1, h // 8)  # 4 px at 32x32, 1 px at 8x8
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    cols = (dx[:, None] + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    out = xp.gather(2, rows).gather(3, cols)
    if mode == "shift-flip":
        flip = torch.rand(n, generator=gen) < 0.5
        out[flip] = out[flip].flip(3)
    return out


def train(net: nn.Module, data: TensorSplit, cfg: TrainConfig, seed: int, schedule: Schedule | None = None) -> float:
    """Train ``net`` in place for ``cfg.steps`` optimizer steps; returns the mean training loss. ``schedule``: where
    this training sits in its lineage's learning-rate schedule (default: a cosine of its own)."""
    return train_multi(net, [(net, data)], cfg, seed, schedule)


def train_multi(module: nn.Module, views: list[tuple[nn.Module, TensorSplit]], cfg: TrainConfig, seed: int,
                schedule: Schedule | None = None) -> float:
    """Train all parameters of ``module``; step s uses ``views[s % len(views)]`` (a forward and its data), so
    several task heads on one trunk train jointly, round robin."""
    gen = torch.Generator().manual_seed(seed)
    total = max(1, cfg.steps)
    schedule = schedule or Schedule()
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule.factor(s, total))
    module.train()
    dev = next(module.parameters()).device  # data stays on the CPU; each batch moves to the model's device
    orders = [torch.empty(0, dtype=torch.long) for _ in views]
    losses = []
    desc = _STEP_BAR.get()
    steps = range(total) if desc is None else progress(range(total), desc=desc, unit="step")
    for step in steps:
        k = step % len(views)
        forward, data = views[k]
        if orders[k].numel() < cfg.batch_size:
            orders[k] = torch.cat([orders[k], torch.randperm(len(data), generator=gen)])
        idx, orders[k] = orders[k][: cfg.batch_size], orders[k][cfg.batch_size:]
        x = _augment(data.x[idx], cfg.augment, gen).to(dev)
        loss = F.cross_entropy(forward(x), data.y[idx].to(dev), label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    module.eval()
    return float(np.mean(losses))


@torch.inference_mode()
def evaluate(net: nn.Module, data: TensorSplit, batch_size: int = 512) -> float:
    net.eval()
    dev = next(net.parameters()).device
    correct = 0
    for i in range(0, len(data), batch_size):
        pred = net(data.x[i: i + batch_size].to(dev)).argmax(1).cpu()
        correct += int((pred == data.y[i: i + batch_size]).sum())
    return correct / max(1, len(data))


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
