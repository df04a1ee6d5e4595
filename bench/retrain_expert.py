"""Architecture or training budget? Trains the architectures of a run's archived experts again, from scratch, with a
given number of steps (by default the steps a ``fixed`` reference run gave its network), and puts their validation
accuracy next to the expert's own and the reference's. Validation split only: the test split is not touched, so
this diagnostic can inform budget choices without tuning on test. Archived experts are read, never modified.

    python bench/retrain_expert.py --run runs/bench-cifar/pcl --reference runs/bench-cifar/fixed --tasks 1,2
    python bench/retrain_expert.py --quick --run RUN --steps 50
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import _common

from pcl_edge.data import build_stream
from pcl_edge.evolve.rundir import RunDir
from pcl_edge.evolve.trainer import TensorTask, build_seeded, default_device, derive_seed, evaluate, train
from pcl_edge.space import Genome


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--run", required=True, help="a run with archived experts (pcl, pcl-scratch, fixed)")
    ap.add_argument("--reference", help="a fixed-strategy run: its steps and its validation accuracy per task")
    ap.add_argument("--steps", type=int, help="training steps per expert (default: the reference's final steps)")
    ap.add_argument("--tasks", help="comma-separated task ids (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run, cfg = RunDir.open(args.run)
    ref = json.loads((Path(args.reference) / "summary.json").read_text()) if args.reference else None
    steps = args.steps
    if steps is None:
        if not args.reference:
            ap.error("give --steps or a --reference run")
        steps = json.loads((Path(args.reference) / "config.json").read_text())["final"]["steps"]
    if args.quick:
        steps = min(steps, 50)
    stream = build_stream(cfg.data, cfg.tasks, cfg.seed, test_fraction=cfg.test_fraction,
                          val_fraction=cfg.val_fraction)
    ids = [int(t) for t in args.tasks.split(",")] if args.tasks else run.expert_ids()
    rows, records = [], []
    for task_id in ids:
        meta = run.load_expert(task_id)
        task = TensorTask.from_task(next(t for t in stream.tasks if t.id == task_id))
        seed = derive_seed(cfg.seed, "retrain", task_id)
        net = build_seeded(Genome.parse(meta["genome"]), task.in_channels, task.num_classes, seed)
        net.to(default_device())
        start = time.perf_counter()
        train(net, task.train, dataclasses.replace(cfg.final, steps=steps), seed)
        seconds = time.perf_counter() - start
        val = evaluate(net, task.val)
        ref_val = next((t["val_acc"] for t in ref["tasks"] if t["id"] == task_id), None) if ref else None
        expert_val = meta["metrics"]["val_acc"]
        rows.append([task_id, meta["genome"], expert_val, val, ref_val, round(seconds)])
        records.append({"task": task_id, "genome": meta["genome"], "expert_val_acc": expert_val,
                        "retrained_val_acc": val, "reference_val_acc": ref_val, "train_s": seconds})
    text = (f"{args.run}: experts' architectures retrained from scratch for {steps} steps each (validation accuracy)"
            + (f"; reference {args.reference} ({ref['tasks'][0]['genome']})" if ref else "") + "\n\n"
            + _common.table(["task", "genome", "expert val", f"retrained {steps} steps val", "reference val",
                             "train s"], rows))
    _common.write("retrain_expert", args, {"run": args.run, "reference": args.reference, "steps": steps,
                                           "tasks": records}, text)


if __name__ == "__main__":
    main()
