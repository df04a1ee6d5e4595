"""Device runtime and service figures, measured here on onnxruntime CPU (issue 5):

1. router overhead over a raw ``onnxruntime.InferenceSession.run`` (batch 1, median, interleaved side by side);
2. HTTP binary infer p50 / p99 and requests/s at 1 and 8 concurrent clients;
3. a soak of ``--soak`` s at 8 clients with a bundle update in the middle: errors and server RSS growth;
4. a memory budget that fits 2 of 5 tasks, round robin over all 5: errors, evictions;
5. 10,000 fuzzed HTTP bodies and 10,000 fuzzed serial frames: crashes, unanswered bad input.

    python bench/runtime.py [--soak 60] [--cifar-run RUN_DIR]
    python bench/runtime.py --quick      # 6 s soak, 400 fuzzed inputs per transport
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common
import numpy as np

from pcl_edge.evolve import evolve, learn, preset_config
from pcl_edge.export import export_bundle
from pcl_edge.runtime import Router
from pcl_edge.runtime.oip import HEADER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary_request(x: np.ndarray) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + x.tobytes(), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Server:
    def __init__(self, bundle: Path, *extra: str) -> None:
        self.port = free_port()
        self.token = Path(tempfile.mkdtemp()) / "token"
        self.token.write_text("bench-token-0123456789abcdef")
        self.proc = subprocess.Popen([sys.executable, "-m", "pcl_edge.cli", "-q", "serve", str(bundle), "--port",
                                      str(self.port), "--backend", "ort", "--token-file", str(self.token), *extra])
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def load(server: Server, clients: int, seconds: float, tasks: list[int], during=None) -> dict:
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    body, headers = binary_request(x)
    lat, errors, stop = [], [], threading.Event()

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        i = k
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status, _ = server.request("POST", f"/v2/models/{tasks[i % len(tasks)]}/infer", body, headers, conn)
                if status != 200:
                    errors.append(status)
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            lat.append(time.perf_counter() - t0)
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    if during is not None:
        time.sleep(seconds / 2)
        during()
        time.sleep(seconds / 2)
    else:
        time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(lat) * 1e3
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / wall, "p50_ms": float(np.median(ms)),
            "p99_ms": float(np.percentile(ms, 99)), "error_samples": errors[:3]}


def router_overhead(bundle: Path, n: int = 3000, x: np.ndarray | None = None) -> dict:
    import onnxruntime as ort

    router = Router(bundle, backend="ort", backend_options={"threads": 1})
    if x is None:
        x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    router.infer(1, x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    raw = ort.InferenceSession(str(bundle / "models" / "task_01.onnx"), so, providers=["CPUExecutionProvider"])
    raw_t, rt_t = [], []
    for _ in range(n // 100):  # interleaved blocks: both sides see the same machine state
        for _ in range(100):
            t0 = time.perf_counter_ns()
            raw.run(["logits"], {"input": x})
            raw_t.append(time.perf_counter_ns() - t0)
        for _ in range(100):
            t0 = time.perf_counter_ns()
            router.infer(1, x)
            rt_t.append(time.perf_counter_ns() - t0)
    a, b = statistics.median(raw_t) / 1e3, statistics.median(rt_t) / 1e3
    return {"raw_us": a, "router_us": b, "overhead_pct": 100 * (b - a) / a}


def budget_round_robin(bundle: Path, seconds: float = 10, clients: int = 4) -> dict:
    """Sizes measured by loading every task once; then a budget that holds the two largest (and so any two) and
    round-robin requests over all tasks from several threads: errors, evictions, most tasks ever resident."""
    router = Router(bundle, backend="ort")
    shape = tuple(router.tasks()[0]["input"]["shape"])
    ids = [t["id"] for t in router.tasks()]
    for t in ids:
        router.infer(t, np.zeros((1, *shape), np.float32))
    sizes = router.loaded()
    ordered = sorted(sizes.values())
    budget = sum(ordered[-2:])
    router.set_memory_budget(budget)
    errors, most, stop = [], [0], threading.Event()
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)

    def client(k):
        i = k
        while not stop.is_set():
            try:
                router.infer(ids[i % len(ids)], x)
            except Exception as exc:  # noqa: BLE001 - counted: the figure is zero
                errors.append(repr(exc))
            most[0] = max(most[0], len(router.loaded()))
            i += 1

    _common.run_clients(client, clients, seconds, stop)
    fits = max(k for k in range(1, len(ordered) + 1) if sum(ordered[:k]) <= budget)
    return {"bundle": bundle.name, "sizes_bytes": sizes, "budget_bytes": budget, "holds": f"2 to {fits} of {len(ids)}",
            "requests": sum(router.stats[t].requests for t in ids), "errors": len(errors),
            "evictions": sum(router.stats[t].evictions for t in ids), "most_resident": most[0]}


def fuzz_http(server: Server, n: int, rng: np.random.Generator) -> dict:
    x = np.zeros((1, 1, 8, 8), np.float32)
    good_json = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                        "data": x.ravel().tolist()}]}).encode()
    good_bin, bin_headers = binary_request(x)
    codes, crashes = {}, 0
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for i in range(n):
        kind = i % 4
        if kind == 0:  # byte flips in a JSON request
            body = bytearray(good_json)
            for _ in range(int(rng.integers(1, 8))):
                body[int(rng.integers(len(body)))] = int(rng.integers(256))
            body, headers = bytes(body), {}
        elif kind == 1:  # truncation / lying header lengths on the binary extension
            body = good_bin[: int(rng.integers(1, len(good_bin)))]
            headers = {HEADER: str(int(rng.integers(-5, len(good_bin) + 50)))}
        elif kind == 2:  # random bytes
            body, headers = rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes(), {}
        else:  # structurally valid JSON with wrong types and shapes
            spec = {"name": "input", "shape": [int(v) for v in rng.integers(-2, 10, int(rng.integers(0, 6)))],
                    "datatype": str(rng.choice(["FP32", "UINT8", "INT64", "FP16", "BOOL"])),
                    "data": rng.standard_normal(int(rng.integers(0, 80))).tolist()}
            body, headers = json.dumps({"inputs": [spec]}).encode(), {}
        model = str(rng.choice(["1", "task_02", "9", "task_x"])) if i % 10 == 0 else "1"
        try:
            status, data = server.request("POST", f"/v2/models/{model}/infer", body, headers, conn)
            codes[status] = codes.get(status, 0) + 1
            if status >= 500 or (status != 200 and "error" not in json.loads(data)):
                crashes += 1
        except (OSError, http.client.HTTPException, ValueError):
            crashes += 1
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    alive = server.request("GET", "/v2/health/ready")[0] == 200
    return {"requests": n, "status_codes": codes, "crashes_or_unanswered": crashes, "alive_after": alive}


def fuzz_serial(bundle: Path, n: int, rng: np.random.Generator) -> dict:
    """Mutated and truncated INFER frames straight into the serial server (an in-memory port, no timing)."""
    from pcl_edge.runtime.serial_protocol import ERROR, INFER, MAGIC, RESULT, encode, tensor_frame
    from pcl_edge.runtime.serial_server import SerialServer

    class Port:
        def __init__(self):
            self.inbox, self.outbox = bytearray(), []

        def read(self, k):
            out = bytes(self.inbox[:k])
            del self.inbox[:k]
            return out

        def write(self, b):
            self.outbox.append(b)

    port = Port()
    server = SerialServer(Router(bundle, backend="ort"), port, frame_timeout=0.0)
    good = encode(tensor_frame(INFER, 1, 1, np.zeros((1, 1, 8, 8), np.float32)))
    out = {"frames": n, "crashes": 0, "error_frames": 0, "results": 0, "no_magic_skipped": 0, "unanswered": 0}
    for i in range(n):
        frame = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            frame[int(rng.integers(len(frame)))] = int(rng.integers(256))
        if i % 3 == 0:
            frame = frame[: int(rng.integers(1, len(frame)))]
        port.inbox += frame
        port.outbox.clear()
        try:
            while server.serve_once(idle_timeout=0.0):
                pass
        except Exception:  # noqa: BLE001 - what this benchmark counts
            out["crashes"] += 1
        kinds = [b[3] for b in port.outbox]
        if ERROR in kinds:
            out["error_frames"] += 1
        elif RESULT in kinds:
            out["results"] += 1  # the mutation missed everything the CRC covers (e.g. only the magic's twin)
        elif MAGIC not in bytes(frame):
            out["no_magic_skipped"] += 1  # nothing frame-like arrived: skipped as line noise
        else:
            out["unanswered"] += 1  # a frame whose request id could not be read (cut inside its header)
        port.inbox.clear()
        server.reader.buf.clear()
    port.inbox += good
    server.serve_once(idle_timeout=0.0)
    out["serves_after"] = bool(port.outbox) and port.outbox[-1][3] == RESULT
    return out


def rounded(d: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--soak", type=float, default=60)
    ap.add_argument("--fuzz", type=int, default=10000)
    ap.add_argument("--cifar-run", help="also measure router overhead on this run's 3x32x32 experts "
                                        "(e.g. the pcl run of bench/cl_quality.py on Split CIFAR-10)")
    args = ap.parse_args()
    if args.quick:
        args.soak, args.fuzz = min(args.soak, 6), min(args.fuzz, 400)
    load_s = 2 if args.quick else 10
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    evolve(preset_config("tiny", "digits", tasks="4x2"), out=work / "run", progress=False)
    export_bundle(work / "run", work / "v1")
    learn(work / "run", tasks="1x2", progress=False)  # the "new version" of the update test: a task learned later
    export_bundle(work / "run", work / "v2.tar", base=work / "v1")
    res: dict = {"router_overhead_digits": router_overhead(work / "v1", n=500 if args.quick else 3000)}
    if args.cifar_run:
        export_bundle(args.cifar_run, work / "cifar")
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        res["router_overhead_cifar"] = router_overhead(work / "cifar", n=500 if args.quick else 3000, x=x)
    server = Server(work / "v1", "--allow-unsigned")  # unsigned bundles: this bench measures speed, not signatures
    try:
        for clients in (1, 8):
            res[f"http_{clients}_clients"] = load(server, clients, load_s, [1, 2, 3, 4])
        rss0 = rss_of(server.proc.pid)
        auth = {"Authorization": f"Bearer {server.token.read_text()}", "Content-Type": "application/json"}

        def update():
            status, data = server.request("POST", "/v2/admin/activate", json.dumps({"bundle": str(work / "v2.tar")}),
                                          auth)
            res["update_response"] = {"status": status, "body": data.decode()[:200]}

        res["soak"] = load(server, 8, args.soak, [1, 2, 3, 4], during=update)
        rss1 = rss_of(server.proc.pid)
        res["soak"] |= {"seconds": args.soak, "clients": 8, "rss_before_mib": rss0 / 2**20,
                        "rss_after_mib": rss1 / 2**20, "rss_growth_pct": 100 * (rss1 - rss0) / rss0}
        res["fuzz_http"] = fuzz_http(server, args.fuzz, np.random.default_rng(0))
    finally:
        server.stop()
    res["memory_budget"] = budget_round_robin(work / ("cifar" if args.cifar_run else "v1"),
                                              seconds=2 if args.quick else 10)
    res["fuzz_serial"] = fuzz_serial(work / "v1", args.fuzz, np.random.default_rng(1))

    rows = [["router overhead, digits experts (1x8x8)", f"{res['router_overhead_digits']['overhead_pct']:.1f} % "
             f"(raw {res['router_overhead_digits']['raw_us']:.1f} us, router "
             f"{res['router_overhead_digits']['router_us']:.1f} us)"]]
    if "router_overhead_cifar" in res:
        r = res["router_overhead_cifar"]
        rows.append(["router overhead, CIFAR experts (3x32x32)",
                     f"{r['overhead_pct']:.1f} % (raw {r['raw_us']:.1f} us, router {r['router_us']:.1f} us)"])
    for c in (1, 8):
        r = res[f"http_{c}_clients"]
        rows.append([f"HTTP binary infer, {c} client(s), {load_s} s", f"p50 {r['p50_ms']:.2f} ms, p99 "
                     f"{r['p99_ms']:.2f} ms, {r['rps']:.0f} req/s, {r['errors']} errors"])
    r, update_status = res["soak"], res.get("update_response", {}).get("status")
    rows.append([f"soak {args.soak:.0f} s, 8 clients, bundle update midway",
                 f"{r['errors']} errors in {r['requests']} requests; update HTTP {update_status}; RSS "
                 f"{r['rss_before_mib']:.1f} -> {r['rss_after_mib']:.1f} MiB ({r['rss_growth_pct']:+.1f} %)"])
    r = res["memory_budget"]
    rows.append([f"memory budget ({r['holds']} tasks), round robin", f"{r['errors']} errors in {r['requests']} "
                 f"requests, {r['evictions']} evictions, at most {r['most_resident']} resident"])
    r = res["fuzz_http"]
    rows.append([f"fuzzed HTTP bodies ({r['requests']})", f"{r['crashes_or_unanswered']} crashes/unanswered, alive "
                 f"after: {r['alive_after']}, status codes {r['status_codes']}"])
    r = res["fuzz_serial"]
    rows.append([f"fuzzed serial frames ({r['frames']})", f"{r['crashes']} crashes, {r['error_frames']} error "
                 f"frames, {r['unanswered']} cut inside the header, {r['no_magic_skipped']} no longer frame-like, "
                 f"serves after: {r['serves_after']}"])
    _common.write("runtime", args, {k: rounded(v) if isinstance(v, dict) else v for k, v in res.items()},
                  "device runtime on onnxruntime CPU, this machine\n\n" + _common.table(["figure", "measured"], rows))


if __name__ == "__main__":
    main()
