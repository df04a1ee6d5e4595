"""Data sources, one file each, chosen by name from a registry: ``digits``, ``imagefolder:PATH``,
``cifar10:PATH``, ``cifar100:PATH``, ``mnist:PATH``."""

from __future__ import annotations

from collections.abc import Callable

from ..._registry import Registry
from ..pool import Pool

SOURCES: Registry[Callable[[str | None], Pool]] = Registry("dataset")


class DataError(ValueError):
    """A dataset that cannot be used as given (missing path, corrupt file, wrong layout)."""


def load_pool(source: str) -> Pool:
    """Load the pool named by ``KIND`` or ``KIND:PATH``."""
    kind, _, path = source.partition(":")
    _import_builtin_sources()
    loader = SOURCES.get(kind)
    return loader(path or None)


def _import_builtin_sources() -> None:
    from . import cifar, digits, imagefolder, mnist  # noqa: F401  (registration side effect)
