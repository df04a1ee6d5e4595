"""How the search uses a workstation GPU (issue 24), in one command that fits one device call of at most 8 minutes.

    # on the GPU machine (the CIFAR tarball carried in the ignored folder .gpu_data/):
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 bench/gpu_check.py \\
        --data imagefolder:.gpu_data/cifar10-train-jpg.tar.xz --out "$OUT"
    # back here, on the CPU: the run it brought back, exported with the ONNX-vs-PyTorch parity check
    python bench/gpu_check.py --after /work/.device/.../files
    # here, before spending device time: every part at toy sizes on the CPU (Split Digits)
    python bench/gpu_check.py --dry-run            # (--quick is the same)

(a) Throughput. ``--genomes`` random genomes of the search space (seeded), ``--steps`` steps at batch 128 each,
    trained through: today's path (each batch gathered and augmented on the host, copied over, its loss read back:
    ``train(resident=False)``), the device-resident path (data on the device, batches built there, one read-back per
    training), and the ``gpu`` executor with K trainings in flight for each K of ``--slots`` (CUDA graphs on).
    Candidates per minute each, GPU utilisation sampled every 200 ms with ``nvidia-smi`` (``utilization.gpu``: the
    share of time a kernel ran, not how many SMs it kept busy) and SM activity with DCGM (``dcgmi dmon``, field 1002)
    where present; the JSON says which ran. The one-at-a-time paths stop after ``--path-cap-s`` seconds and report
    the rate of the candidates they finished. The K-slot variants must return the same validation accuracies for
    every K (determinism per candidate): recorded as ``identical_across_k``.
(b) ``pcl-edge evolve --preset gpu --executor gpu`` on the data, generations trimmed from (a)'s K=16 rate so that the
    run fits ``--evolve-s`` seconds (killed at 1.5x that; the run directory stays resumable).
(c) ``OUT/gpu_check.json`` and the run directory's small files and experts packed into ``OUT/run.tar.*`` (the device
    tool brings back 8 files of 16 MiB at most); ``--after`` unpacks them here and runs ``pcl-edge export`` (ONNX,
    verified against PyTorch on the run's own validation images), then writes bench/results/gpu_check.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import _common
import numpy as np

log = logging.getLogger("gpu_check")
PART_BYTES = 15 * 2**20  # under the device tool's 16 MiB per file


# -- GPU sampling ------------------------------------------------------------------------------------------------------
class Sampler:
    """``nvidia-smi`` (and ``dcgmi dmon`` where present) sampled in the background; ``window()`` marks a phase."""

    def __init__(self, every_ms: int = 200) -> None:
        self.samples: list[tuple[float, str, float]] = []  # (time, field, value)
        self.procs: list[subprocess.Popen] = []
        self.tools: list[str] = []
        if shutil.which("nvidia-smi"):
            self._start(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                         f"--loop-ms={every_ms}"], self._read_smi)
            self.tools.append("nvidia-smi utilization.gpu")
        if shutil.which("dcgmi"):
            self._start(["dcgmi", "dmon", "-e", "1002", "-d", str(every_ms)], self._read_dcgm)
            self.tools.append("dcgmi dmon 1002 (SM activity)")

    def _start(self, cmd: list[str], reader) -> None:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError as exc:
            log.warning("%s: %s", cmd[0], exc)
            return
        self.procs.append(proc)
        threading.Thread(target=reader, args=(proc,), daemon=True).start()

    def _read_smi(self, proc) -> None:
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                util, mem = (float(v) for v in line.split(",")[:2])
                now = time.perf_counter()
                self.samples += [(now, "util_pct", util), (now, "mem_mib", mem)]

    def _read_dcgm(self, proc) -> None:
        for line in proc.stdout:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "GPU":
                with contextlib.suppress(ValueError):
                    self.samples.append((time.perf_counter(), "sm_active_pct", 100 * float(parts[-1])))

    def summary(self, start: float, end: float) -> dict:
        out = {}
        for name in ("util_pct", "mem_mib", "sm_active_pct"):
            vals = [v for t, f, v in self.samples if f == name and start <= t <= end]
            if vals:
                out[name] = {"mean": round(float(np.mean(vals)), 1), "p50": round(float(np.median(vals)), 1),
                             "max": round(max(vals), 1), "n": len(vals)}
        return out

    def close(self) -> None:
        for p in self.procs:
            p.terminate()


# -- (a) throughput ----------------------------------------------------------------------------------------------------
def throughput(args, sampler: Sampler, device, on_row=lambda rows: None) -> dict:
    import torch

    from pcl_edge.data import build_stream
    from pcl_edge.evolve import preset_config
    from pcl_edge.evolve.candidate import Candidate, candidate_steps, train_candidate
    from pcl_edge.evolve.executors import create_executor
    from pcl_edge.evolve.pcl import task_space
    from pcl_edge.evolve.recipe import TrainConfig
    from pcl_edge.evolve.trainer import TensorTask, build_seeded, derive_seed, drain, evaluate, torch_threads, train

    cfg = preset_config(args.preset, args.data, tasks=args.tasks)
    stream = build_stream(args.data, cfg.tasks, 0)
    task = TensorTask.from_task(stream.tasks[0])
    view = task.search_view()
    space = task_space(cfg, stream.tasks[0])
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(args.genomes)]
    recipe = TrainConfig(steps=args.steps, batch_size=args.batch, lr=0.1, augment=cfg.proxy.augment, threads=1)
    cands = [Candidate(uid=f"g{i}", genome=g, op="init", run_seed=0) for i, g in enumerate(genomes)]
    params = [space.params(g) for g in genomes]
    log.info("(a) %d genomes (%d-%d parameters) x %d steps, batch %d, on %s", len(genomes), min(params), max(params),
             args.steps, args.batch, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(name: str, run) -> dict:
        sync()
        start = time.perf_counter()
        accs = run()
        sync()
        end = time.perf_counter()
        row = {"variant": name, "candidates": len(accs), "seconds": round(end - start, 3),
               "candidates_per_min": round(60 * len(accs) / (end - start), 1),
               "seconds_per_candidate": round((end - start) / max(1, len(accs)), 4), "gpu": sampler.summary(start, end),
               "val_acc": accs}
        log.info("(a) %-34s %6.1f candidates/min  %s", name, row["candidates_per_min"], row["gpu"] or "")
        return row

    def one_at_a_time(resident: bool):
        with torch_threads(recipe.threads):  # the thread count the executor gives a candidate: comparable rows
            return _one_at_a_time(resident)

    def _one_at_a_time(resident: bool):
        accs, start = [], time.perf_counter()
        for c in cands:
            if time.perf_counter() - start > args.path_cap_s:
                break
            if resident:
                accs.append(drain(candidate_steps(c, view, recipe, device=device)).val_acc)
            else:
                seed = derive_seed(c.run_seed, c.uid)
                net = build_seeded(c.genome, view.in_channels, view.num_classes, seed).to(device)
                train(net, view.train, recipe, seed, resident=False)
                accs.append(evaluate(net, view.val))
        return accs

    rows = []
    for r in range(args.repeat):  # alternated (ABAB...), so that a drift of the machine hits both alike
        suffix = f", round {r + 1}" if args.repeat > 1 else ""
        rows += [timed(f"today (host batches, one at a time){suffix}", lambda: one_at_a_time(False)),
                 timed(f"device-resident (one at a time){suffix}", lambda: one_at_a_time(True))]
        on_row(rows)
    # the K variants train every genome, unless one at a time did not get through them all within its cap: then
    # twice what it finished (K=1 runs about as fast as one at a time), so that the check keeps to its call
    n_k = len(cands) if rows[1]["candidates"] == len(cands) else max(2 * max(args.slots), 2 * rows[1]["candidates"])
    by_k, graphs = {}, True
    for k in args.slots:
        for attempt in ((graphs,) if not graphs else (True, False)):  # graphs that fail once: the rest eagerly
            ex = create_executor("gpu", progress=False, slots=k, device=str(device), graphs=attempt)
            try:
                row = timed(f"gpu executor, K={k}" + ("" if attempt else " (eager)"),
                            lambda ex=ex, n=n_k if k > 1 else rows[1]["candidates"]: [i.val_acc for i in ex.map(
                                train_candidate, cands[:n],
                                shared={"task": view, "cfg": recipe})])
            except Exception as exc:  # noqa: BLE001 - one shot on the device: record the failure, keep the rest
                log.exception("(a) gpu executor, K=%d, graphs=%s failed", k, attempt)
                rows.append({"variant": f"gpu executor, K={k}", "slots": k, "graphs": attempt,
                             "error": f"{type(exc).__name__}: {exc}"[:2000]})
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    break  # too many slots for the device: graphs are not to blame
                graphs = False
                continue
            finally:
                release(device)
            row.update(slots=k, graphs=attempt, peak_in_flight=ex.stats.peak)
            rows.append(row)
            by_k[k] = row["val_acc"]
            break
        on_row(rows)
    release(device)
    accs = list(by_k.values())
    common = min((len(a) for a in accs), default=0)  # K=1 trains what one at a time finished
    both = min(len(rows[0]["val_acc"]), len(rows[1]["val_acc"]))
    return {"genomes": [str(g) for g in genomes], "params": params, "steps": args.steps, "batch": args.batch,
            "tasks": len(stream), "rows": rows, "graphs": graphs,
            "identical_across_k": bool(accs) and all(a[:common] == accs[0][:common] for a in accs),
            # host float32 batches vs the resident copy (float16 on a GPU: small differences expected there)
            "max_val_acc_diff_host_vs_resident": max((abs(a - b) for a, b in zip(rows[0]["val_acc"][:both],
                                                                                 rows[1]["val_acc"][:both])),
                                                     default=None)}


def release(device) -> None:
    """Hand this process's cached device memory back (a row's graphs and models are gone): the next row, and the
    evolve run's own process in (b), start on an empty device. Without it (the first H200 call) this process held
    116 GiB while (b) ran, and a capture there ran out of memory."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- (b) evolve --------------------------------------------------------------------------------------------------------
