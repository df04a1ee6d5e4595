"""Export figures: time to export a 5-task Split Digits run to a verified bundle, parity per task, and the time
of `bundle verify` (median of repeats).

    python bench/export_bundle.py [--run RUN_DIR]   (without --run, a default `pcl-edge evolve` run is made first)
    python bench/export_bundle.py --quick           (a preset tiny run, 5 verify repeats)
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import _common

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.export import export_bundle, verify_bundle


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--run")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    run = Path(args.run) if args.run else work / "run"
    if not args.run:
        evolve(preset_config("tiny" if args.quick else "cpu", "digits"), out=run, progress=False)
    start = time.perf_counter()
    m = export_bundle(run, work / "bundle")
    export_s = time.perf_counter() - start
    times, repeats = [], 5 if args.quick else args.repeats
    for _ in range(repeats):
        t0 = time.perf_counter()
        verify_bundle(work / "bundle")
        times.append(time.perf_counter() - t0)
    rows = [[t["id"], t["verification"]["max_abs_diff"], t["verification"]["n_inputs"], t["verification"]["n_real"],
             t["verification"]["passed"]] for t in m["tasks"]]
    text = (f"export of {len(m['tasks'])} tasks: {export_s:.2f} s (in process, incl. real-sample loading); "
            f"bundle verify: median {statistics.median(times) * 1e3:.2f} ms, max {max(times) * 1e3:.2f} ms over "
            f"{repeats} runs\n\n" + _common.table(["task", "max abs(onnx - torch)", "inputs", "real", "passed"], rows))
    _common.write("export_bundle", args, {"run": str(run), "export_s": export_s, "verify_ms": [t * 1e3 for t in times],
                                          "tasks": [{"id": t["id"], **t["verification"]} for t in m["tasks"]]}, text)


if __name__ == "__main__":
    main()
