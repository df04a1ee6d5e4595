"""The experts of finished runs, timed side by side: every distinct expert architecture of the given run directories,
with the hand-picked net (``--reference``, default each run's configured genome), measured with onnxruntime on the
CPU (batch 1, ``--threads``), in ``--rounds`` interleaved rounds, so that a machine whose speed drifts during the
measurement moves all of them alike. Each architecture's figure is the median of its rounds' medians; its ratio to
the reference is the number to compare with a budget set as a fraction of the reference's latency.

    python bench/expert_latency.py RUN_DIR [RUN_DIR ...] [--rounds 5] [--iterations 300]
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import _common

from pcl_edge.evolve.rundir import RunDir, RunDirError
from pcl_edge.hw.backends import create_backend
from pcl_edge.hw.onnx_graphs import genome_model
from pcl_edge.report import expert_meta
from pcl_edge.space import Genome


def experts(run: Path) -> list[tuple[str, tuple[int, ...], int]]:
    """(genome, input shape, classes) of each archived expert of ``run``."""
    rd, _ = RunDir.open(run)
    metas = [expert_meta(run, task_id) for task_id in rd.expert_ids()]
    return [(m["genome"], tuple(m["input_spec"]["shape"]), m["num_classes"]) for m in metas]


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--reference", default=None, help="the hand-picked net (default: the runs' configured genome)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        found = [e for run in args.runs for e in experts(run)]
    except RunDirError as exc:
        ap.error(str(exc))
    if not found:
        ap.error("no archived experts in the given run directories")
    shape, classes = found[0][1], found[0][2]
    reference = args.reference or RunDir.open(args.runs[0])[1].genome
    genomes = list(dict.fromkeys([reference] + [g for g, _, _ in found]))
    backend = create_backend("ort-cpu", threads=args.threads, warmup=30, iterations=args.iterations)
    models = {g: genome_model(Genome.parse(g), shape, classes) for g in genomes}
    rounds: dict[str, list[float]] = {g: [] for g in genomes}
    for _ in range(args.rounds):
        for g in genomes:
            rounds[g].append(backend.measure(models[g]).median)
    ms = {g: statistics.median(v) for g, v in rounds.items()}
    rows = [[g, f"{ms[g]:.4f}", f"{min(rounds[g]):.4f}-{max(rounds[g]):.4f}", f"{ms[g] / ms[reference]:.3f}"]
            for g in genomes]
    text = _common.table(["genome", "median ms", "rounds' medians", "/ reference"], rows)
    _common.write("expert_latency", args, {"settings": backend.settings(), "reference": reference,
                                           "runs": [str(r) for r in args.runs], "ms": ms, "rounds": rounds}, text)


if __name__ == "__main__":
    main()
