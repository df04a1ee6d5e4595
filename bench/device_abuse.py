"""The device under attack and under load (issue 22): a real ``pcl-edge serve`` (signed bundles, a bundle store)
taking fuzzed HTTP requests, fuzzed serial frames and hostile bundles; memory over evictions and activations; health
checks while clients send JSON bodies just under the size limit.

    python bench/device_abuse.py            # 10,000 HTTP, 10,000 serial, 1,000 hostile bundles, 1,000 evictions
    python bench/device_abuse.py --quick    # 400 / 400 / 60 / 100

Figures: crashes (a 5xx, an answer that is not the protocol's JSON error, a dropped connection, a dead transport);
whether the serving bundle stayed the same and no file was left behind after each hostile bundle; RSS before and
after 1,000 LRU evictions and 100 activations (device memory: only where cuda-python sees a GPU, else n/a); the
p50/p99 of ``GET /v2/health/live`` alone and while 8 clients each keep sending a JSON body just under the limit."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import _common
import numpy as np
from runtime import Server, fuzz_http, fuzz_serial, rss_of

from pcl_edge.bundle import pack_bundle
from pcl_edge.bundle.manifest import seal
from pcl_edge.bundle.signing import keygen, sign_dir
from pcl_edge.evolve import evolve, learn, preset_config
from pcl_edge.export import export_bundle
from pcl_edge.runtime import Router

MAX_BUNDLE_MB = 8


def make_bundles(work: Path) -> dict:
    """v1 (tasks 1-4, version 1) and v2 (tasks 1-5, version 2, against v1), both signed; a rogue key."""
    evolve(preset_config("tiny", "digits", tasks="4x2"), out=work / "run", progress=False)
    key, pub = keygen(work / "keys" / "release")
    rogue, _ = keygen(work / "keys" / "rogue")
    export_bundle(work / "run", work / "v1", sign_key=key)
    learn(work / "run", tasks="1x2", progress=False)
    export_bundle(work / "run", work / "v2", base=work / "v1", sign_key=key)
    pack_bundle(work / "v1", work / "v1.tar")
    pack_bundle(work / "v2", work / "v2.tar")
    return {"key": key, "pub": pub, "rogue": rogue}


def _retar(src: Path, out: Path, extra=(), drop=(), fmt="w", mutate=None) -> Path:
    with tarfile.open(src) as s, tarfile.open(out, fmt) as d:
        for m in s.getmembers():
            if m.name in drop:
                continue
            data = s.extractfile(m).read() if m.isfile() else None
            if mutate and data is not None:
                data = mutate(m.name, data)
                m.size = len(data)
            d.addfile(m, io.BytesIO(data) if data is not None else None)
        for info, data in extra:
            d.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def _member(name: str, size: int = 0, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    return info


def hostile_bundles(work: Path, keys: dict) -> dict[str, Path]:
    """One file per kind of hostile bundle (the truncated ones are cut afresh at each upload)."""
    d = work / "hostile"
    d.mkdir()
    v2 = work / "v2.tar"
    out = {}
    bomb = d / "gzip-bomb.tar"  # the genuine signed bundle as gzip, with an unlisted 256 MB member of zeros
    with tarfile.open(v2) as s, open(bomb, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w") as t:
        for m in s.getmembers():
            t.addfile(m, s.extractfile(m) if m.isfile() else None)
        t.addfile(_member("padding.bin", 256 << 20), io.BytesIO(bytes(256 << 20)))
    out["gzip-bomb"] = bomb
    if shutil.which("tar"):
        (d / "sparse").mkdir()
        with open(d / "sparse" / "manifest.json", "wb") as fh:
            fh.truncate(64 << 20)
        subprocess.run(["tar", "--sparse", "-cf", str(d / "sparse.tar"), "-C", str(d / "sparse"), "manifest.json"],
                       check=True)
        out["sparse"] = d / "sparse.tar"
    forged = work / "forged"
    shutil.copytree(work / "v2", forged)
    (forged / "signatures.json").unlink()
    sign_dir(forged, keys["rogue"])
    pack_bundle(forged, d / "forged.tar")
    out["forged"] = d / "forged.tar"

    def reseal(name, data):
        if name != "manifest.json":
            return data
        m = json.loads(data)
        m["tasks"][0]["class_names"] = ["evil", "evil"]
        m["bundle_version"] = 7
        return json.dumps(seal({k: v for k, v in m.items() if k != "manifest_sha256"})).encode()

    out["re-sealed"] = _retar(v2, d / "resealed.tar", mutate=reseal)
    out["oversized"] = _retar(v2, d / "oversized.tar", extra=[(_member("x.bin", (MAX_BUNDLE_MB + 1) << 20),
                                                               bytes((MAX_BUNDLE_MB + 1) << 20))])
    out["older"] = work / "v1.tar"
    out["unlisted-extra"] = _retar(v2, d / "extra.tar", extra=[(_member("models/evil.onnx", 1 << 20), bytes(1 << 20)),
                                                               (_member("../../outside", 3), b"abc")])
    out["link"] = _retar(v2, d / "link.tar", extra=[(_member("models/x", 0, tarfile.SYMTYPE, "/etc/passwd"), None)])
    out["model-swapped"] = _retar(v2, d / "swapped.tar", mutate=lambda n, b: b[::-1] if n.endswith("05.onnx") else b)
    out["huge-manifest"] = _retar(v2, d / "huge.tar", drop=("manifest.json",),
                                  extra=[(_member("manifest.json", 17 << 20), b" " * (17 << 20))])
    out["too-many-members"] = _retar(v2, d / "many.tar", extra=[(_member(f"m/{i}", 0), b"") for i in range(5000)])
    out["truncated"] = v2
    return out


def store_files(store: Path, active_dir: str) -> list[str]:
    """What the store holds besides its record, the engine ledger and the active bundle's files."""
    keep = {"store.json", "engines.json", "engines.json.lock", ".lock"}
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file() and p.name not in keep
                  and active_dir not in p.parts)


