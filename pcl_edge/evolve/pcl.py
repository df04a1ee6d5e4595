"""Population-based Continual Learning: evolve a population per task, archive its best as the task's frozen
expert, and hand the population, weights included, to the next task (forward transfer).

``pcl-scratch`` is the forward-transfer ablation: the same search, but every task starts from a freshly
sampled, randomly initialised population."""

from __future__ import annotations

import logging
import time
from functools import cached_property

import numpy as np

from ..space import SearchSpace, build_network, crossover, mutate
from .candidate import Candidate, train_candidate
from .individual import Individual
from .learner import ExpertLearner
from .objectives import objective_matrix
from .selection import nsga2_select, rank_and_crowding, tournament

log = logging.getLogger(__name__)


def best_index(pop: list[Individual], limit_ms: float | None = None) -> int | None:
    """Highest validation accuracy within the latency limit (if any); ties go to fewer parameters, then to the
    older identity. None when nobody meets the limit."""
    ok = [i for i in range(len(pop)) if limit_ms is None or pop[i].extra["latency_ms"] <= limit_ms]
    return min(ok, key=lambda i: (-pop[i].val_acc, pop[i].params, pop[i].uid)) if ok else None


class LatencyBudgetError(ValueError):
    """A latency budget that no individual can meet."""


def task_space(cfg, task) -> SearchSpace:
    """The search space of one task (a data.Task): its input decides channels and how many downsamplings fit."""
    return SearchSpace(in_channels=task.spec.shape[0], input_size=min(task.spec.shape[1:]),
                       num_classes=task.num_classes, max_depth=cfg.max_depth, max_params=cfg.max_params)


def check_latency_budget(cfg, stream) -> None:
    """Stop before any work (and before a run directory exists) when even the fastest genome of the search space
    cannot meet the budget on some task; the message says the smallest budget that can."""
    if cfg.latency_budget_ms is None:
        return
    from ..hw.predictor import LatencyPredictor
    from ..hw.profile import load_profile

    profile, limit = load_profile(cfg.target), cfg.latency_budget_ms * (1 - cfg.latency_margin)
    for task in stream.tasks:
        fastest = LatencyPredictor(profile, task.spec.shape, task.num_classes).predict(task_space(cfg, task).smallest())
        if fastest > limit:
            raise LatencyBudgetError(
                f"latency budget {cfg.latency_budget_ms:g} ms (minus the {cfg.latency_margin:.0%} margin: "
                f"{limit:.4g} ms) cannot be met on {profile.name}: the fastest genome of the space is predicted at "
                f"{fastest:.4g} ms on task {task.id}; use --latency-budget >= {fastest / (1 - cfg.latency_margin):.4g}")


