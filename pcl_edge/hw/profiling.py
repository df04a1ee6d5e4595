"""``pcl-edge profile``: measure a target device into a hardware profile.

1. sample the kernels the search space can produce at the input shapes in use and time each one alone;
2. time an empty model: the per-call cost that a lone kernel pays but a kernel inside a network does not;
3. time whole random networks and fit the calibration (measured ~ scale * predicted + offset);
4. time held-out random networks the calibration never saw and write the ``accuracy`` block;
5. record device, software, settings and provenance, and plot predicted vs measured.
Runs where the device is: needs onnx and the backend's runtime, never torch."""

from __future__ import annotations

import logging
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
from ..space.mutation import mutate
from ..space.search_space import SearchSpace
from .kernels import Kernel, genome_kernels
from .onnx_graphs import genome_model, kernel_model
from .predictor import LatencyPredictor, accuracy_report, calibrate, fit_calibration, fit_fallback
from .profile import SCHEMA_VERSION, KernelStats, Profile

log = logging.getLogger(__name__)


def sample_genomes(shape: tuple[int, int, int], n: int, rng: np.random.Generator, max_depth: int = 8,
                   max_params: int = 300_000) -> list[Genome]:
    """Distinct genomes from random samples and short mutation walks (what a search visits); bounded."""
    space = SearchSpace(in_channels=shape[0], input_size=min(shape[1:]), max_depth=max_depth, max_params=max_params)
    out: dict[Genome, None] = {}
    for _ in range(20 * n):
        g = space.sample(rng)
        for _ in range(int(rng.integers(0, 12))):
            g, _ = mutate(g, space, rng)
        out.setdefault(g)
        if len(out) >= n:
            break
    return list(out)


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


def _device() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"name": cpu, "machine": platform.machine(), "cpus": os.cpu_count(), "os": platform.platform()}


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


def run_profile(backend, name: str, shapes: list[tuple[int, int, int]], n_kernel_genomes: int = 150,
                n_calibration: int = 40, n_holdout: int = 50, seed: int = 0, command: str = "",
                power_mode: dict | None = None) -> tuple[Profile, dict]:
    rng = np.random.default_rng(seed)
    per_shape = {s: sample_genomes(s, n_kernel_genomes + n_calibration + n_holdout, rng) for s in shapes}
    kernels: dict[str, Kernel] = {}
    for s, gs in per_shape.items():
        for g in gs[:n_kernel_genomes]:
            for k in genome_kernels(g, s):
                kernels.setdefault(k.key, k)
    call_ms = float(np.median([backend.measure(_identity_model(s)).median for s in shapes]))
    table: dict[str, KernelStats] = {}
    for key, k in progress(sorted(kernels.items()), desc="kernels", unit="kernel"):
        m = backend.measure(kernel_model(k))
        # a lone kernel pays one call; inside a network it does not: subtract the measured empty call
        table[key] = KernelStats(max(0.0, m.median - call_ms), max(0.0, m.p90 - call_ms), max(0.0, m.p99 - call_ms),
                                 m.std, m.count)
    ks = list(kernels.values())
    draft = Profile(name=name, source="measured", device=_device(), software=_software(backend),
                    measurement=backend.settings(), kernels=table,
                    fallback=fit_fallback(ks, [table[k.key].median for k in ks]), overhead_ms=call_ms)

    def networks(s: tuple[int, int, int], sl: slice, desc: str) -> tuple[list[float], list[int], list[float]]:
        pred, raw, nodes, meas = LatencyPredictor(draft, s), [], [], []
        for g in progress(per_shape[s][sl], desc=f"{desc} {'x'.join(map(str, s))}", unit="net"):
            raw.append(pred.raw(g))
            nodes.append(pred.n_nodes(g))
            meas.append(backend.measure(genome_model(g, s)).median)
        return raw, nodes, meas

    # one calibration per input shape (small inputs are dispatch-bound, large ones compute-bound), fitted on
    # networks that are neither the kernel-sampling genomes nor the held-out ones
    calibration, ho_pred, ho_meas, ho_names, n_cal = {}, [], [], [], 0
    for s in shapes:
        key = "x".join(map(str, s))
        raw, nodes, meas = networks(s, slice(n_kernel_genomes, n_kernel_genomes + n_calibration), "calibration")
        calibration[key] = fit_calibration(raw, meas, nodes)
        n_cal += len(raw)
        raw, nodes, meas = networks(s, slice(n_kernel_genomes + n_calibration, None), "held-out")
        ho_pred += [calibrate(calibration[key], r, n) for r, n in zip(raw, nodes)]
        ho_meas += meas
        ho_names += [f"{key}|{g}" for g in per_shape[s][n_kernel_genomes + n_calibration:]]
    accuracy = accuracy_report(ho_pred, ho_meas) | {"networks": "random genomes never used for kernels or calibration"}
    profile = Profile(**{**draft.__dict__, "calibration": calibration, "accuracy": accuracy,
                         "power_mode": power_mode,
                         "provenance": {"command": command, "code_version": _git_version(),
                                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                        "host": socket.gethostname(), "input_shapes": [list(s) for s in shapes],
                                        "kernels_measured": len(table), "calibration_networks": n_cal,
                                        "seed": seed,  # with the next line, every sampled genome can be re-drawn
                                        "sampled_per_shape": n_kernel_genomes + n_calibration + n_holdout},
                         "schema_version": SCHEMA_VERSION})
    report = {"accuracy": accuracy, "accuracy_by_shape": _by_shape(ho_names, ho_pred, ho_meas),
              "calibration": calibration, "call_overhead_ms": call_ms,
              "holdout": [{"network": n, "predicted_ms": round(p, 6), "measured_ms": round(m, 6)}
                          for n, p, m in zip(ho_names, ho_pred, ho_meas)]}
    return profile, report


def _by_shape(names: list[str], pred: list[float], meas: list[float]) -> dict:
    out = {}
    for key in sorted({n.split("|")[0] for n in names}):
        idx = [i for i, n in enumerate(names) if n.startswith(key + "|")]
        out[key] = accuracy_report([pred[i] for i in idx], [meas[i] for i in idx])
    return out


def plot_report(report: dict, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no predicted-vs-measured plot")
        return False
    p = np.array([h["predicted_ms"] for h in report["holdout"]])
    m = np.array([h["measured_ms"] for h in report["holdout"]])
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    lim = [0, 1.1 * max(p.max(), m.max())]
    ax.plot(lim, lim, "k-", lw=0.8)
    ax.fill_between(lim, [v * 0.9 for v in lim], [v * 1.1 for v in lim], color="0.9", label="+/-10 %")
    ax.scatter(m, p, s=12, c="C3")
    a = report["accuracy"]
    ax.set(xlim=lim, ylim=lim, xlabel="measured (ms)", ylabel="predicted (ms)",
           title=f"{title}\n{a['n']} held-out nets: {a['within_10pct']:.0%} within 10 %, rho {a['spearman']:.3f}")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
