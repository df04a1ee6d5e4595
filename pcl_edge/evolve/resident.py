"""A task's tensors kept on the training device, once: every candidate trained there on that task reads the same
copy, gathering and augmenting its batches where the data is (``batches.augment``) instead of building them on the
host and copying each over.

On a GPU the training samples are stored in half precision (about 60 MB per Split CIFAR-10 task), already
normalised; a batch is cast back to float32 and to channels-last, in one copy, after the gather (which returns a
contiguous batch whatever the storage's layout, so the store itself stays NCHW). Validation and test splits are
kept in float32 (``evaluate`` asks for it): fitness and the accuracy matrix see the values the exported model sees.
On the CPU the split itself is used: no copy, the same float32 values, so the arithmetic (and the result) is the
per-step trainer's exactly."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import torch

# at most this many splits stay resident per process, oldest out first: on a GPU a task has three (training samples
# in float16, validation and test in float32), so a stream of 16 tasks stays whole (under 1.5 GB for Split CIFAR-100)
MAX_RESIDENT = 48

_lock = threading.RLock()  # _drop runs from a weakref callback, which a collection may fire inside the lock
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
    if device.type == "cuda":  # made on the default stream, whichever slot's stream asked: every stream reads it
        with torch.cuda.stream(torch.cuda.default_stream(device)):
            copy = _copy(split, device, dtype)
        torch.cuda.synchronize(device)
    else:
        copy = _copy(split, device, dtype)
    with _lock:
        _cache[key] = (weakref.ref(split, lambda _, k=key: _drop(k)), copy)
        while len(_cache) > MAX_RESIDENT:
            _cache.popitem(last=False)
    return copy


def _copy(split, device: torch.device, dtype: torch.dtype):
    return type(split)(split.x.to(device=device, dtype=dtype).contiguous(), split.y.to(device))


def _drop(key) -> None:
    with _lock:
        _cache.pop(key, None)


def resident_count() -> int:
    with _lock:
        return len(_cache)
