"""Using both cores, and staying fast when something else runs: the default Split Digits run (``pcl-edge evolve``),
quiet and next to one busy competing process (``python -c "while True: pass"``), for two ways of using the cores:

- ``workers``: the default since issue 11: one single-threaded worker process per usable core, candidates trained
  side by side (``--workers 0``);
- ``one process``: the earlier layout: candidates one after another in one process with a thread per core
  (``--workers 1 --threads N``).

All runs are made one after another in this one bench run, each a fresh ``pcl-edge evolve`` process (imports and
worker start-up included), so their ratios compare. Wall time is the process's; ACC is checked to be identical
between quiet and busy (the load changes the time, never the result).

    python bench/contention.py            # preset cpu (the README's default run)
    python bench/contention.py --quick    # preset tiny
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

from pcl_edge.evolve.trainer import usable_cores

LAYOUTS = {"workers": ["--workers", "0"], "one process": ["--workers", "1", "--threads", str(usable_cores())]}


def timed_run(preset: str, layout: list[str], out: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pcl_edge.cli", "-q", "evolve", "--preset", preset, "--out", str(out),
                    *layout], check=True, capture_output=True)
    return time.perf_counter() - start, json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = _common.parser(__doc__)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    preset = "tiny" if args.quick else "cpu"
    work = Path(tempfile.mkdtemp(prefix="bench-contention-"))
    result, rows = {}, []
    for name, layout in LAYOUTS.items():
        quiet_s, quiet = timed_run(preset, layout, work / f"{name}-quiet".replace(" ", "-"))
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy_s, busy = timed_run(preset, layout, work / f"{name}-busy".replace(" ", "-"))
        finally:
            hog.kill()
            hog.wait()
        result[name] = {"args": layout, "quiet_s": round(quiet_s, 2), "busy_s": round(busy_s, 2),
                        "slowdown": round(busy_s / quiet_s, 3), "acc_quiet": quiet["acc"], "acc_busy": busy["acc"]}
        rows.append([name, " ".join(layout), round(quiet_s, 1), round(busy_s, 1), round(busy_s / quiet_s, 2),
                     quiet["acc"], busy["acc"]])
    text = (f"Split Digits, preset {preset}, {usable_cores()} usable cores; wall seconds of the whole process\n\n"
            + _common.table(["layout", "options", "quiet s", "busy s", "busy / quiet", "ACC quiet", "ACC busy"],
                            rows))
    _common.write("contention", args, {"preset": preset, "cores": usable_cores(), "layouts": result}, text)


if __name__ == "__main__":
    main()
