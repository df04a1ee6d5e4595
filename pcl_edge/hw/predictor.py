"""Latency prediction: genome -> kernels -> fused kernels (the profile's fusion rules) -> table lookups (a fallback
regression for keys the table lacks) -> a network-level model per input shape -> milliseconds. Pure and cheap (no
runtime imports): the search calls it for every candidate. Prediction never measures; measuring lives in
``hw.backends`` and ``hw.profiling``."""

from __future__ import annotations

import numpy as np

from ..space.genome import Genome
from .fusion import TENSORRT_RULES, FusedKernel, Rules, fused_of, genome_fused, parse_rules
from .kernels import genome_kernels
from .profile import Profile

# The network-level models ``pcl-edge profile`` chooses from by cross-validation on its calibration networks: the sum
# of fused-kernel times is the main feature; the others let the model learn what kernels timed in place do not add
# up to (per-kernel dispatch, the per-call cost, memory traffic between kernels).
NETWORK_FEATURES = ("kernels_ms", "nodes", "mbytes", "mflops", "blocks", "1")
NETWORK_MODELS: dict[str, tuple[str, ...]] = {
    "scale": ("kernels_ms",),
    "affine": ("kernels_ms", "1"),
    "nodes": ("kernels_ms", "nodes", "1"),
    "bytes": ("kernels_ms", "nodes", "mbytes", "1"),
    "full": ("kernels_ms", "nodes", "mbytes", "mflops", "blocks", "1"),
}


class LatencyPredictor:
    """The ``LatencyModel`` the search sees: ``predict(genome) -> ms`` at batch 1 on the profile's device."""

    def __init__(self, profile: Profile, input_shape: tuple[int, int, int], num_classes: int = 2) -> None:
        self.profile = profile
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.rules: Rules = profile_rules(profile)
        self._table = {k: v.median for k, v in profile.kernels.items()}
        fb = profile.fallback
        self._roofline = fb if fb.get("kind") == "roofline" else None
        self._coef = {op: np.asarray(c, float) for op, c in fb.get("coefficients", {}).items()}
        self._channel_block = int(fb.get("channel_block", 1))
        self._cache: dict[Genome, float] = {}
        self._blocks: dict = {}  # Kernel -> (ms, MFLOPs, MB, fused kernels)
        self.misses = 0  # fused kernels answered by the fallback, for reports

    def kernel_ms(self, k: FusedKernel) -> float:
        ms = self._table.get(k.key)
        if ms is not None:
            return ms
        self.misses += 1
        ms = self._table[k.key] = self._fallback_ms(k)  # memoised: the same kernel recurs across genomes
        return ms

    def _fallback_ms(self, k: FusedKernel) -> float:
        if self._roofline is not None:
            return roofline_ms(k, self._roofline)
        coef = self._coef.get(k.kind, self._coef.get("+".join(k.ops), self._coef.get("*")))
        if coef is None:
            raise KeyError(f"profile {self.profile.name!r} has neither kernel {k.key} nor a fallback for {k.kind!r}")
        return max(0.0, float(np.dot(coef, k.features(self._channel_block))))

    def fused(self, genome: Genome) -> list[FusedKernel]:
        return genome_fused(genome, self.input_shape, self.rules, self.num_classes)

    def features(self, genome: Genome) -> dict[str, float]:
        """The network-level features of ``NETWORK_FEATURES``."""
        ms = mflops = mbytes = nodes = 0.0
        for k in genome_kernels(genome, self.input_shape, self.num_classes):  # the search calls this per candidate
            b = self._blocks.get(k)
            if b is None:
                b = self._blocks[k] = self._block(k)
            ms += b[0]
            mflops += b[1]
            mbytes += b[2]
            nodes += b[3]
        return {"kernels_ms": ms, "nodes": nodes, "mbytes": mbytes, "mflops": mflops, "blocks": float(genome.depth),
                "1": 1.0}

    def _block(self, k) -> tuple[float, float, float, int]:
        """(ms, MFLOPs, MB, fused kernels) of one block: the same block recurs across genomes."""
        fused = fused_of(k, self.rules)
        feats = [f.features() for f in fused]
        return (sum(self.kernel_ms(f) for f in fused), sum(f[0] for f in feats), sum(f[1] for f in feats),
                len(fused))

    def raw(self, genome: Genome) -> float:
        """Sum of the fused kernels' times, before the network-level model."""
        return self.features(genome)["kernels_ms"]

    def predict(self, genome: Genome) -> float:
        """Network-level model of the features, times the profile's drift scale, never below the profile's empty
        call: no network runs faster than an empty call."""
        ms = self._cache.get(genome)
        if ms is None:
            ms = network_ms(self.calibration, self.features(genome)) * self.profile.scale
            ms = self._cache[genome] = max(ms, self.profile.overhead_ms)
        return ms

    @property
    def calibration(self) -> dict:
        """The profile's network model for this input shape (keyed ``CxHxW``); for a shape it was not calibrated at,
        the one of the calibrated shape nearest in pixels."""
        return shape_calibration(self.profile.calibration, self.input_shape)

    def n_nodes(self, genome: Genome) -> int:
        """Kernels the runtime runs for this genome (after fusion)."""
        return len(self.fused(genome))


def profile_rules(profile: Profile) -> Rules:
    fusion = profile.fusion or {}
    return parse_rules(fusion["rules"]) if "rules" in fusion else TENSORRT_RULES


def shape_calibration(cal: dict, shape: tuple[int, ...]) -> dict:
    key = "x".join(map(str, shape))
    if key in cal:
        return cal[key]
    shaped = {k: v for k, v in cal.items() if k.count("x") == 2}
    if not shaped:
        return cal.get("default", cal)

    def pixels(k: str) -> int:
        return int(np.prod([int(v) for v in k.split("x")]))

    return shaped[min(shaped, key=lambda k: abs(np.log(pixels(k) / np.prod(shape))))]


