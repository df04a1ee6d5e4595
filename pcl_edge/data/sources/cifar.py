"""CIFAR-10/100 in the original "python version" pickle layout (data_batch_1..5 + test_batch, or train + test)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..cache import cached_pool, file_signature
from ..pool import Pool
from . import SOURCES, DataError

_LAYOUT = {
    "cifar10": (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"], "test_batch",
                "batches.meta", b"labels", b"label_names"),
    "cifar100": (["train"], "test", "meta", b"fine_labels", b"fine_label_names"),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")  # noqa: S301 - the user's own dataset files
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"cannot read CIFAR file {path}: {exc}") from exc


def _load(kind: str, path: str | None) -> Pool:
    if not path:
        raise DataError(f"{kind} needs a path: --data {kind}:/path/to/cifar-python-dir")
    root = Path(path).expanduser().resolve()
    train_names, test_name, meta_name, label_key, names_key = _LAYOUT[kind]
    if (root / f"{kind.replace('cifar', 'cifar-')}-batches-py").is_dir():
        root = root / f"{kind.replace('cifar', 'cifar-')}-batches-py"
    if (root / f"{kind.replace('cifar', 'cifar-')}-python").is_dir():
        root = root / f"{kind.replace('cifar', 'cifar-')}-python"
    files = [root / n for n in [*train_names, test_name, meta_name]]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise DataError(f"{root} is not a {kind} python directory: missing {missing}")

    def decode() -> Pool:
        def split(names):
            ds = [_unpickle(root / n) for n in names]
            x = np.concatenate([d[b"data"] for d in ds]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.concatenate([np.asarray(d[label_key]) for d in ds]).astype(np.int64)
            return np.ascontiguousarray(x, dtype=np.uint8), y

        x_train, y_train = split(train_names)
        x_test, y_test = split([test_name])
        names = tuple(n.decode() for n in _unpickle(root / meta_name)[names_key])
        return Pool(x_train=x_train, y_train=y_train, class_names=names, x_test=x_test, y_test=y_test)

    return cached_pool(kind, file_signature(files), decode)


@SOURCES.register("cifar10")
def load_cifar10_pool(path: str | None, size: tuple[int, int] | None = None) -> Pool:
    return _load("cifar10", path)


@SOURCES.register("cifar100")
def load_cifar100_pool(path: str | None, size: tuple[int, int] | None = None) -> Pool:
    return _load("cifar100", path)
