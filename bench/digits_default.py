"""The README's main job, timed: ``pcl-edge evolve`` with no arguments (Split Digits, preset cpu), as a user runs it
(a fresh process, in an empty folder). Prints ACC / BWT and the wall-clock seconds; writes JSON.

    python bench/digits_default.py
    python bench/digits_default.py --quick     # pcl-edge evolve --preset tiny
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import _common


def main() -> None:
    args = _common.parser(__doc__).parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-digits-"))
    command = ["pcl-edge", "-q", "evolve", *(["--preset", "tiny"] if args.quick else [])]
    start = time.perf_counter()
    subprocess.run(command, cwd=work, check=True)
    process_s = time.perf_counter() - start
    summary = json.loads(next((work / "runs").glob("*/summary.json")).read_text())
    rows = [[" ".join(command), summary["acc"], summary["bwt"], summary["wall_s"], round(process_s, 1)]]
    _common.write("digits_default", args, {"command": command, "process_s": process_s, "summary": summary},
                  _common.table(["command", "ACC", "BWT", "run wall s", "process wall s (incl. imports)"], rows))


if __name__ == "__main__":
    main()
