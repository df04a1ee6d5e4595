"""Split CIFAR-10 (5 x 2 classes): PCL at ``--preset cpu`` against ``fixed`` (a hand-picked small net) given the
same wall-clock budget, measured side by side in one session. Prints a table; writes JSON next to the runs.

    python bench/split_cifar.py --data imagefolder:../shared/data/cifar10-train-jpg.tar.xz --out /tmp/bench-cifar

The fixed net's training steps are chosen so that its whole run takes as long as PCL's did: its seconds per step
are measured on task 1 first (the same trainer, same threads), then steps = PCL wall / (tasks * s/step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from pcl_edge.data import build_stream
from pcl_edge.evolve import evolve, preset_config
from pcl_edge.evolve.trainer import TensorTask, build_seeded, train
from pcl_edge.space import Genome


def seconds_per_step(cfg, probe_steps: int = 40) -> float:
    task = TensorTask.from_task(build_stream(cfg.data, cfg.tasks, cfg.seed).tasks[0])
    net = build_seeded(Genome.parse(cfg.genome), task.in_channels, task.num_classes, 0)
    train(net, task.train, dataclasses.replace(cfg.final, steps=5), 0)  # warm-up
    start = time.perf_counter()
    train(net, task.train, dataclasses.replace(cfg.final, steps=probe_steps), 0)
    return (time.perf_counter() - start) / probe_steps


def row(s: dict) -> str:
    per_task = " ".join(f"{t['test_acc']:.3f}" for t in s["tasks"])
    bwt = "n/a" if s["bwt"] is None else f"{s['bwt']:+.4f}"
    return f"| {s['strategy']} | {s['acc']:.4f} | {bwt} | {s['wall_s']:.0f} | {per_task} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/bench-split-cifar")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    start = time.perf_counter()
    pcl = evolve(preset_config(args.preset, args.data, seed=args.seed), out=out / "pcl", progress=False)
    pcl_process_s = time.perf_counter() - start  # including data loading and stream building
    fixed_cfg = preset_config(args.preset, args.data, seed=args.seed, strategy="fixed")
    sps = seconds_per_step(fixed_cfg)
    n_tasks = len(pcl["tasks"])
    steps = max(1, int(pcl["wall_s"] / (n_tasks * sps)))
    fixed_cfg = dataclasses.replace(fixed_cfg, final=dataclasses.replace(fixed_cfg.final, steps=steps))
    start = time.perf_counter()
    fixed = evolve(fixed_cfg, out=out / "fixed", progress=False)
    fixed_process_s = time.perf_counter() - start
    result = {"pcl": pcl, "fixed": fixed, "fixed_genome": fixed_cfg.genome, "fixed_steps_per_task": steps,
              "fixed_seconds_per_step": sps, "pcl_process_s": pcl_process_s, "fixed_process_s": fixed_process_s}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print("| strategy | ACC | BWT | wall s | test acc per task |\n|---|---|---|---|---|")
    print(row(pcl))
    print(row(fixed))
    print(f"fixed: {fixed_cfg.genome}, {steps} steps per task ({sps * 1000:.1f} ms/step measured)")
    print(f"process wall-clock incl. data loading: pcl {pcl_process_s:.0f} s, fixed {fixed_process_s:.0f} s")
    print("pcl experts: " + "; ".join(t["genome"] for t in pcl["tasks"]))


if __name__ == "__main__":
    main()
