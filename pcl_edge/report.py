"""``pcl-edge report RUN_DIR``: one self-contained HTML page (images embedded) plus the PNGs, for a person:
the accuracy matrix as a heat map, each task's candidates and Pareto front (validation accuracy vs predicted
latency, or parameters when no latency is known) with the chosen expert marked, search progress per generation,
predicted vs measured latency of the experts, and a table of experts.

Latency comes from three places, each said on the page: the run's own ``--target`` profile (recorded per candidate
during the search), ``profile=`` (a profile YAML: every candidate and expert is predicted here, after the fact), and
``measure=`` (a timing backend such as ``ort-cpu``: each expert's architecture is timed on this machine at batch 1;
the settings and the machine are written to ``latency.json`` next to the page)."""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import time
from pathlib import Path

import numpy as np

from ._io import read_json, write_json, write_text

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _visible_texts(fig) -> list:
    """Every text a reader sees: tick labels inside the axis' view, annotations, titles, axis labels, legends."""
    from matplotlib.text import Text

    texts = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = hi - lo
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if lo - 1e-9 * span <= tick.get_loc() <= hi + 1e-9 * span:
                    texts += [lab for lab in (tick.label1, tick.label2) if lab.get_visible()]
            texts.append(axis.label)
        texts += [ax.title, *ax.texts]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    texts += fig.texts  # e.g. a caveat under the axes
    return [t for t in texts if isinstance(t, Text) and t.get_visible() and t.get_text().strip()]


def _overlap_area(a, b) -> float:
    """Square pixels two boxes share (0 when apart or only touching)."""
    from matplotlib.transforms import Bbox

    inter = Bbox.intersection(a, b)
    return 0.0 if inter is None else max(0.0, inter.width) * max(0.0, inter.height)


def _inside(outer, box, slack: float = 0.0) -> bool:
    return (outer.x0 - slack <= box.x0 and box.x1 <= outer.x1 + slack and outer.y0 - slack <= box.y0
            and box.y1 <= outer.y1 + slack)


