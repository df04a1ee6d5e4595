"""Population-based Continual Learning: evolve a population per task, archive its best as the task's frozen
expert, and hand the population, weights included, to the next task (forward transfer).

``pcl-scratch`` is the forward-transfer ablation: the same search, but every task starts from a freshly
sampled, randomly initialised population."""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np

from ..space import SearchSpace, build_network, crossover, mutate
from .candidate import Candidate, train_candidate
from .individual import Individual
from .learner import ExpertLearner
from .objectives import objective_matrix
from .selection import nsga2_select, rank_and_crowding, tournament

log = logging.getLogger(__name__)


def best_index(pop: list[Individual]) -> int:
    """Highest validation accuracy; ties go to fewer parameters, then to the older identity."""
    return min(range(len(pop)), key=lambda i: (-pop[i].val_acc, pop[i].params, pop[i].uid))


class PCLLearner(ExpertLearner):
    name = "pcl"
    inherit_population = True

    def space_for(self, t: int) -> SearchSpace:
        task = self.tasks[t]
        spec = self.stream.tasks[t].spec
        return SearchSpace(in_channels=task.in_channels, input_size=min(spec.shape[1:]), num_classes=task.num_classes,
                           max_depth=self.cfg.max_depth, max_params=self.cfg.max_params)

    def _train(self, cands: list[Candidate], t: int, desc: str, cfg=None) -> list[Individual]:
        job = partial(train_candidate, task=self.tasks[t], cfg=cfg or self.cfg.proxy)  # picklable, for remote executors
        return self.executor.map(job, cands, desc=desc)

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
        rank, crowd = rank_and_crowding(objective_matrix(pop, self.cfg.objectives))
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
        keep = nsga2_select(objective_matrix(merged, self.cfg.objectives), self.cfg.population,
                            elite=best_index(merged))
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
        b = best_index(pop)
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
        self.archive(t, net.eval(), {"val_acc": expert.val_acc, "proxy_val_acc": best.val_acc,
                                     "params": expert.params, "search_s": round(own["search_s"], 3),
                                     "train_s": round(expert.train_s, 3), "selected_from": best.uid,
                                     "val_curve": [round(v, 6) for v in own["best_curve"]]})
        pop[b] = expert  # the population carries the further-trained weights forward; the archive keeps a copy


class PCLScratchLearner(PCLLearner):
    name = "pcl-scratch"
    inherit_population = False
