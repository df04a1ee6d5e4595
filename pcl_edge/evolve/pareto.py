"""Per-task Pareto fronts of everything the search evaluated: CSV always, PNG when matplotlib is installed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._io import write_text

log = logging.getLogger(__name__)
_COLUMNS = {"val_acc": ("val_acc", True), "params": ("params", False), "latency": ("latency_ms", False)}


def write_pareto(folder: Path, task_id: int, records: list[dict], objectives: tuple[str, ...],
                 limit_ms: float | None = None) -> None:
    from .selection import constrained_fronts

    if not records:
        return
    cols = [_COLUMNS[o] for o in objectives]
    F = np.array([[-r[c] if maximize else r[c] for c, maximize in cols] for r in records], float)
    violation = None if limit_ms is None else np.array([max(0.0, r["latency_ms"] - limit_ms) for r in records])
    rank = np.zeros(len(records), int)
    for i, front in enumerate(constrained_fronts(F, violation)):
        rank[front] = i
    names = ["uid", "genome", "op", *[c for c, _ in cols], "rank", "feasible"]
    lines = [",".join(names)]
    for r, k, v in zip(records, rank, violation if violation is not None else np.zeros(len(records))):
        lines.append(",".join([r["uid"], r["genome"], r["op"], *[str(r[c]) for c, _ in cols], str(k), str(v <= 0)]))
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / f"task_{task_id:02d}.csv", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: Pareto CSV written, PNG skipped")
        return
    x_col = "latency_ms" if "latency" in objectives else "params"
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    xs = np.array([r[x_col] for r in records], float)
    ys = np.array([r["val_acc"] for r in records], float)
    front = rank == 0
    ax.scatter(xs[~front], ys[~front], s=12, c="0.6", label="evaluated")
    order = np.argsort(xs[front])
    ax.plot(xs[front][order], ys[front][order], "o-", c="C3", ms=4, label="non-dominated")
    if limit_ms is not None and x_col == "latency_ms":
        ax.axvline(limit_ms, ls="--", c="C0", lw=1, label="budget - margin")
    ax.set(xlabel="predicted latency (ms)" if x_col == "latency_ms" else "parameters", ylabel="validation accuracy",
           title=f"task {task_id}: {len(records)} candidates")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / f"task_{task_id:02d}.png")
    plt.close(fig)