def abuse_bundles(server: Server, store: Path, kinds: dict[str, Path], n: int, rng: np.random.Generator) -> dict:
    token = server.token.read_text()
    digest0 = json.loads(server.request("GET", "/v2/models/task_01")[1])["bundle_digest"]
    active_dir = next(p.name for p in (store / "unpacked").iterdir()) if any((store / "unpacked").iterdir()) else ""
    names = sorted(kinds)
    with tarfile.open(kinds["truncated"]) as t:  # a cut before the end of the last file's data: never whole
        data_end = max(m.offset_data + m.size for m in t.getmembers())
    out = {"uploads": n, "crashes": 0, "hostile_accepted": 0, "changed_serving": 0, "left_files": 0, "status": {}}
    for i in range(n):
        kind = names[i % len(names)]
        data = kinds[kind].read_bytes()
        if kind == "truncated":
            data = data[: int(rng.integers(1, data_end))]
        try:
            status, body = server.request("PUT", "/v2/admin/bundle", data, {"Authorization": f"Bearer {token}"})
            out["status"].setdefault(kind, {}).setdefault(status, 0)
            out["status"][kind][status] += 1
            answered = status == 200 or "error" in json.loads(body or b"{}")  # the protocol's JSON error
            out["crashes"] += status >= 500 or not answered
            # the genuine signed bundle with unlisted members is the bundle that serves: a no-op (its extras are
            # never written); every other kind must be refused
            out["hostile_accepted"] += status == 200 and kind != "unlisted-extra"
        except (OSError, http.client.HTTPException, ValueError):
            out["crashes"] += 1
        now = json.loads(server.request("GET", "/v2/models/task_01")[1])["bundle_digest"]
        out["changed_serving"] += now != digest0
        out["left_files"] += bool(store_files(store, active_dir))
    out["alive_after"] = server.request("GET", "/v2/health/ready")[0] == 200
    return out


def memory_flat(work: Path, evictions: int, activations: int) -> dict:
    """In-process: a budget that fits 2 tasks, round robin until ``evictions``; then activate v2 / roll back to v1
    alternately ``activations`` times, every task answering after each. RSS after a warm-up, and at the end."""
    from pcl_edge.runtime.backends import rss_bytes

    x = np.zeros((1, 1, 8, 8), np.float32)
    r = Router(work / "v1", backend="ort", store=work / "mem-store")
    for t in r.tasks():
        r.infer(t["id"], x)
    r.set_memory_budget(sum(sorted(r.loaded().values())[-2:]))  # any two fit, never three: every round evicts

    def churn(k):
        done = 0
        while done < k:
            before = sum(s.evictions for s in r.stats.values())
            for t in r.tasks():
                r.infer(t["id"], x)
            step = sum(s.evictions for s in r.stats.values()) - before
            if step == 0:
                raise RuntimeError("a round robin evicted nothing: the budget holds every task")
            done += step

    churn(100)  # warm-up: allocator pools, first loads
    rss0 = rss_bytes()
    churn(evictions)
    rss1 = rss_bytes()
    for i in range(activations):  # v1 is older than v2: activations alternate with rollbacks, as an operator's would
        r.activate(work / "v2") if i % 2 == 0 else r.rollback()
        for t in r.tasks():
            r.infer(t["id"], x)
    rss2 = rss_bytes()
    pct = lambda a, b: round(100 * (b - a) / a, 2)  # noqa: E731
    return {"evictions": sum(s.evictions for s in r.stats.values()), "activations": activations,
            "rss_start_mib": round(rss0 / 2**20, 1), "rss_after_evictions_mib": round(rss1 / 2**20, 1),
            "rss_after_activations_mib": round(rss2 / 2**20, 1), "growth_evictions_pct": pct(rss0, rss1),
            "growth_total_pct": pct(rss0, rss2), "device_memory": "n/a (no GPU here)"}


