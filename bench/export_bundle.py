"""Export figures: time to export a 5-task Split Digits run to a verified bundle, parity per task, and the time
of `bundle verify` (median of repeats).

    python bench/export_bundle.py [--run RUN_DIR]   (without --run, a default `pcl-edge evolve` run is made first)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.export import export_bundle, verify_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    run = Path(args.run) if args.run else work / "run"
    if not args.run:
        evolve(preset_config("cpu", "digits"), out=run, progress=False)
    start = time.perf_counter()
    m = export_bundle(run, work / "bundle")
    export_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        verify_bundle(work / "bundle")
        times.append(time.perf_counter() - t0)
    print(f"export of {len(m['tasks'])} tasks: {export_s:.2f} s (in process, incl. real-sample loading)")
    for t in m["tasks"]:
        v = t["verification"]
        print(f"  task {t['id']}: max |onnx - torch| = {v['max_abs_diff']:.2e} over {v['n_inputs']} inputs "
              f"({v['n_real']} real), passed={v['passed']}")
    print(f"bundle verify: median {statistics.median(times) * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms "
          f"over {args.repeats} runs")


if __name__ == "__main__":
    main()
