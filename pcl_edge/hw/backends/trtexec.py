"""``trtexec`` as a measurement backend: run it on an ONNX model and parse the per-inference timing JSON it
exports (``--exportTimes``). For people who trust NVIDIA's own tool over our timing loop; needs the device."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import BACKENDS, Measurement


class TrtexecError(RuntimeError):
    pass


def parse_times(data: list | str | Path, metric: str = "computeMs") -> np.ndarray:
    """Per-inference milliseconds from trtexec's ``--exportTimes`` JSON (a list of objects with startEnqMs, ...,
    computeMs, latencyMs); entries without ``metric`` (e.g. a leading count record) are skipped."""
    if isinstance(data, (str, Path)):
        try:
            data = json.loads(Path(data).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrtexecError(f"cannot read trtexec times {data}: {exc}") from None
    values = [float(e[metric]) for e in data if isinstance(e, dict) and metric in e]
    if not values:
        raise TrtexecError(f"trtexec times hold no {metric!r} entries")
    return np.asarray(values)


class TrtexecBackend:
    def __init__(self, executable: str = "trtexec", precision: str = "fp16", warmup: int = 200, iterations: int = 200,
                 metric: str = "computeMs", **_: object) -> None:
        path = shutil.which(executable) or (executable if Path(executable).is_file() else None)
        if path is None:
            raise TrtexecError(f"{executable} not found (JetPack: /usr/src/tensorrt/bin/trtexec)")
        self.path, self.precision, self.warmup, self.iterations, self.metric = path, precision, warmup, iterations, \
            metric

    def command(self, model: Path, times: Path) -> list[str]:
        cmd = [self.path, f"--onnx={model}", f"--exportTimes={times}", f"--warmUp={self.warmup}",
               f"--iterations={self.iterations}", "--duration=0", "--avgRuns=1"]
        return cmd + (["--fp16"] if self.precision in ("fp16", "int8") else []) + \
            (["--int8"] if self.precision == "int8" else [])

    def settings(self) -> dict:
        return {"tool": f"trtexec ({self.path})", "precision": self.precision, "warmup_ms": self.warmup,
                "iterations": self.iterations, "statistic": f"median of {self.metric} (--exportTimes)", "batch": 1}

    def measure(self, model: bytes) -> Measurement:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path, times = Path(tmp) / "m.onnx", Path(tmp) / "times.json"
            onnx_path.write_bytes(model)
            res = subprocess.run(self.command(onnx_path, times), capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                tail = (res.stdout + res.stderr).strip().splitlines()[-5:]
                raise TrtexecError(f"trtexec failed ({res.returncode}): {' | '.join(tail)}")
            return Measurement.from_samples(parse_times(times, self.metric))


BACKENDS.register("trtexec")(TrtexecBackend)