def health_under_load(server: Server, seconds: float, clients: int, body_mb: float) -> dict:
    n = int(body_mb * 2**20 / len("0.123456,"))
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                   "data": [0.123456] * n}]}, separators=(",", ":")).encode()
    assert len(body) < 16 << 20, len(body)  # just under the service's 16 MiB limit: parsed, not refused
    stop, sent = threading.Event(), [0]

    def probe(duration):
        lat = []
        end = time.perf_counter() + duration
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            server.request("GET", "/v2/health/live", conn=conn)
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        return lat

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not stop.is_set():
            try:
                server.request("POST", "/v2/models/task_01/infer", body, {"content-type": "application/json"}, conn)
                sent[0] += 1
            except (OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    idle = probe(min(5.0, seconds))
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    loaded = probe(seconds)
    stop.set()
    for t in threads:
        t.join(60)

    def q(v, p):
        return round(float(np.percentile(v, p)), 2)

    return {"body_mib": round(len(body) / 2**20, 2), "clients": clients, "seconds": seconds,
            "bodies_sent": sent[0], "idle_p50_ms": q(idle, 50), "idle_p99_ms": q(idle, 99),
            "loaded_p50_ms": q(loaded, 50), "loaded_p99_ms": q(loaded, 99), "loaded_max_ms": round(max(loaded), 2),
            "probes": len(loaded), "mean_ms": round(statistics.mean(loaded), 2)}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--fuzz", type=int, default=10000)
    ap.add_argument("--bundles", type=int, default=1000)
    ap.add_argument("--evictions", type=int, default=1000)
    ap.add_argument("--activations", type=int, default=100)
    ap.add_argument("--load-s", type=float, default=20)
    ap.add_argument("--keep", help="working directory to keep")
    args = ap.parse_args()
    if args.quick:
        args.fuzz, args.bundles, args.evictions, args.activations, args.load_s = 400, 60, 100, 10, 4
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-abuse-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    keys = make_bundles(work)
    kinds = hostile_bundles(work, keys)
    store = work / "store"
    res: dict = {}
    server = Server(work / "v2", "--trusted-key", str(keys["pub"]), "--bundle-store", str(store),
                    "--max-bundle-mb", str(MAX_BUNDLE_MB))
    try:
        res["fuzz_http"] = fuzz_http(server, args.fuzz, np.random.default_rng(0))
        res["hostile_bundles"] = abuse_bundles(server, store, kinds, args.bundles, np.random.default_rng(2))
        res["health"] = health_under_load(server, args.load_s, 8, 15.8)
        res["server_rss_mib"] = round(rss_of(server.proc.pid) / 2**20, 1)
    finally:
        server.stop()
    res["fuzz_serial"] = fuzz_serial(work / "v2", args.fuzz, np.random.default_rng(1))
    res["memory"] = memory_flat(work, args.evictions, args.activations)
    h, b, m, f, s = res["health"], res["hostile_bundles"], res["memory"], res["fuzz_http"], res["fuzz_serial"]
    rows = [
        [f"fuzzed HTTP requests ({f['requests']})", f"{f['crashes_or_unanswered']} crashes/unanswered, alive after: "
         f"{f['alive_after']}"],
        [f"fuzzed serial frames ({s['frames']})", f"{s['crashes']} crashes, serves after: {s['serves_after']}"],
        [f"hostile bundles ({b['uploads']}: {', '.join(sorted(kinds))})",
         f"{b['crashes']} crashes, {b['hostile_accepted']} hostile ones accepted (the genuine bundle with unlisted "
         f"members: a no-op, extras never written), serving bundle changed {b['changed_serving']} times, files left "
         f"behind after {b['left_files']} uploads, alive after: {b['alive_after']}"],
        [f"RSS over {m['evictions']} LRU evictions and {m['activations']} activations",
         f"{m['rss_start_mib']} -> {m['rss_after_evictions_mib']} -> {m['rss_after_activations_mib']} MiB "
         f"({m['growth_evictions_pct']:+} %, {m['growth_total_pct']:+} % in all); device memory {m['device_memory']}"],
        [f"GET /v2/health/live while 8 clients send {h['body_mib']} MiB JSON bodies ({h['seconds']:g} s)",
         f"p50 {h['loaded_p50_ms']} ms, p99 {h['loaded_p99_ms']} ms, max {h['loaded_max_ms']} ms over {h['probes']} "
         f"probes ({h['bodies_sent']} bodies); idle p99 {h['idle_p99_ms']} ms"],
    ]
    text = "the device side under abuse, onnxruntime CPU, this machine\n\n" + _common.table(["figure", "measured"],
                                                                                          rows)
    _common.write("device_abuse", args, res, text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PCL_EDGE_WORKERS", "1")
    main()
