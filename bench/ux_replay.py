"""What a new user meets (issue 14), replayed from a fresh clone: the README's flow, the CLI, the report and the
service answers, every item of the issue's list checked as that user would check it, printed passed/failed.

    python bench/ux_replay.py                  # clone HEAD of this checkout; this interpreter runs the clone's code
    python bench/ux_replay.py --venv           # and a fresh virtual environment with the README's install (minutes)
    python bench/ux_replay.py --keep DIR       # keep the clone, runs, bundles, report and screenshots in DIR

Everything runs in the clone as a user would type it (``python -m pcl_edge.cli`` stands for ``pcl-edge`` unless
``--venv`` installed the entry point): the README's commands are read from the README and run literally. Items
whose check needs an interpreter with a module made unimportable (item 2) run the clone's own test of that matrix,
since that is where the matrix lives. Figures (item 8) are opened in headless Chromium when it is installed
(``apt-get install chromium``) and their screenshots written next to the report for a person to look at; without
Chromium that check says "skipped", never "passed". Exit status 1 when any check failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import _common

ITEMS = {1: "README paths, 'no such run', .gitignore", 2: "a missing extra is one line, exit 2",
         3: "--resume of a finished run; --out a file", 4: "byte-identical model.pt for the same seed",
         5: "progress: overall line, expert steps, the API logs as the CLI", 6: "help texts",
         7: "the expert circled by uid", 8: "figures read well (and in a browser)", 9: "strict inference, JSON errors",
         10: "one definition of readiness", 11: "bundles identified by digest (and anti-rollback)",
         12: ".tar activation",
         13: "logs and metrics", 14: "Triton repository carries the input spec",
         # issue 23: the README's "Your tools, unchanged" blocks, one per item of that issue
         231: "23.1 Triton's gRPC client", 232: "23.2 Prometheus parses the metrics, Triton's names",
         233: "23.3 versioned URLs, classification, unsupported parameters", 234: "23.4 Triton repository",
         235: "23.5 ort-trt backend", 236: "23.6 config files", 237: "23.7 a folder of photos, memory-mapped",
         238: "23.8 profiles by name, one version", 239: "23.9 the Jetson image"}
README_BLOCKS = ("serve", "grpc", "versions", "metrics", "triton", "ort-trt", "config", "photos", "profiles",
                 "jetson-image")


class Replay:
    def __init__(self, root: Path, venv: bool) -> None:
        self.root, self.clone = root, root / "clone"
        self.results: list[tuple[int, str, str, str]] = []  # (item, check, passed|FAILED|skipped, detail)
        subprocess.run(["git", "clone", "-q", str(_common.ROOT), str(self.clone)], check=True)
        self.env = {**os.environ, "PYTHONPATH": str(self.clone), "PCL_EDGE_CACHE": str(root / "cache")}
        self.env.pop("CI", None)
        if venv:
            subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
            self.python = str(root / "venv" / "bin" / "python")
            subprocess.run([self.python, "-m", "pip", "install", "-q", "torch==2.13.0", "-e",
                            f"{self.clone}[train,ort,serve,dev]"], check=True, cwd=self.clone)
            self.env.pop("PYTHONPATH")
            self.cli = [str(root / "venv" / "bin" / "pcl-edge")]
        else:
            self.python = sys.executable
            self.cli = [self.python, "-m", "pcl_edge.cli"]
        where = self.py("import pcl_edge; print(pcl_edge.__file__)").stdout.strip()
        if not where.startswith(str(self.clone)):
            raise SystemExit(f"the clone's code is not what runs ({where}); nothing checked")

    # -- running things in the clone -----------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.clone, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kw)

    def pcl(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.run([*self.cli, *args], timeout)

    def py(self, code: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.run([self.python, "-c", code], timeout)

    def run_tests(self, *nodes: str) -> subprocess.CompletedProcess:
        """The clone's own tests where a matrix lives there (no cache written into the clone)."""
        return self.run([self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *nodes], timeout=1200)

    def check(self, item: int, what: str, ok: bool | None, detail: str = "") -> bool:
        status = "skipped" if ok is None else "passed" if ok else "FAILED"
        self.results.append((item, what, status, detail if status != "passed" else ""))
        print(f"  [{status:7}] {item:2}. {what}" + (f": {detail}" if detail and status != "passed" else ""),
              flush=True)
        return bool(ok)


def _last_line(res: subprocess.CompletedProcess) -> str:
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-300:]


