"""What every bench script shares: the ``--quick`` / ``--json`` options, the record of where a figure was measured
(machine, versions, the exact command, date), a markdown table, and the JSON file written next to it.

A bench script is run as ``python bench/NAME.py``, so this module is importable as ``_common``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pcl_edge.hw.profiling import cpu_name

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
_PACKAGES = ("pcl-edge", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "scikit-learn", "ray",
             "starlette", "uvicorn", "tensorrt")


def _affinity() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# CPUs this process may use as it starts: a bench that later pins itself (cl_quality, to measure latency as the
# profile did) still trained on all of them, and that is what its record must say
_START_CPUS = _affinity()


def parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (figures not comparable to full runs)")
    ap.add_argument("--json", help="where to write the result JSON (default bench/results/NAME[.quick].json)")
    return ap


def _mem_gib() -> float | None:
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        return round(kb / 2**20, 1)
    except (OSError, IndexError, ValueError):
        return None


def _git() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=ROOT)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def provenance() -> dict:
    """Where and how a figure was measured: enough to tell two results apart and to rerun one."""
    versions = {}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
            "cwd": os.getcwd(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"host": platform.node(), "cpu": cpu_name(), "cpus_usable": _START_CPUS,
                        "cpus_at_write": _affinity(), "memory_gib": _mem_gib(), "gpu": gpu, "os": platform.platform()},
            "python": platform.python_version(), "versions": versions, "code": _git(),
            "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CI") if k in os.environ}}


def run_clients(client, clients: int, seconds: float, stop) -> None:
    """``client(k)`` in ``clients`` threads (k = 0..clients-1) for ``seconds``; then ``stop`` (a threading.Event that
    each client polls) is set and every thread joined."""
    import threading

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table: what the script prints and what BENCHMARKS.md holds."""

    def cell(v) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write(name: str, args: argparse.Namespace, result: dict, text: str = "") -> Path:
    """Print ``text`` (the tables) and write ``{"provenance", "quick", "result", "text"}`` as JSON; returns its path."""
    if text:
        print(text)
    path = Path(args.json) if args.json else RESULTS / f"{name}{'.quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"provenance": provenance(), "quick": bool(args.quick), "result": result, "text": text},
                              indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"result written to {path}")
    return path
