"""Decode once: pools from file-based sources are cached as .npz so a second run loads in seconds.

The cache lives outside the repository (``$PCL_EDGE_CACHE`` or ``~/.cache/pcl_edge``); its key is a hash
of the source kind, the resolved path and the size/mtime signature of the files, so editing a dataset
invalidates it."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .._io import atomic_open
from .pool import Pool

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("PCL_EDGE_CACHE", Path.home() / ".cache" / "pcl_edge"))


def file_signature(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cached(kind: str, signature: str) -> Pool | None:
    """The cached pool, or None when there is none (or it is damaged: it is then rebuilt, never trusted)."""
    path = cache_dir() / f"{kind}-{signature}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return _from_arrays(z)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache %s (%s)", path, exc)
    return None


def cached_pool(kind: str, signature: str, load: Callable[[], Pool]) -> Pool:
    pool = cached(kind, signature)
    if pool is not None:
        return pool
    path = cache_dir() / f"{kind}-{signature}.npz"
    pool = load()
    arrays = {"x_train": pool.x_train, "y_train": pool.y_train, "class_names": np.asarray(pool.class_names)}
    if pool.has_test:
        arrays |= {"x_test": pool.x_test, "y_test": pool.y_test}
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)
    log.info("cached decoded %s data at %s", kind, path)
    return pool


def _from_arrays(z) -> Pool:
    has_test = "x_test" in z.files
    return Pool(x_train=z["x_train"], y_train=z["y_train"], class_names=tuple(str(c) for c in z["class_names"]),
                x_test=z["x_test"] if has_test else None, y_test=z["y_test"] if has_test else None)
