import itertools

import numpy as np
import pytest

from pcl_edge.evolve.selection import crowding_distance, non_dominated_sort, nsga2_select, tournament
from pcl_edge.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer, summarize


def _dominates(a, b):
    return all(a <= b) and any(a < b)


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_sort_matches_brute_force(seed):
    F = np.random.default_rng(seed).integers(0, 5, size=(25, 3)).astype(float)
    fronts = non_dominated_sort(F)
    assert sorted(itertools.chain.from_iterable(fronts)) == list(range(25))
    for r, front in enumerate(fronts):
        for i in front:  # nothing in the same or a later front dominates i; something in the previous one does
            later = np.concatenate(fronts[r:])
            assert not any(_dominates(F[j], F[i]) for j in later)
            if r:
                assert any(_dominates(F[j], F[i]) for j in fronts[r - 1])


def test_crowding_distance_hand_computed():
    F = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(F)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx((2 - 0) / 4 + (4 - 1) / 4)
    assert d[2] == pytest.approx((4 - 1) / 4 + (2 - 0) / 4)


def test_nsga2_keeps_fronts_and_the_elite():
    F = np.array([[0, 5], [1, 1], [5, 0], [2, 2], [3, 3], [6, 6]], float)
    keep = set(nsga2_select(F, 3).tolist())
    assert keep == {0, 1, 2}
    assert 5 in set(nsga2_select(F, 3, elite=5).tolist())
    assert len(nsga2_select(F, 4)) == 4


def test_tournament_prefers_lower_rank():
    rank, crowd = np.array([0, 1, 2, 3]), np.zeros(4)
    rng = np.random.default_rng(0)
    wins = [tournament(rank, crowd, rng, size=4) for _ in range(5)]
    assert wins == [0] * 5


R = np.array([[0.9, 0.5, 0.4], [0.7, 0.8, 0.6], [0.6, 0.75, 0.95]])
B = np.array([np.nan, 0.45, 0.5])


def test_metrics_against_hand_computed_values():
    assert average_accuracy(R) == pytest.approx((0.6 + 0.75 + 0.95) / 3)
    assert backward_transfer(R) == pytest.approx(((0.6 - 0.9) + (0.75 - 0.8)) / 2)
    assert forward_transfer(R, B) == pytest.approx(((0.5 - 0.45) + (0.6 - 0.5)) / 2)
    assert forgetting(R) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.75)) / 2)


def test_frozen_experts_give_zero_bwt_and_forgetting():
    R2 = np.array([[0.9, np.nan], [0.9, 0.8]])
    s = summarize(R2, [np.nan, np.nan])
    assert s == {"acc": pytest.approx(0.85), "bwt": 0.0, "fwt": None, "forgetting": 0.0}


def test_single_task_and_bad_shapes():
    assert backward_transfer([[0.7]]) is None and forgetting([[0.7]]) is None
    with pytest.raises(ValueError, match="square"):
        average_accuracy(np.zeros((2, 3)))


def test_objective_matrix_minimises_every_column():
    from pcl_edge.evolve.individual import Individual
    from pcl_edge.evolve.objectives import objective_matrix
    from pcl_edge.space import Genome

    g = Genome.parse("d2_w8_p-_x-_s0:res-k3")
    pop = [Individual("a", g, {}, val_acc=0.9, params=100), Individual("b", g, {}, val_acc=0.8, params=50)]
    assert objective_matrix(pop, ["val_acc", "params"]).tolist() == [[-0.9, 100.0], [-0.8, 50.0]]
    with pytest.raises(KeyError, match="unknown objective"):
        objective_matrix(pop, ["latency_typo"])


def test_infeasible_individuals_rank_behind_every_feasible_one():
    from pcl_edge.evolve.selection import constrained_fronts, rank_and_crowding

    F = np.array([[0, 0], [1, 1], [5, 5], [2, 2]], float)  # 0 dominates everything, but breaks the budget
    violation = np.array([3.0, 0, 0, 1.0])
    fronts = constrained_fronts(F, violation)
    assert [f.tolist() for f in fronts] == [[1], [2], [3], [0]]
    rank, _ = rank_and_crowding(F, violation)
    assert rank[1] < rank[2] < rank[3] < rank[0]
    assert set(nsga2_select(F, 2, violation=violation).tolist()) == {1, 2}