def text_problems(fig) -> list[str]:
    """What a reader of the figure would stumble on: two texts whose boxes overlap (tick labels running into each
    other, an annotation over another), or a text cut off at the figure's edge. Empty when the figure reads well."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t, t.get_window_extent(renderer)) for t in _visible_texts(fig)]
    page = fig.bbox
    out = []
    for i, (a, ba) in enumerate(boxes):
        if not _inside(page, ba, slack=1):
            out.append(f"{a.get_text()!r} is cut off at the figure's edge")
        for b, bb in boxes[i + 1:]:
            inter = ba.intersection(ba, bb)
            if inter is not None and inter.width > 1 and inter.height > 1:
                out.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return out


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Readable ticks on a log axis spanning [lo, hi]: as many labelled values per decade as fit (1-2-3-5, 1-2-5
    or 1; a few even steps when the axis spans less), plain numbers (0.3, 20k), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

    decades = np.log10(max(hi, lo * 1.0001) / lo)
    if decades < 0.6:  # narrower than 1-2-3-5 can label twice: a few evenly spaced values
        axis.set_major_locator(MaxNLocator(nbins=4))
        axis.set_minor_locator(NullLocator())
    else:
        subs = (1.0, 2.0, 3.0, 5.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v < 1e4 else f"{v / 1e3:g}k"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig, path: Path) -> str:
    for problem in text_problems(fig):  # every figure checks itself: a report that reads badly says so
        log.warning("%s: %s", path.name, problem)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    path.write_bytes(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def accuracy_heatmap(summary: dict, path: Path) -> str:
    plt = _plt()
    R = np.array([[np.nan if v is None else v for v in row] for row in summary["accuracy_matrix"]], float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(R), 1.0 + 0.7 * len(R)))
    lo = float(np.nanmin(R)) if np.isfinite(R).any() else 0.0  # the scale spans the values: 0.014 is not 0.5
    vmin, vmax = min(lo, 0.5), 1.0
    im = ax.imshow(R, vmin=vmin, vmax=vmax, cmap="viridis")
    for (i, j), v in np.ndenumerate(R):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if v < vmin + 0.6 * (vmax - vmin) else "black")
    ax.set(xticks=range(len(R)), yticks=range(len(R)), xlabel="evaluated on task", ylabel="after learning task",
           xticklabels=[str(i + 1) for i in range(len(R))], yticklabels=[str(i + 1) for i in range(len(R))],
           title=f"test accuracy R[i, j]  (ACC {summary['acc']:.4f}, BWT {summary['bwt']})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _save(fig, path)


def expert_row(task: dict, rows: list[dict]) -> dict | None:
    """The candidate the expert was selected from: by its uid (``selected_from``); a later candidate with the same
    genome is another individual. Runs that did not record the uid fall back to the first same-genome candidate."""
    uid = task.get("selected_from")
    if uid:
        return next((r for r in rows if r.get("uid") == uid), None)
    return next((r for r in rows if r["genome"] == task["genome"]), None)


def candidates_plot(task: dict, rows: list[dict], path: Path, budget_ms: float | None = None) -> str:
    """Every candidate of the task; the non-dominated ones (max validation accuracy, min x) joined as the front."""
    from .evolve.selection import non_dominated_sort

    plt = _plt()
    x_key = "latency_ms" if rows and all(r.get("latency_ms") is not None for r in rows) else "params"
    xs = np.array([float(r[x_key]) for r in rows])
    ys = np.array([float(r["val_acc"]) for r in rows])
    front = np.zeros(len(rows), bool)
    front[non_dominated_sort(np.stack([-ys, xs], axis=1))[0]] = True
    order = np.argsort(xs[front])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(xs[~front], ys[~front], s=14, c="0.65", label="evaluated")
    ax.plot(xs[front][order], ys[front][order], "o-", ms=4, c="C3", lw=1, label="Pareto front")
    chosen = expert_row(task, rows)
    if chosen is not None:
        ax.scatter([float(chosen[x_key])], [float(chosen["val_acc"])], s=160, facecolors="none",
                   edgecolors="k", linewidths=1.5, label="expert (before final training)")
    if budget_ms is not None and x_key == "latency_ms":
        ax.axvline(budget_ms, ls="--", c="C0", lw=1, label=f"latency budget {budget_ms:g} ms")
    if x_key == "params":
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, float(xs.min()), float(xs.max()))
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set(xlabel="predicted latency (ms)" if x_key == "latency_ms" else "parameters",
           ylabel="validation accuracy (proxy)", title=f"task {task['id']}: {', '.join(task['class_names'])}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _selection_line(summary: dict) -> str:
    """Which selection ran; nothing for runs made before selection modes (they selected on the Pareto front)."""
    sel = summary.get("selection")
    if not sel:
        return ""
    how = ("accuracy as the objective; " + ", ".join(sel["constraints"]) + " as constraints"
           if sel["mode"] == "constrained" else "the Pareto front of " + ", ".join(sel["objectives"]))
    expert = f"; the expert: {sel['expert']}" if sel.get("expert") else ""
    return f"\n<p>Selection: <b>{html.escape(sel['mode'])}</b> ({html.escape(how + expert)})</p>"


def _sessions_line(run: Path) -> str:
    """The executor each session (start, resume, learn) ran under; nothing for runs made before sessions were
    recorded."""
    from .evolve.rundir import RunDir

    parts = []
    for e in RunDir(run).events():
        if e["event"] == "session":
            settings = ", ".join(f"{k} {v}" for k, v in (e.get("settings") or {}).items())
            parts.append(e["executor"] + (f" ({settings})" if settings else ""))
    return f"\n<p>Executor, per session: {html.escape('; '.join(parts))}</p>" if parts else ""


def _caveat(summary: dict, prof, record: dict) -> str | None:
    """Why predicted and measured latencies on one figure may not be comparable, or None."""
    source = prof.source if prof is not None else summary.get("target", {}).get("source")
    name = prof.name if prof is not None else summary.get("target", {}).get("name")
    if source == "estimated":
        return f"{name} is a datasheet ESTIMATE for another device;\nmeasured here on {record['host']}: not comparable"
    device = (prof.device.get("name") if prof is not None else None) or ""
    from .hw.profiling import cpu_name

    here = cpu_name()
    if prof is not None and device and here and device != here:
        return f"profile measured on {device};\nmeasured here on {here}"
    return None


# where a point's label may go (offset in points, horizontal alignment), nearest first: beside the point, then
# stacked further up and down, so that a cluster of equal experts gets a readable column of labels
_LABEL_SPOTS = [((dx, dy), "left" if dx > 0 else "right") for dy in (3, -10, 12, -19, 21, -28, 30, -37, 39, -46, 48)
                for dx in (5, -5)]


def _label_points(ax, points: list[tuple[float, float, str]]) -> None:
    """Label each point at the nearest spot where the label overlaps no other label and stays inside the axes;
    points that lie close together (experts of equal latency) get their labels stacked, not on top of each other."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed = [t.get_window_extent(renderer) for t in ax.texts]  # texts already there
    if ax.get_legend() is not None:
        placed.append(ax.get_legend().get_window_extent(renderer))
    for x, y, text in points:
        best = None  # (overlap with placed labels in square pixels, spot) of the spots inside the axes
        for offset, ha in _LABEL_SPOTS:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=7, ha=ha)
            box = label.get_window_extent(renderer)
            label.remove()
            if not _inside(inside, box):
                continue
            overlap = sum(_overlap_area(box, o) for o in placed)
            if best is None or overlap < best[0]:
                best = (overlap, offset, ha)
            if overlap == 0:
                break
        offset, ha = (best[1], best[2]) if best else ((5, 3), "left")
        label = ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=7, ha=ha)
        placed.append(label.get_window_extent(renderer))


