"""Progress bars for long work (tqdm), silent when the user asked for quiet (`-q`: log level above INFO)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str = "", unit: str = "it", enabled: bool = True, **kw) -> Iterable[T]:
    from tqdm.auto import tqdm

    quiet = logging.getLogger("pcl_edge").getEffectiveLevel() > logging.INFO
    return tqdm(items, desc=desc, unit=unit, leave=False, disable=quiet or not enabled, **kw)


@contextlib.contextmanager
def console_logging(enabled: bool = True):
    """INFO lines on stderr for the Python API as the CLI shows them, unless the application configured logging
    itself (a handler on the root or the ``pcl_edge`` logger): the API and the CLI then tell the same story."""
    logger = logging.getLogger("pcl_edge")
    if not enabled or logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
