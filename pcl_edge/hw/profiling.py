"""``pcl-edge profile``: measure a target device into a hardware profile.

1. detect which operator chains the runtime fuses (``hw.fusion``: probe networks, the optimised graph);
2. draw networks the way the search draws them (populations and their mutants) and uniformly at random;
3. time the fused kernels *in place*, inside whole networks (onnxruntime's profiler), or, on backends that cannot,
   alone less the measured empty call; fit a fallback regression for kernels the table lacks;
4. time calibration networks and choose the network-level model per input shape by cross-validation on them;
5. time held-out networks of both kinds in interleaved rounds (ABAB), record the repeat-to-repeat spread and the
   noise floor next to the predictor's hit rate; keep a small reference set for ``profile --check``;
6. record device, software, settings and provenance, and plot predicted vs measured.
Runs where the device is: needs onnx and the backend's runtime, never torch."""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .._progress import progress
from ..space.genome import Genome
from ..space.mutation import crossover, mutate
from ..space.search_space import SearchSpace
from .fusion import TENSORRT_RULES, FusedKernel, Rules, assign_nodes, detect_rules, lower, rule_names
from .kernels import Kernel, genome_kernels
from .onnx_graphs import fused_model, genome_model, kernels_model
from .predictor import LatencyPredictor, accuracy_report, choose_network_model, fit_fallback
from .profile import SCHEMA_VERSION, KernelStats, Profile

log = logging.getLogger(__name__)

# what the search space looks like in the presets that use a target (``evolve.config``: cpu preset)
SPACE = {"max_depth": 8, "max_params": 300_000, "init_max_depth": 4, "population": 6}


def _space(shape: tuple[int, int, int]) -> SearchSpace:
    return SearchSpace(in_channels=shape[0], input_size=min(shape[1:]), max_depth=SPACE["max_depth"],
                       max_params=SPACE["max_params"])


def random_genomes(shape: tuple[int, int, int], n: int, rng: np.random.Generator,
                   exclude: set | frozenset = frozenset()) -> list[Genome]:
    """Distinct genomes drawn uniformly over the space's depths (up to its maximum), none of ``exclude``."""
    space, out = _space(shape), {}
    for _ in range(50 * n):
        g = space.sample(rng, max_depth=space.max_depth)
        if g not in exclude:
            out.setdefault(g)
        if len(out) >= n:
            break
    return list(out)


def search_genomes(shape: tuple[int, int, int], n: int, rng: np.random.Generator, walk: int = 60,
                   crossover_p: float = 0.25) -> list[Genome]:
    """Distinct genomes the way the search visits them: an initial population drawn as the learner draws it
    (shallow, ``init_max_depth``), then ``walk`` children, each a mutation (after a crossover with probability
    ``crossover_p``) of a random member, replacing the oldest member (no fitness: every direction the search can
    take from its start is covered); a new population every ``walk`` children."""
    space, out = _space(shape), {}
    for _ in range(50 * n):
        pop = [space.sample(rng, max_depth=SPACE["init_max_depth"]) for _ in range(SPACE["population"])]
        for g in pop:
            out.setdefault(g)
        for _ in range(walk):
            parent = pop[int(rng.integers(len(pop)))]
            if rng.random() < crossover_p:
                parent = crossover(parent, pop[int(rng.integers(len(pop)))], space, rng)
            child, _ = mutate(parent, space, rng)
            pop = [*pop[1:], child]
            out.setdefault(child)
        if len(out) >= n:
            break
    genomes = list(out)
    return [genomes[i] for i in sorted(rng.permutation(len(genomes))[:n])]


