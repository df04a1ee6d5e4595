"""Is a measured profile still the machine it describes? Its reference networks re-timed the way it was measured
(pinned to its CPUs, its backend settings), the drift as now / then, and what may be done about it: one scale
factor corrects a uniform drift (``profile --check --rescale``), not one that differs from network to network
(a re-profile does). ``evolve --target`` runs the same check at start, in a child process, and warns."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import platform
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .profile import Profile, load_profile

log = logging.getLogger(__name__)
CPU_BACKENDS = ("ort-cpu",)


def backend_of(profile: Profile) -> str:
    """The backend that measured a profile, from its recorded tool (``onnxruntime 1.x CPUExecutionProvider``)."""
    tool = profile.measurement.get("tool", "")
    if tool.startswith("onnxruntime"):
        return {"CPUExecutionProvider": "ort-cpu", "CUDAExecutionProvider": "ort-cuda",
                "TensorrtExecutionProvider": "ort-trt"}.get(tool.split()[-1], "ort-cpu")
    return "tensorrt" if tool.startswith("TensorRT") else "trtexec" if tool.startswith("trtexec") else "ort-cpu"


def create_backend_like(profile: Profile, threads: int = 1, warmup: int = 20, iterations: int = 100,
                        precision: str = "fp32"):
    """The backend with the settings the profile was measured with (the arguments stand in for missing ones)."""
    from .backends import create_backend

    m = profile.measurement
    return create_backend(backend_of(profile), threads=int(m.get("intra_op_threads", threads)),
                          warmup=int(m.get("warmup", warmup)), iterations=int(m.get("iterations", iterations)),
                          precision=m.get("precision", precision))


def spread(check: dict) -> float:
    """How far the drift differs between reference networks: (p90 - p10) / median of the now/then ratios."""
    lo, hi = check["ratio_p10_p90"]
    return (hi - lo) / check["ratio"] if check["ratio"] > 0 else float("inf")


def rescale_problem(check: dict, max_spread: float) -> str | None:
    """Why one factor cannot correct this drift (None when it can)."""
    if spread(check) <= max_spread:
        return None
    lo, hi = check["ratio_p10_p90"]
    return (f"the drift is not uniform: now/then is {lo:.2f}-{hi:.2f}x (p10-p90) around {check['ratio']:.2f}x, a "
            f"spread of {spread(check):.0%} > {max_spread:.0%}: one factor would mis-predict many networks; "
            "re-profile this device (pcl-edge profile --out NEW.yaml) instead")


def timeable_here(profile: Profile) -> str | None:
    """Why this process cannot re-time the profile's reference networks (None when it can): it must be measured,
    by a CPU backend, on a CPU of the same name and architecture as this one."""
    from .profiling import cpu_name

    if profile.source != "measured":
        return f"{profile.name} is {profile.source}, not measured"
    if not (profile.reference or {}).get("networks"):
        return f"{profile.name} has no reference networks"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed here"
    if backend_of(profile) not in CPU_BACKENDS:
        return f"{profile.name} was measured with {backend_of(profile)} on {profile.device.get('name')}"
    here = (cpu_name(), platform.machine())
    there = (profile.device.get("name"), profile.device.get("machine"))
    if here != there:
        return f"{profile.name} was measured on {there[0]} ({there[1]}), this is {here[0]} ({here[1]})"
    return None


def retime(path: str | Path) -> dict:
    """``profiling.check_profile`` of the profile at ``path``, pinned as it was measured (in this process)."""
    from .profiling import check_profile, pin_like

    profile = load_profile(path)
    pin_like(profile)
    return check_profile(profile, create_backend_like(profile))


def _retime_summary(path: str) -> dict:
    return {k: v for k, v in retime(path).items() if k != "networks"}


def check_at_start(path: str | Path, tolerance: float = 0.10, max_spread: float = 0.20) -> dict | None:
    """Re-time a target profile's reference networks in a child process (this one keeps its CPU affinity) and warn
    when it drifted; the check (ratio, p10-p90, seconds), or None when it cannot be timed here (said at INFO)."""
    profile = load_profile(path)
    why = timeable_here(profile)
    if why:
        log.info("target profile not re-timed at start: %s", why)
        return None
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        check = pool.submit(_retime_summary, str(path)).result()
    lo, hi = check["ratio_p10_p90"]
    drift = abs(check["ratio"] - 1)
    if drift > tolerance or spread(check) > max_spread:
        advice = rescale_problem(check, max_spread) or (f"pcl-edge profile --check {path} --rescale NEW.yaml corrects "
                                                        "it (the drift is uniform)")
        log.warning("target profile %s drifted: this machine times its reference networks at %.2fx the profile "
                    "(p10-p90 %.2f-%.2fx, %d networks, %.1f s); predicted latencies and the budget are off by as "
                    "much: %s", profile.name, check["ratio"], lo, hi, check["n"], check["seconds"], advice)
    else:
        log.info("target profile %s re-timed at start: %.3fx (p10-p90 %.2f-%.2fx, %.1f s): current", profile.name,
                 check["ratio"], lo, hi, check["seconds"])
    return check
