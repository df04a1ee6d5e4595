"""Latency-predictor accuracy, re-measured: random genomes the profile never saw (not its kernel-sampling, not its
calibration, not its held-out networks) are timed here with the profile's own backend settings and compared with
what the shipped profile predicts: share within +-10 %, Spearman rank correlation, RMSE; overall and per input shape.

    python bench/latency_predictor.py [--profile hw_profiles/cpu-ort-epyc-2core.yaml] [--n 100] [--seed 1]
    python bench/latency_predictor.py --quick     # 10 genomes per shape, fewer timed calls

Meaningful only on the machine the profile describes (or one like it): the CPU profile was measured on this 2-core
VM pinned to one core, so the script pins itself to the profile's recorded CPU set when it can.
"""

from __future__ import annotations

import logging
from pathlib import Path

import _common
import numpy as np

from pcl_edge._progress import progress
from pcl_edge.hw.backends import create_backend
from pcl_edge.hw.onnx_graphs import genome_model
from pcl_edge.hw.predictor import LatencyPredictor, accuracy_report
from pcl_edge.hw.profile import load_profile
from pcl_edge.hw.profiling import sample_genomes

DEFAULT_PROFILE = _common.ROOT / "hw_profiles" / "cpu-ort-epyc-2core.yaml"


def backend_name(profile) -> str:
    """The backend that measured the profile, from its recorded tool (``onnxruntime 1.x CPUExecutionProvider``)."""
    tool = profile.measurement.get("tool", "")
    if tool.startswith("onnxruntime"):
        return {"CPUExecutionProvider": "ort-cpu", "CUDAExecutionProvider": "ort-cuda",
                "TensorrtExecutionProvider": "ort-trt"}.get(tool.split()[-1], "ort-cpu")
    return tool.split()[0] if tool else "ort-cpu"


def seen_by_profile(profile, shapes) -> set:
    """Every genome the profile's own run sampled (kernels, calibration, held-out), re-drawn from its seed."""
    prov = profile.provenance or {}
    if "seed" not in prov:
        return set()
    # profiles made before "sampled_per_shape" was recorded used the CLI defaults: 150 kernel genomes + 50 held out
    n = prov.get("sampled_per_shape", 150 + prov.get("calibration_networks", 80) // max(1, len(shapes)) + 50)
    rng = np.random.default_rng(prov["seed"])
    return {(s, g) for s in shapes for g in sample_genomes(s, n, rng)}


def drift(pred: list[float], meas: list[float]) -> float:
    """Median of measured / predicted: about 1 when the machine is as it was profiled; a shift here (a shared VM
    slower today, other clocks, another power mode) says the profile should be measured again."""
    return round(float(np.median(np.asarray(meas) / np.asarray(pred))), 4)


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--profile", default=str(DEFAULT_PROFILE))
    ap.add_argument("--n", type=int, default=100, help="genomes per input shape")
    ap.add_argument("--seed", type=int, default=1, help="genome sampling seed (the profile used its own)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = load_profile(args.profile)
    shapes = [tuple(s) for s in (profile.provenance or {}).get("input_shapes", [[3, 32, 32]])]
    m, cpus = profile.measurement, _common.pin_like(profile)
    n = 10 if args.quick else args.n
    backend = create_backend(backend_name(profile), threads=int(m.get("intra_op_threads", 1)),
                             warmup=int(m.get("warmup", 20)), iterations=30 if args.quick else int(m.get("iterations",
                                                                                                          100)))
    exclude = seen_by_profile(profile, shapes)
    rng = np.random.default_rng(args.seed)
    rows, records, pred_all, meas_all, excluded = [], [], [], [], 0
    for s in shapes:
        genomes = []
        for g in sample_genomes(s, 2 * n, rng):
            if (s, g) in exclude:
                excluded += 1
            elif len(genomes) < n:
                genomes.append(g)
        predictor = LatencyPredictor(profile, s)
        pred, meas = [], []
        for g in progress(genomes, desc="x".join(map(str, s)), unit="net"):
            pred.append(predictor.predict(g))
            meas.append(backend.measure(genome_model(g, s)).median)
            records.append({"shape": list(s), "genome": str(g), "predicted_ms": round(pred[-1], 6),
                            "measured_ms": round(meas[-1], 6)})
        rep = accuracy_report(pred, meas)
        rows.append(["x".join(map(str, s)), rep["n"], rep["within_10pct"], rep["spearman"], rep["rmse_ms"],
                     float(np.median(meas)), drift(pred, meas)])
        pred_all += pred
        meas_all += meas
    overall = accuracy_report(pred_all, meas_all)
    rows.append(["all", overall["n"], overall["within_10pct"], overall["spearman"], overall["rmse_ms"],
                 float(np.median(meas_all)), drift(pred_all, meas_all)])
    shipped = profile.accuracy or {}
    text = (f"profile {Path(args.profile).name} ({profile.source}, measured {profile.provenance.get('date', '?')}); "
            f"re-measured with {backend.settings()['tool']}, {backend.threads} thread(s), CPUs {cpus}\n\n"
            + _common.table(["input", "n", "within +-10 %", "Spearman", "RMSE ms", "median measured ms",
                             "median measured / predicted"], rows)
            + f"\n\nthe profile's own held-out figures when it was made: within +-10 % {shipped.get('within_10pct')}, "
              f"Spearman {shipped.get('spearman')}, RMSE {shipped.get('rmse_ms')} ms (n={shipped.get('n')}); "
              f"{excluded} sampled genomes skipped as seen by the profile")
    _common.write("latency_predictor", args, {"profile": args.profile, "overall": overall, "by_shape": rows,
                                              "shipped_accuracy": shipped, "networks": records}, text)


if __name__ == "__main__":
    main()