def one_clear_line(res: subprocess.CompletedProcess) -> tuple[bool, str]:
    """Exit 2, no traceback, exactly one error line (INFO lines logged before it are the usual log)."""
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()]
    ok = res.returncode == 2 and "Traceback" not in res.stderr and len(lines) == 1
    return ok, f"rc {res.returncode}: {res.stderr.strip()[-300:]}"


def sha256_tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def readme_commands(readme: str) -> list[str]:
    """The ``pcl-edge`` lines of the README's bash blocks that run on a workstation (not build-engines or push:
    those need the device), comments dropped."""
    out = []
    for marker, block in re.findall(r"(<!-- ux_replay: [\w-]+ -->\n)?```bash\n(.*?)```", readme, re.S):
        if "bench/lifecycle.py runs this block" in block or marker:  # replayed whole, elsewhere
            continue
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("pcl-edge ") and line.split()[1] in ("export", "bundle", "keygen", "report"):
                out.append(line)
    return out


# -- the training side -------------------------------------------------------------------------------------------
def training_side(r: Replay) -> dict:
    print("training side", flush=True)
    main = r.pcl("evolve")  # the README's main job, as typed
    latest = r.clone / "runs" / "latest"
    r.check(1, "`pcl-edge evolve` leaves runs/latest with a finished run",
            main.returncode == 0 and (latest / "summary.json").is_file(), f"rc {main.returncode}")
    for cmd in readme_commands((r.clone / "README.md").read_text()):
        res = r.pcl(*shlex.split(cmd)[1:])
        r.check(1, f"README: `{cmd}`", res.returncode == 0, res.stderr.strip()[-300:])
    for argv in (["report", "runs/nope"], ["export", "runs/nope", "--out", "bundles/x"],
                 ["evolve", "--resume", "runs/nope"]):
        res = r.pcl(*argv)
        ok, detail = one_clear_line(res)
        r.check(1, f"`pcl-edge {' '.join(argv)}` says what is missing",
                ok and "runs/nope" in res.stderr and ("--resume" not in res.stderr or argv[0] == "evolve"), detail)
    ignored = r.run(["git", "check-ignore", "runs", "bundles", "triton_repo"]).stdout.split()
    r.check(1, "runs/, bundles/, triton_repo/ are ignored by git", ignored == ["runs", "bundles", "triton_repo"],
            str(ignored))

    res = r.run_tests("tests/test_extras.py")
    r.check(2, "every sub-command x each optional module made unimportable (tests/test_extras.py)",
            res.returncode == 0, _last_line(res))

    tiny = ["evolve", "--preset", "tiny", "--tasks", "3x2", "--seed", "3"]
    a, b = r.pcl(*tiny, "--out", "runs/a"), r.pcl(*tiny, "--out", "runs/b")
    before = sha256_tree(r.clone / "runs" / "a")
    again = r.pcl("evolve", "--resume", "runs/a")
    r.check(3, "--resume of a finished run says so and changes nothing",
            a.returncode == 0 and again.returncode == 0 and "complete" in again.stderr
            and "resuming" not in again.stderr and sha256_tree(r.clone / "runs" / "a") == before,
            again.stderr.strip()[-300:])
    (r.clone / "runs" / "afile").write_text("x")
    ok, detail = one_clear_line(r.pcl(*tiny, "--out", "runs/afile"))
    r.check(3, "--out naming a file is one clear line", ok and "Errno" not in detail, detail)

    def model_hashes(run: str) -> dict[str, str]:
        return {k: v for k, v in sha256_tree(r.clone / "runs" / run / "experts").items() if k.endswith("model.pt")}
    ha, hb = model_hashes("a"), model_hashes("b")
    r.check(4, "two runs with one seed give byte-identical model.pt files",
            b.returncode == 0 and len(ha) == 3 and ha == hb, f"{len(ha)} vs {len(hb)} files")
    metrics = json.loads((r.clone / "runs" / "a" / "experts" / "task_01" / "metrics.json").read_text())
    r.check(4, "timings are kept in metrics.json", "train_s" in metrics and "search_s" in metrics, str(metrics)[:200])

    r.check(5, "one overall line per task (k/T, elapsed, left)",
            all(f"task {k}/5 done" in main.stderr for k in range(1, 6)) and "left" in main.stderr)
    steps = re.findall(r"task 1 expert: .*?/(\d+) \[", main.stderr)
    r.check(5, "the expert's final training shows its steps", bool(steps) and int(steps[-1]) > 1
            and "step/s" in main.stderr and "expert:   0%|          | 0/1 [" not in main.stderr, str(steps[-1:]))
    api = r.py("from pcl_edge.evolve import evolve, preset_config\n"
               "if __name__ == '__main__':\n"
               "    evolve(preset_config('tiny', 'digits', tasks='2x2', generations=0), out='runs/api')\n")
    r.check(5, "the Python API logs INFO lines as the CLI does", api.returncode == 0 and "task 2/2 done" in api.stderr,
            api.stderr.strip()[-200:])

    res = r.run_tests("tests/test_cli.py::test_every_option_of_every_sub_command_says_what_it_does_and_its_default")
    r.check(6, "every option of every sub-command says what it does and its default (tests/test_cli.py)",
            res.returncode == 0, _last_line(res))
    evolve_help = r.pcl("evolve", "--help").stdout
    r.check(6, "`evolve --help` says what each preset sets",
            all(re.search(rf"^\s+{p}: population", evolve_help, re.M) for p in ("tiny", "cpu", "gpu")))
    return {"main": main}


