"""What a stream costs in RAM (issue 23 item 7): peak resident memory and wall clock of (1) decoding an image folder
into the cache and (2) loading it from the cache and cutting a 5-task stream, each in a fresh process, for the code
in this checkout and, side by side, for an older commit (``--before REV``, run from a temporary worktree). With the
memory-mapped cache the second step is also run with ``PCL_EDGE_IN_RAM_MB=0`` (the stream's budget for copies in RAM
set to nothing: what happens when a source does not fit). Every variant's tasks are hashed, so equal streams are
checked, not assumed.

    python bench/data_memory.py --data imagefolder:/work/shared/data/cifar10-train-jpg.tar.xz --before 81a601e
    python bench/data_memory.py --quick   (a generated folder of 600 images)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

CHILD = r"""
import hashlib, json, resource, sys, time, tracemalloc
import numpy as np
import PIL.Image
from pcl_edge.data import build_stream, load_pool
from pcl_edge.data.sources import imagefolder
step, source = sys.argv[1], sys.argv[2]
def anon():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) / 1024
anon0 = anon()
tracemalloc.start()
t0 = time.perf_counter()
if step == "decode":
    pool = load_pool(source)
else:
    stream = build_stream(source, "5x2")
seconds = time.perf_counter() - t0
heap = tracemalloc.get_traced_memory()[1] / 2**20
tracemalloc.stop()
out = {"seconds": seconds, "peak_heap_mib": heap, "rss_anon_growth_mib": anon() - anon0,
       "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
h = hashlib.sha256()
if step == "decode":
    h.update(np.ascontiguousarray(pool.x_train).data); h.update(pool.y_train.tobytes())
else:
    for t in stream.tasks:
        for s in (t.train, t.val, t.test):
            h.update(np.ascontiguousarray(s.x).data); h.update(s.y.tobytes())
        h.update(repr(t.spec).encode())
    out["arrays"] = sorted({type(s.x).__name__ for t in stream.tasks for s in (t.train, t.val, t.test)})
out["digest"] = h.hexdigest()[:16]
print(json.dumps(out))
"""


def child(code: Path, step: str, source: str, cache: Path, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "PCL_EDGE_CACHE": str(cache), **(extra_env or {})}
    out = subprocess.run([sys.executable, "-c", CHILD, step, source], capture_output=True, text=True, env=env,
                         cwd=code)
    if out.returncode:
        raise SystemExit(f"{step} with the code in {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def generated_folder(root: Path, n: int = 600, size: int = 32) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return f"imagefolder:{root}"


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--data", help="an imagefolder: source (default with --quick: a generated folder)")
    ap.add_argument("--before", help="a commit to measure side by side (run from a temporary git worktree)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    source = args.data or generated_folder(work / "folder")
    codes = {"this checkout": _common.ROOT}
    if args.before:
        subprocess.run(["git", "worktree", "add", "--detach", str(work / "before"), args.before], cwd=_common.ROOT,
                       check=True, capture_output=True)
        codes[f"before ({args.before})"] = work / "before"
    res: dict = {"source": source, "runs": {}}
    rows = []
    try:
        for name, code in codes.items():
            cache = work / f"cache-{len(res['runs'])}"
            runs = {"decode": child(code, "decode", source, cache), "stream": child(code, "stream", source, cache)}
            if name == "this checkout":
                runs["stream, PCL_EDGE_IN_RAM_MB=0"] = child(code, "stream", source, cache, {"PCL_EDGE_IN_RAM_MB": "0"})
            res["runs"][name] = runs
            for step, r in runs.items():
                rows.append([name, step, round(r["seconds"], 2), round(r["peak_heap_mib"], 1),
                             round(r["rss_anon_growth_mib"], 1), round(r["peak_rss_mib"], 1), r["digest"],
                             ",".join(r.get("arrays") or [])])
    finally:
        if args.before:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "before")], cwd=_common.ROOT,
                           capture_output=True)
    streams = {r["stream"]["digest"] for r in res["runs"].values()}
    res["streams_equal"] = len(streams | {res["runs"]["this checkout"]["stream, PCL_EDGE_IN_RAM_MB=0"]["digest"]}) == 1
    text = (f"source: {source}\nevery variant cut the same stream: {res['streams_equal']}\n\n"
            + _common.table(["code", "step", "seconds", "peak heap MiB (tracemalloc)", "anonymous RSS growth MiB",
                             "peak RSS MiB (with mapped pages)", "digest", "split arrays"], rows))
    _common.write("data_memory", args, res, text)


if __name__ == "__main__":
    main()
