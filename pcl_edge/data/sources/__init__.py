"""Data sources, one file each, chosen by name from a registry: ``digits``, ``imagefolder:PATH``,
``cifar10:PATH``, ``cifar100:PATH``, ``mnist:PATH``."""

from __future__ import annotations

from collections.abc import Callable

from ..._registry import Registry
from ..pool import Pool

# loader(path, size): ``size`` (H, W) is a hint for sources whose images differ in size (they resize each image
# as they decode it); ``load_pool`` resizes whatever still differs
SOURCES: Registry[Callable[[str | None, tuple[int, int] | None], Pool]] = Registry("dataset")


class DataError(ValueError):
    """A dataset that cannot be used as given (missing path, corrupt file, wrong layout)."""


def load_pool(source: str, size: tuple[int, int] | None = None) -> Pool:
    """Load the pool named by ``KIND`` or ``KIND:PATH``; with ``size`` (H, W), every image resized to it."""
    from ..pool import resize_pool

    kind, _, path = source.partition(":")
    _import_builtin_sources()
    loader = SOURCES.get(kind)
    return resize_pool(loader(path or None, size), size)


def _import_builtin_sources() -> None:
    from . import cifar, digits, imagefolder, mnist  # noqa: F401  (registration side effect)