# -- the report --------------------------------------------------------------------------------------------------
def report_side(r: Replay, screenshots: bool) -> None:
    print("report", flush=True)
    res = r.pcl("report", "runs/latest", "--measure", "ort-cpu", "--profile", "hw_profiles/jetson-orin-nano-8gb.yaml",
                "--out", "runs/latest/report-jetson")
    own = r.pcl("report", "runs/latest", "--measure", "ort-cpu")
    code = ("import json\nfrom pathlib import Path\nfrom pcl_edge.report import expert_row, task_candidates\n"
            "run = Path('runs/latest').resolve()\nout = []\n"
            "for t in json.loads((run / 'summary.json').read_text())['tasks']:\n"
            "    meta = json.loads((run / 'experts' / f\"task_{t['id']:02d}\" / 'metrics.json').read_text())\n"
            "    row = expert_row(t | {'selected_from': meta['selected_from']}, task_candidates(run, t['id']))\n"
            "    out.append([meta['selected_from'], row and row['uid']])\nprint(json.dumps(out))\n")
    pairs = json.loads(r.py(code).stdout or "[]")
    r.check(7, "each task's circle is on the candidate the expert came from (by uid)",
            len(pairs) == 5 and all(a == b for a, b in pairs), str(pairs))
    problems = [ln for ln in (res.stderr + own.stderr).splitlines() if "overlaps" in ln or "cut off" in ln]
    r.check(8, "no figure of either report has overlapping or cut-off texts",
            res.returncode == 0 and own.returncode == 0 and not problems, "; ".join(problems)[:400]
            or (res.stderr + own.stderr)[-300:])
    cap = r.py("from pcl_edge.report import _caveat\nfrom pcl_edge.hw.profile import load_profile\n"
               "print(_caveat({}, load_profile('hw_profiles/jetson-orin-nano-8gb.yaml'), {'host': 'here'}))")
    r.check(8, "a Jetson estimate against a measurement here is captioned as such on the figure",
            "ESTIMATE" in cap.stdout, cap.stdout.strip() or cap.stderr[-200:])
    heat = r.py("from pathlib import Path\nimport pcl_edge.report as rep\nseen = {}\nsave = rep._save\n"
                "def keep(fig, path):\n    seen['clim'] = fig.axes[0].images[0].get_clim()\n"
                "    return save(fig, path)\n"
                "rep._save = keep\n"
                "rep.accuracy_heatmap({'accuracy_matrix': [[0.014, None], [0.222, 0.99]], 'acc': 0.5, 'bwt': 0.0},"
                " Path('runs/heat.png'))\nprint(seen['clim'][0])")
    r.check(8, "the heat map's colour scale reaches down to 0.014 (it was fixed at 0.5-1.0)",
            heat.returncode == 0 and float(heat.stdout.strip() or 1) <= 0.014, heat.stdout.strip() + heat.stderr[-200:])
    if not screenshots:
        return
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        r.check(8, "every report page rendered in headless Chromium", None, "no chromium here: apt-get install "
                "chromium")
        return
    shots = []
    for page in (r.clone / "runs" / "latest" / "report" / "index.html",
                 r.clone / "runs" / "latest" / "report-jetson" / "index.html"):
        shot = page.with_name("screenshot.png")
        res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={r.root / 'chromium'}", "--hide-scrollbars",
                              "--window-size=1200,4200", f"--screenshot={shot}", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
        shots.append(shot)
        r.check(8, f"{page.parent.name}/index.html renders in headless Chromium ({shot})",
                res.returncode == 0 and shot.is_file() and shot.stat().st_size > 50_000, res.stderr[-200:])


