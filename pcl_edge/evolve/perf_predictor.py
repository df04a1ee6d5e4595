"""A learned performance predictor: ranks children before they are trained, so that many mutations are screened and
only the predicted best are trained.

It learns online from every child this run has trained (all tasks so far: the history PCL carries from task to
task). Its inputs are known before training: the child's architecture (from the analytic cost model, no torch), the
parent's validation accuracy on the current task, and what the mutation changed. Its label is the validation
accuracy the child reached at the first rung. Accuracy levels differ between tasks and generations, so only the
order *within* a generation is learned: the regression model fits accuracies centred per generation, the pairwise
model (RankNet with a linear scorer, the kind of ranking loss the NAS-predictor literature finds better with few
labels) fits which of two children of the same generation did better.

Small and pure: numpy and scipy, deterministic for the same history. Models are in a registry; which one the search
uses is a config choice (``EvolveConfig.perf_predictor``) made by ``bench/perf_predictor.py``: the pairwise loss
ranked better on 3 of 4 replayed runs, but neither model beat the parent's accuracy alone reliably (BENCHMARKS.md),
which is why both shrink towards it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._registry import Registry
from ..space import Genome
from ..space.cost import genome_flops, genome_params

OPS = ("res", "dws", "mbconv")
# the mutation operators (space.MUTATIONS) and crossover: what the child's op says was done to its parent
CHANGES = ("add_double", "add_down", "change_block", "change_expansion", "change_kernel", "depth_down", "depth_up",
           "move_double", "move_down", "remove_double", "remove_down", "width_down", "width_up", "crossover")
FEATURES = ("parent_acc", "log_params", "log_flops", "d_log_params", "d_log_flops", "depth", "d_depth", "log_width",
            "downs", "doubles", *(f"frac_{op}" for op in OPS), "mean_kernel", "mean_expansion",
            *(f"op_{c}" for c in CHANGES))
MIN_LABELS = 12  # fewer labelled children than this: no screening (the first children are drawn unscreened)
MIN_GROUPS = 2
CV_MIN_GROUPS = 3  # from this many generations on, the regularisation is chosen by leave-one-generation-out CV
# per label (ridge) / per unit of pair weight (pairwise); the largest is, in effect, the prior alone
ALPHAS = (0.1, 1.0, 10.0, 1000.0)


def _arch(g: Genome, shape: tuple[int, int, int], num_classes: int) -> tuple[float, float]:
    return math.log2(genome_params(g, shape[0], num_classes)), math.log2(max(1, genome_flops(g, shape, num_classes)))


def features(genome: Genome, parent: Genome | None, parent_acc: float | None, op: str,
             shape: tuple[int, int, int], num_classes: int) -> list[float]:
    """The predictor's view of one child, before any training; in the order of ``FEATURES``."""
    lp, lf = _arch(genome, shape, num_classes)
    plp, plf = _arch(parent, shape, num_classes) if parent is not None else (lp, lf)
    layers = [genome.stages[genome.stage_of(i)] for i in range(genome.depth)]
    frac = [sum(b.op == o for b in layers) / genome.depth for o in OPS]
    changed = [float(c in op) for c in CHANGES]
    return [parent_acc if parent_acc is not None else float("nan"), lp, lf, lp - plp, lf - plf, genome.depth,
            genome.depth - (parent.depth if parent is not None else genome.depth), math.log2(genome.width),
            len(genome.down), len(genome.double), *frac, float(np.mean([b.kernel for b in layers])),
            float(np.mean([b.expansion for b in layers])), *changed]


