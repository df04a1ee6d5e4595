"""Population-based Continual Learning: evolve a population per task, archive its best as the task's frozen
expert, and hand the population, weights included, to the next task (forward transfer).

``pcl-scratch`` is the forward-transfer ablation: the same search, but every task starts from a freshly
sampled, randomly initialised population."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from functools import cached_property

import numpy as np

from ..space import Genome, SearchSpace, build_network, crossover, mutate
from .candidate import Candidate, train_candidate
from .individual import Individual
from .learner import ExpertLearner
from .objectives import objective_matrix
from .perf_predictor import History as PerfHistory
from .perf_predictor import features as perf_features
from .perf_predictor import kendall_tau, top_k_precision
from .recipe import Schedule
from .selection import nsga2_select, rank_and_crowding, tournament
from .trainer import resolve_threads

# with a latency limit (and ``feasible_children``), a generation draws at most this many extra mutants per child it
# trains, looking for children that meet the limit; a draw is a mutation and a latency prediction (microseconds)
FEASIBLE_DRAWS = 8

log = logging.getLogger(__name__)


def _distinct_first(drafts: list[Candidate], order: list[int]) -> list[int]:
    """``order`` with the first draft of each genome first, then the drafts that repeat a genome."""
    firsts, genomes = [], set()
    for i in order:
        if drafts[i].genome not in genomes:
            firsts.append(i)
            genomes.add(drafts[i].genome)
    return firsts + [i for i in order if i not in firsts]


def best_index(pop: list[Individual], limit_ms: float | None = None) -> int | None:
    """Highest validation accuracy within the latency limit (if any); ties go to fewer parameters, then to the
    older identity. None when nobody meets the limit."""
    ok = _feasible(pop, limit_ms)
    return min(ok, key=lambda i: (-pop[i].val_acc, pop[i].params, pop[i].uid)) if ok else None


def _feasible(pop: list[Individual], limit_ms: float | None) -> list[int]:
    """Indices of the individuals within the latency limit (all of them without one)."""
    return [i for i in range(len(pop)) if limit_ms is None or pop[i].extra["latency_ms"] <= limit_ms]


def expert_index(pop: list[Individual], limit_ms: float | None, n_val: int, z: float) -> int | None:
    """The expert's pick (``EvolveConfig.expert_tie_z``): of the individuals within the latency limit whose validation
    accuracy is within ``z`` standard errors of the best, the one with the most parameters (then the higher accuracy,
    then the older identity). The standard error is that of a difference of two accuracies near the best's, each on
    ``n_val`` images: sqrt(2 p (1 - p) / n). ``z`` 0: ``best_index``. None when nobody meets the limit."""
    b = best_index(pop, limit_ms)
    if b is None or z <= 0 or n_val <= 0:
        return b
    p = pop[b].val_acc
    floor = p - z * math.sqrt(2 * p * (1 - p) / n_val)
    tied = [i for i in _feasible(pop, limit_ms) if pop[i].val_acc >= floor]
    return min(tied, key=lambda i: (-pop[i].params, -pop[i].val_acc, pop[i].uid))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


class LatencyBudgetError(ValueError):
    """A latency budget that no individual can meet."""


def task_space(cfg, task) -> SearchSpace:
    """The search space of one task (a data.Task): its input decides channels and how many downsamplings fit, and
    the hand-picked net's training cost on it the cap ``max_train_cost`` scales."""
    shape = tuple(task.spec.shape)
    space = SearchSpace(in_channels=shape[0], input_size=min(shape[1:]), num_classes=task.num_classes,
                        max_depth=cfg.max_depth, max_params=cfg.max_params)
    if cfg.max_train_cost is None:
        return space
    # the hand-picked net counted as the space counts every candidate (at the input's shorter side)
    return replace(space, max_activations=int(cfg.max_train_cost * space.activations(Genome.parse(cfg.genome))))


def check_feasible(cfg, stream) -> None:
    """Before any work (and before a run directory exists): the latency budget and the training-cost cap each admit
    some genome of the space on every task."""
    check_train_cost(cfg, stream)
    check_latency_budget(cfg, stream)


