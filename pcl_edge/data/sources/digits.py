"""The embedded default: the UCI handwritten digits that ship inside scikit-learn (no network)."""

from __future__ import annotations

import numpy as np

from ..pool import Pool
from . import SOURCES, DataError


@SOURCES.register("digits")
def load_digits_pool(path: str | None, size: tuple[int, int] | None = None) -> Pool:
    if path:
        raise DataError("the digits source ships inside scikit-learn and takes no path; use --data digits")
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 intensities 0..16 -> uint8 0..255 (exact: 16 * 255/16 == 255), one channel.
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return Pool(x_train=x, y_train=d.target.astype(np.int64), class_names=tuple(str(c) for c in range(10)))
