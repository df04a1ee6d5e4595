"""Loading an archived expert (and a few of its task's real samples) for export. Training side: needs torch."""

from __future__ import annotations

import numpy as np


def load_expert_net(run, task_id: int):
    """The frozen network of ``task_id`` (its sha256 checked by RunDir) and its input spec."""
    net, blob = run.load_expert_net(task_id)
    return net, blob["input_spec"]


def validation_images(run, n: int) -> dict[int, np.ndarray]:
    """Up to ``n`` uint8 NHWC validation images per task, rebuilt from the run's own config (never test data).
    Empty when the data is no longer where training found it: then parity uses random inputs only and says so."""
    if n <= 0:
        return {}
    from ..data import build_stream

    _, cfg = type(run).open(run.path)
    try:
        stream = build_stream(cfg.data, cfg.tasks, cfg.seed, test_fraction=cfg.test_fraction,
                              val_fraction=cfg.val_fraction)
    except (OSError, ValueError):
        return {}
    return {t.id: t.val.x[:n] for t in stream.tasks}
