"""The run directory: what a person opens after a run, and what ``--resume`` reads.

    config.json            the resolved configuration
    tasks.json             the task plan: source and classes of every task, in order (``pcl-edge learn`` appends)
    events.jsonl           one JSON object per event (session: the executor, generation, expert, task, resume ...)
    state.pt               the whole search state, rewritten atomically after every generation
    accuracy_matrix.csv    R[i, j], test accuracy on task j after learning task i
    summary.json           final metrics and per-task experts
    experts/task_XX/       genome.txt, model.pt, metrics.json: written once, never modified
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_open, read_json, sha256_file, write_json, write_text
from .config import ConfigError, EvolveConfig

# What a run whose config.json predates a setting did: it resumes (and learns new tasks) as it ran.
LEGACY_DEFAULTS = {"selection": "pareto", "lineage_schedule": False, "seed_baseline": False, "preserve_depth": False,
                   "max_train_cost": None, "keep_incumbent": False, "expert_tie_z": 0.0,
                   "keep_expert": False, "feasible_children": False}


class RunDirError(ValueError):
    """A directory that is not (or not this) run."""


MODEL_KEYS = ("in_channels", "num_classes", "classes", "class_names", "input_spec")


class RunDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # -- creation / opening -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, cfg: EvolveConfig) -> RunDir:
        rd = cls(path)
        if rd.path.exists() and not rd.path.is_dir():
            raise RunDirError(f"{rd.path} is a file; --out needs a directory (new or empty)")
        if rd.path.exists() and any(rd.path.iterdir()):
            hint = " (it holds a run: pass --resume to continue it)" if (rd.path / "config.json").exists() else ""
            raise RunDirError(f"{rd.path} exists and is not empty{hint}; choose a new --out")
        rd.path.mkdir(parents=True, exist_ok=True)
        write_json(rd.path / "config.json", cfg.to_dict())
        return rd

    @classmethod
    def open(cls, path: str | os.PathLike) -> tuple[RunDir, EvolveConfig]:
        rd = cls(path)
        if not rd.path.is_dir():
            raise RunDirError(f"no run at {rd.path}: it does not exist (runs are written under runs/; runs/latest is "
                              "the newest one started without --out)")
        if not (rd.path / "config.json").is_file():
            raise RunDirError(f"{rd.path} is not a pcl-edge run directory (no config.json)")
        try:
            # a run made before a setting existed resumes as it ran
            cfg = EvolveConfig.from_dict({**LEGACY_DEFAULTS, **read_json(rd.path / "config.json")})
        except (json.JSONDecodeError, ConfigError, TypeError) as exc:
            raise RunDirError(f"{rd.path}/config.json is unreadable: {exc}") from None
        return rd, cfg

    # -- one writer at a time -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for writing (an advisory lock on ``.lock``, released by the kernel even after kill -9);
        a second writer gets one clear error instead of interleaving its state with ours."""
        import fcntl

        fh = open(self.path / ".lock", "a+")  # noqa: SIM115 - held for the whole block
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                fh.seek(0)
                who = fh.read().strip() or "?"
                raise RunDirError(f"{self.path} is being written by another process (pid {who}); wait for it to "
                                  "finish or stop it, then try again") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fh.close()

    # -- the task plan ------------------------------------------------------------------------------------------
    @property
    def plan_path(self) -> Path:
        return self.path / "tasks.json"

    def read_plan(self):
        """The run's ``data.RunPlan``, or None for a run made before plans were kept (its config says)."""
        from ..data import DataError, RunPlan

        if not self.plan_path.is_file():
            return None
        try:
            return RunPlan.from_dict(read_json(self.plan_path))
        except (json.JSONDecodeError, DataError) as exc:
            raise RunDirError(f"{self.plan_path} is unreadable: {exc}") from None

    def write_plan(self, plan) -> None:
        write_json(self.plan_path, plan.to_dict())

    def finished(self) -> bool:
        """Every planned task learned and summarised (a run that ``learn`` extended is unfinished until then)."""
        s = self.summary()
        plan = self.read_plan()
        return s is not None and (plan is None or len(s.get("tasks", [])) >= len(plan.tasks))

    # -- logs ---------------------------------------------------------------------------------------------------
    def event(self, kind: str, **data: Any) -> None:
        rec = {"time": round(time.time(), 3), "event": kind, **data}
        with open(self.path / "events.jsonl", "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")

    def events(self) -> list[dict]:
        p = self.path / "events.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []

    def write_matrix(self, R: np.ndarray) -> None:
        T = R.shape[1]
        lines = ["after_task," + ",".join(f"task_{j + 1:02d}" for j in range(T))]
        for i, row in enumerate(R):
            lines.append(f"task_{i + 1:02d}," + ",".join("" if np.isnan(v) else f"{v:.6f}" for v in row))
        write_text(self.path / "accuracy_matrix.csv", "\n".join(lines) + "\n")

    def summary(self) -> dict | None:
        """The finished run's summary, or None while it is unfinished."""
        p = self.path / "summary.json"
        return read_json(p) if p.is_file() else None

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)

    # -- state --------------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.path / "state.pt"

    def save_state(self, state: dict) -> None:
        with atomic_open(self.state_path, "wb") as fh:
            torch.save(state, fh)

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is the same problem for the user
            raise RunDirError(f"{self.state_path} is unreadable ({exc}); the run cannot be resumed") from None

    # -- experts (immutable) ------------------------------------------------------------------------------------
    def expert_dir(self, task_id: int) -> Path:
        return self.path / "experts" / f"task_{task_id:02d}"

    def has_expert(self, task_id: int) -> bool:
        return (self.expert_dir(task_id) / "metrics.json").is_file()

    def expert_ids(self) -> list[int]:
        """Task ids with a complete archived expert."""
        d = self.path / "experts"
        ids = [int(p.name.removeprefix("task_")) for p in d.glob("task_[0-9]*")] if d.is_dir() else []
        return sorted(i for i in ids if self.has_expert(i))

    def archive_expert(self, task_id: int, genome: str, state_dict: dict, meta: dict) -> dict:
        """Write experts/task_XX once (temporary directory, then rename): an archived expert is never replaced."""
        final = self.expert_dir(task_id)
        if final.exists():
            raise RunDirError(f"expert {final} already exists; archived experts are never modified")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            (tmp / "genome.txt").write_text(genome + "\n")
            # model.pt holds only what the same seed reproduces (weights and the task's identity), so a resumed run
            # writes byte-identical files; timings and scores live in metrics.json
            stable = {k: meta[k] for k in MODEL_KEYS if k in meta}
            torch.save({"genome": genome, "state_dict": state_dict, **stable}, tmp / "model.pt")
            meta_out = {"task_id": task_id, "genome": genome, "model_sha256": sha256_file(tmp / "model.pt"),
                        **{k: v for k, v in meta.items() if k != "input_spec"}, "input_spec": meta.get("input_spec")}
            (tmp / "metrics.json").write_text(json.dumps(meta_out, indent=2) + "\n")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return meta_out

    def verify_expert(self, task_id: int) -> dict:
        """The expert's metrics, after checking its weights against their recorded sha256."""
        d = self.expert_dir(task_id)
        meta = read_json(d / "metrics.json")
        if not (d / "model.pt").is_file() or sha256_file(d / "model.pt") != meta["model_sha256"]:
            raise RunDirError(f"{d}/model.pt does not match its recorded sha256; the archive was modified")
        return meta

    def load_expert(self, task_id: int) -> dict:
        meta = self.verify_expert(task_id)
        return torch.load(self.expert_dir(task_id) / "model.pt", map_location="cpu", weights_only=False) | {
            "metrics": meta}

    def load_expert_net(self, task_id: int) -> tuple[torch.nn.Module, dict]:
        """The archived expert as an eval-mode network (weights checked against their sha256) and its blob."""
        from ..space import Genome, build_network

        blob = self.load_expert(task_id)
        net = build_network(Genome.parse(blob["genome"]), blob["in_channels"], blob["num_classes"])
        net.load_state_dict(blob["state_dict"])
        return net.eval(), blob

    def clean_partial(self) -> None:
        """Remove temporary leftovers of an interrupted write (never a finished expert)."""
        for p in (self.path / "experts").glob(".task_*") if (self.path / "experts").exists() else []:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.path.glob(".*.tmp"):
            p.unlink(missing_ok=True)
