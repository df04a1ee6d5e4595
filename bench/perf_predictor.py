"""Which performance predictor ranks children better: plain regression or a pairwise ranking loss?

Replays finished runs' event logs in order, exactly as the search meets its data: for every generation, each model
is fitted on the children of all earlier generations of the run (every task so far) and ranks this generation's
children before their accuracies are revealed; its ranking is then scored against the first-rung validation
accuracies they reached (Kendall tau-b, top-k precision with k = the children promoted). Two non-learned
references sit beside the models: the parent's validation accuracy alone, and a random order (the chance level).
Features are rebuilt from the log with the same function the search uses (``perf_predictor.features``).

The children in a log were themselves screened by the run's live predictor (when it screened): every model is scored
on the same children, so the comparison is fair, but all figures are on already-promising children.

    python bench/perf_predictor.py --runs RUN_DIR [RUN_DIR ...]
    python bench/perf_predictor.py            (runs the default Split Digits search first, then replays it)
    python bench/perf_predictor.py --quick    (preset tiny)
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
from pathlib import Path

import _common
import numpy as np

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.evolve.perf_predictor import PERF_PREDICTORS, History, features, kendall_tau, top_k_precision
from pcl_edge.space import Genome

REFERENCES = ("parent-acc", "random")


def generations(run: Path) -> list[dict]:
    """Per generation, in log order: its rung-0 children with features (as the search computed them before training),
    first-rung accuracies and the number promoted."""
    if json.loads((run / "config.json").read_text()).get("strategy") not in ("pcl", "pcl-scratch"):
        raise SystemExit(f"{run} is not a search run")
    spec = json.loads(next((run / "experts").glob("*/metrics.json")).read_text())["input_spec"]
    shape = tuple(spec["shape"])
    latest: dict[str, tuple[str, float]] = {}  # uid -> (genome, val acc) as last recorded
    classes: dict[int, int] = {}
    out, rung0 = [], {}
    for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()):
        kind = e["event"]
        if kind == "task_start":
            classes[e["task"]] = len(e["classes"])
        elif kind == "population":
            latest |= {m["uid"]: (m["genome"], m["val_acc"]) for m in e["members"]}
        elif kind == "rung":
            if e["rung"] == 0:
                rows = [features(Genome.parse(c["genome"]), Genome.parse(latest[c["parent"]][0]),
                                 latest[c["parent"]][1], c["op"], shape, classes[e["task"]]) for c in e["trained"]]
                rung0[(e["task"], e["generation"])] = (rows, [c["val_acc"] for c in e["trained"]])
            latest |= {c["uid"]: (c["genome"], c["val_acc"]) for c in e["trained"]}
        elif kind == "generation":
            latest |= {c["uid"]: (c["genome"], c["val_acc"]) for c in e["children"]}
            rows, accs = rung0.pop((e["task"], e["generation"]))
            out.append({"task": e["task"], "generation": e["generation"], "X": rows, "y": accs,
                        "k": len(e["children"]) if len(e["children"]) < len(accs) else max(1, len(accs) // 2)})
        elif kind == "expert":
            latest[f"t{e['task']}-expert"] = (e["genome"], e["val_acc"])
    return out


def replay(gens: list[dict], seed: int = 0) -> dict[str, list[dict]]:
    """Every model's (and reference's) ranking quality per generation that had history before it."""
    rng = np.random.default_rng(seed)
    scores: dict[str, list[dict]] = {name: [] for name in (*PERF_PREDICTORS.names(), *REFERENCES)}
    history = History.empty()
    for g in gens:
        X = np.array(g["X"], float)
        if history.ready():
            ranked = {name: history.fit(name).score(X) for name in PERF_PREDICTORS.names()}
            ranked["parent-acc"] = X[:, 0]
            ranked["random"] = rng.permutation(len(X)).astype(float)
            for name, s in ranked.items():
                scores[name].append({"task": g["task"], "generation": g["generation"], "n": len(X),
                                     "kendall_tau": kendall_tau(s, g["y"]),
                                     "top_k_precision": top_k_precision(list(s), g["y"], g["k"])})
        history.add(g["X"], g["y"], f"t{g['task']}-g{g['generation']}")
    return scores


def _mean(rows: list[dict], key: str, from_task: int = 1) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None and r["task"] >= from_task]
    return round(statistics.fmean(vals), 3) if vals else None


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--runs", nargs="+", help="finished search runs to replay (default: run one first)")
    ap.add_argument("--data", default="digits", help="when no --runs: the stream of the search to run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    runs = [Path(r) for r in args.runs or []]
    if not runs:
        out = Path(tempfile.mkdtemp(prefix="bench-perf-predictor-")) / "pcl"
        evolve(preset_config("tiny" if args.quick else "cpu", args.data), out=out, progress=False)
        runs = [out]
    result, rows = {}, []
    for run in runs:
        scores = replay(generations(run))
        result[str(run)] = scores
        for name, per_gen in scores.items():
            rows.append([run.name, name, len(per_gen), _mean(per_gen, "kendall_tau"),
                         _mean(per_gen, "kendall_tau", 2), _mean(per_gen, "top_k_precision"),
                         _mean(per_gen, "top_k_precision", 2)])
    text = _common.table(["run", "model", "generations scored", "mean Kendall tau", "tau, task >= 2",
                          "top-k precision", "top-k, task >= 2"], rows)
    _common.write("perf_predictor", args, {"runs": result}, text)


if __name__ == "__main__":
    main()
