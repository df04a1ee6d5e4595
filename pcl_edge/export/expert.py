"""Loading an archived expert (and a few of its task's real samples) for export. Training side: needs torch."""

from __future__ import annotations

import numpy as np


def load_expert_net(run, task_id: int):
    """The frozen network of ``task_id`` (its sha256 checked by RunDir) and its input spec."""
    from ..space import Genome, build_network

    blob = run.load_expert(task_id)
    net = build_network(Genome.parse(blob["genome"]), blob["in_channels"], blob["num_classes"])
    net.load_state_dict(blob["state_dict"])
    return net.eval(), blob["input_spec"]


def real_samples(run, task_id: int, n: int) -> np.ndarray | None:
    """Up to ``n`` normalised validation images of the task, rebuilt from the run's own config (no test data)."""
    if n <= 0:
        return None
    from ..data import build_stream

    _, cfg = type(run).open(run.path)
    try:
        stream = build_stream(cfg.data, cfg.tasks, cfg.seed, test_fraction=cfg.test_fraction,
                              val_fraction=cfg.val_fraction)
    except (OSError, ValueError):  # the data moved since training: random inputs only, and the report says so
        return None
    task = next((t for t in stream.tasks if t.id == task_id), None)
    return None if task is None else task.spec.normalize(task.val.x[:n])
