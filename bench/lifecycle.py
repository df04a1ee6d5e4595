"""The loop the product exists for, run as a user runs it (issue 20): tasks 1-3 learned and shipped signed; the device
serves them; tasks 4-5 learned weeks later from the stored population, exported against the device's bundle and
pushed while a client keeps asking tasks 1-3; the service is killed (kill -9) and restarted with the same command;
an older bundle is pushed and refused; rollback; restart. Each step prints its figure.

    python bench/lifecycle.py            # Split Digits at the cpu preset, in a temporary directory
    python bench/lifecycle.py --quick    # the tiny preset (what the test runs)
    python bench/lifecycle.py --keep DIR # keep the run, bundles and store in DIR

The commands are the README's block "the stream, end to end", read from the README and run literally in a working
directory, with three substitutions: ``--port 0`` on the serve line (a free port, read from its log), that port in
the push URL, and ``--preset tiny`` on the evolve line with --quick. The kill -9, restarts, refused push and rollback
follow the README's prose after the block."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import _common

MARKER = "bench/lifecycle.py runs this block"


def readme_block(readme: str) -> list[str]:
    """The README's end-to-end block: its command lines, comments dropped."""
    block = next((b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if MARKER in b), None)
    if block is None:
        raise SystemExit(f"README.md has no bash block marked '{MARKER}'")
    return [ln.split(" #")[0].strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


class Service:
    """``pcl-edge serve`` as a subprocess: its log read line by line, its port read from the log."""

    def __init__(self, argv: list[str], cwd: Path, env: dict) -> None:
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()
        self.url = ""

    def ready(self, task: str, timeout: float = 300) -> float:
        """Seconds from spawn until ``task`` answers an inference (health alone is not serving)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            m = next((re.search(r"on http://[\d.]+:(\d+)", ln) for ln in list(self.log) if " on http://" in ln), None)
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                try:
                    if infer(self.url, task)[0] == 200:
                        return time.perf_counter() - self.t0
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("serve did not come up: " + "".join(self.log)[-800:])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_SHAPES: dict[tuple[str, str], list[int]] = {}


def call(url: str, path: str, body: dict | None = None, token: str | None = None, method: str = "GET"):
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json",
                                          **({"authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def infer(url: str, task: str):
    if (url, task) not in _SHAPES:
        status, meta = call(url, f"/v2/models/{task}")
        if status != 200:
            return status, meta
        _SHAPES[(url, task)] = [1, *meta["inputs"][0]["shape"][1:]]
    shape = _SHAPES[(url, task)]
    n = 1
    for d in shape:
        n *= d
    return call(url, f"/v2/models/{task}/infer", {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                                              "data": [0.1] * n}]}, method="POST")


class Client:
    """Requests to tasks 1-3, one after another, until stopped: every answer counted."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed, self.versions = url, 0, [], set()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            task = f"task_{i % 3 + 1:02d}"
            try:
                status, body = infer(self.url, task)
            except OSError as exc:
                status, body = 0, {"error": str(exc)}
            if status == 200:
                self.ok += 1
                self.versions.add(body["model_version"])
            else:
                self.failed.append((task, status, body.get("error")))
            i += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--keep", help="working directory to keep (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="pcl-lifecycle-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(_common.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cli = [sys.executable, "-m", "pcl_edge.cli"]
    steps: list[dict] = []
    service: Service | None = None

    def step(name: str, **figures) -> None:
        steps.append({"step": name, **figures})
        print(f"[{len(steps):2d}] {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)

    def run(line: str) -> subprocess.CompletedProcess:
        argv = shlex.split(line)
        if argv[0] != "pcl-edge":
            return subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True)
        return subprocess.run(cli + argv[1:], cwd=work, env=env, capture_output=True, text=True, timeout=3600)

    lines = readme_block((_common.ROOT / "README.md").read_text())
    serve_argv: list[str] = []
    try:
        for line in lines:
            argv = shlex.split(line)
            sub = argv[1] if argv[0] == "pcl-edge" else argv[0]
            if sub == "evolve" and args.quick:
                line += " --preset tiny"
            if sub == "serve":
                serve_argv = cli + argv[1:] + ["--port", "0"]
                service = Service(serve_argv, work, env)
                step("serve (first start, from the command-line bundle)", start_s=round(service.ready("task_03"), 2),
                     tasks=len(call(service.url, "/v2/repository/index", {}, _token(work), "POST")[1]))
                continue
            if sub == "push":
                line = line.replace("http://127.0.0.1:8000", service.url)
                client = Client(service.url)
                time.sleep(1.0)
                t0 = time.perf_counter()
                res = run(line)
                push_s = time.perf_counter() - t0
                time.sleep(1.0)
                client.stop()
                if res.returncode:
                    raise RuntimeError(f"{line}: {res.stderr.strip()[-500:]}")
                step("push v2 while a client asks tasks 1-3", push_s=round(push_s, 2), requests=client.ok + len(
                    client.failed), failed=len(client.failed), versions_answered=sorted(client.versions),
                    answer=res.stdout.strip()[-120:])
                continue
            t0 = time.perf_counter()
            res = run(line)
            if res.returncode:
                raise RuntimeError(f"{line}: exit {res.returncode}: {res.stderr.strip()[-800:]}")
            figures = {"wall_s": round(time.perf_counter() - t0, 1)}
            if sub in ("evolve", "learn"):
                s = json.loads((work / "runs" / "stream" / "summary.json").read_text())
                figures |= {"tasks": len(s["tasks"]), "acc": s["acc"], "bwt": s["bwt"]}
            if sub == "export":
                out = argv[argv.index("--out") + 1]
                figures["answer"] = res.stdout.strip()[-100:]
                figures["bundle"] = out
            step(line, **figures)

        v2 = _digest(work, "bundles/stream-v2.tar")
        v1 = _digest(work, "bundles/stream-v1.tar")
        service.kill9()
        service = Service(serve_argv, work, env)
        after_kill = service.ready("task_05")
        meta = call(service.url, "/v2/models/task_05")[1]
        step("kill -9, then the same command", start_s=round(after_kill, 2),
             tasks=len(call(service.url, "/v2/repository/index", {}, _token(work), "POST")[1]),
             serves_v2=meta["bundle_digest"] == v2[:12], version=meta["versions"])
        service.stop()
        service = Service(serve_argv, work, env)
        normal = service.ready("task_05")
        step("stop, then the same command (a normal start of the same bundle)", start_s=round(normal, 2),
             kill9_over_normal=round(after_kill / normal, 3))

        res = run(f"pcl-edge push bundles/stream-v1.tar --url {service.url} --token-file token.txt")
        meta = call(service.url, "/v2/models/task_01")[1]
        step("push v1 again", exit=res.returncode, refused="HTTP 409" in res.stderr,
             still_v2=meta["bundle_digest"] == v2[:12], answer=res.stderr.strip()[-160:])
        status, body = call(service.url, "/v2/admin/rollback", {}, _token(work), "POST")
        step("POST /v2/admin/rollback", status=status, serves_v1=body.get("bundle_digest") == v1[:12],
             tasks=len(body.get("tasks", [])))
        service.kill9()
        service = Service(serve_argv, work, env)
        t = service.ready("task_03")
        meta = call(service.url, "/v2/models/task_03")[1]
        step("kill -9, then the same command", start_s=round(t, 2), serves_v1=meta["bundle_digest"] == v1[:12],
             tasks=len(call(service.url, "/v2/repository/index", {}, _token(work), "POST")[1]),
             task_05=call(service.url, "/v2/models/task_05")[0])
    finally:
        if service is not None:
            service.stop()
    ok = _verdict(steps)
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731  (markdown)
    rows = [[i + 1, cell(s["step"]), cell(", ".join(f"{k} {v}" for k, v in s.items() if k != "step"))]
            for i, s in enumerate(steps)]
    text = _common.table(["#", "step", "figures"], rows) + f"\n\nall checks passed: {ok}"
    _common.write("lifecycle", args, {"work": str(work), "steps": steps, "passed": ok}, text)
    if not ok:
        sys.exit(1)


def _verdict(steps: list[dict]) -> bool:
    """The issue's checks on the figures: v2 served with 0 failed requests, refused older push, rollback kept."""
    by = {s["step"]: s for s in steps}
    push = next(s for s in steps if s["step"].startswith("push v2"))
    kills = [s for s in steps if s["step"].startswith("kill -9")]
    return (push["failed"] == 0 and push["requests"] > 0 and kills[0]["serves_v2"] and kills[0]["tasks"] == 5
            and by["push v1 again"]["refused"] and by["push v1 again"]["still_v2"]
            and by["POST /v2/admin/rollback"]["serves_v1"] and kills[1]["serves_v1"] and kills[1]["tasks"] == 3
            and kills[1]["task_05"] == 404)


def _token(work: Path) -> str:
    return (work / "token.txt").read_text().strip()


def _digest(work: Path, tar: str) -> str:
    sys.path.insert(0, str(_common.ROOT))
    from pcl_edge.bundle.archive import tar_digest

    return tar_digest(work / tar)


if __name__ == "__main__":
    main()
