"""Ray executor speed-up: population 8 on Split Digits, 2 local Ray workers (1 thread each) and the local executor's
2 worker processes (the default) against the local executor in one process (``--workers 1``), side by side in one
bench run; and whether all three give the same experts.

    python bench/ray_speedup.py [--generations 3]
    python bench/ray_speedup.py --quick     (1 generation, population 4, preset tiny budgets)
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import _common
import torch

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.evolve.rundir import RunDir


def experts(run: Path) -> list[tuple[str, dict]]:
    rd = RunDir(run)
    return [(b["genome"], b["state_dict"]) for b in (rd.load_expert(i) for i in rd.expert_ids())]


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--generations", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cfg = (preset_config("tiny", "digits", population=4, generations=1) if args.quick
           else preset_config("cpu", "digits", population=8, generations=args.generations))
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    local = evolve(cfg, out=work / "local", progress=False, executor_options={"workers": 1})
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = evolve(cfg, out=work / "workers", progress=False, executor_options={"workers": 2})
    procs_s = time.perf_counter() - t0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.get([ray.remote(lambda: 0).remote() for _ in range(4)])  # workers up before the clock starts
    t0 = time.perf_counter()
    distributed = evolve(cfg, out=work / "ray", progress=False, executor="ray",
                         executor_options={"cpus_per_trial": 1})
    ray_s = time.perf_counter() - t0
    ray.shutdown()
    a = experts(work / "local")
    same = all(_same(a, experts(work / other)) for other in ("workers", "ray"))
    rows = [["local, in this process (--workers 1)", round(local_s, 1), local["acc"]],
            ["local, 2 worker processes x 1 thread (the default)", round(procs_s, 1), procs["acc"]],
            ["Ray, 2 workers x 1 thread", round(ray_s, 1), distributed["acc"]]]
    text = (_common.table(["executor", "wall s", "ACC"], rows)
            + f"\n\nspeed-up over in-process: worker processes {local_s / procs_s:.2f}x, Ray {local_s / ray_s:.2f}x; "
            + f"identical experts: {same}")
    _common.write("ray_speedup", args, {"local_s": local_s, "workers_s": procs_s, "ray_s": ray_s,
                                        "speedup": local_s / ray_s, "workers_speedup": local_s / procs_s,
                                        "identical_experts": same, "population": cfg.population,
                                        "generations": cfg.generations}, text)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(ga == gb and all(torch.equal(sa[k], sb[k]) for k in sa)
                                    for (ga, sa), (gb, sb) in zip(a, b))


if __name__ == "__main__":
    main()
