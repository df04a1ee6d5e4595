"""One whole training step in a CUDA graph: a tiny network's step is a few hundred kernel launches of microseconds
each, so on a large GPU the host's launching, not the arithmetic, is the cost. Captured once, a step is one
``replay()``: the batch gather and augmentation, forward, backward and the SGD update, all on the device, reading
the step's row of the plan from static buffers that are refilled (four small device copies) before each replay.

The optimizer is SGD with Nesterov momentum and weight decay, the trainer's, written with ``torch._foreach_*`` ops
and the learning rate in a device tensor, so nothing in the captured step reads a host value (torch's own SGD turns
a tensor learning rate into a host number on its foreach path). Without CUDA (``capture=False``) the same step runs
eagerly: that is how its arithmetic is checked against ``torch.optim.SGD`` on a machine without a GPU."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batches import Grid, StepPlan, augment
from .recipe import Schedule, TrainConfig

# eager steps before the capture: cuDNN picks its algorithms and the autograd/allocator state settles (PyTorch's
# CUDA graph notes use a few warm-up iterations on a side stream); they are training steps like the others
WARMUP_STEPS = 3
log = logging.getLogger(__name__)


class ForeachSGD:
    """SGD, Nesterov momentum, L2 weight decay and no dampening (``torch.optim.SGD(nesterov=True)``), with the rate
    in a tensor on the parameters' device. Momentum buffers start at zero, which equals torch's first step
    (``buf = grad``)."""

    def __init__(self, params: list[Tensor], lr: float, momentum: float, weight_decay: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = torch.tensor(lr, dtype=torch.float32, device=self.params[0].device)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.bufs = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()  # kept allocated: a captured graph writes the same memory every replay

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # torch skips a parameter without grad
        params, bufs = [self.params[i] for i in live], [self.bufs[i] for i in live]
        d_p = torch._foreach_add([p.grad for p in params], params, alpha=self.weight_decay)
        torch._foreach_mul_(bufs, self.momentum)
        torch._foreach_add_(bufs, d_p)
        torch._foreach_add_(d_p, bufs, alpha=self.momentum)  # nesterov
        torch._foreach_mul_(d_p, self.lr)
        torch._foreach_sub_(params, d_p)


class GraphedStep:
    """``fn()`` captured once into a CUDA graph (``capture=True``) on the current stream and replayed there, or run
    eagerly (``capture=False``). ``inputs`` are the static tensors ``fn`` reads; ``run(*values)`` copies ``values``
    into them first.

    The capture calls ``capture_begin``/``capture_end`` itself rather than entering ``torch.cuda.graph``: that
    context synchronises the whole device and empties the allocator's cache, which would stall every other training
    in flight once per candidate, and it captures on one stream shared by every graph, whose cuBLAS workspace the
    graphs would then share while they replay side by side on their own streams."""

    def __init__(self, fn: Callable[[], None], inputs: list[Tensor], capture: bool) -> None:
        self.fn, self.inputs, self.graph = fn, inputs, None
        if capture:
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin()
            try:
                fn()
            finally:
                graph.capture_end()
            self.graph = graph

    def run(self, *values: Tensor) -> None:
        for static, value in zip(self.inputs, values):
            static.copy_(value, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn()


def graphed_training(module: nn.Module, forward: nn.Module, data, plan: StepPlan, cfg: TrainConfig,
                     schedule: Schedule, capture: bool | None = None) -> Generator[None, None, float]:
    """``trainer.training_steps`` for one view whose data and plan are on the module's device: ``WARMUP_STEPS`` eager
    steps, then the captured step replayed. Yields after every step; returns the mean loss (read back once)."""
    from .trainer import mean_loss

    dev = next(module.parameters()).device
    capture = dev.type == "cuda" if capture is None else capture
    total = plan.steps
    opt = ForeachSGD(list(module.parameters()), cfg.lr, cfg.momentum, cfg.weight_decay)
    losses = torch.zeros(total, device=dev)
    grid = Grid.for_batch(data.x)
    idx, dy, dx, flip = (t.clone() for t in plan.rows(0))
    slot = torch.zeros((), dtype=torch.long, device=dev)  # which entry of ``losses`` this step writes

    def step() -> None:
        x = augment(data.x.index_select(0, idx), plan.augment, dy, dx, flip, grid)
        x = x.to(torch.float32, memory_format=torch.channels_last if dev.type == "cuda" else torch.preserve_format)
        loss = F.cross_entropy(forward(x), data.y.index_select(0, idx), label_smoothing=cfg.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.index_copy_(0, slot.view(1), loss.detach().view(1))

    eager = GraphedStep(step, [idx, dy, dx, flip], capture=False)
    graphed: GraphedStep | None = None
    stream = _capture_stream() if capture else None
    for s in range(total):
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            opt.lr.fill_(cfg.lr * schedule.factor(s, total))
            slot.fill_(s)
            row = plan.rows(s)
            if graphed is None and capture and s >= WARMUP_STEPS:
                graphed = _capture(step, [idx, dy, dx, flip])
                capture = graphed is not None
            (graphed or eager).run(*row)
        yield  # never inside the stream context: an executor enters each training's own stream around next()
    if stream is not None and stream != torch.cuda.current_stream():
        torch.cuda.current_stream().wait_stream(stream)
    module.eval()
    return mean_loss(losses)


def _capture_stream():
    """Where a training captures and replays: the stream it runs on (a slot's own, under the gpu executor), or a
    new one when that is the default stream, on which CUDA cannot capture. Warm-up runs there too."""
    current = torch.cuda.current_stream()
    if current != torch.cuda.default_stream(current.device):
        return current
    side = torch.cuda.Stream(current.device)
    side.wait_stream(current)
    return side


# how full the device may be (all processes on it) before a capture hands this process's cached blocks back first
CACHE_LIMIT = 0.5


def release_cache_if_full(device: torch.device, limit: float | None = None) -> bool:
    """Empty this process's allocator cache when the device is more than ``limit`` (default ``CACHE_LIMIT``) full,
    counting every process on it, and the cache holds blocks nothing uses. Outside a capture a failed allocation
    empties the cache and retries by itself, but inside one it cannot (nothing may be freed while a stream
    captures). Every captured graph has its own memory pool, whose blocks stay cached once the graph is freed, so
    a long search holds more and more. Seen on an H200 (issue 24): a search whose process held 13.3 GiB reserved
    but unallocated, beside another process holding 116 GiB, failed a capture out of memory with 15.6 MiB free.
    Emptying waits for the device, so it is done only when the device is that full: rarely."""
    free, total = torch.cuda.mem_get_info(device)
    limit = CACHE_LIMIT if limit is None else limit
    idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if free >= (1 - limit) * total or idle <= 0:
        return False
    torch.cuda.empty_cache()
    log.debug("released %.1f GiB of cached CUDA memory (%.1f GiB were free)", idle / 2**30, free / 2**30)
    return True


def _capture(step: Callable[[], None], inputs: list[Tensor]) -> GraphedStep | None:
    """The captured step, or None (then the training goes on eagerly) when the capture fails for another reason
    than memory; running out of memory is raised as such, so that the executor scores the candidate failed."""
    release_cache_if_full(inputs[0].device)
    try:
        return GraphedStep(step, inputs, capture=True)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        if "out of memory" in str(exc):
            raise torch.cuda.OutOfMemoryError(str(exc)) from exc
        log.warning("CUDA graph capture failed (%s); this training goes on without graphs", exc)
        return None
