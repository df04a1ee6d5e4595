"""The continual-learning loop every strategy shares: task after task, checkpointed, evaluated into the
accuracy matrix. Strategies (PCL and the baselines) fill in ``learn_task`` and ``model_for``.

Resume contract: all randomness is derived from (seed, task, generation, identity), never from a global RNG
that would need saving, and the state is written atomically at every step boundary; so an interrupted run that
is resumed ends with the same experts as one that never stopped. The one exception is a baseline held to a
wall-clock budget (``task_budget_s``): its later tasks' steps follow the time the earlier ones took."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._io import read_json
from ..data import TaskStream
from ..metrics import summarize
from .config import EvolveConfig
from .executors import Executor
from .rundir import RunDir
from .trainer import TensorTask, build_seeded, derive_seed, evaluate, reset_head

log = logging.getLogger(__name__)
STATE_VERSION = 1


def budget_steps(left_s: float, tasks_left: int, s_per_step: float, overhead_s: float) -> int:
    """The steps of the next task when ``tasks_left`` tasks (it included) share ``left_s`` seconds equally, each
    spending ``overhead_s`` outside training and ``s_per_step`` a training step; at least one."""
    return max(1, int((left_s - tasks_left * overhead_s) / (tasks_left * max(s_per_step, 1e-9))))


class Learner:
    name = "base"
    sequential = True  # False for joint training (no per-task rows)
    budgeted = False  # True: its tasks' steps can follow ``task_budget_s`` (``task_steps``, ``spent``)

    def __init__(self, cfg: EvolveConfig, stream: TaskStream, run: RunDir, executor: Executor,
                 on_task_end: Callable[[int, Learner], None] | None = None) -> None:
        self.cfg, self.stream, self.run, self.executor = cfg, stream, run, executor
        self.on_task_end = on_task_end
        self.tasks = [TensorTask.from_task(t) for t in stream.tasks]
        self._models: dict[int, nn.Module] = {}
        T = len(self.tasks)
        loaded = run.load_state()
        self.resumed = loaded is not None
        self.state = loaded or {"version": STATE_VERSION, "strategy": self.name, "task": 0, "started": False,
                                "R": np.full((T, T), np.nan), "b": np.full(T, np.nan), "wall_s": 0.0,
                                "records": {}, "own": {}}
        if self.state.get("version") != STATE_VERSION or self.state.get("strategy") != self.name:
            raise ValueError(f"{run.state_path} belongs to another strategy or version; start a new run")
        self._grow(T)
        self._t0 = time.perf_counter()

    def _grow(self, T: int) -> None:
        """Tasks added to the run (``pcl-edge learn``): the accuracy matrix gains rows and columns, old values stay."""
        R, b = self.state["R"], self.state["b"]
        if len(R) > T:
            raise ValueError(f"{self.run.state_path} holds {len(R)} tasks but the run plans {T}; the plan was cut")
        if len(R) < T:
            grown = np.full((T, T), np.nan)
            grown[: len(R), : len(R)] = R
            self.state["R"] = grown
            self.state["b"] = np.concatenate([b, np.full(T - len(b), np.nan)])

    # -- to implement -------------------------------------------------------------------------------------------
    def learn_task(self, t: int) -> None:
        raise NotImplementedError

    def model_for(self, t: int) -> nn.Module:
        """The model that answers for task t (0-based) now."""
        raise NotImplementedError

    # -- the loop -----------------------------------------------------------------------------------------------
    def save(self) -> None:
        self.state["wall_s"] += time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        self.run.save_state(self.state)

    def run_all(self) -> dict:
        if self.resumed:
            self.run.event("resume", task=self.state["task"] + 1)
            log.info("resuming at task %d", self.state["task"] + 1)
        for t in range(self.state["task"], len(self.tasks)):
            if not self.state["started"]:
                self.run.event("task_start", task=t + 1, classes=list(self.stream.tasks[t].classes))
                if t > 0 and self.sequential:
                    self._measure_transfer(t)
                self.state["started"] = True
                self.save()
            self.learn_task(t)
            if self.sequential:
                self._evaluate_row(t)
            self.state["task"], self.state["started"] = t + 1, False
            self.save()
            self.run.write_matrix(self.state["R"])
            done, total, elapsed = t + 1, len(self.tasks), self.state["wall_s"]
            log.info("task %d/%d done: %s elapsed, about %s left", done, total, _hms(elapsed),
                     _hms(elapsed / done * (total - done)))
            if self.on_task_end:
                self.on_task_end(t, self)
        return self.summary()

    def _evaluate_row(self, t: int) -> None:
        R = self.state["R"]
        for j in range(t + 1):
            R[t, j] = evaluate(self.model_for(j), self.tasks[j].test)
        self.run.event("accuracy_row", task=t + 1, row=[round(float(v), 6) for v in R[t, : t + 1]])
        log.info("after task %d: test accuracy %s", t + 1, " ".join(f"{v:.3f}" for v in R[t, : t + 1]))

    def _measure_transfer(self, t: int) -> None:
        """GEM's forward-transfer inputs: R[t-1, t], the model carried into task t with a fresh (seeded) head,
        before any training on t; and b[t], the same architecture at random initialisation."""
        task = self.tasks[t]
        head_seed = derive_seed(self.cfg.seed, "fwt-head", t)
        carried = copy.deepcopy(self.model_for(t - 1))
        reset_head(carried, task.num_classes, head_seed)
        self.state["R"][t - 1, t] = evaluate(carried, task.test)
        rand = build_seeded(carried.genome, task.in_channels, task.num_classes, derive_seed(self.cfg.seed, "rand", t))
        reset_head(rand, task.num_classes, head_seed)
        self.state["b"][t] = evaluate(rand, task.test)

    # -- a wall-clock budget (task_budget_s) ------------------------------------------------------------------
    def elapsed(self) -> float:
        """The run's wall clock so far, over every session of it."""
        return self.state["wall_s"] + time.perf_counter() - self._t0

    def task_steps(self, t: int) -> int:
        """The steps task ``t`` trains: ``final.steps``; with ``task_budget_s``, after the first task, what fits its
        share of the time left at the seconds per step of the task before it (the first task's include the process's
        warm-up: twice the later tasks' on Split Digits) and the mean time outside training of all before it."""
        spent = self.state.get("spent")
        if self.cfg.task_budget_s is None or t == 0:
            return self.cfg.final.steps
        if not spent or spent["tasks"] != t:  # not every task before it was counted: no pace to plan with
            log.warning("task %d: the training of %d task(s) before it was not recorded; it trains final.steps (%d)",
                        t + 1, t - (spent or {}).get("tasks", 0), self.cfg.final.steps)
            return self.cfg.final.steps
        elapsed = self.elapsed()
        left, n_left = self.cfg.task_budget_s * len(self.tasks) - elapsed, len(self.tasks) - t
        pace = spent["last_train_s"] / spent["last_steps"]
        steps = budget_steps(left, n_left, pace, (elapsed - spent["train_s"]) / t)
        log.info("task %d: %d steps (%.1f ms a step) fit its share of the %.0f s left to %d task(s)", t + 1, steps,
                 pace * 1e3, left, n_left)
        return steps

    def spent(self, steps: int, seconds: float) -> None:
        """Record a task's training: the pace and the time outside training ``task_steps`` plans with."""
        spent = self.state.setdefault("spent", {"tasks": 0, "train_s": 0.0})
        spent["tasks"] += 1
        spent["train_s"] += seconds
        spent["last_steps"], spent["last_train_s"] = steps, seconds

    # -- reporting ----------------------------------------------------------------------------------------------
    def task_record(self, t: int) -> dict:
        return self.state["records"].get(t, {})

    def summary(self) -> dict:
        R, b = self.state["R"], self.state["b"]
        metrics = summarize(R, b) if self.sequential else {"acc": float(np.mean(R[-1])), "bwt": None, "fwt": None,
                                                           "forgetting": None}
        tasks = []
        for t, task in enumerate(self.stream.tasks):
            rec = self.task_record(t)
            tasks.append({"id": task.id, "source": task.source, "classes": list(task.classes),
                          "class_names": list(task.class_names),
                          "genome": rec.get("genome"), "params": rec.get("params"), "val_acc": rec.get("val_acc"),
                          "test_acc": float(R[t if self.sequential else -1, t]), "search_s": rec.get("search_s"),
                          "train_s": rec.get("train_s"), **({"steps": rec["steps"]} if "steps" in rec else {})})
        clean = lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 6)  # noqa
        return {"strategy": self.name, "data": self.cfg.data, "sources": self.stream.summary.get("sources"),
                "seed": self.cfg.seed, "preset": self.cfg.preset,
                **{k: clean(v) for k, v in metrics.items()}, "wall_s": round(self.state["wall_s"], 2),
                "test_split": self.stream.test_split, "tasks": tasks,
                "accuracy_matrix": [[clean(v) for v in row] for row in R],
                "random_init_acc": [clean(v) for v in b]}