def _identity_model(shape: tuple[int, int, int]) -> bytes:
    from onnx import TensorProto, helper

    vi = [1, *shape]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "empty",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, vi)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, vi)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _software(backend) -> dict:
    sw = {"python": platform.python_version(), "pcl_edge": __version__}
    for mod in ("onnxruntime", "onnx", "tensorrt", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            sw[mod] = getattr(m, "__version__", "?")
    l4t = Path("/etc/nv_tegra_release")
    if l4t.exists():
        sw["l4t"] = l4t.read_text().split("\n")[0].strip()
    return sw


def cpu_name() -> str:
    """This machine's CPU model (``/proc/cpuinfo``), else what ``platform`` knows: a CPU profile's device name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pin_like(profile: Profile) -> list[int] | None:
    """Pin this process to the CPUs a measured profile recorded (``measurement.cpu_affinity``), so a re-measurement
    sees what the profile saw; returns the CPUs now in use (None where affinity is not supported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = profile.measurement.get("cpu_affinity")
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            log.warning("could not pin to CPUs %s as the profile was (%s); measuring unpinned", cpus, exc)
    return sorted(os.sched_getaffinity(0))


def _device() -> dict:
    return {"name": cpu_name(), "machine": platform.machine(), "cpus": os.cpu_count(), "os": platform.platform()}


def jetson_power_mode(jetson_clocks: str = "unknown") -> dict | None:
    """nvpmodel's current mode (``nvpmodel -q``: 'NV Power Mode: MAXN' then the id) and jetson_clocks as told."""
    import shutil

    if not shutil.which("nvpmodel"):
        return None if jetson_clocks == "unknown" else {"jetson_clocks": jetson_clocks}
    out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in out if ln.startswith("NV Power Mode")), "unknown")
    ident = next((ln.strip() for ln in out if ln.strip().isdigit()), "unknown")
    return {"nvpmodel_id": ident, "nvpmodel_name": name, "jetson_clocks": jetson_clocks}