class PCLLearner(ExpertLearner):
    name = "pcl"
    inherit_population = True

    def space_for(self, t: int) -> SearchSpace:
        return task_space(self.cfg, self.stream.tasks[t])

    # -- latency (when a target profile is given) ----------------------------------------------------------------
    @cached_property
    def profile(self):
        from ..hw.profile import load_profile

        return load_profile(self.cfg.target) if self.cfg.target else None

    def predictor(self, t: int):
        from ..hw.predictor import LatencyPredictor

        task = self.tasks[t]
        return LatencyPredictor(self.profile, self.stream.tasks[t].spec.shape, task.num_classes)

    @property
    def objectives(self) -> tuple[str, ...]:
        extra = ("latency",) if self.profile is not None and "latency" not in self.cfg.objectives else ()
        return tuple(self.cfg.objectives) + extra

    @property
    def limit_ms(self) -> float | None:
        """The budget less its safety margin: what the expert must meet by prediction."""
        b = self.cfg.latency_budget_ms
        return None if b is None else b * (1 - self.cfg.latency_margin)

    def violation(self, pop: list[Individual]) -> np.ndarray | None:
        if self.limit_ms is None:
            return None
        return np.array([max(0.0, ind.extra["latency_ms"] - self.limit_ms) for ind in pop])

    def _train(self, cands: list[Candidate], t: int, desc: str, cfg=None) -> list[Individual]:
        out = self.executor.map(train_candidate, cands, desc=desc, shared={"task": self.tasks[t],
                                                                          "cfg": cfg or self.cfg.proxy})
        if self.profile is not None:
            pred = self.predictor(t)
            for ind in out:
                ind.extra["latency_ms"] = round(pred.predict(ind.genome), 6)
        self.state["own"].setdefault("seen", {}).setdefault(t, []).extend(ind.record() for ind in out)
        return out

    # -- population at the start of a task -----------------------------------------------------------------------
    def _initial_population(self, t: int) -> list[Individual]:
        space, rng = self.space_for(t), np.random.default_rng([self.cfg.seed, t, 0xA11])
        genomes: list = []
        for _ in range(4 * self.cfg.population):  # bounded: prefer distinct genomes, accept repeats if needed
            g = space.sample(rng, max_depth=self.cfg.init_max_depth)
            if g not in genomes:
                genomes.append(g)
            if len(genomes) == self.cfg.population:
                break
        while len(genomes) < self.cfg.population:
            genomes.append(genomes[len(genomes) % max(1, len(genomes))])
        cands = [Candidate(uid=f"t{t + 1}-g0-i{k}", genome=g, op="init", run_seed=self.cfg.seed)
                 for k, g in enumerate(genomes)]
        return self._train(cands, t, f"task {t + 1} init")

    def _inherited_population(self, t: int, previous: list[Individual]) -> list[Individual]:
        """The previous task's population with its weights and a new head, briefly trained on task t."""
        cands = [Candidate(uid=f"t{t + 1}-g0-i{k}", genome=ind.genome, op="inherited", run_seed=self.cfg.seed,
                           parent=ind.uid, parent_genome=ind.genome, parent_state=ind.state, new_head=True)
                 for k, ind in enumerate(previous)]
        return self._train(cands, t, f"task {t + 1} adapt")

    # -- one generation -----------------------------------------------------------------------------------------
    def _generation(self, t: int, g: int, pop: list[Individual]) -> list[Individual]:
        space, rng = self.space_for(t), np.random.default_rng([self.cfg.seed, t, g])
        rank, crowd = rank_and_crowding(objective_matrix(pop, self.objectives), self.violation(pop))
        cands = []
        for c in range(self.cfg.num_children):
            p = pop[tournament(rank, crowd, rng, self.cfg.tournament_size)]
            genome, op = p.genome, ""
            if rng.random() < self.cfg.crossover_prob:
                mate = pop[tournament(rank, crowd, rng, self.cfg.tournament_size)]
                genome, op = crossover(p.genome, mate.genome, space, rng), "crossover+"
            child, name = mutate(genome, space, rng)
            cands.append(Candidate(uid=f"t{t + 1}-g{g}-c{c}", genome=child, op=op + name, run_seed=self.cfg.seed,
                                   parent=p.uid, parent_genome=p.genome, parent_state=p.state))
        children = self._train(cands, t, f"task {t + 1} gen {g}/{self.cfg.generations}")
        merged = pop + children
        keep = nsga2_select(objective_matrix(merged, self.objectives), self.cfg.population,
                            elite=best_index(merged, self.limit_ms), violation=self.violation(merged))
        survivors = [merged[i] for i in sorted(keep)]
        self.run.event("generation", task=t + 1, generation=g, children=[c.record() for c in children],
                       survivors=[s.uid for s in survivors], best_val_acc=round(max(s.val_acc for s in survivors), 6))
        return survivors

    # -- the task -----------------------------------------------------------------------------------------------
    def learn_task(self, t: int) -> None:
        own = self.state["own"]
        if own.get("task") != t:  # population not yet prepared for this task
            start = time.perf_counter()
            prev = own.get("population")
            if t == 0 or not self.inherit_population or not prev:
                pop = self._initial_population(t)
            else:
                pop = self._inherited_population(t, prev)
            own.update(task=t, generation=0, population=pop, search_s=time.perf_counter() - start,
                       best_curve=[max(i.val_acc for i in pop)])
            self.run.event("population", task=t + 1, inherited=bool(t and self.inherit_population and prev),
                           members=[i.record() for i in pop], best_val_acc=round(own["best_curve"][0], 6))
            self.save()
        while own["generation"] < self.cfg.generations:
            start = time.perf_counter()
            own["population"] = self._generation(t, own["generation"] + 1, own["population"])
            own["generation"] += 1
            own["search_s"] += time.perf_counter() - start
            own["best_curve"].append(max(i.val_acc for i in own["population"]))
            self.save()
        self._make_expert(t)

    def _make_expert(self, t: int) -> None:
        own, task_id = self.state["own"], self.stream.tasks[t].id
        pop = own["population"]
        b = best_index(pop, self.limit_ms)
        if b is None:
            fastest = min(ind.extra["latency_ms"] for ind in pop)
            raise LatencyBudgetError(
                f"task {task_id}: no individual meets {self.limit_ms:.4g} ms (budget {self.cfg.latency_budget_ms:g} ms "
                f"less {self.cfg.latency_margin:.0%}); the fastest has {fastest:.4g} ms: raise --latency-budget or run "
                "more generations")
        self.write_pareto(t)
        if self.run.has_expert(task_id):  # archived before an interruption: reuse it, never rewrite it
            blob = self.run.load_expert(task_id)
            pop[b] = Individual(uid=f"t{t + 1}-expert", genome=pop[b].genome, state=blob["state_dict"],
                                val_acc=blob["metrics"]["val_acc"], params=pop[b].params, parent=pop[b].uid,
                                op="final")
            return
        best = pop[b]
        cand = Candidate(uid=f"t{t + 1}-expert", genome=best.genome, op="final", run_seed=self.cfg.seed,
                         parent=best.uid, parent_genome=best.genome, parent_state=best.state)
        expert = self._train([cand], t, f"task {t + 1} expert", self.cfg.final)[0]
        net = build_network(expert.genome, self.tasks[t].in_channels, self.tasks[t].num_classes)
        net.load_state_dict(expert.state)
        latency = {} if self.profile is None else {self.profile.name: expert.extra["latency_ms"]}
        self.archive(t, net.eval(), {"val_acc": expert.val_acc, "proxy_val_acc": best.val_acc,
                                     "params": expert.params, "search_s": round(own["search_s"], 3),
                                     "train_s": round(expert.train_s, 3), "selected_from": best.uid,
                                     "val_curve": [round(v, 6) for v in own["best_curve"]], "latency_ms": latency})
        pop[b] = expert  # the population carries the further-trained weights forward; the archive keeps a copy


    def write_pareto(self, t: int) -> None:
        """Every individual evaluated on task t with its non-dominated rank, as CSV (and PNG if matplotlib)."""
        from .pareto import write_pareto

        write_pareto(self.run.path / "pareto", self.stream.tasks[t].id, self.state["own"].get("seen", {}).get(t, []),
                     self.objectives, self.limit_ms)

    def summary(self) -> dict:
        out = super().summary()
        if self.profile is not None:
            out["target"] = {"name": self.profile.name, "source": self.profile.source, "path": str(self.cfg.target),
                             "latency_budget_ms": self.cfg.latency_budget_ms, "margin": self.cfg.latency_margin}
            for t, rec in enumerate(out["tasks"]):
                rec["latency_ms"] = self.task_record(t).get("latency_ms", {}).get(self.profile.name)
        return out


class PCLScratchLearner(PCLLearner):
    name = "pcl-scratch"
    inherit_population = False
