"""Weight inheritance: a child copies every compatible tensor from its parent.

Layers are aligned first (``layer_map``): a child one layer deeper or shallower than its parent with the same
layers otherwise (``depth_up`` inserts a copy of a layer, ``depth_down`` drops one) is aligned layer for layer
around the edit, and the inserted layer starts as the identity (``start_as_identity`` of its block); any other
child is aligned stage by stage (layer j of stage s <- layer j of the parent's stage s). Then tensors are copied
by name. Where shapes differ the overlap is copied: channels sliced, kernels centre-cropped or centre-padded.
Padding follows Net2Net's idea of a function-preserving start: *new input* slices and the border of a grown
kernel are zero, new output channels keep their fresh initialisation. Hence these mutations promise to keep
the parent's function exactly (eval mode): identical genome, depth up, kernel 3 -> 5, width up, mbconv expansion
up (tests/test_inherit.py checks each, and random chains of them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import expand
from .genome import Genome


def layer_map(child: Genome, parent: Genome) -> tuple[dict[int, int], int | None]:
    """(child layer -> parent layer, the child's inserted layer or None). One inserted or dropped layer, the rest
    equal layer for layer: aligned around it; otherwise stage by stage."""
    cl, pl = expand(child), expand(parent)
    if len(cl) == len(pl) + 1:
        k = next((k for k in range(len(cl) - 1, -1, -1) if cl[:k] + cl[k + 1:] == pl), None)
        if k is not None:
            return {j: j - (j > k) for j in range(len(cl)) if j != k}, k
    if len(cl) + 1 == len(pl):
        k = next((k for k in range(len(pl) - 1, -1, -1) if pl[:k] + pl[k + 1:] == cl), None)  # as depth_up does
        if k is not None:
            return {j: j + (j >= k) for j in range(len(cl))}, None
    return layer_alignment(child, parent), None


def layer_alignment(child: Genome, parent: Genome) -> dict[int, int]:
    """Stage by stage: layer j of the child's stage s <- layer j of the parent's stage s."""

    def stages(g: Genome) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in g.stages]
        for i in range(g.depth):
            groups[g.stage_of(i)].append(i)
        return groups

    mapping: dict[int, int] = {}
    for cs, ps in zip(stages(child), stages(parent)):
        mapping.update(zip(cs, ps))
    return mapping


def _parent_key(key: str, mapping: dict[int, int]) -> str | None:
    if not key.startswith("layers."):
        return key
    _, idx, rest = key.split(".", 2)
    return f"layers.{mapping[int(idx)]}.{rest}" if int(idx) in mapping else None


@torch.no_grad()
def _copy_overlap(dst: Tensor, src: Tensor) -> int:
    """Copy the overlapping region of ``src`` into ``dst``; returns the number of elements copied."""
    if dst.ndim != src.ndim:
        return 0
    if dst.ndim == 0:
        dst.copy_(src)
        return 1
    d_sl, s_sl = [], []
    for axis, (nd, ns) in enumerate(zip(dst.shape, src.shape)):
        n = min(nd, ns)
        if axis >= 2:  # spatial kernel axes: centre-aligned
            d0, s0 = (nd - n) // 2, (ns - n) // 2
            d_sl.append(slice(d0, d0 + n))
            s_sl.append(slice(s0, s0 + n))
        else:
            d_sl.append(slice(0, n))
            s_sl.append(slice(0, n))
    if dst.ndim >= 2:
        if dst.shape[1] > src.shape[1]:
            dst[:, src.shape[1]:] = 0  # new inputs contribute nothing at first
        if dst.ndim == 4 and dst.shape[2] > src.shape[2]:
            dst[d_sl[0], d_sl[1]] = 0  # grown kernel: zero border around the copied centre
    dst[tuple(d_sl)] = src[tuple(s_sl)]
    return int(torch.Size([s.stop - s.start for s in d_sl]).numel())


def inherit_weights(child: nn.Module, child_genome: Genome, parent_state: dict[str, Tensor], parent_genome: Genome,
                    include_head: bool = True, preserve_depth: bool = True) -> float:
    """Copy compatible tensors of ``parent_state`` into ``child`` in place; returns the fraction of the child's
    parameters (by element count) that came from the parent. ``preserve_depth`` False: layers aligned stage by
    stage and an inserted layer left as initialised (what runs made before function-preserving depth did)."""
    if preserve_depth:
        mapping, inserted = layer_map(child_genome, parent_genome)
    else:
        mapping, inserted = layer_alignment(child_genome, parent_genome), None
    param_names = {n for n, _ in child.named_parameters()}
    copied = total = 0
    for key, tensor in child.state_dict(keep_vars=True).items():
        is_param = key in param_names
        total += tensor.numel() if is_param else 0
        if not include_head and key.startswith("head."):
            continue
        pkey = _parent_key(key, mapping)
        if pkey is None or pkey not in parent_state:
            continue
        n = _copy_overlap(tensor.data, parent_state[pkey].to(tensor.dtype))
        copied += n if is_param else 0
    if inserted is not None:
        block = child.layers[inserted]
        getattr(block, "start_as_identity", lambda: False)()
    return copied / total if total else 0.0
