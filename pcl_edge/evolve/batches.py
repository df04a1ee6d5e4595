"""A training's batches, drawn before it starts: which samples each optimizer step takes and how they are shifted and
flipped. Drawn on the host from the training's seed, in exactly the order the per-step trainer drew them (a fresh
permutation when a view's order runs short, then the shifts, then the flips), so a plan reproduces those draws bit
for bit; applied wherever the data lives (``StepPlan.rows``, then ``augment``), so a GPU gathers and augments its own
batches and nothing crosses the bus during a training but the plan itself (a few MB)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def shift_pad(h: int) -> int:
    """Random shifts go up to h/8 px: 4 px at 32x32, 1 px at 8x8."""
    return max(1, h // 8)


@dataclass(frozen=True)
class StepPlan:
    """Per optimizer step: the view it trains (round robin), its sample indices, shifts and flips. Step s's rows are
    ``[offsets[s]:offsets[s + 1]]`` of the flat tensors (``rows``): a batch is ``batch_size`` samples, or fewer when
    a view holds fewer (as the per-step trainer had it). ``dy``/``dx``/``flip`` are empty when the mode draws none."""

    augment: str
    view: list[int]  # per step: index into the training's views
    offsets: list[int]  # steps + 1 boundaries into the flat tensors
    idx: Tensor  # int64
    dy: Tensor  # int64, in [0, 2 * pad]
    dx: Tensor
    flip: Tensor  # bool

    @property
    def steps(self) -> int:
        return len(self.view)

    @property
    def uniform(self) -> bool:
        """Every batch the same size: one captured CUDA graph can replay every step."""
        return len({b - a for a, b in zip(self.offsets, self.offsets[1:])}) == 1

    def rows(self, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        a, b = self.offsets[step], self.offsets[step + 1]
        return self.idx[a:b], *((t[a:b] if t.numel() else t) for t in (self.dy, self.dx, self.flip))

    def to(self, device: torch.device) -> StepPlan:
        if self.idx.device == torch.device(device):
            return self
        return StepPlan(self.augment, self.view, self.offsets, *(t.to(device, non_blocking=True)
                                                                 for t in (self.idx, self.dy, self.dx, self.flip)))


def draw(sizes: list[int], heights: list[int], steps: int, batch_size: int, augment: str, seed: int) -> StepPlan:
    """The plan of a training of ``steps`` steps over views of ``sizes`` samples (of height ``heights``), step s on
    view ``s % len(sizes)``: a view's order is topped up with a new permutation when fewer than ``batch_size``
    indices are left, and the shifts and flips of a batch are drawn after its indices, as many as it has samples."""
    if steps < 1:
        raise ValueError(f"a training takes at least one step (got {steps})")
    if augment not in ("none", "shift", "shift-flip"):
        raise ValueError(f"unknown augmentation {augment!r}: none | shift | shift-flip")
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.empty(0, dtype=torch.long) for _ in sizes]
    view, offsets, idx, dy, dx, flip = [], [0], [], [], [], []
    for step in range(steps):
        k = step % len(sizes)
        if orders[k].numel() < batch_size:
            orders[k] = torch.cat([orders[k], torch.randperm(sizes[k], generator=gen)])
        batch = orders[k][:batch_size]
        orders[k] = orders[k][batch_size:]
        n = len(batch)
        view.append(k)
        idx.append(batch)
        offsets.append(offsets[-1] + n)
        if augment == "none":
            continue
        span = 2 * shift_pad(heights[k]) + 1
        dy.append(torch.randint(0, span, (n,), generator=gen))
        dx.append(torch.randint(0, span, (n,), generator=gen))
        if augment == "shift-flip":
            flip.append(torch.rand(n, generator=gen) < 0.5)
    return StepPlan(augment, view, offsets, torch.cat(idx), _cat(dy, torch.long), _cat(dx, torch.long),
                    _cat(flip, torch.bool))


def _cat(rows: list[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat(rows) if rows else torch.empty(0, dtype=dtype)


def augment(batch: Tensor, mode: str, dy: Tensor, dx: Tensor, flip: Tensor, grid: Grid | None = None) -> Tensor:
    """Shift each sample by (dy - pad, dx - pad) px, zero padded, and mirror those with ``flip`` (``shift-flip``)."""
    if mode == "none":
        return batch
    n, c, h, w = batch.shape
    pad = shift_pad(h)
    grid = grid or Grid.for_batch(batch)
    xp = F.pad(batch, (pad, pad, pad, pad))
    rows = (dy[:, None] + grid.h).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    cols = (dx[:, None] + grid.w).view(n, 1, 1, w).expand(n, c, h, w)
    out = xp.gather(2, rows).gather(3, cols)
    if mode == "shift-flip":
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    return out


@dataclass(frozen=True)
class Grid:
    """``arange(h)`` and ``arange(w)`` on the data's device, made once per training rather than per step."""

    h: Tensor
    w: Tensor

    @classmethod
    def for_batch(cls, x: Tensor) -> Grid:
        return cls(torch.arange(x.shape[2], device=x.device), torch.arange(x.shape[3], device=x.device))
