"""Latency-aware search, checked by measurement: Split Digits with ``--target PROFILE --latency-budget B``, then every
expert's ONNX timed with onnxruntime (CPU, batch 1, the profile's thread count) against B x 1.10.

B is chosen so that it binds: the ``--quantile`` (default 0.25) of the predicted latencies of every candidate that a
run with the same target and no budget evaluated, i.e. most of what the unconstrained search explored is over B
(raised, if need be, to 5 % above the smallest budget the space can meet).

    python bench/latency_budget.py [--profile hw_profiles/cpu-ort-epyc-2core.yaml]
    python bench/latency_budget.py --quick     (preset tiny)
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import _common
import numpy as np

from pcl_edge.data import build_stream
from pcl_edge.evolve import evolve, preset_config
from pcl_edge.evolve.pcl import LatencyBudgetError, check_latency_budget
from pcl_edge.export import export_bundle
from pcl_edge.hw.backends import create_backend
from pcl_edge.hw.profile import load_profile


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--profile", default=str(_common.ROOT / "hw_profiles" / "cpu-ort-epyc-2core.yaml"))
    ap.add_argument("--quantile", type=float, default=0.25)
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work, preset = Path(tempfile.mkdtemp(prefix="bench-latency-")), "tiny" if args.quick else "cpu"
    free = evolve(preset_config(preset, "digits", target=args.profile), out=work / "free", progress=False)
    seen = [float(line.split(",")[5]) for csv in sorted((work / "free" / "pareto").glob("task_*.csv"))
            for line in csv.read_text().splitlines()[1:]]
    budget = float(np.quantile(seen, args.quantile))
    try:
        check_latency_budget(preset_config(preset, "digits", target=args.profile, latency_budget_ms=budget),
                             build_stream("digits"))
    except LatencyBudgetError as exc:  # the message names the smallest budget the space can meet
        budget = 1.05 * float(str(exc).rsplit(">= ", 1)[1])
    budget = round(budget, 6)
    over = sum(v > budget * 0.9 for v in seen) / len(seen)
    run = evolve(preset_config(preset, "digits", target=args.profile, latency_budget_ms=budget), out=work / "budget",
                 progress=False)
    bundle = export_bundle(work / "budget", work / "bundle")
    threads = load_profile(args.profile).measurement.get("intra_op_threads", 1)
    backend = create_backend("ort-cpu", threads=threads, warmup=50, iterations=args.iterations)
    rows, ok = [], True
    for t, entry in zip(run["tasks"], bundle["tasks"]):
        measured = backend.measure((work / "bundle" / entry["model"]).read_bytes()).median
        ok &= measured <= 1.10 * budget
        rows.append([t["id"], t["genome"], t["val_acc"], t["latency_ms"], measured, measured <= 1.10 * budget])
    text = (f"profile {args.profile}; unconstrained experts (predicted ms): "
            f"{[round(t['latency_ms'], 4) for t in free['tasks']]}; budget B = {budget} ms: {over:.0%} of the "
            f"{len(seen)} candidates of the unconstrained search are over B - 10 %\n\n"
            + _common.table(["task", "genome", "val acc", "predicted ms", "measured ms (median)", "<= 1.10 B"], rows)
            + f"\n\nACC {run['acc']:.4f} (unconstrained {free['acc']:.4f}); all experts within 1.10 B: {ok}")
    _common.write("latency_budget", args, {"profile": args.profile, "budget_ms": budget, "share_over": over,
                                           "acc": run["acc"], "acc_unconstrained": free["acc"], "all_within": ok,
                                           "experts": rows}, text)


if __name__ == "__main__":
    main()
