"""pcl-edge: Population-based Continual Learning for edge GPUs.

Importing the package does no work: sub-packages are imported where they are used, so the device
side (`pcl_edge.runtime`) never pulls torch in.
"""

__version__ = "0.2.0"  # the one source of the version (pyproject reads it); CHANGELOG.md says what changed

_LAZY = {"Run": "pcl_edge.evolve", "evolve": "pcl_edge.evolve", "learn": "pcl_edge.evolve",
         "preset_config": "pcl_edge.evolve", "EvolveConfig": "pcl_edge.evolve"}


def __getattr__(name: str):
    """``from pcl_edge import Run`` (and evolve, learn, preset_config, EvolveConfig) imports the training side only
    when asked: the device side imports ``pcl_edge`` without torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pcl_edge' has no attribute {name!r}")
