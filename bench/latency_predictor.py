"""Latency-predictor accuracy, re-measured later: networks the profile never saw (not its kernel, calibration or
held-out sets, re-drawn from its seed) are timed here with the profile's own backend settings, in interleaved
rounds, and compared with what the profile predicts: as it was shipped, and after ``profile --check --rescale``
(the drift measured on its reference set, done first, in the same run). Share within +-10 % next to the noise floor
(what a perfect predictor would score against single rounds), Spearman, RMSE; per sampler (search-like mutants of
populations, uniform) and per input shape.

    python bench/latency_predictor.py [--profile hw_profiles/cpu-ort-epyc-2core.yaml] [--n 50] [--seed 1]
    python bench/latency_predictor.py --quick     # 6 networks per shape and sampler, 2 rounds, fewer calls

Meaningful only on the machine the profile describes (or one like it): the CPU profile was measured on this 2-core
VM pinned to one core, so the script pins itself to the profile's recorded CPU set when it can.
"""

from __future__ import annotations

import logging
from pathlib import Path

import _common
import numpy as np

from pcl_edge.hw.backends import create_backend
from pcl_edge.hw.drift import backend_of
from pcl_edge.hw.onnx_graphs import genome_model
from pcl_edge.hw.predictor import LatencyPredictor
from pcl_edge.hw.profile import load_profile
from pcl_edge.hw.profiling import (
    check_profile,
    draw_sets,
    holdout_accuracy,
    pin_like,
    random_genomes,
    rescaled,
    search_genomes,
    shape_key,
    time_networks,
)

DEFAULT_PROFILE = _common.ROOT / "hw_profiles" / "cpu-ort-epyc-2core.yaml"


def seen_by_profile(profile, shapes) -> set:
    """Every network the profile's own run drew (kernels, calibration, held-out), re-drawn from its seed."""
    prov = profile.provenance or {}
    if "seed" not in prov or "sets" not in prov:
        return set()
    sets = draw_sets(shapes, np.random.default_rng(prov["seed"]), *prov["sets"])
    return {(s, g) for s in shapes for kind in sets[s].values() for g in kind}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE))
    ap.add_argument("--n", type=int, default=50, help="networks per input shape and sampler")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per network")
    ap.add_argument("--seed", type=int, default=1, help="network sampling seed (the profile used its own)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = load_profile(args.profile)
    shapes = [tuple(s) for s in (profile.provenance or {}).get("input_shapes", [[3, 32, 32]])]
    m, cpus = profile.measurement, pin_like(profile)
    n, rounds = (6, 2) if args.quick else (args.n, args.rounds)
    backend = create_backend(backend_of(profile), threads=int(m.get("intra_op_threads", 1)),
                             warmup=int(m.get("warmup", 20)), iterations=30 if args.quick else int(m.get("iterations",
                                                                                                          100)))
    check = check_profile(profile, backend, rounds)
    fixed = rescaled(profile, check)
    exclude = seen_by_profile(profile, shapes)
    rng = np.random.default_rng(args.seed)
    rows = {"shipped": [], "rescaled": []}
    skipped = 0
    for s in shapes:
        drawn = {"search": search_genomes(s, 2 * n, rng), "random": random_genomes(s, 2 * n, rng)}
        for kind, pool in drawn.items():
            gs = [g for g in pool if (s, g) not in exclude][:n]
            skipped += len(pool) - len([g for g in pool if (s, g) not in exclude])
            r = time_networks(backend, [genome_model(g, s) for g in gs], rounds, f"{kind} {shape_key(s)}")
            for name, prof in (("shipped", profile), ("rescaled", fixed)):
                pred = LatencyPredictor(prof, s)
                rows[name] += [{"shape": shape_key(s), "sampler": kind, "genome": str(g),
                                "predicted_ms": round(pred.predict(g), 6), "measured_ms": round(float(rs.min()), 6),
                                "rounds_ms": [round(float(v), 6) for v in rs]} for g, rs in zip(gs, r.T)]
    acc = {name: holdout_accuracy(r) for name, r in rows.items()}
    table = []
    for name, a in acc.items():
        for label, block in [("all", a)] + [(k, v) for k, v in a["by_sampler"].items()] + \
                            [(k, v) for k, v in a["by_shape"].items()]:
            ratio = np.median([r["measured_ms"] / r["predicted_ms"] for r in rows[name]
                               if label in ("all", r["sampler"], r["shape"])])
            table.append([name, label, block["n"], block["within_10pct"], block.get("noise_floor_within_10pct"),
                          block["spearman"], block["rmse_ms"], round(float(ratio), 4)])
    shipped = profile.accuracy or {}
    text = (f"profile {Path(args.profile).name} ({profile.source}, measured {profile.provenance.get('date', '?')}); "
            f"re-measured with {backend.settings()['tool']}, {backend.threads} thread(s), CPUs {cpus}, {rounds} "
            f"interleaved rounds\n"
            f"check first: drift ratio {check['ratio']} (now / profiled, {check['n']} reference networks, "
            f"{check['seconds']} s) -> rescaled scale {fixed.scale}\n\n"
            + _common.table(["profile", "networks", "n", "within +-10 %", "noise floor", "Spearman", "RMSE ms",
                             "median measured / predicted"], table)
            + f"\n\nthe profile's own held-out figures when it was made: within +-10 % {shipped.get('within_10pct')}, "
              f"noise floor {shipped.get('noise_floor_within_10pct')}, Spearman {shipped.get('spearman')} "
              f"(n={shipped.get('n')}); {skipped} drawn networks skipped as seen by the profile")
    _common.write("latency_predictor", args, {"profile": args.profile, "check": {k: v for k, v in check.items()
                                                                                 if k != "networks"},
                                              "accuracy": acc, "networks": rows}, text)


if __name__ == "__main__":
    main()
