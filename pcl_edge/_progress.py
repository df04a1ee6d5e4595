"""Progress bars for long work (tqdm), silent when the user asked for quiet (`-q`: log level above INFO)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str = "", unit: str = "it", enabled: bool = True, **kw) -> Iterable[T]:
    from tqdm.auto import tqdm

    quiet = logging.getLogger("pcl_edge").getEffectiveLevel() > logging.INFO
    return tqdm(items, desc=desc, unit=unit, leave=False, disable=quiet or not enabled, **kw)