# -- issue 23: the README's "Your tools, unchanged" --------------------------------------------------------------
def readme_blocks(readme: str) -> dict[str, tuple[str, str]]:
    """``<!-- ux_replay: NAME -->`` -> (language, the fenced block that follows it)."""
    return {name: (lang, code) for name, lang, code in
            re.findall(r"<!-- ux_replay: ([\w-]+) -->\n```(bash|python)\n(.*?)```", readme, re.S)}


def photos(root: Path) -> None:
    """``photos/train/<class>/``: JPEG and PNG, three sizes, RGB, grayscale and palette images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("ant", "bee", "cow", "dog")):
        d = root / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(24):
            h, w = ((20, 20), (24, 18), (40, 32))[i % 3]
            pixels = np.clip(rng.normal(60 * c + 40, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            mode = ("RGB", "L", "P")[i % 3] if i % 4 else "RGB"
            Image.fromarray(pixels).convert(mode).save(d / f"{i}.{'png' if mode == 'P' or i % 2 else 'jpg'}")


def ecosystem_side(r: Replay) -> None:
    print("your tools, unchanged (issue 23)", flush=True)
    blocks = readme_blocks((r.clone / "README.md").read_text())
    missing = [b for b in README_BLOCKS if b not in blocks]
    r.check(0, "the README has every block the replay runs", not missing, f"missing: {missing}")
    photos(r.clone / "photos")
    shim = r.root / "bin"  # `pcl-edge` typed in a block runs the clone's code, as the other checks do
    shim.mkdir(exist_ok=True)
    (shim / "pcl-edge").write_text(f"#!/bin/sh\nexec {shlex.join(r.cli)} \"$@\"\n")
    (shim / "pcl-edge").chmod(0o755)
    env = {**r.env, "PATH": f"{shim}:{r.env.get('PATH', '')}"}

    def run(name: str, timeout: float = 900) -> subprocess.CompletedProcess:
        lang, code = blocks.get(name, ("bash", "false"))
        argv = ["bash", "-c", code] if lang == "bash" else [r.python, "-c", code]
        return subprocess.run(argv, cwd=r.clone, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    import socket

    busy = []
    for port in (8000, 8001, 8002):  # the README's ports: a server already there would answer for ours
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    if busy:
        r.check(0, "the README's ports 8000-8002 are free for the replay", False, f"in use: {busy}")
        return
    lines = blocks.get("serve", ("bash", ""))[1].splitlines()
    serve_line = next((ln for ln in lines if ln.startswith("pcl-edge serve")), "false")
    pre = subprocess.run(["bash", "-c", "\n".join(ln for ln in lines if ln != serve_line)], cwd=r.clone, env=env,
                         capture_output=True, text=True, timeout=600)
    server = subprocess.Popen(["bash", "-c", f"exec {serve_line.split(' #')[0]}"], cwd=r.clone, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(server.stderr), daemon=True).start()
    try:
        up = False
        for _ in range(120):
            try:
                with urllib.request.urlopen("http://127.0.0.1:8000/v2/health/ready", timeout=2) as resp:
                    up = resp.status == 200
                    break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None:
                    break
                time.sleep(0.5)
        r.check(231, "README: export, then `pcl-edge serve ... --grpc-port 8001` answers on 8000",
                pre.returncode == 0 and up, (pre.stderr + "".join(log))[-300:])
        res = run("grpc")
        r.check(231, "README: tritonclient.grpc infers with class_count=2 ('score:index:label' strings)",
                res.returncode == 0 and re.search(r"b'-?[\d.]+:[01]:[01]' b'-?[\d.]+:[01]:[01]'", res.stdout)
                is not None, (res.stdout + res.stderr).strip()[-300:])
        res = run("versions")
        out = res.stdout.strip().splitlines()
        r.check(233, "README: a versioned URL answers ready; an unread parameter (sequence_id) is a 400 naming it",
                len(out) >= 2 and out[0] == "True" and out[-1].startswith("400 ") and "sequence_id" in out[-1],
                (res.stdout + res.stderr)[-300:])
        res = run("metrics")
        counts = re.findall(r"^task_01 1 (\d+\.\d+)$", res.stdout, re.M)
        r.check(232, "README: prometheus_client's parser reads nv_inference_request_success{model,version}",
                res.returncode == 0 and bool(counts) and float(counts[0]) >= 1, (res.stdout + res.stderr)[-300:])
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
    res = run("triton")
    r.check(234, "README: Triton repository with labels.txt, dynamic batching and the TensorRT accelerator",
            res.returncode == 0 and "dynamic_batching" in res.stdout and "tensorrt" in res.stdout
            and (r.clone / "triton_repo" / "task_01" / "labels.txt").is_file(), (res.stdout + res.stderr)[-300:])
    res = run("ort-trt", timeout=120)
    err = res.stderr.strip().splitlines()
    r.check(235, "README: `serve --backend ort-trt --dla-core 0` here (no TensorRT provider) is one line, exit 2",
            res.returncode == 2 and bool(err) and err[-1].startswith("pcl-edge serve: error:")
            and "TensorrtExecutionProvider" in err[-1], err[-1][-300:] if err else "")
    res = run("config")
    again = r.clone / "runs" / "again" / "config.json"
    cfg = json.loads(again.read_text()) if again.is_file() else {}
    mistakes = [ln for ln in res.stderr.splitlines() if "final.lr" in ln or "populaton" in ln]
    r.check(236, "README: --config run.yaml with overrides, then the run's config.json as a config",
            cfg.get("seed") == 2 and cfg.get("final", {}).get("lr") == 0.03 and cfg.get("tasks") == "2x2",
            str({k: cfg.get(k) for k in ("seed", "tasks")}) + res.stderr[-200:])
    r.check(236, "README: two mistakes in one config are named (with the closest key), exit 2",
            "exit 2" in res.stdout and "population" in res.stderr and bool(mistakes), res.stderr.strip()[-300:])
    res = run("photos")

    def experts(run: str) -> dict[str, str]:
        return {k: v for k, v in sha256_tree(r.clone / "runs" / run / "experts").items() if k.endswith("model.pt")}
    a, b = experts("photos"), experts("photos-mapped")
    mapped = list((r.root / "cache").glob("imagefolder-*/splits/*.npy"))  # the second run's tasks really were mapped
    r.check(237, "README: mixed JPEG/PNG sizes and modes train at --input-size; memory-mapped gives the same experts",
            res.returncode == 0 and len(a) == 2 and a == b and len(mapped) >= 6,
            f"{len(mapped)} mapped splits; " + res.stderr.strip()[-300:])
    res = run("profiles")
    version = r.py("import pcl_edge; print(pcl_edge.__version__)").stdout.strip()
    summary = r.clone / "runs" / "orin" / "summary.json"
    r.check(238, "README: `pcl-edge --version` and `--target jetson-orin-nano-8gb` by name",
            res.returncode == 0 and f"pcl-edge {version}" in res.stdout and summary.is_file()
            and "jetson-orin-nano-8gb" in summary.read_text(), res.stderr.strip()[-300:])
    res = run("jetson-image", timeout=600)
    r.check(239, "README: deploy/check_jetson_image.py (hadolint, aarch64/cp310 resolution)",
            None if "hadolint: skipped" in res.stdout else res.returncode == 0 and "hadolint: passed" in res.stdout,
            res.stdout.strip().splitlines()[0] if res.stdout.strip() else res.stderr[-300:])


# -- the service -------------------------------------------------------------------------------------------------
class Server:
    """``pcl-edge serve`` as a subprocess: its log collected line by line, its real port read from the log."""

    def __init__(self, r: Replay, *args: str) -> None:
        self.proc = subprocess.Popen([*r.cli, "serve", *args], cwd=r.clone, env=r.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()
        deadline, self.port = time.time() + 120, None
        while time.time() < deadline and self.port is None and self.proc.poll() is None:
            m = next((re.search(r"on http://[\d.]+:(\d+)", ln) for ln in self.log if " on http://" in ln), None)
            self.port = int(m.group(1)) if m else None
            time.sleep(0.2)
        if self.port is None:
            self.stop()
            raise RuntimeError("serve did not start: " + "".join(self.log)[-500:])
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: dict | None = None,
             token: str | None = None) -> tuple[int, dict | str]:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read().decode()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def service_side(r: Replay) -> None:
    print("service", flush=True)
    bundles = r.clone / "bundles"
    r.pcl("export", "runs/a", "--out", "bundles/other")  # another run's bundle: also bundle_version 1
    r.pcl("learn", "runs/a", "--tasks", "2x2")  # that run grows, and its next bundle is version 2
    r.pcl("export", "runs/a", "--out", "bundles/a-v2.tar", "--base", "bundles/other")
    token_file = r.clone / "token.txt"
    token = "replay-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:24]
    token_file.write_text(token)
    token_file.chmod(0o644)
    s = Server(r, "bundles/v1", "--port", "0", "--token-file", str(token_file), "--allow-unsigned")
    try:
        meta = s.call("GET", "/v2/models/task_01")[1]
        inp, out = meta["inputs"][0], meta["outputs"][0]
        shape = [1, *inp["shape"][1:]] if inp["shape"][0] == -1 else inp["shape"]
        n = 1
        for d in shape:
            n *= d

        def infer(name=inp["name"], outputs=None, task="task_01"):
            body = {"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": [0.1] * n}]}
            if outputs:
                body["outputs"] = [{"name": o} for o in outputs]
            return s.call("POST", f"/v2/models/{task}/infer", body)

        ok_status, ok_body = infer()
        r.check(9, "a well-formed request answers", ok_status == 200 and ok_body["outputs"][0]["name"] == out["name"],
                str(ok_body)[:200])
        st, body = infer(name="foo")
        r.check(9, "an unknown input name is a 400 naming the input that exists",
                st == 400 and inp["name"] in body.get("error", ""), f"{st} {body}")
        st, body = infer(outputs=["bar"])
        r.check(9, "an unknown requested output is a 400 naming the outputs that exist",
                st == 400 and out["name"] in body.get("error", ""), f"{st} {body}")
        st404, b404 = s.call("GET", "/v2/no/such/path")
        st405, b405 = s.call("GET", "/v2/models/task_01/infer")
        r.check(9, "404 and 405 bodies are the protocol's JSON {\"error\": ...}",
                (st404, st405) == (404, 405) and isinstance(b404, dict) and "error" in b404
                and isinstance(b405, dict) and "error" in b405, f"{st404} {b404!r} {st405} {b405!r}")
        st, cfg = s.call("GET", "/v2/models/task_01/config")
        r.check(9, "GET /v2/models/{name}/config answers as Triton does",
                st == 200 and cfg.get("name") == "task_01" and cfg.get("input") and cfg.get("output")
                and "max_batch_size" in cfg, f"{st} {str(cfg)[:200]}")

        def states() -> list[tuple[str, str, bool, bool]]:
            index = s.call("POST", "/v2/repository/index", {}, token)[1]
            return [(m["name"], m["state"], m["state"] == "READY",
                     s.call("GET", f"/v2/models/{m['name']}/ready")[0] == 200) for m in index]
        lazy = states()
        s.call("POST", "/v2/repository/models/task_02/unload", {}, token)
        unloaded = states()
        st_unloaded = infer(task="task_02")[0]
        s.call("POST", "/v2/repository/models/task_02/load", {}, token)
        reloaded = states()
        agree = all(a == b for *_, a, b in lazy + unloaded + reloaded)
        r.check(10, "index, ready and infer agree: lazily loaded, unloaded, loaded again",
                agree and all(x[2] for x in lazy) and not unloaded[1][2] and st_unloaded != 200
                and all(x[2] for x in reloaded), f"{lazy} | {unloaded} (infer {st_unloaded}) | {reloaded}")

        digest = {b: json.loads((bundles / b / "manifest.json").read_text())["manifest_sha256"][:12]
                  for b in ("v1", "other")}
        st, act = s.call("POST", "/v2/admin/activate", {"bundle": str(bundles / "other")}, token)
        metrics = s.call("GET", "/metrics")[1]
        meta = s.call("GET", "/v2/models/task_01")[1]
        r.check(11, "another run's bundle of the same version is refused (409) naming both by digest; metadata and "
                "/metrics still name the active one",
                st == 409 and digest["other"] in act.get("error", "") and digest["v1"] in act.get("error", "")
                and digest["other"] != digest["v1"] and digest["v1"] in metrics and digest["v1"] in str(meta),
                f"{st} {act}")

        tar = bundles / "a-v2.tar"
        before = sorted(p.name for p in bundles.iterdir())
        answers = [s.call("POST", "/v2/admin/activate", {"bundle": str(tar)}, token) for _ in range(2)]
        after = sorted(p.name for p in bundles.iterdir())
        managed = bundles / "v1.store" / "unpacked"
        kept = sorted(p.name for p in managed.iterdir()) if managed.is_dir() else []
        time.sleep(0.5)
        line = next((ln for ln in s.log if "active (was" in ln), "")
        new = answers[0][1].get("bundle_digest", "?") if isinstance(answers[0][1], dict) else "?"
        r.check(12, "a newer .tar activated twice in a second: both answer, one managed unpack in the store, nothing "
                "beside the bundles; the log names both digests",
                [a[0] for a in answers] == [200, 200] and len(kept) == 1 and set(after) == set(before)
                and new in line and digest["v1"] in line, f"{answers} kept {kept} new "
                f"{sorted(set(after) - set(before))} | {line.strip()}")

        st401 = s.call("POST", "/v2/repository/index", {})[0]
        time.sleep(0.5)
        text = "".join(s.log)
        r.check(13, "a refused admin call is a 401 and logged, without the token",
                st401 == 401 and "refused admin call" in text and token not in text)
        r.check(13, "4xx answers are logged", "-> 400" in text and "-> 404" in text, text[-300:])
        r.check(13, "the log names the real port, not :0", f":{s.port}" in text and s.port != 0)
        r.check(13, "a token file readable by others is warned about", "readable by other users" in text)
        unavailable = [ln for ln in s.log if "backend tensorrt unavailable" in ln]  # ort-trt has its own line
        r.check(13, "'backend tensorrt unavailable' is said at most once", len(unavailable) <= 1,
                f"{len(unavailable)} times")
        metrics = s.call("GET", "/metrics")[1]
        r.check(13, "/metrics counts every inference request by outcome, errors included",
                'outcome="ok"' in metrics and 'outcome="client_error"' in metrics
                and re.search(r'pcl_edge_errors_total\{task="task_01"\} [1-9]', metrics) is not None,
                "\n".join(ln for ln in metrics.splitlines() if "requests_total" in ln or "errors_total" in ln))
        busy = r.pcl("serve", "bundles/v1", "--port", str(s.port), "--bundle-store", "second.store", timeout=120)
        ok, detail = one_clear_line(busy)
        r.check(13, "a port in use is one clear line, exit 2", ok and str(s.port) in busy.stderr, detail)
    finally:
        s.stop()

    cfg = (r.clone / "triton_repo" / "task_01" / "config.pbtxt")
    text = cfg.read_text() if cfg.is_file() else ""
    r.check(14, "Triton config.pbtxt carries the input mean/std, the repository its manifest",
            "input_mean" in text and "input_std" in text and (r.clone / "triton_repo" / "pcl_edge_manifest.json")
            .is_file(), str(cfg))


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--venv", action="store_true", help="install into a fresh virtual environment first (slow)")
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temporary one, removed)")
    ap.add_argument("--no-screenshots", action="store_true", help="do not open the reports in headless Chromium")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pcl-edge-replay-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    r = Replay(root, args.venv)
    for part in (training_side, lambda r: report_side(r, not args.no_screenshots), service_side, ecosystem_side):
        try:
            part(r)
        except Exception as exc:  # noqa: BLE001 - a part that crashes fails its items; the rest still run
            r.check(0, f"{getattr(part, '__name__', 'part')} crashed", False, f"{type(exc).__name__}: {exc}")
    failed = [x for x in r.results if x[2] == "FAILED"]
    print("\nissues 14 and 23, item by item:")
    for item, title in ITEMS.items():
        mine = [x for x in r.results if x[0] == item]
        status = ("FAILED" if any(x[2] == "FAILED" for x in mine) else "passed" if mine and
                  all(x[2] == "passed" for x in mine) else "skipped/partial" if mine else "not checked")
        print(f"  {item:2}. {title}: {status} ({sum(x[2] == 'passed' for x in mine)}/{len(mine)} checks)")
    print(f"{len(r.results) - len(failed)} of {len(r.results)} checks passed in {time.time() - start:.0f} s"
          + (f"; kept in {root}" if args.keep else ""))
    _common.write("ux_replay", args, {"checks": [dict(zip(("item", "check", "status", "detail"), x))
                                                        for x in r.results],
                                             "failed": len(failed), "seconds": round(time.time() - start, 1)})
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
