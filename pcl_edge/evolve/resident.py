"""A task's tensors kept on the training device, once: every candidate trained there on that task reads the same
copy, gathering and augmenting its batches where the data is (``batches.apply``) instead of building them on the
host and copying each over.

On a GPU the samples are stored in half precision and channels-last (about 60 MB per Split CIFAR-10 task), already
normalised; a batch is cast back to float32 after the gather. On the CPU the split itself is used: no copy, the
same float32 values, so the arithmetic (and the result) is the per-step trainer's exactly."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import torch

# at most this many splits stay resident per process (a run's learner holds its tasks' splits; older ones drop out)
MAX_RESIDENT = 12

_lock = threading.Lock()
_cache: OrderedDict[tuple[int, str, torch.dtype], tuple[weakref.ref, object]] = OrderedDict()


def storage_dtype(device: torch.device) -> torch.dtype:
    """How samples are stored on ``device``: float16 on CUDA (normalised CIFAR values are within +-3, where float16
    keeps 11 significant bits), float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def on_device(split, device: torch.device | str, dtype: torch.dtype | None = None):
    """``split`` (a ``trainer.TensorSplit``) on ``device`` in ``dtype`` (default ``storage_dtype``): the split itself
    when it is already there in that dtype, else one cached copy per (split, device, dtype) for the life of the
    split."""
    device = torch.device(device)
    dtype = dtype or storage_dtype(device)
    if split.x.device == device and split.x.dtype == dtype:
        return split
    key = (id(split), str(device), dtype)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0]() is split:
            _cache.move_to_end(key)
            return hit[1]
    memory = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = split.x.to(device=device, dtype=dtype, non_blocking=False).contiguous(memory_format=memory)
    copy = type(split)(x, split.y.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # streams other than this one read it next
    with _lock:
        _cache[key] = (weakref.ref(split, lambda _, k=key: _drop(k)), copy)
        while len(_cache) > MAX_RESIDENT:
            _cache.popitem(last=False)
    return copy


def _drop(key) -> None:
    with _lock:
        _cache.pop(key, None)


def resident_count() -> int:
    with _lock:
        return len(_cache)
