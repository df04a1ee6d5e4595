"""Continual-learning metrics over the accuracy matrix, in plain numpy.

``R[i, j]`` is the test accuracy on task j after learning task i (0-based here). Entries not measured are NaN;
the superdiagonal ``R[i-1, i]`` is the accuracy on task i of the model carried into it, before training on it.

- ACC: mean of the last row (GEM, Lopez-Paz & Ranzato 2017).
- BWT: mean over j < T-1 of R[T-1, j] - R[j, j] (GEM).
- FWT: mean over i >= 1 of R[i-1, i] - b[i], b[i] being task i's accuracy at random initialisation (GEM).
- Forgetting: mean over j < T-1 of max_{l in j..T-2} R[l, j] - R[T-1, j] (Chaudhry et al. 2018).
"""

from __future__ import annotations

import numpy as np


def _square(R) -> np.ndarray:
    R = np.asarray(R, float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def average_accuracy(R) -> float:
    return float(np.mean(_square(R)[-1]))


def backward_transfer(R) -> float | None:
    R = _square(R)
    T = len(R)
    return None if T < 2 else float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forward_transfer(R, b) -> float | None:
    R, b = _square(R), np.asarray(b, float)
    vals = [R[i - 1, i] - b[i] for i in range(1, len(R)) if not np.isnan(R[i - 1, i]) and not np.isnan(b[i])]
    return float(np.mean(vals)) if vals else None


def forgetting(R) -> float | None:
    R = _square(R)
    T = len(R)
    return None if T < 2 else float(np.mean([np.max(R[j:T - 1, j]) - R[-1, j] for j in range(T - 1)]))


def summarize(R, b) -> dict[str, float | None]:
    return {"acc": average_accuracy(R), "bwt": backward_transfer(R), "fwt": forward_transfer(R, b),
            "forgetting": forgetting(R)}
