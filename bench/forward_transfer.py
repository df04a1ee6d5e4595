"""Forward transfer, the PCL claim: on tasks 2..T, the inherited population reaches the validation accuracy that a
freshly initialised one (``pcl-scratch``) ends with, in less search time. Same config, same seed, side by side.

    python bench/forward_transfer.py [--data digits] [--preset cpu]
    python bench/forward_transfer.py --runs PCL_RUN SCRATCH_RUN   (analyse two finished runs, e.g. cl_quality's)
    python bench/forward_transfer.py --quick                       (preset tiny)
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import _common

from pcl_edge.evolve import evolve, preset_config


def timeline(run: Path) -> dict[int, list[tuple[float, float]]]:
    """task -> [(seconds since the task started, best validation accuracy so far)] at every generation."""
    out: dict[int, list[tuple[float, float]]] = {}
    start: dict[int, float] = {}
    for line in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "task_start":
            start[e["task"]] = e["time"]
        elif e["event"] in ("population", "generation"):
            pts = out.setdefault(e["task"], [])
            best = max(e["best_val_acc"], pts[-1][1] if pts else 0.0)
            pts.append((e["time"] - start[e["task"]], best))
    return out


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs=2, metavar=("PCL_RUN", "SCRATCH_RUN"), help="analyse these instead of running")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.runs:
        runs = [Path(r) for r in args.runs]
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
        runs = [work / "pcl", work / "pcl-scratch"]
        for strategy, out in zip(("pcl", "pcl-scratch"), runs):
            evolve(preset_config("tiny" if args.quick else args.preset, args.data, seed=args.seed, strategy=strategy),
                   out=out, progress=False)
    pcl, scratch = timeline(runs[0]), timeline(runs[1])
    rows, wins = [], 0
    for task in sorted(pcl)[1:]:
        goal, scratch_s = scratch[task][-1][1], scratch[task][-1][0]
        reach = next((t for t, v in pcl[task] if v >= goal), None)
        faster = reach is not None and reach < scratch_s
        wins += faster
        rows.append([task, goal, round(scratch_s, 1), "never" if reach is None else round(reach, 1), pcl[task][-1][1],
                     faster])
    text = (_common.table(["task", "pcl-scratch final val", "its search s", "pcl reaches it at s", "pcl final val",
                           "faster"], rows)
            + f"\n\ninherited population faster on {wins} of {len(pcl) - 1} tasks; runs {runs[0]}, {runs[1]}")
    _common.write("forward_transfer", args, {"runs": [str(r) for r in runs], "wins": wins, "tasks": len(pcl),
                                             "rows": rows, "timelines": {"pcl": pcl, "pcl-scratch": scratch}}, text)


if __name__ == "__main__":
    main()
