"""Latency-aware search, checked by measurement: Split Digits with ``--target PROFILE --latency-budget B``, then every
expert's ONNX timed with onnxruntime (CPU, batch 1, the profile's thread count) against B x 1.10.

B is chosen so that it binds: the median predicted latency of the experts of a run with the same target and no
budget, times ``--fraction`` (default 0.9).

    python bench/latency_budget.py --profile hw_profiles/cpu-ort-x86.yaml
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.export import export_bundle
from pcl_edge.hw.backends import create_backend
from pcl_edge.hw.profile import load_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--fraction", type=float, default=0.9)
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    free = evolve(preset_config("cpu", "digits", target=args.profile), out=work / "free", progress=False)
    budget = round(args.fraction * statistics.median(t["latency_ms"] for t in free["tasks"]), 6)
    run = evolve(preset_config("cpu", "digits", target=args.profile, latency_budget_ms=budget), out=work / "budget",
                 progress=False)
    bundle = export_bundle(work / "budget", work / "bundle")
    threads = load_profile(args.profile).measurement.get("intra_op_threads", 1)
    backend = create_backend("ort-cpu", threads=threads, warmup=50, iterations=args.iterations)
    print(f"profile {args.profile}; unconstrained experts (predicted ms): "
          f"{[round(t['latency_ms'], 4) for t in free['tasks']]}; budget B = {budget} ms (binds)")
    print("| task | genome | val acc | predicted ms | measured ms (median) | <= 1.10 B |\n|---|---|---|---|---|---|")
    ok = True
    for t, entry in zip(run["tasks"], bundle["tasks"]):
        measured = backend.measure((work / "bundle" / entry["model"]).read_bytes()).median
        ok &= measured <= 1.10 * budget
        print(f"| {t['id']} | {t['genome']} | {t['val_acc']:.3f} | {t['latency_ms']:.4f} | {measured:.4f} | "
              f"{measured <= 1.10 * budget} |")
    print(f"ACC {run['acc']:.4f} (unconstrained {free['acc']:.4f}); all experts within 1.10 B: {ok}")


if __name__ == "__main__":
    main()
