"""The PCL loop, selection, trainer, executors and baseline strategies."""

from .api import evolve, learn
from .config import PRESETS, ConfigError, EvolveConfig, preset_config
from .run import Expert, Prediction, Run
from .rundir import RunDir, RunDirError

__all__ = ["PRESETS", "ConfigError", "EvolveConfig", "Expert", "Prediction", "Run", "RunDir", "RunDirError", "evolve",
           "learn", "preset_config"]