def latency_plot(points: list[tuple[int, float, float]], path: Path, xlabel: str, ylabel: str,
                 caveat: str | None = None) -> str:
    """Predicted (x) against measured (y) per expert, with y = x and a +-10 % band; ``caveat`` is written on the
    figure (a profile of another device, or an estimate, against a measurement made here)."""
    plt = _plt()
    ids, pred, meas = (np.array(v, float) for v in zip(*points))
    lo, hi = 0.8 * min(pred.min(), meas.min()), 1.25 * max(pred.max(), meas.max())
    line = np.geomspace(lo, hi, 50)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="C2", alpha=0.15, label="within +-10 %")
    ax.plot(line, line, c="C2", lw=1)
    ax.scatter(pred, meas, c="C0", zorder=3)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel=xlabel, ylabel=ylabel,
           title="expert latency, batch 1")
    _log_ticks(ax.xaxis, lo, hi)
    _log_ticks(ax.yaxis, lo, hi)
    ax.legend(fontsize=7, loc="upper left")
    if caveat:  # under the axes, never over the points it is about
        fig.text(0.5, 0.015, caveat, ha="center", va="bottom", fontsize=6.5, color="C3",
                 bbox={"facecolor": "white", "edgecolor": "C3"})
        fig.set_figheight(fig.get_figheight() + 0.45)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    _label_points(ax, [(x, y, f"task {int(i)}") for i, x, y in zip(ids, pred, meas)])  # once the layout is final
    return _save(fig, path)


def task_candidates(run: Path, task_id: int) -> list[dict]:
    """What the search evaluated on a task: the Pareto CSV when the run wrote one, else the event log (initial or
    inherited population, every generation's children and its incumbent)."""
    csv_path = run / "pareto" / f"task_{task_id:02d}.csv"
    if csv_path.exists():
        return list(csv.DictReader(csv_path.open()))
    from .evolve.rundir import RunDir

    rows: list[dict] = []
    for e in RunDir(run).events():
        if e.get("task") == task_id and e["event"] in ("population", "generation"):
            rows += e.get("members", []) + e.get("children", []) + ([e["incumbent"]] if "incumbent" in e else [])
    return rows


def expert_meta(run: Path, task_id: int) -> dict | None:
    path = run / "experts" / f"task_{task_id:02d}" / "metrics.json"
    return read_json(path) if path.exists() else None


def measure_experts(metas: dict[int, dict], backend_name: str, threads: int = 1) -> dict:
    """Each expert's architecture timed at batch 1 with a profiling backend on this machine (latency depends on the
    architecture, not the weights, so the torch-free genome graph is timed); with the backend's settings."""
    import platform

    from .hw.backends import create_backend
    from .hw.onnx_graphs import genome_model
    from .space import Genome

    backend = create_backend(backend_name, threads=threads, warmup=30, iterations=200)
    out = {"backend": backend_name, "settings": backend.settings(), "host": platform.node(),
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "measured_ms": {}}
    for task_id, meta in metas.items():
        shape = tuple(meta["input_spec"]["shape"])
        m = backend.measure(genome_model(Genome.parse(meta["genome"]), shape, meta["num_classes"]))
        out["measured_ms"][str(task_id)] = round(m.median, 6)
    return out


