"""Strategies by name: PCL, its forward-transfer ablation, and the baselines."""

from __future__ import annotations

from .._registry import Registry

STRATEGIES: Registry[type] = Registry("strategy")


def _register_builtin() -> None:
    from .baselines import FinetuneLearner, FixedLearner, JointLearner
    from .pcl import PCLLearner, PCLScratchLearner

    for cls in (PCLLearner, PCLScratchLearner, FixedLearner, FinetuneLearner, JointLearner):
        if cls.name not in STRATEGIES:
            STRATEGIES.register(cls.name)(cls)


def get_strategy(name: str) -> type:
    _register_builtin()
    return STRATEGIES.get(name)
