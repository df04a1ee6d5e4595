"""An open stream costs nothing and changes nothing (issue 20): tasks 1-5 learned in one call against tasks 1-3, then
4-5 in a later call (``pcl-edge learn``), with the same seed, data and recipe. Reports, per task, whether the experts
are bit-identical (genome and the sha256 of the weights), and what each task cost in either run.

    python bench/open_stream.py --data imagefolder:../shared/data/cifar10-train-jpg.tar.xz   # Split CIFAR-10, cpu
    python bench/open_stream.py --quick                                                      # Split Digits, tiny

Both runs are driven through the CLI, one after the other (never side by side). A task's cost is the wall clock
from the end of the previous task's accuracy row to the end of its own (``events.jsonl``); the first added task's
cost in the ``learn`` call counts from the command's start instead, so it includes everything adding a task takes:
the process start, loading the data and the stored population."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def row_times(run: Path) -> dict[int, float]:
    """Task id -> the time its accuracy row was written (the task is then learned and evaluated)."""
    return {e["task"]: e["time"] for e in events(run) if e["event"] == "accuracy_row"}


def experts(run: Path) -> dict[int, tuple[str, str]]:
    out = {}
    for d in sorted((run / "experts").glob("task_*")):
        m = json.loads((d / "metrics.json").read_text())
        out[m["task_id"]] = (m["genome"], m["model_sha256"])
    return out


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--data", default="digits", help="source (default digits)")
    ap.add_argument("--preset", help="default: cpu (tiny with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="where the two runs go (default: a temporary directory)")
    args = ap.parse_args()
    preset = args.preset or ("tiny" if args.quick else "cpu")
    work = Path(args.work or tempfile.mkdtemp(prefix="pcl-open-stream-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(_common.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cli = [sys.executable, "-m", "pcl_edge.cli", "-q"]
    common = ["--data", args.data, "--preset", preset, "--seed", str(args.seed)]

    def pcl(*argv: str) -> float:
        t0 = time.time()
        print("$ pcl-edge " + " ".join(argv), flush=True)
        subprocess.run(cli + list(argv), check=True, env=env, cwd=work)
        return t0

    pcl("evolve", *common, "--tasks", "5x2", "--out", str(work / "one_call"))
    pcl("evolve", *common, "--tasks", "3x2", "--out", str(work / "two_calls"))
    before = experts(work / "two_calls")
    learn_start = pcl("learn", str(work / "two_calls"), "--tasks", "2x2")

    one, two = experts(work / "one_call"), experts(work / "two_calls")
    untouched = all(two[t] == before[t] for t in before)
    t_one, t_two = row_times(work / "one_call"), row_times(work / "two_calls")
    start_one = next(e["time"] for e in events(work / "one_call") if e["event"] == "start")
    start_two = next(e["time"] for e in events(work / "two_calls") if e["event"] == "start")
    cost_one = {t: t_one[t] - (t_one.get(t - 1) or start_one) for t in t_one}
    cost_two = {t: t_two[t] - (t_two.get(t - 1) or start_two) for t in t_two}
    cost_two[4] = t_two[4] - learn_start  # the added task pays for the learn command's own start
    s1 = json.loads((work / "one_call" / "summary.json").read_text())
    s2 = json.loads((work / "two_calls" / "summary.json").read_text())
    rows = [[t, one[t][0], one[t][1][:12], two[t][1][:12], one[t] == two[t], round(cost_one[t], 1),
             round(cost_two[t], 1), round(cost_two[t] / cost_one[t], 3)] for t in sorted(one)]
    result = {"data": args.data, "preset": preset, "seed": args.seed, "work": str(work),
              "identical": {t: one[t] == two[t] for t in one}, "all_identical": one == two,
              "earlier_experts_untouched": untouched,
              "accuracy_matrix_equal": s1["accuracy_matrix"] == s2["accuracy_matrix"],
              "cost_s": {"one_call": cost_one, "two_calls": cost_two},
              "added_task_cost_ratio": {t: round(cost_two[t] / cost_one[t], 4) for t in (4, 5)},
              "acc": {"one_call": s1["acc"], "two_calls": s2["acc"]}, "bwt": {"one_call": s1["bwt"],
                                                                               "two_calls": s2["bwt"]}}
    text = (_common.table(["task", "genome", "sha256 (1-5)", "sha256 (1-3, 4-5)", "identical", "cost s (1-5)",
                           "cost s (1-3, 4-5)", "ratio"], rows)
            + f"\n\nexperts identical: {one == two}; tasks 1-3 untouched by the second call: {untouched}; accuracy "
              f"matrices equal: {result['accuracy_matrix_equal']}; ACC {s1['acc']} / {s2['acc']}, BWT {s1['bwt']} / "
              f"{s2['bwt']}")
    _common.write(f"open_stream-{args.data.partition(':')[0]}", args, result, text)
    if not (one == two and untouched):
        sys.exit(1)


if __name__ == "__main__":
    main()
