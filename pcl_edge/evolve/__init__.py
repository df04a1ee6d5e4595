"""The PCL loop, selection, trainer, executors and baseline strategies.

Names are imported on first use (PEP 562), so ``pcl_edge.evolve.config`` (the run configuration and its presets,
which the CLI's help lists) reads without importing torch: the device's ``pcl-edge serve`` builds that help too."""

from __future__ import annotations

import importlib

_WHERE = {"evolve": "api", "learn": "api", "PRESETS": "config", "ConfigError": "config", "EvolveConfig": "config",
          "preset_config": "config", "RunDir": "rundir", "RunDirError": "rundir", "Expert": "run", "Prediction": "run",
          "Run": "run"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
