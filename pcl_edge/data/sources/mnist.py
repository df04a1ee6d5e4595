"""MNIST-style idx files (also Fashion-MNIST): train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..cache import cached_pool, file_signature
from ..pool import Pool
from . import SOURCES, DataError

_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (magic 0x0000 08 NDIM, big-endian dims, uint8 payload)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 idx file (bad magic)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    payload = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, payload has {payload.size} bytes")
    return payload.reshape(dims)


@SOURCES.register("mnist")
def load_mnist_pool(path: str | None, size: tuple[int, int] | None = None) -> Pool:
    if not path:
        raise DataError("mnist needs a path: --data mnist:/path/to/idx-files")
    root = Path(path).expanduser().resolve()
    files = []
    for name in _NAMES:
        found = [root / name, root / f"{name}.gz", root / name.replace("-idx", ".idx")]
        hit = next((f for f in found if f.exists()), None)
        if hit is None:
            raise DataError(f"{root} lacks {name}[.gz]; expected the four MNIST idx files")
        files.append(hit)

    def decode() -> Pool:
        xtr, ytr, xte, yte = (read_idx(f) for f in files)
        return Pool(x_train=xtr[..., None].copy(), y_train=ytr.astype(np.int64), class_names=tuple(map(str, range(10))),
                    x_test=xte[..., None].copy(), y_test=yte.astype(np.int64))

    return cached_pool("mnist", file_signature(files), decode)