def progress_plot(curves: dict[int, list[float]], path: Path) -> str:
    """Best validation accuracy in the population per generation (0 = the initial or inherited population)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    markers, styles = "osD^v<>p*h", ["-", "--", "-.", ":"]
    n = max(1, len(curves))
    for k, (task, curve) in enumerate(sorted(curves.items())):
        # tasks often reach the same accuracies: distinct markers and styles, and a small sideways offset per
        # task, so that no line hides under another
        x = np.arange(len(curve)) + (k - (n - 1) / 2) * 0.04
        ax.plot(x, curve, marker=markers[k % len(markers)], ls=styles[k % len(styles)], ms=4, lw=1.2, alpha=0.85,
                label=f"task {task}")
    ax.set(xlabel="generation (0: initial / inherited population)", ylabel="best validation accuracy",
           title="search progress")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


def predictor_table(run: Path) -> str:
    """The performance predictor's ranking quality per screened generation (from the event log): how well the order
    it predicted before training matched the first-rung validation accuracies the children then reached."""
    from .evolve.rundir import RunDir

    rows = [e for e in RunDir(run).events() if e["event"] == "perf_predictor"]
    if not rows:
        return ""
    mean = lambda key: _fmt(sum(v) / len(v)) if (v := [r[key] for r in rows if r[key] is not None]) else "n/a"  # noqa
    body = "".join(f"<tr><td>{r['task']}</td><td>{r['generation']}</td><td>{html.escape(r['model'])}</td>"
                   f"<td>{r['labels']}</td><td>{r['screened']} &rarr; {r['trained']}</td>"
                   f"<td>{_fmt(r['kendall_tau'])}</td><td>{_fmt(r['top_k_precision'])} (k={r['top_k']})</td></tr>"
                   for r in rows)
    return ("<h2>Performance predictor</h2><p>Children ranked before training (mutants screened &rarr; trained); "
            "Kendall tau and top-k precision of that ranking against the validation accuracies they reached at the "
            f"first rung. Mean tau {mean('kendall_tau')}, mean top-k precision {mean('top_k_precision')}.</p>"
            "<table><tr><th>task</th><th>generation</th><th>model</th><th>labelled children</th><th>screened</th>"
            f"<th>Kendall tau</th><th>top-k precision</th></tr>{body}</table>")


def build_report(run_dir: str | Path, out: str | Path | None = None, profile: str | Path | None = None,
                 measure: str | None = None, threads: int = 1) -> Path:
    from .evolve.rundir import RunDir

    run = RunDir.open(run_dir)[0].path  # no such directory, or not a run: says which, as export does
    if not (run / "summary.json").is_file():
        raise FileNotFoundError(f"the run at {run} is not finished (no summary.json): continue it with "
                                f"`pcl-edge evolve --resume {run}`, then report")
    summary = read_json(run / "summary.json")
    folder = Path(out) if out else run / "report"
    folder.mkdir(parents=True, exist_ok=True)
    metas = {t["id"]: m for t in summary["tasks"] if (m := expert_meta(run, t["id"])) is not None}
    prof, predicted_on = None, summary.get("target", {}).get("name")
    if profile is not None:
        from .hw.predictor import LatencyPredictor
        from .hw.profile import load_profile
        from .space import Genome

        prof = load_profile(profile)
        predicted_on = f"{prof.name} ({prof.source}, given to the report)"
    elif predicted_on:
        predicted_on = f"{predicted_on} ({summary['target'].get('source')}, the run's search target)"

    images = [("Accuracy matrix (above the diagonal: the model carried into a task with a fresh head, before any "
               "training on it, as GEM's FWT uses)", accuracy_heatmap(summary, folder / "accuracy_matrix.png"))]
    curves = {i: m["val_curve"] for i, m in metas.items() if m.get("val_curve")}
    if curves:
        images.append(("Search progress", progress_plot(curves, folder / "search_progress.png")))
    budget = summary.get("target", {}).get("latency_budget_ms")
    predicted: dict[int, float] = {}
    for task in summary["tasks"]:
        rows, meta = task_candidates(run, task["id"]), metas.get(task["id"])
        if prof is not None and meta is not None:  # one predictor per task: its input shape and head
            pred = LatencyPredictor(prof, tuple(meta["input_spec"]["shape"]), meta["num_classes"])
            rows = [r | {"latency_ms": round(pred.predict(Genome.parse(r["genome"])), 6)} for r in rows]
            predicted[task["id"]] = round(pred.predict(Genome.parse(task["genome"])), 6)
        elif task.get("latency_ms") is not None:
            predicted[task["id"]] = task["latency_ms"]
        if rows:
            x = "predicted latency" if rows[0].get("latency_ms") is not None else "parameters"
            images.append((f"Task {task['id']}: validation accuracy vs {x} of every candidate, Pareto front joined",
                           candidates_plot(task | {"selected_from": (meta or {}).get("selected_from")}, rows,
                                           folder / f"candidates_task_{task['id']:02d}.png",
                                           budget if profile is None else None)))
    measured: dict[int, float] = {}
    if measure:
        record = measure_experts(metas, measure, threads)
        write_json(folder / "latency.json", record | {"predicted_ms": {str(k): v for k, v in predicted.items()},
                                                      "predicted_on": predicted_on})
        measured = {int(k): v for k, v in record["measured_ms"].items()}
        measured_by = f"measured here: {record['settings'].get('tool', measure)}, {record['host']}, median"
        both = [(t, predicted[t], measured[t]) for t in sorted(measured) if t in predicted]
        if both:
            images.append((f"Predicted ({predicted_on}) vs measured latency ({measured_by}) of the experts",
                           latency_plot(both, folder / "latency_predicted_vs_measured.png",
                                        "predicted (ms)", "measured (ms)", _caveat(summary, prof, record))))
    lat_cols = [("predicted ms", predicted)] if predicted else []
    lat_cols += [("measured ms", measured)] if measured else []
    head = "<tr><th>task</th><th>classes</th><th>genome</th><th>params</th><th>val</th><th>test</th>" + \
        "".join(f"<th>{name}</th>" for name, _ in lat_cols) + "</tr>"
    rows = "".join(
        f"<tr><td>{t['id']}</td><td>{html.escape(', '.join(t['class_names']))}</td><td><code>"
        f"{html.escape(str(t['genome']))}</code></td><td>{t['params'] or ''}</td>"
        f"<td>{_fmt(t['val_acc'])}</td>"
        f"<td>{t['test_acc']:.3f}</td>" + "".join(f"<td>{vals.get(t['id'], '')}</td>" for _, vals in lat_cols)
        + "</tr>" for t in summary["tasks"])
    notes = []
    if predicted_on and predicted:
        notes.append(f"Predicted latency: {predicted_on}.")
    if measured:
        notes.append(f"Measured latency: {measured_by} (settings in latency.json).")
    metrics = " · ".join(f"{k.upper()} {summary[k]:.4f}" if isinstance(summary.get(k), float) else f"{k.upper()} n/a"
                         for k in ("acc", "bwt", "fwt", "forgetting"))
    figures = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'><figcaption>"
                      f"{html.escape(t)}</figcaption></figure>" for t, b in images)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>pcl-edge report: {html.escape(run.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;font-size:.9rem}}
th{{background:#f3f3f3}}figure{{display:inline-block;margin:.5rem;vertical-align:top;max-width:530px}}
img{{max-width:520px;border:1px solid #eee}}figcaption{{font-size:.85rem;color:#555}}code{{font-size:.8rem}}</style>
</head><body><h1>pcl-edge run <code>{html.escape(run.name)}</code></h1>
<p><b>{html.escape(summary['strategy'])}</b> on <code>{html.escape(summary['data'])}</code>, seed {summary['seed']},
preset {html.escape(str(summary['preset']))}, {summary['wall_s']:.0f} s. {metrics}</p>
<p>Test split: {html.escape(summary['test_split'])}</p>{_selection_line(summary)}{_sessions_line(run)}
<h2>Experts</h2><table>{head}{rows}</table><p>{html.escape(" ".join(notes))}</p>
{predictor_table(run)}
<h2>Figures</h2>{figures}</body></html>"""
    write_text(folder / "index.html", page)
    return folder / "index.html"
