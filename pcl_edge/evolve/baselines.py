"""Baselines sharing the trainer, the loop and the metrics of PCL.

- ``fixed``: one given genome, a separate network trained from scratch per task (an expert per task, no search).
- ``finetune``: one shared trunk, a head per task, trained task after task (forgets: BWT < 0).
- ``joint``: one trunk, all heads trained at once on all tasks (not continual: the upper bound).
"""

from __future__ import annotations

import time
from dataclasses import replace

from torch import Tensor, nn

from ..space import Genome
from .learner import ExpertLearner, Learner, frozen_copy, state_to_cpu
from .trainer import build_seeded, default_device, derive_seed, evaluate, reset_head, step_progress, train, train_multi


class FixedLearner(ExpertLearner):
    name = "fixed"
    budgeted = True

    def learn_task(self, t: int) -> None:
        if self.run.has_expert(self.stream.tasks[t].id):  # archived, then stopped before the state was saved
            rec = self.archived_record(t)
            if "steps" in rec:  # its training is kept, and so is the time it took (and the pace, for a budget)
                self.spent(rec["steps"], rec["train_s"])
                self.state["wall_s"] += rec["train_s"]
            return
        task, start, steps = self.tasks[t], time.perf_counter(), self.task_steps(t)
        seed = derive_seed(self.cfg.seed, "fixed", t)
        net = build_seeded(Genome.parse(self.cfg.genome), task.in_channels, task.num_classes, seed)
        net.to(default_device())
        with step_progress(f"task {t + 1} fixed", enabled=self.executor.progress):
            train(net, task.train, replace(self.cfg.final, steps=steps), seed)
        train_s = time.perf_counter() - start
        self.spent(steps, train_s)
        self.archive(t, net, {"val_acc": evaluate(net, task.val), "params": sum(p.numel() for p in net.parameters()),
                              "search_s": 0.0, "train_s": round(train_s, 3), "steps": steps})


class _Headed(nn.Module):
    """A view of a shared trunk with one task's head: what answers for that task."""

    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk, self.head, self.genome = trunk, head, trunk.genome

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk.features(x))

    def new_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.genome.out_channels, num_classes)


class _SharedTrunkLearner(Learner):
    def _trunk(self) -> nn.Module:
        net = build_seeded(Genome.parse(self.cfg.genome), self.tasks[0].in_channels, self.tasks[0].num_classes,
                           derive_seed(self.cfg.seed, self.name, "trunk"))
        if "trunk" in self.state["own"]:
            net.load_state_dict(self.state["own"]["trunk"])
        return net

    def _head(self, trunk: nn.Module, t: int) -> nn.Module:
        view = _Headed(trunk, trunk.head)
        reset_head(view, self.tasks[t].num_classes, derive_seed(self.cfg.seed, self.name, "head", t))
        heads = self.state["own"].get("heads", {})
        if t in heads:
            view.head.load_state_dict(heads[t])
        return view.head

    def model_for(self, t: int) -> nn.Module:
        trunk = self._trunk()
        return frozen_copy(_Headed(trunk, self._head(trunk, t)))

    def _record(self, t: int, view: nn.Module, train_s: float, steps: int) -> None:
        used = sum(p.numel() for n, p in view.named_parameters() if not n.startswith("trunk.head."))
        self.state["records"][t] = {"genome": self.cfg.genome, "params": used,
                                    "val_acc": evaluate(view, self.tasks[t].val), "search_s": 0.0,
                                    "train_s": round(train_s, 3), "steps": steps}


class FinetuneLearner(_SharedTrunkLearner):
    name = "finetune"
    budgeted = True

    def learn_task(self, t: int) -> None:
        start, steps, trunk = time.perf_counter(), self.task_steps(t), self._trunk()
        view = _Headed(trunk, self._head(trunk, t)).to(default_device())
        with step_progress(f"task {t + 1} finetune", enabled=self.executor.progress):
            train(view, self.tasks[t].train, replace(self.cfg.final, steps=steps),
                  derive_seed(self.cfg.seed, self.name, t))
        own = self.state["own"]
        own["trunk"] = state_to_cpu(trunk)
        own.setdefault("heads", {})[t] = state_to_cpu(view.head)
        train_s = time.perf_counter() - start
        self.spent(steps, train_s)
        self._record(t, view, train_s, steps)


class JointLearner(_SharedTrunkLearner):
    """Trains once, on all tasks together, at the last task; only the last row of R is measured."""

    name = "joint"
    sequential = False

    def learn_task(self, t: int) -> None:
        if t < len(self.tasks) - 1:
            return
        start, trunk = time.perf_counter(), self._trunk()
        views = [_Headed(trunk, self._head(trunk, j)) for j in range(len(self.tasks))]
        module = nn.ModuleList(views).to(default_device())
        cfg = replace(self.cfg.final, steps=self.cfg.final.steps * len(self.tasks))  # same per-task budget
        with step_progress("joint, all tasks", enabled=self.executor.progress):
            train_multi(module, [(v, task.train) for v, task in zip(views, self.tasks)], cfg,
                        derive_seed(self.cfg.seed, self.name))
        own = self.state["own"]
        own["trunk"] = state_to_cpu(trunk)
        own["heads"] = {j: state_to_cpu(v.head) for j, v in enumerate(views)}
        for j, v in enumerate(views):
            self._record(j, v, (time.perf_counter() - start) / len(views), self.cfg.final.steps)
            self.state["R"][-1, j] = evaluate(v, self.tasks[j].test)