def network_ms(cal: dict, features: dict[str, float]) -> float:
    """``sum(coef[f] * feature[f])`` for the features the chosen model uses."""
    return max(0.0, sum(c * features[f] for f, c in cal["coef"].items()))


def roofline_ms(k: FusedKernel, r: dict) -> float:
    """max(compute time, memory time) at derated peaks, plus a fixed cost per fused layer (launch, sync)."""
    mflops, mbytes, _ = k.features()
    compute = mflops * 1e6 / (r["peak_gflops"] * 1e9 * r["compute_efficiency"])
    memory = mbytes * 1e6 / (r["bandwidth_gbs"] * 1e9 * r["memory_efficiency"])
    return 1e3 * max(compute, memory) + r["layer_overhead_ms"]


def _nnls_relative(X: np.ndarray, y: np.ndarray) -> list[float]:
    """Non-negative least squares on relative error (rows scaled by 1/y): small kernels count as much as big ones."""
    from scipy.optimize import nnls

    w = 1.0 / np.maximum(y, 1e-6)
    return [round(float(c), 9) for c in nnls(X * w[:, None], y * w)[0]]


CHANNEL_BLOCKS = (1, 4, 8, 16)


def _fit_pools(kernels: list[FusedKernel], y: np.ndarray, block: int, min_rows: int) -> dict[str, list[float]]:
    X = np.array([k.features(block) for k in kernels])
    coef = {"*": _nnls_relative(X, y)}
    for pool in (lambda k: "+".join(k.ops), lambda k: k.kind):
        for name in sorted({pool(k) for k in kernels}):
            rows = [i for i, k in enumerate(kernels) if pool(k) == name]
            if len(rows) >= min_rows:
                coef[name] = _nnls_relative(X[rows], y[rows])
    return coef


def _pool_predict(coef: dict, k: FusedKernel, block: int) -> float:
    c = coef.get(k.kind, coef.get("+".join(k.ops), coef["*"]))
    return max(0.0, float(np.dot(c, k.features(block))))


def fit_fallback(kernels: list[FusedKernel], ms: list[float], min_rows: int = 4, folds: int = 5) -> dict:
    """Non-negative linear models of latency on (MFLOPs, MB moved, 1), from the most specific pool that has enough
    kernels: the kernel's kind (chain, size, stride, depthwise), its chain, then every kernel (``*``). The channel
    block the features round to (1 = none; onnxruntime's NCHWc computes 8 or 16 channels at a time) is chosen by
    cross-validation on the table: the kernels it lacks are predicted as well as the ones it holds would be."""
    y = np.asarray(ms, float)
    split = np.array_split(np.random.default_rng(0).permutation(len(y)), max(2, min(folds, len(y))))
    scores = {}
    for block in CHANNEL_BLOCKS:
        rel = []
        for test in split:
            train = np.setdiff1d(np.arange(len(y)), test)
            coef = _fit_pools([kernels[i] for i in train], y[train], block, min_rows)
            rel += [abs(_pool_predict(coef, kernels[i], block) - y[i]) / max(y[i], 1e-6) for i in test]
        scores[block] = float(np.median(rel))
    block = min(scores, key=lambda b: (scores[b], b))
    return {"kind": "linear", "features": ["mflops", "mbytes", "1"], "channel_block": block,
            "cv_median_relative_error": {str(b): round(v, 4) for b, v in scores.items()},
            "coefficients": _fit_pools(kernels, y, block, min_rows)}


def fit_network_model(features: list[dict], measured: list[float], names: tuple[str, ...]) -> dict[str, float]:
    """Least squares on relative error: measured ~ sum(coef * feature)."""
    A = np.array([[f[n] for n in names] for f in features], float)
    y = np.asarray(measured, float)
    w = 1.0 / y
    coef = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)[0]
    return {n: round(float(c), 9) for n, c in zip(names, coef)}


def choose_network_model(features: list[dict], measured: list[float], folds: int = 5, seed: int = 0) -> dict:
    """The network model with the best cross-validated share within +-10 % on the calibration networks (ties: the
    lower relative RMSE, then the fewer features), refitted on all of them. Held-out networks are never used."""
    y = np.asarray(measured, float)
    order = np.random.default_rng(seed).permutation(len(y))
    split = np.array_split(order, min(folds, len(y)))
    scores = {}
    for name, cols in NETWORK_MODELS.items():
        if len(cols) >= len(y) - len(split[0]):
            continue
        pred = np.empty_like(y)
        for test in split:
            train = np.setdiff1d(order, test)
            coef = fit_network_model([features[i] for i in train], list(y[train]), cols)
            pred[test] = [network_ms({"coef": coef}, features[i]) for i in test]
        rel = np.abs(pred - y) / y
        scores[name] = (float(np.mean(rel <= 0.1)), float(np.sqrt(np.mean(rel ** 2))), len(cols))
    best = max(scores, key=lambda n: (scores[n][0], -scores[n][1], -scores[n][2]))
    return {"model": best, "coef": fit_network_model(features, list(y), NETWORK_MODELS[best]),
            "cv_within_10pct": {n: round(s[0], 4) for n, s in scores.items()}, "folds": len(split)}


def accuracy_report(predicted: list[float], measured: list[float]) -> dict:
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return {"n": int(len(m)), "within_10pct": round(float(np.mean(np.abs(p - m) <= 0.1 * m)), 4),
            "rmse_ms": round(float(np.sqrt(np.mean((p - m) ** 2))), 6),
            "spearman": round(float(spearmanr(p, m).statistic), 4)}


