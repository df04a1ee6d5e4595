"""Latency-predictor throughput: distinct random genomes per second (no cache hits), on a shipped profile.

    python bench/predictor_throughput.py [--profile hw_profiles/jetson-orin-nano-8gb.yaml] [--n 20000]
    python bench/predictor_throughput.py --quick     (2,000 genomes)
"""

from __future__ import annotations

import time

import _common
import numpy as np

from pcl_edge.hw.fusion import block_ops, fused_of, lower
from pcl_edge.hw.kernels import genome_kernels
from pcl_edge.hw.predictor import LatencyPredictor
from pcl_edge.hw.profile import load_profile
from pcl_edge.space import SearchSpace, mutate


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--profile", default="hw_profiles/jetson-orin-nano-8gb.yaml")
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    if args.quick:
        args.n = min(args.n, 2000)
    space = SearchSpace(in_channels=3, input_size=32, max_params=10**9)
    rng = np.random.default_rng(0)
    genomes, g = set(), space.sample(rng)
    for _ in range(20 * args.n):  # a random walk of mutations: bounded, distinct genomes
        g, _ = mutate(g, space, rng)
        genomes.add(g)
        if len(genomes) >= args.n:
            break
    genomes = list(genomes)
    pred = LatencyPredictor(load_profile(args.profile), (3, 32, 32))
    genome_kernels.cache_clear()
    lower.cache_clear()
    fused_of.cache_clear()
    block_ops.cache_clear()
    start = time.perf_counter()
    for g in genomes:
        pred.predict(g)
    dt = time.perf_counter() - start
    text = (f"{len(genomes)} distinct genomes in {dt:.3f} s: {len(genomes) / dt:,.0f} genomes/s "
            f"(profile {args.profile}, cold caches)")
    _common.write("predictor_throughput", args, {"profile": args.profile, "genomes": len(genomes), "seconds": dt,
                                                 "genomes_per_s": len(genomes) / dt}, text)


if __name__ == "__main__":
    main()