def _standardise(X: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    X = np.where(np.isnan(X), 0.0, X)
    if mean is None:
        mean, std = X.mean(0), X.std(0)
        std = np.where(std > 1e-9, std, 1.0)
    return (X - mean) / std, mean, std


def _prior(Z: np.ndarray, fit_1d) -> np.ndarray:
    """The prior both models shrink towards: the parent's accuracy alone (a strong ranker by itself: a child starts
    from its parent's weights), its weight fitted by the model's own loss on that one feature. Strong regularisation
    thus falls back to "children of better parents do better", never to "all children are equal"."""
    w0 = np.zeros(Z.shape[1])
    w0[0] = fit_1d(Z[:, :1])[0]
    return w0


class RidgeRegression:
    """Plain regression: ridge on accuracies centred per generation (closed form), shrunk towards the prior."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def _solve(self, Z: np.ndarray, yc: np.ndarray, alpha: float, w0: np.ndarray) -> np.ndarray:
        return np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ yc + alpha * w0)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> RidgeRegression:
        Z, self.mean, self.std = _standardise(X)
        yc = y - np.array([y[groups == gr].mean() for gr in groups])
        w0 = _prior(Z, lambda z: self._solve(z, yc, 1e-6, np.zeros(1)))
        self.w = self._solve(Z, yc, self.alpha * len(y), w0)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        return _standardise(X, self.mean, self.std)[0] @ self.w


class PairwiseRanker:
    """RankNet with a linear scorer: logistic loss on every pair of the same generation whose accuracies differ,
    each pair weighted by how much they differ (a near-tie says little), shrunk towards the prior; L-BFGS."""

    def __init__(self, alpha: float = 1.0, min_gap: float = 1e-6) -> None:
        self.alpha, self.min_gap = alpha, min_gap

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> PairwiseRanker:
        Z, self.mean, self.std = _standardise(X)
        i, j = np.triu_indices(len(y), 1)
        keep = (groups[i] == groups[j]) & (np.abs(y[i] - y[j]) > self.min_gap)
        i, j = i[keep], j[keep]
        s, wt = np.sign(y[i] - y[j]), np.abs(y[i] - y[j])
        wt = wt / wt.sum() if len(wt) else wt
        if not len(i):
            self.w = np.zeros(Z.shape[1])
            return self
        w0 = _prior(Z, lambda z: self._solve(z[i] - z[j], s, wt, 1e-6, np.zeros(1)))
        self.w = self._solve(Z[i] - Z[j], s, wt, self.alpha, w0)
        return self

    @staticmethod
    def _solve(D: np.ndarray, s: np.ndarray, wt: np.ndarray, alpha: float, w0: np.ndarray) -> np.ndarray:
        from scipy.optimize import minimize

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            m = s * (D @ w)
            p = 1.0 / (1.0 + np.exp(np.clip(m, -50, 50)))  # d/dm of log(1 + e^-m) is -p
            return float(wt @ np.logaddexp(0.0, -m) + 0.5 * alpha * (w - w0) @ (w - w0)), \
                -(D.T @ (wt * s * p)) + alpha * (w - w0)

        return minimize(loss, w0.copy(), jac=True, method="L-BFGS-B").x

    def score(self, X: np.ndarray) -> np.ndarray:
        return _standardise(X, self.mean, self.std)[0] @ self.w


PERF_PREDICTORS: Registry[type] = Registry("performance predictor")
PERF_PREDICTORS.register("ridge")(RidgeRegression)
PERF_PREDICTORS.register("pairwise")(PairwiseRanker)


@dataclass
class History:
    """Every labelled child: its features, its first-rung validation accuracy, and its generation (the group)."""

    X: list[list[float]]
    y: list[float]
    groups: list[str]

    @classmethod
    def empty(cls) -> History:
        return cls([], [], [])

    def add(self, rows: Sequence[list[float]], accs: Sequence[float], group: str) -> None:
        self.X += [list(r) for r in rows]
        self.y += [float(a) for a in accs]
        self.groups += [group] * len(rows)

    def ready(self) -> bool:
        return len(self.y) >= MIN_LABELS and len(set(self.groups)) >= MIN_GROUPS

    def fit(self, name: str):
        """The model ``name`` fitted on the whole history, its regularisation chosen by leave-one-generation-out
        cross-validation (mean Kendall tau on the held-out generation) when there are enough generations."""
        X, y, groups = np.array(self.X, float), np.array(self.y, float), np.array(self.groups)
        factory = PERF_PREDICTORS.get(name)
        names = list(dict.fromkeys(self.groups))
        if len(names) < CV_MIN_GROUPS:  # too little to cross-validate: trust the prior
            return factory(alpha=max(ALPHAS)).fit(X, y, groups)

        def cv(alpha: float) -> float:
            taus = []
            for held in names:
                out = groups == held
                tau = kendall_tau(factory(alpha=alpha).fit(X[~out], y[~out], groups[~out]).score(X[out]), y[out])
                taus.append(0.0 if tau is None else tau)
            return float(np.mean(taus))

        best = max(ALPHAS, key=lambda a: (cv(a), a))  # ties: the stronger regularisation
        model = factory(alpha=best).fit(X, y, groups)
        model.cv_alpha = best
        return model


def kendall_tau(pred: Sequence[float], actual: Sequence[float]) -> float | None:
    """Kendall's tau-b between predicted scores and reached accuracies (None when undefined: < 2 or all tied)."""
    from scipy.stats import kendalltau

    if len(pred) < 2:
        return None
    tau = kendalltau(pred, actual).statistic
    return None if tau is None or np.isnan(tau) else float(tau)


def top_k_precision(pred: Sequence[float], actual: Sequence[float], k: int) -> float | None:
    """Of the k children predicted best, the fraction that are among the k that really did best (ties in the
    accuracies count in the children's favour: any child scoring at least the k-th best accuracy is a hit)."""
    if not pred or k < 1:
        return None
    k = min(k, len(pred))
    top_pred = np.argsort(-np.asarray(pred), kind="stable")[:k]
    kth = np.sort(np.asarray(actual))[::-1][k - 1]
    return float(np.mean(np.asarray(actual)[top_pred] >= kth))
