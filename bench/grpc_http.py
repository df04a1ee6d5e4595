"""gRPC beside HTTP (issue 23): one `pcl-edge serve --grpc-port` process, Triton's own clients on both transports
(``tritonclient.grpc`` and ``tritonclient.http``, binary tensors on both), the same bundle: answers compared bit for
bit on every task, then requests/s and latency at 1 and 8 clients, the two transports measured in alternating rounds.

    python bench/grpc_http.py [--seconds 10] [--rounds 2]
    python bench/grpc_http.py --quick
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common
import numpy as np

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.export import export_bundle


def start(bundle: Path, work: Path) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "pcl_edge.cli", "serve", str(bundle), "--backend", "ort", "--port",
                             "0", "--grpc-port", "0", "--bundle-store", str(work / "store")],
                            stderr=subprocess.PIPE, text=True)
    http = grpc = None
    for line in proc.stderr:
        m = re.search(r"gRPC \(KServe v2\) on [\d.]+:(\d+)", line)
        grpc = int(m.group(1)) if m else grpc
        m = re.search(r"on http://[\d.]+:(\d+)", line)
        http = int(m.group(1)) if m else http
        if http and grpc:
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, http, grpc


def client(kind: str, port: int):
    if kind == "grpc":
        import tritonclient.grpc as m
    else:
        import tritonclient.http as m
    return m, m.InferenceServerClient(f"127.0.0.1:{port}")


def infer(m, c, task: str, x: np.ndarray) -> np.ndarray:
    inp = m.InferInput("input", list(x.shape), "FP32")
    if m.__name__.endswith("http"):
        inp.set_data_from_numpy(x, binary_data=True)
        out = [m.InferRequestedOutput("logits", binary_data=True)]
    else:
        inp.set_data_from_numpy(x)
        out = [m.InferRequestedOutput("logits")]
    return c.infer(task, [inp], outputs=out).as_numpy("logits")


def load(kind: str, port: int, clients: int, seconds: float, tasks: list[str]) -> dict:
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    lat: list[float] = []
    errors = [0]
    stop = threading.Event()

    def run(k: int) -> None:
        m, c = client(kind, port)
        i = k
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                infer(m, c, tasks[i % len(tasks)], x)
                lat.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - counted: the figure is zero
                errors[0] += 1
            i += 1

    _common.run_clients(run, clients, seconds, stop)
    ms = np.array(lat) * 1000
    return {"requests": len(lat), "rps": len(lat) / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": errors[0]}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 2, 1
    work = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    evolve(preset_config("tiny", "digits"), out=work / "run", progress=False)
    export_bundle(work / "run", work / "v1")
    proc, http_port, grpc_port = start(work / "v1", work)
    try:
        gm, gc = client("grpc", grpc_port)
        hm, hc = client("http", http_port)
        tasks = [f"task_{i:02d}" for i in range(1, 6)]
        x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
        same = {t: bool(np.array_equal(infer(gm, gc, t, x), infer(hm, hc, t, x))) for t in tasks}
        res: dict = {"bit_identical": same, "runs": {}}
        for clients in (1, 8):
            for r in range(args.rounds):
                for kind, port in (("grpc", grpc_port), ("http", http_port)) if r % 2 == 0 else \
                        (("http", http_port), ("grpc", grpc_port)):
                    res["runs"].setdefault(f"{kind}-{clients}", []).append(load(kind, port, clients, args.seconds,
                                                                                 tasks))
    finally:
        proc.terminate()
        proc.wait(30)
    rows = []
    for key, runs in res["runs"].items():
        kind, clients = key.split("-")
        rows.append([kind, clients, round(statistics.median(r["rps"] for r in runs)),
                     round(statistics.median(r["p50_ms"] for r in runs), 3),
                     round(statistics.median(r["p99_ms"] for r in runs), 3), sum(r["errors"] for r in runs)])
    text = (f"answers bit-identical on every task: {all(same.values())} ({same})\n\n"
            + _common.table(["transport", "clients", "req/s", "p50 ms", "p99 ms", "errors"], rows))
    _common.write("grpc_http", args, res, text)


if __name__ == "__main__":
    main()
