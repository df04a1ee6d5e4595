"""``pcl-edge report RUN_DIR``: one self-contained HTML page (images embedded) plus the PNGs, for a person:
the accuracy matrix as a heat map, each task's candidates (validation accuracy vs predicted latency, or
parameters without a target) with the chosen expert marked, search progress per generation, and the experts."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import numpy as np

from ._io import read_json, write_text


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def accuracy_heatmap(summary: dict, path: Path) -> str:
    plt = _plt()
    R = np.array([[np.nan if v is None else v for v in row] for row in summary["accuracy_matrix"]], float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(R), 1.0 + 0.7 * len(R)))
    im = ax.imshow(R, vmin=0.5, vmax=1.0, cmap="viridis")
    for (i, j), v in np.ndenumerate(R):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="white" if v < 0.8 else "black")
    ax.set(xticks=range(len(R)), yticks=range(len(R)), xlabel="evaluated on task", ylabel="after learning task",
           xticklabels=[str(i + 1) for i in range(len(R))], yticklabels=[str(i + 1) for i in range(len(R))],
           title=f"test accuracy R[i, j]  (ACC {summary['acc']:.4f}, BWT {summary['bwt']})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _save(fig, path)


def candidates_plot(task: dict, rows: list[dict], path: Path) -> str:
    plt = _plt()
    x_key = "latency_ms" if rows and "latency_ms" in rows[0] else "params"
    xs = np.array([float(r[x_key]) for r in rows])
    ys = np.array([float(r["val_acc"]) for r in rows])
    front = np.array([r["rank"] == "0" for r in rows])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(xs[~front], ys[~front], s=14, c="0.65", label="evaluated")
    ax.scatter(xs[front], ys[front], s=22, c="C3", label="non-dominated")
    chosen = [r for r in rows if r["genome"] == task["genome"]]
    if chosen:
        ax.scatter([float(chosen[-1][x_key])], [float(chosen[-1]["val_acc"])], s=160, facecolors="none",
                   edgecolors="k", linewidths=1.5, label="expert (before final training)")
    ax.set(xlabel="predicted latency (ms)" if x_key == "latency_ms" else "parameters",
           ylabel="validation accuracy (proxy)", title=f"task {task['id']}: {', '.join(task['class_names'])}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def progress_plot(curves: dict[int, list[float]], path: Path) -> str:
    """Best validation accuracy in the population per generation (0 = the initial or inherited population)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for task, curve in sorted(curves.items()):
        ax.plot(range(len(curve)), curve, "o-", ms=3, label=f"task {task}")
    ax.set(xlabel="generation (0: initial / inherited population)", ylabel="best validation accuracy",
           title="search progress")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run = Path(run_dir)
    if not (run / "summary.json").is_file():
        raise FileNotFoundError(f"{run} has no summary.json: finish (or --resume) the run before reporting")
    summary = read_json(run / "summary.json")
    folder = Path(out) if out else run / "report"
    folder.mkdir(parents=True, exist_ok=True)
    images = [("Accuracy matrix (above the diagonal: the model carried into a task with a fresh head, before any "
               "training on it, as GEM's FWT uses)", accuracy_heatmap(summary, folder / "accuracy_matrix.png"))]
    curves = {}
    for t in summary["tasks"]:
        metrics = run / "experts" / f"task_{t['id']:02d}" / "metrics.json"
        if metrics.exists() and read_json(metrics).get("val_curve"):
            curves[t["id"]] = read_json(metrics)["val_curve"]
    if curves:
        images.append(("Search progress", progress_plot(curves, folder / "search_progress.png")))
    for task in summary["tasks"]:
        csv_path = run / "pareto" / f"task_{task['id']:02d}.csv"
        if csv_path.exists():
            rows = list(csv.DictReader(csv_path.open()))
            images.append((f"Task {task['id']} candidates",
                           candidates_plot(task, rows, folder / f"candidates_task_{task['id']:02d}.png")))
    lat = "target" in summary
    head = "<tr><th>task</th><th>classes</th><th>genome</th><th>params</th><th>val</th><th>test</th>" + \
        ("<th>predicted ms</th>" if lat else "") + "</tr>"
    rows = "".join(
        f"<tr><td>{t['id']}</td><td>{html.escape(', '.join(t['class_names']))}</td><td><code>"
        f"{html.escape(str(t['genome']))}</code></td><td>{t['params'] or ''}</td>"
        f"<td>{_fmt(t['val_acc'])}</td>"
        f"<td>{t['test_acc']:.3f}</td>" + (f"<td>{t.get('latency_ms') or ''}</td>" if lat else "") + "</tr>"
        for t in summary["tasks"])
    metrics = " · ".join(f"{k.upper()} {summary[k]:.4f}" if isinstance(summary.get(k), float) else f"{k.upper()} n/a"
                         for k in ("acc", "bwt", "fwt", "forgetting"))
    figures = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'><figcaption>"
                      f"{html.escape(t)}</figcaption></figure>" for t, b in images)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>pcl-edge report: {html.escape(run.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;font-size:.9rem}}
th{{background:#f3f3f3}}figure{{display:inline-block;margin:.5rem;vertical-align:top}}
img{{max-width:520px;border:1px solid #eee}}figcaption{{font-size:.85rem;color:#555}}code{{font-size:.8rem}}</style>
</head><body><h1>pcl-edge run <code>{html.escape(run.name)}</code></h1>
<p><b>{html.escape(summary['strategy'])}</b> on <code>{html.escape(summary['data'])}</code>, seed {summary['seed']},
preset {html.escape(str(summary['preset']))}, {summary['wall_s']:.0f} s. {metrics}</p>
<p>Test split: {html.escape(summary['test_split'])}</p>
<h2>Experts</h2><table>{head}{rows}</table><h2>Figures</h2>{figures}</body></html>"""
    write_text(folder / "index.html", page)
    return folder / "index.html"
