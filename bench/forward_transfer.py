"""Forward transfer, the PCL claim: on tasks 2..T, the inherited population reaches the validation accuracy that a
freshly initialised one (``pcl-scratch``) ends with, in less search time. Same config, same seed, side by side.

    python bench/forward_transfer.py [--data digits] [--preset cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    for strategy in ("pcl", "pcl-scratch"):
        evolve(preset_config(args.preset, args.data, seed=args.seed, strategy=strategy), out=work / strategy,
               progress=False)
    pcl, scratch = timeline(work / "pcl"), timeline(work / "pcl-scratch")
    print("| task | pcl-scratch final val | its search s | pcl reaches it at s | pcl final val | faster |")
    print("|---|---|---|---|---|---|")
    wins = 0
    for task in sorted(pcl)[1:]:
        goal, scratch_s = scratch[task][-1][1], scratch[task][-1][0]
        reach = next((t for t, v in pcl[task] if v >= goal), None)
        faster = reach is not None and reach < scratch_s
        wins += faster
        print(f"| {task} | {goal:.4f} | {scratch_s:.1f} | {'never' if reach is None else f'{reach:.1f}'} | "
              f"{pcl[task][-1][1]:.4f} | {faster} |")
    print(f"inherited population faster on {wins} of {len(pcl) - 1} tasks; runs in {work}")


if __name__ == "__main__":
    main()