def check_train_cost(cfg, stream) -> None:
    """Stop before any work when the training-cost cap admits no genome of the space on some task."""
    for task in stream.tasks:
        space = task_space(cfg, task)
        if space.max_activations is None:
            continue
        cheapest = space.activations(space.cheapest_to_train())
        if cheapest > space.max_activations:
            raise ValueError(f"max_train_cost {cfg.max_train_cost:g} admits no network on task {task.id}: the "
                             f"cheapest genome to train stores {cheapest:,} activation elements per sample, the cap "
                             f"is {space.max_activations:,}; raise it (or null: no cap)")


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

        if not self.cfg.target:
            return None
        profile = load_profile(self.cfg.target)
        why = profile.staleness(self.cfg.profile_max_age_days)
        if why:
            log.warning("%s; the search ranks by it all the same (absolute budgets may be off)", why)
        return profile

    @cached_property
    def _latency_predictors(self) -> dict:
        return {}

    def predictor(self, t: int):
        from ..hw.predictor import LatencyPredictor

        if t not in self._latency_predictors:
            self._latency_predictors[t] = LatencyPredictor(self.profile, self.stream.tasks[t].spec.shape,
                                                           self.tasks[t].num_classes)
        return self._latency_predictors[t]

    @property
    def front_objectives(self) -> tuple[str, ...]:
        """The Pareto front's axes (the pareto/ files): the configured objectives, + latency with a target."""
        extra = ("latency",) if self.profile is not None and "latency" not in self.cfg.objectives else ()
        return tuple(self.cfg.objectives) + extra

    @property
    def objectives(self) -> tuple[str, ...]:
        """What selection ranks by: accuracy alone (``selection="constrained"``: the budget is a constraint, see
        ``violation``), or the front's objectives (``"pareto"``)."""
        return ("val_acc",) if self.cfg.selection == "constrained" else self.front_objectives

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
        out = self.executor.map(train_candidate, cands, desc=desc, shared={"task": self.tasks[t].search_view(),
                                                                          "cfg": cfg or self.cfg.proxy})
        if self.profile is not None:
            for ind in out:
                ind.extra["latency_ms"] = self.latency_ms(t, ind.genome)
        seen = self.state["own"].setdefault("seen", {}).setdefault(t, [])
        fresh = {ind.uid for ind in out}  # a candidate promoted to a later rung replaces its earlier record
        seen[:] = [r for r in seen if r["uid"] not in fresh] + [ind.record() for ind in out]
        return out

    def _schedule(self, t: int, start: int = 0, anneal: bool = False) -> Schedule:
        """Where a training enters its lineage's learning-rate schedule (``cfg.lineage_schedule``)."""
        if not self.cfg.lineage_schedule:
            return Schedule()
        return Schedule(start=start, horizon=self.cfg.lineage_steps(t), anneal=anneal)

    def latency_ms(self, t: int, genome) -> float:
        return round(self.predictor(t).predict(genome), 6)

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
        ops = ["init"] * len(genomes)
        baseline = self._baseline_seed(t, space)
        if baseline is not None:  # the hand-picked net takes the last slot: the search starts no worse than it
            genomes = [g for g in genomes if g != baseline][: self.cfg.population - 1] + [baseline]
            ops = ["init"] * (len(genomes) - 1) + ["baseline"]
        incumbent = {"incumbent": True} if self.cfg.keep_incumbent else None
        cands = [Candidate(uid=f"t{t + 1}-g0-i{k}", genome=g, op=op, run_seed=self.cfg.seed, schedule=self._schedule(t),
                           extra=incumbent if op == "baseline" else None)
                 for k, (g, op) in enumerate(zip(genomes, ops))]
        return self._train(cands, t, f"task {t + 1} init")

    def _baseline_seed(self, t: int, space: SearchSpace):
        """The hand-picked net (``cfg.genome``), or its largest width/depth-scaled variant that meets the latency
        limit by prediction; None when ``seed_baseline`` is off or no variant fits."""
        from ..space.scaling import largest_fitting

        if not self.cfg.seed_baseline:
            return None
        fits = (lambda g: True) if self.limit_ms is None else (lambda g: self.latency_ms(t, g) <= self.limit_ms)
        found = largest_fitting(Genome.parse(self.cfg.genome), space, fits)
        if found is None:
            log.info("task %d: no width/depth variant of %s fits the search space and the latency limit: the first "
                     "population is all sampled", t + 1, self.cfg.genome)
        return found

    def _inherited_population(self, t: int, previous: list[Individual]) -> list[Individual]:
        """The previous task's population with its weights and a new head, briefly trained on task t. With
        ``keep_expert`` the previous task's expert holds this task's incumbency, if it meets the latency limit here
        (another head may not)."""
        def carried(ind: Individual) -> dict | None:
            keep = self.cfg.keep_expert and ind.extra.get("archived")
            fits = self.limit_ms is None or self.latency_ms(t, ind.genome) <= self.limit_ms
            return {"incumbent": True, "carried": True} if keep and fits else None

        cands = [Candidate(uid=f"t{t + 1}-g0-i{k}", genome=ind.genome, op="inherited", run_seed=self.cfg.seed,
                           parent=ind.uid, parent_genome=ind.genome, parent_state=ind.state, new_head=True,
                           schedule=self._schedule(t), extra=carried(ind))  # a new task: a new schedule per lineage
                 for k, ind in enumerate(previous)]
        return self._train(cands, t, f"task {t + 1} adapt")

    # -- one generation -----------------------------------------------------------------------------------------
    def _draft(self, t: int, g: int, pop: list[Individual]) -> list[Candidate]:
        """The children of generation g: ``rung_sizes[0] * screen`` mutants drawn by tournament, of which the
        performance predictor keeps the predicted best (no predictor when screen is 1 or it has too little history).
        With a latency limit and ``feasible_children``, mutants are drawn on until as many distinct genomes meet it
        by prediction as there are children (at most ``FEASIBLE_DRAWS`` more draws per child), and every draft that
        meets it comes before any that does not; without ``feasible_children``, distinct genomes come first.
        Children that cannot meet the limit go after those that can, within each group."""
        space, rng, cfg = self.space_for(t), np.random.default_rng([self.cfg.seed, t, g]), self.cfg
        rank, crowd = self._ranking(pop)
        history = self._history()
        n_train = cfg.rung_sizes[0]
        n_draw = n_train * cfg.screen if history.ready() else n_train
        screening = n_draw > n_train
        drafts, feats, late = [], [], []  # late: how far each draft's predicted latency is over the limit
        fit = set()  # the distinct genomes drawn that meet the latency limit
        shape, ncls = tuple(self.stream.tasks[t].spec.shape), self.tasks[t].num_classes
        more = cfg.feasible_children and self.limit_ms is not None  # draw on until n_train children fit
        c = 0
        while c < n_draw or (more and len(fit) < n_train and c < n_draw + FEASIBLE_DRAWS * n_train):
            p = pop[tournament(rank, crowd, rng, cfg.tournament_size)]
            genome, op = p.genome, ""
            if rng.random() < cfg.crossover_prob:
                mate = pop[tournament(rank, crowd, rng, cfg.tournament_size)]
                genome, op = crossover(p.genome, mate.genome, space, rng), "crossover+"
            child, name = mutate(genome, space, rng)
            drafts.append(Candidate(uid=f"t{t + 1}-g{g}-c{c}", genome=child, op=op + name, run_seed=cfg.seed,
                                    parent=p.uid, parent_genome=p.genome, parent_state=p.state,
                                    schedule=self._schedule(t, p.position),  # the child goes on where its parent is
                                    preserve_depth=cfg.preserve_depth))
            feats.append(perf_features(child, p.genome, p.val_acc, op + name, shape, ncls))
            late.append(max(0.0, self.latency_ms(t, child) - self.limit_ms) if self.limit_ms else 0.0)
            if late[-1] == 0.0:
                fit.add(child)
            c += 1
        scores = history.fit(cfg.perf_predictor).score(np.array(feats, float)) if screening else None
        # order: feasible first, then predicted score (when screening), then draw order; distinct genomes first
        order = sorted(range(len(drafts)), key=lambda i: (late[i], -(scores[i] if scores is not None else 0.0), i))
        if more:  # a feasible child, even one whose genome another child has, before any infeasible one
            chosen = _distinct_first(drafts, [i for i in order if late[i] == 0.0])
            chosen += _distinct_first(drafts, [i for i in order if late[i] > 0.0])
        else:
            chosen = _distinct_first(drafts, order)
        chosen = sorted(chosen[:n_train])
        return [replace(drafts[i], extra={"features": feats[i],
                                          **({"predicted": round(float(scores[i]), 6)} if scores is not None else {})})
                for i in chosen]

    def _constrained_order(self, pop: list[Individual]) -> list[int]:
        """Indices best first: feasible before infeasible (least violation first), then validation accuracy, then
        fewer parameters, then identity: a total, deterministic order."""
        late = self.violation(pop)
        return sorted(range(len(pop)), key=lambda i: (late[i] if late is not None else 0.0, -pop[i].val_acc,
                                                      pop[i].params, pop[i].uid))

    def _ranking(self, pop: list[Individual]) -> tuple[np.ndarray, np.ndarray]:
        """(rank, crowding) for tournaments: NSGA-II's with ``selection="pareto"``; with ``"constrained"`` each
        individual's place in ``_constrained_order`` (ties in accuracy go to fewer parameters), crowding unused."""
        if self.cfg.selection != "constrained":
            return rank_and_crowding(objective_matrix(pop, self.objectives), self.violation(pop))
        rank = np.empty(len(pop), int)
        rank[self._constrained_order(pop)] = np.arange(len(pop))
        return rank, np.zeros(len(pop))

    def _history(self) -> PerfHistory:
        """Every child this run has labelled, all tasks so far (saved with the state)."""
        return self.state["own"].setdefault("perf_history", PerfHistory.empty())

    def _promote(self, inds: list[Individual], k: int) -> list[Individual]:
        """Successive halving: the k best of a rung, feasible first, then validation accuracy, then fewer params."""
        late = self.violation(inds)
        key = lambda i: (late[i] if late is not None else 0.0, -inds[i].val_acc, inds[i].params, inds[i].uid)  # noqa
        return [inds[i] for i in sorted(sorted(range(len(inds)), key=key)[:k])]

    @staticmethod
    def _incumbent(pop: list[Individual]) -> Individual | None:
        """The member that holds the incumbency, if one does: a fresh population's hand-picked seed
        (``EvolveConfig.keep_incumbent``) or the previous task's expert (``keep_expert``, flagged ``carried``)."""
        return next((i for i in pop if i.extra.get("incumbent")), None)

    def _continue_incumbent(self, t: int, g: int, r: int, inc: Individual) -> Candidate:
        """The incumbent's training through rung r of generation g: as many steps as a child promoted to that rung
        takes, from its own weights, on along its schedule; one identity per generation."""
        return Candidate(uid=f"t{t + 1}-g{g}-inc", genome=inc.genome, op="incumbent", run_seed=self.cfg.seed,
                         parent=inc.parent if r else inc.uid, rung=r, resume_state=inc.state, inherited=inc.inherited,
                         train_s=inc.train_s if r else 0.0, schedule=self._schedule(t, inc.position),
                         extra={"incumbent": True, **({"carried": True} if inc.extra.get("carried") else {})})

    def _generation(self, t: int, g: int, pop: list[Individual]) -> list[Individual]:
        """Draft (and screen) the children, train them rung by rung, then (mu+lambda) selection. The incumbent (see
        ``EvolveConfig.keep_incumbent``) trains beside the children and keeps its place; the expert's race decides
        (``_make_expert``). The state is saved after every rung, so an interrupted generation resumes at the rung it
        was in."""
        own, cfg = self.state["own"], self.cfg
        pending = own.get("pending")
        if not pending or pending["generation"] != g:
            pending = own["pending"] = {"generation": g, "rung": -1, "alive": self._draft(t, g, pop), "dropped": [],
                                        "incumbent": self._incumbent(pop)}
        steps, sizes = cfg.rung_steps, cfg.rung_sizes
        while pending["rung"] + 1 < len(steps):
            r = pending["rung"] + 1
            alive = pending["alive"]
            if r > 0:  # promote the best of the previous rung; they continue from their own weights
                keep = {i.uid for i in self._promote(alive, sizes[r])}
                pending["dropped"] += [i.record() for i in alive if i.uid not in keep]
                alive = [i for i in alive if i.uid in keep]
                alive = [Candidate(uid=i.uid, genome=i.genome, op=i.op, run_seed=cfg.seed, parent=i.parent, rung=r,
                                   resume_state=i.state, inherited=i.inherited, train_s=i.train_s,
                                   schedule=self._schedule(t, i.position),
                                   extra={k: v for k, v in i.extra.items() if k != "latency_ms"}) for i in alive]
            inc = pending.get("incumbent")
            side = [self._continue_incumbent(t, g, r, inc)] if inc is not None else []
            trained = self._train(alive + side, t, f"task {t + 1} gen {g}/{cfg.generations} rung {r}",
                                  replace(cfg.proxy, steps=steps[r]))
            if side:
                cont = trained.pop()
                pending["incumbent"] = None if cont.extra.get("failed") else cont
                if pending["incumbent"] is None:  # e.g. out of memory: no weights to go on from
                    log.warning("task %d gen %d: the incumbent's training failed (%s); this generation it is an "
                                "ordinary member, as it was before the generation", t + 1, g, cont.extra["failed"])
            self.run.event("rung", task=t + 1, generation=g, rung=r, steps=steps[r],
                           trained=[i.record() for i in trained], **({"incumbent": cont.record()} if side else {}))
            if r == 0:
                self._learn_from(t, g, trained)
            pending.update(rung=r, alive=trained)
            self.save()
        children, inc = pending["alive"], pending.get("incumbent")
        merged = pop + children
        if inc is not None:  # the incumbent's continuation replaces it
            merged = [i for i in pop if not i.extra.get("incumbent")] + children + [inc]
        keep = self._select(merged, cfg.population)
        if inc is not None and len(merged) - 1 not in keep:
            keep = [*self._select(merged[:-1], cfg.population - 1), len(merged) - 1]  # it keeps its place
        survivors = [merged[i] for i in sorted(keep)]
        own["pending"] = None
        self.run.event("generation", task=t + 1, generation=g, children=[c.record() for c in children],
                       dropped=pending["dropped"], survivors=[s.uid for s in survivors],
                       **({"incumbent": inc.record()} if inc is not None else {}),
                       best_val_acc=round(max(s.val_acc for s in survivors), 6))
        return survivors

    def _select(self, merged: list[Individual], n: int) -> list[int]:
        """(mu+lambda): the n to keep, by (feasibility, accuracy, fewer params) with ``selection="constrained"`` (the
        elite first), else NSGA-II."""
        if self.cfg.selection == "constrained":
            return self._constrained_order(merged)[:n]
        return list(nsga2_select(objective_matrix(merged, self.objectives), n, elite=best_index(merged, self.limit_ms),
                                 violation=self.violation(merged)))

    def _learn_from(self, t: int, g: int, trained: list[Individual]) -> None:
        """Score the predictor on what it screened (Kendall tau, top-k precision against the first-rung accuracies
        the children reached), then add these children to its history."""
        pred = [i.extra.get("predicted") for i in trained]
        acc = [i.val_acc for i in trained]
        history = self._history()
        if all(p is not None for p in pred):
            k = self.cfg.rung_sizes[1] if len(self.cfg.rung_sizes) > 1 else max(1, len(trained) // 2)
            quality = {"model": self.cfg.perf_predictor, "labels": len(history.y), "screened":
                       len(trained) * self.cfg.screen, "trained": len(trained), "kendall_tau": kendall_tau(pred, acc),
                       "top_k": k, "top_k_precision": top_k_precision(pred, acc, k)}
            self.run.event("perf_predictor", task=t + 1, generation=g, **quality)
            log.info("task %d gen %d: performance predictor Kendall tau %s, top-%d precision %s", t + 1, g,
                     _fmt(quality["kendall_tau"]), k, _fmt(quality["top_k_precision"]))
        history.add([i.extra["features"] for i in trained], acc, f"t{t + 1}-g{g}")

    # -- the task -----------------------------------------------------------------------------------------------
    def learn_task(self, t: int) -> None:
        _ = self.profile  # loaded (and its age checked) before any training of the task
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
        b = expert_index(pop, self.limit_ms, len(self.stream.tasks[t].val), self.cfg.expert_tie_z)
        if b is None:
            fastest = min(ind.extra["latency_ms"] for ind in pop)
            raise LatencyBudgetError(
                f"task {task_id}: no individual meets {self.limit_ms:.4g} ms (budget {self.cfg.latency_budget_ms:g} ms "
                f"less {self.cfg.latency_margin:.0%}); the fastest has {fastest:.4g} ms: raise --latency-budget or run "
                "more generations")
        self.write_pareto(t)
        if self.run.has_expert(task_id):  # archived before an interruption: reuse it, never rewrite it
            blob = self.run.load_expert(task_id)
            b = next((k for k, i in enumerate(pop) if i.uid == blob["metrics"].get("selected_from")), b)  # a race's
            for k, ind in own.pop("race_rest", {}).items():  # the race's other trainings, as if not interrupted
                pop[k] = ind
            pop[b] = Individual(uid=f"t{t + 1}-expert", genome=pop[b].genome, state=blob["state_dict"],
                                val_acc=blob["metrics"]["val_acc"], params=pop[b].params, parent=pop[b].uid,
                                op="final", extra={"archived": True})
            return
        racers = self._racers(pop, b)
        final = self.cfg.final_for(t)
        if len(racers) > 1:  # side by side: the cores (or the executor's slots) shared between them
            final = replace(final, threads=max(1, resolve_threads(final.threads) // len(racers)))
        cands = [Candidate(uid=f"t{t + 1}-expert" + ("" if k == 0 else "-inc"), genome=pop[r].genome, op="final",
                           run_seed=self.cfg.seed, parent=pop[r].uid, parent_genome=pop[r].genome,
                           parent_state=pop[r].state, schedule=self._schedule(t, pop[r].position, anneal=True))
                 for k, r in enumerate(racers)]
        trained = self._train(cands, t, f"task {t + 1} expert" + (" race" if len(racers) > 1 else ""), final)
        if trained[0].extra.get("failed"):  # an executor scored the training failed: nothing trained may be archived
            raise RuntimeError(f"task {t + 1}: the expert's final training failed ({trained[0].extra['failed']}); the "
                               "run state is saved: continue it with --resume (on a GPU, with fewer --slots)")
        ok = [k for k, ind in enumerate(trained) if not ind.extra.get("failed")]
        w = max(ok, key=lambda k: (trained[k].val_acc, -k))  # ties: the search's choice
        expert, best = trained[w], pop[racers[w]]
        race = [{"uid": pop[r].uid, "genome": str(pop[r].genome), "proxy_val_acc": round(pop[r].val_acc, 6),
                 "val_acc": round(trained[k].val_acc, 6), "incumbent": bool(pop[r].extra.get("incumbent"))}
                for k, r in enumerate(racers)] if len(racers) > 1 else None
        if race:
            log.info("task %d: expert race at %d steps: %s", t + 1, final.steps,
                     ", ".join(f"{r['genome']} {r['val_acc']:.4f}" for r in race))
            # the others' further-trained weights go forward too; saved before the archive, so that a run stopped
            # between the two resumes with them (the population itself changes only after the archive)
            own["race_rest"] = {racers[k]: trained[k] for k in ok if k != w}
            self.save()
        net = build_network(expert.genome, self.tasks[t].in_channels, self.tasks[t].num_classes)
        net.load_state_dict(expert.state)
        latency = {} if self.profile is None else {self.profile.name: expert.extra["latency_ms"]}
        self.archive(t, net.eval(), {"val_acc": expert.val_acc, "proxy_val_acc": best.val_acc,
                                     "params": expert.params, "search_s": round(own["search_s"], 3),
                                     "train_s": round(expert.train_s, 3), "selected_from": best.uid,
                                     "val_curve": [round(v, 6) for v in own["best_curve"]], "latency_ms": latency,
                                     **({"race": race} if race else {})})
        for k, ind in own.pop("race_rest", {}).items():
            pop[k] = ind
        expert.extra["archived"] = True  # the next task's incumbent (``keep_expert``)
        pop[racers[w]] = expert  # the population carries the further-trained weights forward; the archive keeps a copy

    def _racers(self, pop: list[Individual], b: int) -> list[int]:
        """Who trains for the expert: the search's choice ``b`` and, when another member holds the incumbency (a
        fresh population's hand-picked seed, ``keep_incumbent``), that member too: judged after a few dozen steps, a
        net that learns slowly loses to small nets that learn fast (issue 21, seed 1: a 1,358-parameter net beat the
        hand-picked net at 150 steps), so the two are judged at the expert's horizon, on validation. A carried
        incumbent (the previous task's expert, ``keep_expert``) races nobody: it has had its expert's training."""
        inc = next((k for k, i in enumerate(pop) if i.extra.get("incumbent")), None)
        late = self.violation(pop)
        if inc is None or inc == b or pop[inc].extra.get("carried") or (late is not None and late[inc] > 0):
            return [b]
        return [b, inc]

    def write_pareto(self, t: int) -> None:
        """Every individual evaluated on task t with its non-dominated rank, as CSV (and PNG if matplotlib)."""
        from .pareto import write_pareto

        write_pareto(self.run.path / "pareto", self.stream.tasks[t].id, self.state["own"].get("seen", {}).get(t, []),
                     self.front_objectives, self.limit_ms)

    def summary(self) -> dict:
        out = super().summary()
        constraints = ([f"predicted latency <= {self.limit_ms:.4g} ms on {self.profile.name}"] if self.limit_ms else [])
        out["selection"] = {"mode": self.cfg.selection, "objectives": list(self.objectives),
                            "constraints": [*constraints, f"params <= {self.cfg.max_params:,}", *(
                                [f"training cost <= {self.cfg.max_train_cost:g}x the hand-picked net's"]
                                if self.cfg.max_train_cost is not None else [])],
                            "screening": "off" if self.cfg.screen <= 1 else
                            f"{self.cfg.perf_predictor} predictor keeps 1 of {self.cfg.screen} mutants",
                            "expert": ("the highest validation accuracy" if self.cfg.expert_tie_z <= 0 else
                                       f"the most parameters within {self.cfg.expert_tie_z:g} standard error(s) of "
                                       "the highest validation accuracy")
                            + ("; the previous task's expert kept in the next task's search" if self.cfg.keep_expert
                               else "")}
        if self.profile is not None:
            out["target"] = {"name": self.profile.name, "source": self.profile.source, "path": str(self.cfg.target),
                             "latency_budget_ms": self.cfg.latency_budget_ms, "margin": self.cfg.latency_margin}
            if getattr(self, "drift_at_start", None):
                out["target"]["drift_at_start"] = self.drift_at_start
            for t, rec in enumerate(out["tasks"]):
                rec["latency_ms"] = self.task_record(t).get("latency_ms", {}).get(self.profile.name)
        return out


class PCLScratchLearner(PCLLearner):
    name = "pcl-scratch"
    inherit_population = False