def frozen_copy(net: nn.Module) -> nn.Module:
    """An eval-mode CPU copy whose parameters do not require grad: what an archived expert is."""
    out = copy.deepcopy(net).cpu().eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def state_to_cpu(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


class ExpertLearner(Learner):
    """A learner that leaves one frozen expert per task in the run directory's archive."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for task_id in self.run.expert_ids():  # a resumed run trusts no archive it has not checked
            self.run.verify_expert(task_id)

    def archive(self, t: int, net: nn.Module, record: dict) -> None:
        task, spec = self.stream.tasks[t], self.stream.tasks[t].spec
        test_acc = evaluate(net, self.tasks[t].test)  # reporting only: the expert is already chosen and trained
        meta = {"in_channels": spec.shape[0], "num_classes": task.num_classes, "classes": list(task.classes),
                "class_names": list(task.class_names), "source": task.source, "input_spec": spec.to_dict(),
                "test_acc": test_acc,
                **record}
        self.run.archive_expert(task.id, str(net.genome), state_to_cpu(net), meta)
        self.run.event("expert", task=task.id, genome=str(net.genome), **{k: v for k, v in record.items()},
                       test_acc=round(test_acc, 6))
        self._models[t] = frozen_copy(net)

    def archived_record(self, t: int) -> dict:
        return read_json(self.run.expert_dir(self.stream.tasks[t].id) / "metrics.json")

    def model_for(self, t: int) -> nn.Module:
        if t not in self._models:
            self._models[t] = frozen_copy(self.run.load_expert_net(self.stream.tasks[t].id)[0])
        return self._models[t]

    def task_record(self, t: int) -> dict:
        if self.run.has_expert(self.stream.tasks[t].id):
            return self.archived_record(t)
        return super().task_record(t)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
