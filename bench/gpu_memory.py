"""Device memory over a long search on a GPU: the `gpu` executor trains the same random genomes map after map, and
after each map the allocator's live (allocated) and held (reserved) GiB are read, for each cache limit of
``--limits`` (``cuda_graph.CACHE_LIMIT``: how full the device may be before a capture empties the cache; above 1:
never). Every captured graph's pool stays cached when the graph is freed. Run on a GPU (a device call):

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 bench/gpu_memory.py --data imagefolder:.gpu_data/cifar10-train-jpg.tar.xz
"""

from __future__ import annotations

import logging
import time

import _common
import numpy as np

log = logging.getLogger("gpu_memory")


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--data", default="imagefolder:.gpu_data/cifar10-train-jpg.tar.xz")
    ap.add_argument("--genomes", type=int, default=48)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--maps", type=int, default=3)
    ap.add_argument("--limits", default="1.01,0.1", help="cache limits to run, as shares of the device's memory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    import torch

    from pcl_edge.data import build_stream
    from pcl_edge.evolve import cuda_graph, preset_config
    from pcl_edge.evolve.candidate import Candidate, train_candidate
    from pcl_edge.evolve.executors import create_executor
    from pcl_edge.evolve.pcl import task_space
    from pcl_edge.evolve.recipe import TrainConfig
    from pcl_edge.evolve.trainer import TensorTask

    cfg = preset_config("gpu", args.data, tasks="5x2")
    stream = build_stream(args.data, cfg.tasks, 0)
    view = TensorTask.from_task(stream.tasks[0]).search_view()
    space = task_space(cfg, stream.tasks[0])
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(args.genomes)]
    recipe = TrainConfig(steps=args.steps, batch_size=128, lr=0.1, augment=cfg.proxy.augment, threads=1)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_memory measures a CUDA device; this process sees none")
    gb = 2**-30
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "genomes": args.genomes, "steps": args.steps, "slots": args.slots,
              "runs": []}
    for limit in (float(v) for v in args.limits.split(",")):
        cuda_graph.CACHE_LIMIT = limit
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        ex = create_executor("gpu", progress=False, slots=args.slots)
        run = {"limit": limit, "maps": []}
        for m in range(args.maps):
            cands = [Candidate(uid=f"m{m}-g{i}", genome=g, op="init", run_seed=m) for i, g in enumerate(genomes)]
            start = time.perf_counter()
            out = ex.map(train_candidate, cands, shared={"task": view, "cfg": recipe})
            row = {"map": m, "seconds": round(time.perf_counter() - start, 1),
                   "failed": sum(1 for i in out if i.extra.get("failed")),
                   "allocated_gib": round(torch.cuda.memory_allocated() * gb, 2),
                   "reserved_gib": round(torch.cuda.memory_reserved() * gb, 2),
                   "peak_reserved_gib": round(torch.cuda.max_memory_reserved() * gb, 2)}
            log.info("limit %.2f %s", limit, row)
            run["maps"].append(row)
        result["runs"].append(run)
    _common.write("gpu_memory", args, result)


if __name__ == "__main__":
    main()