def _git_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return f"{__version__}+{out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else __version__
    except (OSError, subprocess.TimeoutExpired):
        return __version__


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def shape_key(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# -- measuring --------------------------------------------------------------------------------------------------------
def backend_rules(backend) -> tuple[Rules, dict]:
    """The fusion rules of this backend: detected from its optimised graphs when it can show them, else TensorRT's
    documented fusions (assumed, and said so)."""
    if hasattr(backend, "optimized_nodes"):
        rules, info = detect_rules(lambda ks: backend.optimized_nodes(kernels_model(ks)))
        return rules, {"rules": rule_names(rules), "source": f"detected: {info['probes']} probe networks, the "
                       f"backend's optimised graph ({info['nodes']} nodes)"}
    return TENSORRT_RULES, {"rules": rule_names(TENSORRT_RULES),
                            "source": "assumed: TensorRT developer guide, layer fusions (not detected here)"}


def time_networks(backend, models: list[bytes], rounds: int, desc: str) -> np.ndarray:
    """(rounds x networks) per-call medians, interleaved: every network once per round (ABAB..., not AAAA BBBB), so
    a slow spell of a shared machine hits one round of many networks, not every round of one."""
    out = np.empty((rounds, len(models)))
    for r in range(rounds):
        for i, m in enumerate(progress(models, desc=f"{desc} round {r + 1}/{rounds}", unit="net")):
            out[r, i] = backend.measure(m).median
    return out


def statistic(rounds: np.ndarray) -> np.ndarray:
    """A network's latency: the least of its rounds' medians (what interference from other tenants can only add to;
    the spread between rounds is recorded as noise)."""
    return rounds.min(axis=0)


def noise_report(rounds: np.ndarray) -> dict:
    """Repeat-to-repeat spread and the noise floor: the share of single rounds within +-10 % of the network's median
    over all rounds, i.e. what a perfect predictor of its typical latency would score against one measurement."""
    r = np.asarray(rounds, float)
    if r.shape[0] < 2:
        return {"rounds": int(r.shape[0])}
    spread = r.max(0) / r.min(0) - 1
    typical = np.median(r, 0)
    hits = np.abs(r - typical) <= 0.1 * r
    return {"rounds": int(r.shape[0]), "order": "interleaved (every network once per round)",
            "spread_median": round(float(np.median(spread)), 4),
            "spread_p90": round(float(np.percentile(spread, 90)), 4),
            "noise_floor_within_10pct": round(float(np.mean(hits)), 4)}


def _trimmed(x: np.ndarray) -> float:
    """Mean of the calls between the 10th and 90th percentile (the profiler's microsecond ticks average out; the
    slow tail of a shared machine does not pull it)."""
    lo, hi = np.percentile(x, [10, 90])
    inner = x[(x >= lo) & (x <= hi)]
    return float(inner.mean() if inner.size else np.median(x))


def in_place_table(backend, rules: Rules, nets: list[list[Kernel]], passes: int = 2) -> tuple[dict, dict, int, float]:
    """Fused-kernel times measured inside whole networks: {key: KernelStats}, {key: FusedKernel}, mismatches
    between the predicted fusion and the runtime's nodes, the profiler's per-node floor. Every network is timed in
    ``passes`` interleaved passes and each node keeps its least pass (a slow spell of a shared machine during one
    pass does not stay in the table)."""
    per_key: dict[str, list[float]] = {}
    calls: dict[str, list[np.ndarray]] = {}
    fks: dict[str, FusedKernel] = {}
    bad = 0
    models = [kernels_model(ks) for ks in nets]
    timed: list[list[dict[str, np.ndarray]]] = [[] for _ in nets]
    for p in range(passes):
        for i, m in enumerate(progress(models, desc=f"kernels in place, pass {p + 1}/{passes}", unit="net")):
            timed[i].append(backend.measure_nodes(m))
    for ks, runs in zip(nets, timed):
        flat = [fk for k in ks for fk, _ in lower(k, rules)]
        assigned, mismatches = assign_nodes(ks, rules, runs[0])
        bad += mismatches
        for node, i in assigned.items():
            fk = flat[i]
            best = min((r[node] for r in runs if node in r), key=_trimmed)
            fks.setdefault(fk.key, fk)
            per_key.setdefault(fk.key, []).append(_trimmed(best))
            calls.setdefault(fk.key, []).append(best)
    # the profiler's own cost per node, inside each kernel's time: what a node that does nothing (Flatten, a view)
    # takes in place; taken off every kernel (the network model learns the real per-kernel dispatch cost)
    empty = [v for k, vals in per_key.items() if fks[k].ops == ("Flatten",) for v in vals]
    floor = float(np.median(empty)) if empty else 0.0
    table = {}
    for key, vals in per_key.items():
        pooled = np.concatenate(calls[key]) - floor
        table[key] = KernelStats(max(0.0, float(np.median(vals)) - floor), float(np.percentile(pooled, 90)),
                                 float(np.percentile(pooled, 99)), float(pooled.std()), int(pooled.size))
    return table, fks, bad, floor


def alone_table(backend, rules: Rules, nets: list[list[Kernel]], call_ms: float) -> tuple[dict, dict, int]:
    """Fused kernels timed alone, less the empty call (backends without per-node timing in place)."""
    fks = {fk.key: fk for ks in nets for k in ks for fk, _ in lower(k, rules)}
    table = {}
    for key, fk in progress(sorted(fks.items()), desc="kernels alone", unit="kernel"):
        m = backend.measure(fused_model(fk))
        table[key] = KernelStats(max(0.0, m.median - call_ms), max(0.0, m.p90 - call_ms), max(0.0, m.p99 - call_ms),
                                 m.std, m.count)
    return table, fks, 0, 0.0


def _search_share(n_kernel_genomes: int, n_calibration: int) -> tuple[int, int]:
    return n_kernel_genomes - n_kernel_genomes // 3, n_calibration // 2


def draw_sets(shapes: list[tuple[int, int, int]], rng: np.random.Generator, n_kernel_genomes: int, n_calibration: int,
              n_holdout: int) -> dict[tuple, dict[str, list[Genome]]]:
    """Per shape, disjoint sets of networks: ``kernels`` (two thirds search-like), ``calibration`` (half),
    ``holdout_search`` and ``holdout_random``. Deterministic in ``rng``: a profile's seed re-draws them."""
    n_ks, n_cs = _search_share(n_kernel_genomes, n_calibration)
    k_r, c_r = n_kernel_genomes - n_ks, n_calibration - n_cs
    sets = {}
    for s in shapes:
        search = search_genomes(s, n_ks + n_cs + n_holdout, rng)
        rand = random_genomes(s, k_r + c_r + n_holdout, rng, exclude=set(search))
        sets[s] = {"kernels": search[:n_ks] + rand[:k_r], "calibration": search[n_ks:n_ks + n_cs] + rand[k_r:k_r + c_r],
                   "holdout_search": search[n_ks + n_cs:], "holdout_random": rand[k_r + c_r:]}
    return sets


# -- the whole run ----------------------------------------------------------------------------------------------------
def run_profile(backend, name: str, shapes: list[tuple[int, int, int]], n_kernel_genomes: int = 400,
                n_calibration: int = 60, n_holdout: int = 50, seed: int = 0, command: str = "",
                power_mode: dict | None = None, rounds: int = 5, n_reference: int = 8) -> tuple[Profile, dict]:
    """``n_kernel_genomes`` networks per shape give the kernel table (two thirds drawn like the search, one third
    uniformly), ``n_calibration`` the network model (half and half), and ``n_holdout`` of *each* kind are held out."""
    t_start = time.time()
    rng = np.random.default_rng(seed)
    rules, fusion = backend_rules(backend)
    log.info("fusion rules: %s (%s)", fusion["rules"], fusion["source"])
    sets = draw_sets(shapes, rng, n_kernel_genomes, n_calibration, n_holdout)
    n_ks, n_cs = _search_share(n_kernel_genomes, n_calibration)
    call_ms = float(np.median([backend.measure(_identity_model(s)).median for s in shapes]))
    nets = [list(genome_kernels(g, s)) for s in shapes for g in sets[s]["kernels"]]
    in_place = hasattr(backend, "measure_nodes")
    table, fks, mismatches, profiler_floor = (in_place_table(backend, rules, nets) if in_place
                              else alone_table(backend, rules, nets, call_ms))
    if mismatches:
        log.warning("%d runtime nodes did not match the predicted fusion (%s)", mismatches, fusion["rules"])
    fusion["verified"] = {"networks": len(nets) if in_place else 0, "mismatches": mismatches}
    keys = sorted(table)
    draft = Profile(name=name, source="measured", device=_device(), software=_software(backend),
                    measurement=backend.settings() | {
                        "kernels": "in place: each fused kernel's time inside whole networks (onnxruntime profiler, "
                                   "trimmed mean of calls, median over networks, less the profiler's per-node "
                                   f"floor {profiler_floor * 1e3:.2f} us: a Flatten's time in place)" if in_place else
                                   "alone: each fused kernel as its own model, less the measured empty call",
                        "networks": f"least of {rounds} interleaved rounds of per-call medians"},
                    kernels=table, fallback=fit_fallback([fks[k] for k in keys], [table[k].median for k in keys]),
                    overhead_ms=call_ms, fusion=fusion)

    # calibration and held-out networks of every shape are timed in the same interleaved rounds: a slow spell of a
    # shared machine then lands on both alike (the network model is still fitted on the calibration networks only)
    kinds = ("calibration", "holdout_search", "holdout_random")
    order = [(s, kind, g) for s in shapes for kind in kinds for g in sets[s][kind]]
    timed = time_networks(backend, [genome_model(g, s) for s, _, g in order], rounds, "networks")
    rounds_of = {(s, kind): timed[:, [i for i, o in enumerate(order) if o[:2] == (s, kind)]]
                 for s in shapes for kind in kinds}
    calibration, reference, report_rows, cal_rows = {}, [], [], []
    for s in shapes:
        key = shape_key(s)
        pred = LatencyPredictor(draft, s)
        cal = sets[s]["calibration"]
        cal_ms = statistic(rounds_of[(s, "calibration")])
        feats = [pred.features(g) for g in cal]
        calibration[key] = choose_network_model(feats, list(cal_ms), seed=seed)
        cal_rows += [{"shape": key, "genome": str(g), "measured_ms": round(float(v), 6), "features": f}
                     for g, v, f in zip(cal, cal_ms, feats)]
        by_ms = np.argsort(cal_ms)  # a reference set spanning the sizes: evenly spaced by measured latency
        for i in by_ms[np.linspace(0, len(by_ms) - 1, min(n_reference, len(by_ms))).round().astype(int)]:
            reference.append({"shape": key, "genome": str(cal[i]), "ms": round(float(cal_ms[i]), 6)})
    profile = Profile(**{**draft.__dict__, "calibration": calibration})
    for s in shapes:
        pred = LatencyPredictor(profile, s)
        for kind in ("search", "random"):
            for g, rs in zip(sets[s][f"holdout_{kind}"], rounds_of[(s, f"holdout_{kind}")].T):
                report_rows.append({"shape": shape_key(s), "sampler": kind, "genome": str(g),
                                    "predicted_ms": round(pred.predict(g), 6), "measured_ms": round(float(rs.min()), 6),
                                    "rounds_ms": [round(float(v), 6) for v in rs]})
    accuracy = holdout_accuracy(report_rows)
    noise = noise_report(np.concatenate([rounds_of[(s, k)] for s in shapes for k in kinds[1:]], axis=1))
    profile = Profile(**{**profile.__dict__, "accuracy": accuracy, "noise": noise, "power_mode": power_mode,
                         "sampling": {
                             "kernels": f"{n_ks} search-like + {n_kernel_genomes - n_ks} uniform networks per shape",
                             "calibration": f"{n_cs} search-like + {n_calibration - n_cs} uniform networks per shape",
                             "holdout": f"{n_holdout} search-like + {n_holdout} uniform networks per shape, never "
                                        "used for kernels or calibration",
                             "search_like": "populations drawn as the learner draws them (depth <= "
                                            f"{SPACE['init_max_depth']}, {SPACE['population']} members), then 60 "
                                            "mutation/crossover children each, oldest replaced (hw.profiling."
                                            "search_genomes)",
                             "uniform": f"SearchSpace.sample over depths 2..{SPACE['max_depth']}",
                             "space": dict(SPACE)},
                         "reference": {"networks": reference, "rounds": rounds,
                                       "statistic": "least of interleaved rounds of per-call medians"},
                         "provenance": {"command": command, "code_version": _git_version(), "date": _now(),
                                        "host": socket.gethostname(), "input_shapes": [list(s) for s in shapes],
                                        "kernels_measured": len(table),
                                        "calibration_networks": n_calibration * len(shapes),
                                        "seed": seed, "sets": [n_kernel_genomes, n_calibration, n_holdout],
                                        "minutes": round((time.time() - t_start) / 60, 2)},
                         "schema_version": SCHEMA_VERSION})
    report = {"accuracy": accuracy, "noise": noise, "calibration": calibration, "call_overhead_ms": call_ms,
              "fusion": fusion, "holdout": report_rows, "calibration_networks": cal_rows}
    return profile, report


def holdout_accuracy(rows: list[dict]) -> dict:
    """Hit rates of the held-out networks: overall, per sampler and per input shape, against the networks'
    statistic (least round) and against single rounds (comparable with the noise floor)."""
    def block(sel: list[dict]) -> dict:
        rep = accuracy_report([r["predicted_ms"] for r in sel], [r["measured_ms"] for r in sel])
        single = [abs(r["predicted_ms"] - v) <= 0.1 * v for r in sel for v in r.get("rounds_ms", [])]
        if single:
            rep["within_10pct_single_rounds"] = round(float(np.mean(single)), 4)
            rounds = np.array([r["rounds_ms"] for r in sel]).T
            rep["noise_floor_within_10pct"] = noise_report(rounds).get("noise_floor_within_10pct")
        return rep

    out = block(rows) | {"networks": "held out: never used for kernels or calibration"}
    out["by_sampler"] = {k: block([r for r in rows if r["sampler"] == k]) for k in sorted({r["sampler"] for r in rows})}
    out["by_shape"] = {k: block([r for r in rows if r["shape"] == k]) for k in sorted({r["shape"] for r in rows})}
    return out


# -- staleness --------------------------------------------------------------------------------------------------------
def check_profile(profile: Profile, backend, rounds: int | None = None) -> dict:
    """Re-time the profile's reference networks (interleaved rounds, the same statistic) and compare: the drift
    ratio is the median of now / then."""
    ref = (profile.reference or {}).get("networks") or []
    if not ref:
        raise ValueError(f"profile {profile.name} has no reference networks to check (made before schema 2, or "
                         "estimated): re-profile the device")
    rounds = rounds or int(profile.reference.get("rounds", 3))
    models = [genome_model(Genome.parse(r["genome"]), tuple(int(v) for v in r["shape"].split("x"))) for r in ref]
    t0 = time.time()
    now = statistic(time_networks(backend, models, rounds, "reference"))
    then = np.array([r["ms"] for r in ref])
    ratios = now / then
    return {"ratio": round(float(np.median(ratios)), 4), "n": len(ref), "rounds": rounds,
            "ratio_p10_p90": [round(float(v), 4) for v in np.percentile(ratios, [10, 90])],
            "seconds": round(time.time() - t0, 1), "date": _now(),
            "networks": [r | {"now_ms": round(float(v), 6)} for r, v in zip(ref, now)]}


def rescaled(profile: Profile, check: dict) -> Profile:
    """A new version of the profile with its predictions scaled by the measured drift; the reference set takes the
    new measurements; provenance records the check."""
    prov = dict(profile.provenance or {})
    prov["rescaled"] = [*prov.get("rescaled", []), {
        "date": check["date"], "ratio": check["ratio"], "reference_networks": check["n"], "rounds": check["rounds"],
        "host": socket.gethostname(), "code_version": _git_version(),
        "scale_before": profile.scale}]
    ref = dict(profile.reference or {})
    ref["networks"] = [{k: r[k] for k in ("shape", "genome")} | {"ms": r["now_ms"]} for r in check["networks"]]
    return Profile(**{**profile.__dict__, "scale": round(profile.scale * check["ratio"], 6), "provenance": prov,
                      "reference": ref, "stale": False})


def plot_report(report: dict, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no predicted-vs-measured plot")
        return False
    rows = report["holdout"]
    p = np.array([h["predicted_ms"] for h in rows])
    m = np.array([h["measured_ms"] for h in rows])
    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=120)
    lim = [0.8 * min(p.min(), m.min()), 1.25 * max(p.max(), m.max())]
    ax.plot(lim, lim, "k-", lw=0.8)
    ax.fill_between(lim, [v * 0.9 for v in lim], [v * 1.1 for v in lim], color="0.9", label="+/-10 %")
    for i, kind in enumerate(sorted({h.get("sampler", "random") for h in rows})):
        sel = [j for j, h in enumerate(rows) if h.get("sampler", "random") == kind]
        ax.scatter(m[sel], p[sel], s=10, c=f"C{i + 3}", label=f"{kind} ({len(sel)})")
    a = report["accuracy"]
    floor = a.get("noise_floor_within_10pct")
    ax.set(xscale="log", yscale="log", xlim=lim, ylim=lim, xlabel="measured (ms)", ylabel="predicted (ms)",
           title=f"{title}\n{a['n']} held-out nets: {a['within_10pct']:.0%} within 10 %, rho {a['spearman']:.3f}"
                 + (f"\nnoise floor (single rounds) {floor:.0%}" if floor is not None else ""))
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
