"""Multi-objective selection: NSGA-II (Deb et al. 2002) non-dominated sorting and crowding distance, binary
tournament on (rank, crowding), and (mu+lambda) environmental selection with explicit elitism.

Objectives are rows of a matrix F (n individuals x m objectives), every objective to be MINIMISED."""

from __future__ import annotations

import numpy as np


def non_dominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of indices, best first."""
    F = np.asarray(F, float)
    n = len(F)
    le = (F[:, None, :] <= F[None, :, :]).all(-1)
    lt = (F[:, None, :] < F[None, :, :]).any(-1)
    dominates = le & lt  # dominates[i, j]: i dominates j
    counts = dominates.sum(0)
    fronts, current = [], np.flatnonzero(counts == 0)
    assigned = 0
    while current.size and assigned < n:  # at most n fronts
        fronts.append(current)
        assigned += current.size
        counts = counts - dominates[current].sum(0)
        counts[current] = -1
        current = np.flatnonzero(counts == 0)
    return fronts


def crowding_distance(F: np.ndarray) -> np.ndarray:
    F = np.asarray(F, float)
    n, m = F.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        span = F[order[-1], k] - F[order[0], k]
        d[order[0]] = d[order[-1]] = np.inf
        if span > 0:
            d[order[1:-1]] += (F[order[2:], k] - F[order[:-2], k]) / span
    return d


def constrained_fronts(F: np.ndarray, violation: np.ndarray | None = None) -> list[np.ndarray]:
    """Deb's constraint domination: feasible individuals (violation 0) in non-dominated fronts first, then the
    infeasible ones, one per front, least violation first."""
    F = np.asarray(F, float)
    if violation is None or not np.any(np.asarray(violation) > 0):
        return non_dominated_sort(F)
    violation = np.asarray(violation, float)
    feasible = np.flatnonzero(violation <= 0)
    fronts = [feasible[f] for f in non_dominated_sort(F[feasible])] if feasible.size else []
    infeasible = np.flatnonzero(violation > 0)
    return fronts + [np.array([i]) for i in infeasible[np.argsort(violation[infeasible], kind="stable")]]


def rank_and_crowding(F: np.ndarray, violation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rank, crowd = np.zeros(len(F), int), np.zeros(len(F))
    for r, front in enumerate(constrained_fronts(F, violation)):
        rank[front] = r
        crowd[front] = crowding_distance(np.asarray(F)[front])
    return rank, crowd


def nsga2_select(F: np.ndarray, k: int, elite: int | None = None, violation: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k survivors: whole fronts first, the last front cut by crowding distance. ``elite`` (an
    index) always survives, whatever its crowding. Infeasible individuals come after every feasible one."""
    chosen: list[int] = [] if elite is None else [elite]
    for front in constrained_fronts(F, violation):
        front = np.array([i for i in front if i not in chosen], int)
        if not front.size:
            continue
        room = k - len(chosen)
        if room <= 0:
            break
        if front.size <= room:
            chosen.extend(int(i) for i in front)
        else:
            order = np.argsort(-crowding_distance(np.asarray(F)[front]), kind="stable")
            chosen.extend(int(i) for i in front[order[:room]])
    return np.array(chosen[:k], int)


def tournament(rank: np.ndarray, crowd: np.ndarray, rng: np.random.Generator, size: int = 2) -> int:
    """Binary (or k-ary) tournament: lower rank wins, then larger crowding distance, then lower index."""
    entrants = rng.choice(len(rank), size=min(size, len(rank)), replace=False)
    return int(min(entrants, key=lambda i: (rank[i], -crowd[i], i)))
