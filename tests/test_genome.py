import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcl_edge.space import (
    BLOCKS,
    MUTATIONS,
    BlockGene,
    Genome,
    SearchSpace,
    build_network,
    count_params,
    crossover,
    mutate,
)

SPACES = [SearchSpace(in_channels=1, input_size=8), SearchSpace(in_channels=3, input_size=32, max_params=200_000)]


def test_string_form_example_round_trips():
    text = "d6_w16_p2.4_x2.4_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3"
    g = Genome.parse(text)
    assert str(g) == text
    assert g.depth == 6 and g.down == (2, 4) and g.double == (2, 4)
    assert g.stages[1] == BlockGene("mbconv", 5, 3)
    assert Genome.parse("d3_w8_p-_x-_s0:res-k5") == Genome(3, 8, (), (), (BlockGene("res", 5),))


@pytest.mark.parametrize("bad", ["", "d6_w16", "d3_w8_p5_x-_s0:res-k3_s1:res-k3", "d3_w8_p1_x-_s0:res-k3",
                                 "d3_w8_p-_x-_s1:res-k3", "d3_w8_p-_x-_s0:res-3", "d0_w8_p-_x-_s0:res-k3",
                                 "d3_w8_p2.1_x-_s0:res-k3_s1:res-k3_s2:res-k3"])
def test_bad_strings_are_rejected_clearly(bad):
    with pytest.raises(ValueError, match="genome|block|position|stage|depth"):
        Genome.parse(bad)


def test_genome_is_frozen():
    g = Genome.parse("d3_w8_p-_x-_s0:res-k3")
    with pytest.raises(AttributeError):
        g.depth = 4


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), space_idx=st.integers(0, 1), steps=st.integers(1, 25))
def test_sampled_and_mutated_genomes_are_valid_and_round_trip(seed, space_idx, steps):
    space = SPACES[space_idx]
    rng = np.random.default_rng(seed)
    g = space.sample(rng)
    assert space.is_valid(g), space.violations(g)
    for _ in range(steps):
        parent = g
        g, op = mutate(g, space, rng)
        assert space.is_valid(g), (op, space.violations(g))
        assert Genome.parse(str(g)) == g
        assert op == "none" or g != parent
        other = space.sample(rng)
        child = crossover(g, other, space, rng)
        assert space.is_valid(child) and child.depth == g.depth and child.down == g.down


@pytest.mark.parametrize("op", MUTATIONS.names())
def test_every_mutation_operator_returns_a_new_genome_or_none(op):
    space, rng = SPACES[1], np.random.default_rng(0)
    g = Genome.parse("d6_w16_p2.4_x2_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3")
    hits = 0
    for _ in range(20):
        child = MUTATIONS.get(op)(g, space, rng)
        if child is not None:
            hits += 1
            assert isinstance(child, Genome) and Genome.parse(str(child)) == child
    assert hits > 0, f"{op} never applied to {g}"
    assert str(g) == "d6_w16_p2.4_x2_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3"  # the parent is never mutated in place


def test_downsampling_limit_follows_input_size():
    assert SearchSpace(1, 8).max_down == 2
    assert SearchSpace(3, 32).max_down == 4
    g = Genome.parse("d5_w8_p1.2.3_x-_s0:res-k3_s1:res-k3_s2:res-k3_s3:res-k3")
    assert any("downsamplings" in v for v in SearchSpace(1, 8).violations(g))
    assert SearchSpace(1, 8).is_valid(SearchSpace(1, 8).repair(g))


def test_parameter_cap_is_enforced_by_bounded_repair():
    space = SearchSpace(3, 32, max_params=20_000)
    g = Genome.parse("d8_w64_p2.4_x2.4_s0:res-k5_s1:res-k5_s2:res-k5")
    assert not space.is_valid(g)
    fixed = space.repair(g)
    assert space.is_valid(fixed) and space.params(fixed) <= 20_000


@pytest.mark.parametrize("op", BLOCKS.names())
@pytest.mark.parametrize("kernel", [3, 5])
def test_every_block_builds_and_runs(op, kernel):
    import torch

    for expansion in ([1, 3, 6] if op == "mbconv" else [1]):
        g = Genome(4, 8, (2,), (1,), (BlockGene(op, kernel, expansion), BlockGene(op, kernel, expansion)))
        net = build_network(g, 3, 5).eval()
        out = net(torch.randn(2, 3, 16, 16))
        assert out.shape == (2, 5)
        assert count_params(g, 3, 5) == sum(p.numel() for p in net.parameters())
