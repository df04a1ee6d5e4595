"""Latency prediction: genome -> kernels -> table lookups (fallback regression for keys the table lacks) ->
per-network overhead -> calibration -> milliseconds. Pure and cheap (no runtime imports): the search calls it for
every candidate. Prediction never measures; measuring lives in ``hw.backends``."""

from __future__ import annotations

import numpy as np

from ..space.genome import Genome
from .kernels import Kernel, genome_kernels, graph_nodes
from .profile import Profile


class LatencyPredictor:
    """The ``LatencyModel`` the search sees: ``predict(genome) -> ms`` at batch 1 on the profile's device."""

    def __init__(self, profile: Profile, input_shape: tuple[int, int, int], num_classes: int = 2) -> None:
        self.profile = profile
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self._table = {k: v.median for k, v in profile.kernels.items()}
        fb = profile.fallback
        self._roofline = fb if fb.get("kind") == "roofline" else None
        self._coef = {op: np.asarray(c, float) for op, c in fb.get("coefficients", {}).items()}
        self._cache: dict[Genome, float] = {}
        self.misses = 0  # kernels answered by the fallback, for reports

    def kernel_ms(self, k: Kernel) -> float:
        ms = self._table.get(k.key)
        if ms is not None:
            return ms
        self.misses += 1
        ms = self._table[k.key] = self._fallback_ms(k)  # memoised: the same kernel recurs across genomes
        return ms

    def _fallback_ms(self, k: Kernel) -> float:
        if self._roofline is not None:
            return roofline_ms(k, self._roofline)
        coef = self._coef.get(k.op, self._coef.get("*"))
        if coef is None:
            raise KeyError(f"profile {self.profile.name!r} has neither kernel {k.key} nor a fallback for {k.op!r}")
        return max(0.0, float(np.dot(coef, k.features())))

    def raw(self, genome: Genome) -> float:
        """Sum of kernel latencies plus the per-network overhead, before calibration."""
        return sum(self.kernel_ms(k) for k in genome_kernels(genome, self.input_shape, self.num_classes)) + \
            self.profile.overhead_ms

    def predict(self, genome: Genome) -> float:
        """Calibrated latency, never below the profile's per-network overhead: no network runs faster than an empty
        call (a calibration's negative offset would otherwise predict ~0 ms for the smallest networks)."""
        ms = self._cache.get(genome)
        if ms is None:
            ms = calibrate(self.calibration, self.raw(genome), self.n_nodes(genome))
            ms = self._cache[genome] = max(ms, self.profile.overhead_ms)
        return ms

    @property
    def calibration(self) -> dict:
        """The profile's calibration for this input shape when it has one (keyed ``CxHxW``), else its default."""
        cal = self.profile.calibration
        return cal.get("x".join(map(str, self.input_shape)), cal.get("default", cal))

    def n_nodes(self, genome: Genome) -> int:
        return sum(graph_nodes(k) for k in genome_kernels(genome, self.input_shape, self.num_classes))


def calibrate(cal: dict, raw_ms: float, n_nodes: int) -> float:
    """measured ~ scale * (sum of kernels + overhead) + per_node * graph operators + offset (per_node: the dispatch
    cost per operator, which a lone kernel's timing does not show in proportion)."""
    return max(0.0, cal["scale"] * raw_ms + cal.get("per_node", 0.0) * n_nodes + cal["offset"])


def roofline_ms(k: Kernel, r: dict) -> float:
    """max(compute time, memory time) at derated peaks, plus a fixed per-layer cost (launch, sync)."""
    mflops, mbytes, _ = k.features()
    compute = mflops * 1e6 / (r["peak_gflops"] * 1e9 * r["compute_efficiency"])
    memory = mbytes * 1e6 / (r["bandwidth_gbs"] * 1e9 * r["memory_efficiency"])
    return 1e3 * max(compute, memory) + r["layer_overhead_ms"]


def fit_fallback(kernels: list[Kernel], ms: list[float]) -> dict:
    """Per-op non-negative least squares of latency on (MFLOPs, MB moved, 1); ``*`` pools every op."""
    from scipy.optimize import nnls

    def fit(rows: list[int]) -> list[float]:
        X = np.array([kernels[i].features() for i in rows])
        y = np.array([ms[i] for i in rows])
        return [round(float(c), 9) for c in nnls(X, y)[0]]

    coef = {"*": fit(list(range(len(kernels))))}
    for op in sorted({k.op for k in kernels}):
        rows = [i for i, k in enumerate(kernels) if k.op == op]
        if len(rows) >= 4:
            coef[op] = fit(rows)
    return {"kind": "linear", "features": ["mflops", "mbytes", "1"], "coefficients": coef}


def fit_calibration(raw_ms: list[float], measured_ms: list[float], n_nodes: list[int] | None = None) -> dict:
    """Least squares on whole networks: measured ~ scale * raw + offset (+ per_node * operators when given)."""
    cols = [np.asarray(raw_ms, float)] + ([np.asarray(n_nodes, float)] if n_nodes is not None else [])
    A = np.stack([*cols, np.ones(len(raw_ms))], 1)
    coef = np.linalg.lstsq(A, np.asarray(measured_ms, float), rcond=None)[0]
    out = {"scale": round(float(coef[0]), 6), "offset": round(float(coef[-1]), 6)}
    if n_nodes is not None:
        out["per_node"] = round(float(coef[1]), 7)
    return out


def accuracy_report(predicted: list[float], measured: list[float]) -> dict:
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return {"n": int(len(m)), "within_10pct": round(float(np.mean(np.abs(p - m) <= 0.1 * m)), 4),
            "rmse_ms": round(float(np.sqrt(np.mean((p - m) ** 2))), 6),
            "spearman": round(float(spearmanr(p, m).statistic), 4)}
