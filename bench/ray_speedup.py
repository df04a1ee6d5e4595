"""Ray executor speed-up: population 8 on Split Digits, 2 local Ray workers (1 thread each) against the local
executor with 1 thread, side by side in one process; and whether both give the same experts.

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
    local = evolve(cfg, out=work / "local", progress=False, executor_options={"threads": 1})
    local_s = time.perf_counter() - t0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.get([ray.remote(lambda: 0).remote() for _ in range(4)])  # workers up before the clock starts
    t0 = time.perf_counter()
    distributed = evolve(cfg, out=work / "ray", progress=False, executor="ray",
                         executor_options={"cpus_per_trial": 1})
    ray_s = time.perf_counter() - t0
    ray.shutdown()
    a, b = experts(work / "local"), experts(work / "ray")
    same = len(a) == len(b) and all(ga == gb and all(torch.equal(sa[k], sb[k]) for k in sa)
                                    for (ga, sa), (gb, sb) in zip(a, b))
    rows = [["local, 1 thread", round(local_s, 1), local["acc"]], ["Ray, 2 workers x 1 thread", round(ray_s, 1),
                                                                  distributed["acc"]]]
    text = (_common.table(["executor", "wall s", "ACC"], rows)
            + f"\n\nspeed-up {local_s / ray_s:.2f}x; identical experts: {same}")
    _common.write("ray_speedup", args, {"local_s": local_s, "ray_s": ray_s, "speedup": local_s / ray_s,
                                        "identical_experts": same, "population": cfg.population,
                                        "generations": cfg.generations}, text)


if __name__ == "__main__":
    main()