def plan_generations(rate_per_min: float, n_tasks: int, seconds: float, args) -> int:
    """Generations that fit ``seconds``: each task trains about population (+ its children per generation)
    candidates at the K=16 rate (of shallow random genomes: evolved ones grow deeper, hence the margin); 40 % of the
    time is left for decoding, the experts' trainings and evaluation."""
    from pcl_edge.evolve import preset_config

    cfg = preset_config(args.preset, args.data, tasks=args.tasks)
    per_task_s = 0.6 * seconds / n_tasks
    per_cand_s = 60 / max(rate_per_min, 1e-6) * (args.proxy_steps / args.steps)
    cands = per_task_s / per_cand_s
    return int(np.clip((cands - cfg.population) // max(1, cfg.num_children), 1, cfg.generations))


def evolve_run(args, out: Path, generations: int, timeout_s: float, sampler: Sampler, graphs: bool = True) -> dict:
    run = out / "run"
    cmd = [sys.executable, "-m", "pcl_edge.cli", "evolve", "--preset", args.preset, "--data", args.data,
           "--tasks", args.tasks, "--executor", "gpu", "--slots", "16", "--generations", str(generations),
           "--proxy-steps", str(args.proxy_steps), "--final-steps", str(args.final_steps), "--out", str(run)]
    if not graphs:  # graphs failed in (a): the run steps eagerly
        cmd.append("--no-cuda-graphs")
    log.info("(b) %s", " ".join(cmd))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=timeout_s, capture_output=True, text=True)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired as exc:  # the run directory stays resumable: --resume finishes it
        err = exc.stderr or b""
        rc, tail = "timeout", (err.decode(errors="replace") if isinstance(err, bytes) else err)[-4000:]
    end = time.perf_counter()
    result = {"command": cmd, "rc": rc, "wall_s": round(end - start, 1), "gpu": sampler.summary(start, end),
              "log_tail": tail}
    summary = run / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        result["summary"] = {k: s.get(k) for k in ("acc", "bwt", "accuracy_matrix", "wall_s", "selection")}
        result["experts"] = [{"task": t["id"], "genome": t["genome"], "params": t["params"]} for t in s["tasks"]]
    return result


def pack_run(run: Path, out: Path) -> list[str]:
    """The run's experts and top-level files but its search state (``state.pt``, the population's weights), as
    ``run.tar.NN`` parts of 15 MiB."""
    if not run.is_dir():
        return []
    blob = out / "run.tar"
    with tarfile.open(blob, "w") as tar:
        for p in sorted(run.rglob("*")):
            rel = p.relative_to(run)
            if p.is_file() and (rel.parts[0] == "experts" or (len(rel.parts) == 1 and rel.name != "state.pt")):
                tar.add(p, arcname=str(Path("run") / rel))
    data, parts = blob.read_bytes(), []
    blob.unlink()
    for i in range(0, max(1, len(data)), PART_BYTES):
        part = out / f"run.tar.{i // PART_BYTES:02d}"
        part.write_bytes(data[i: i + PART_BYTES])
        parts.append(part.name)
    return parts


# -- (c) back here -----------------------------------------------------------------------------------------------------
def after(args) -> None:
    from pcl_edge.export import export_bundle

    src = Path(args.after)
    result = json.loads((src / "gpu_check.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="gpu-check-after-"))
    blob = b"".join(p.read_bytes() for p in sorted(src.glob("run.tar.*")))
    (work / "run.tar").write_bytes(blob)
    with tarfile.open(work / "run.tar") as tar:
        tar.extractall(work, filter="data")
    source = json.loads((work / "run" / "config.json").read_text())["data"]
    if ".gpu_data/" in source:  # the run's config names the device's relative path: the same tarball here
        (work / ".gpu_data").mkdir()
        (work / ".gpu_data" / source.rpartition("/")[2]).symlink_to(Path(args.local_data).resolve())
    cwd = os.getcwd()
    os.chdir(work)
    try:
        m = export_bundle(work / "run", work / "bundle")
    except Exception as exc:  # noqa: BLE001 - recorded: a run that timed out before its first expert has none
        result["export_here"] = {"error": f"{type(exc).__name__}: {exc}"}
        _common.write("gpu_check", args, result)
        raise
    finally:
        os.chdir(cwd)
    result["export_here"] = {"tasks": [t["id"] for t in m["tasks"]],
                             "max_abs_diff": max(t["verification"]["max_abs_diff"] for t in m["tasks"]),
                             "verification": [t["verification"] for t in m["tasks"]], "bundle": str(work / "bundle")}
    log.info("export here: tasks %s, max |onnx - torch| %.1e", result["export_here"]["tasks"],
             result["export_here"]["max_abs_diff"])
    _common.write("gpu_check", args, result, json.dumps(result.get("throughput", {}).get("rows", []), indent=1))


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--data", default="imagefolder:.gpu_data/cifar10-train-jpg.tar.xz")
    ap.add_argument("--tasks", default="5x2")
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    ap.add_argument("--genomes", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--slots", default="1,8,16,32")
    ap.add_argument("--path-cap-s", type=float, default=45, help="time cap of each one-at-a-time path")
    ap.add_argument("--evolve-s", type=float, default=300, help="(b)'s target wall time")
    ap.add_argument("--budget-s", type=float, default=480, help="the whole check's limit (the device call's 8 min)")
    ap.add_argument("--proxy-steps", type=int, default=200)
    ap.add_argument("--final-steps", type=int, default=2000)
    ap.add_argument("--skip-evolve", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the two one-at-a-time paths, alternated")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, Split Digits")
    ap.add_argument("--after", metavar="DIR", help="the files the device call brought back: export them here")
    ap.add_argument("--local-data", default=str(_common.ROOT.parent / "shared" / "data" / "cifar10-train-jpg.tar.xz"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pcl_edge").setLevel(logging.WARNING)
    args.dry_run = args.dry_run or args.quick
    if args.after:
        return after(args)
    import torch

    if args.dry_run:
        args.data, args.tasks, args.preset, args.genomes, args.steps, args.batch = "digits", "2x2", "tiny", 6, 20, 32
        args.slots, args.path_cap_s, args.evolve_s, args.proxy_steps, args.final_steps = "1,2,4", 20, 60, 15, 40
        args.budget_s = 600
    args.slots = [int(k) for k in str(args.slots).split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = Sampler()
    result: dict = {"device": str(device), "dry_run": args.dry_run, "sampling": sampler.tools or ["none available"],
                    "torch": torch.__version__, "cuda": torch.version.cuda,
                    "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "provenance": _common.provenance()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                          capture_output=True, text=True, timeout=10).stdout.strip() or None
    start = time.perf_counter()
    try:
        result["throughput"] = throughput(args, sampler, device,
                                          on_row=lambda rows: _save(out, {**result, "throughput_so_far": rows}))
        _save(out, result)
        if not args.skip_evolve:
            ok = [r for r in result["throughput"]["rows"] if "error" not in r]
            k16 = next((r for r in ok if r.get("slots") == (16 if not args.dry_run else 4)), ok[-1])
            left = args.budget_s - (time.perf_counter() - start) - 45  # 45 s to pack and write what comes back
            seconds = min(args.evolve_s, left / 1.3)
            gens = plan_generations(k16["candidates_per_min"], result["throughput"]["tasks"], seconds, args)
            result["evolve"] = evolve_run(args, out, gens, max(30.0, left), sampler,
                                          graphs=result["throughput"]["graphs"])
            result["evolve"]["generations"] = gens
            result["run_parts"] = pack_run(out / "run", out)
            shutil.rmtree(out / "run", ignore_errors=True)  # its files came back packed
    finally:
        sampler.close()
        result["total_s"] = round(time.perf_counter() - start, 1)
        _save(out, result)
    log.info("wrote %s (%.0f s)", out / "gpu_check.json", result["total_s"])
    if args.json:  # also where the caller asked (bench/results gets the full record only with --after)
        _common.write("gpu_check", args, result)


def _save(out: Path, result: dict) -> None:
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out / "gpu_check.json")


if __name__ == "__main__":
    main()
