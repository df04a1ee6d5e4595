import pytest
import torch

from pcl_edge.space import Genome, build_network, inherit_weights

PARENT = "d4_w8_p2_x1_s0:res-k3_s1:mbconv-k3-e3"


def _parent():
    torch.manual_seed(0)
    return _perturbed(build_network(Genome.parse(PARENT), 1, 3))


@pytest.mark.parametrize("child", [
    PARENT,  # identical genome
    "d4_w8_p2_x1_s0:res-k5_s1:mbconv-k5-e3",  # kernel 3 -> 5 (centre padded with zeros)
    "d4_w16_p2_x1_s0:res-k3_s1:mbconv-k3-e3",  # width up (new input slices zero)
    "d4_w8_p2_x1_s0:res-k3_s1:mbconv-k3-e6",  # expansion up
    "d4_w12_p2_x1_s0:res-k5_s1:mbconv-k5-e6",  # all three at once
])
def test_function_preserving_mutations_keep_the_parents_outputs(child):
    parent = _parent()
    x = torch.randn(8, 1, 8, 8)
    g = Genome.parse(child)
    torch.manual_seed(1)
    net = build_network(g, 1, 3)
    frac = inherit_weights(net, g, parent.state_dict(), Genome.parse(PARENT))
    net.eval()
    assert 0 < frac <= 1
    assert (frac == 1.0) == (child == PARENT)
    torch.testing.assert_close(net(x), parent(x), rtol=0, atol=1e-5)


def test_fraction_counts_only_copied_parameters():
    parent = _parent()
    g = Genome.parse("d5_w8_p2_x1_s0:res-k3_s1:mbconv-k3-e3")  # one extra layer in stage 1: fresh
    net = build_network(g, 1, 3)
    frac = inherit_weights(net, g, parent.state_dict(), Genome.parse(PARENT))
    n_parent = sum(p.numel() for p in parent.parameters())
    n_child = sum(p.numel() for p in net.parameters())
    assert frac == pytest.approx(n_parent / n_child)


def test_unrelated_block_change_inherits_the_rest_and_runs():
    parent = _parent()
    g = Genome.parse("d4_w8_p2_x1_s0:dws-k3_s1:mbconv-k3-e3")
    net = build_network(g, 1, 3)
    frac = inherit_weights(net, g, parent.state_dict(), Genome.parse(PARENT))
    assert 0.3 < frac < 1
    assert torch.equal(net.stem.conv.weight, parent.stem.conv.weight)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_new_head_is_not_inherited_when_asked():
    parent = _parent()
    g = Genome.parse(PARENT)
    net = build_network(g, 1, 3)
    before = net.head.weight.clone()
    inherit_weights(net, g, parent.state_dict(), g, include_head=False)
    assert torch.equal(net.head.weight, before)
    assert torch.equal(net.stem.conv.weight, parent.stem.conv.weight)


def _perturbed(net):
    """Trained-looking BatchNorm statistics and affine parameters, so that preservation is really tested."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return net.eval()


@pytest.mark.parametrize("op", ["res", "dws", "mbconv"])
def test_depth_up_children_compute_their_parents_function(op):
    """issue 21 item 1: the inserted layer starts as the identity and the layers after it keep their own weights
    (before: aligned by position in the stage, 0 of 60 residual children kept the parent's output)."""
    import numpy as np

    from pcl_edge.space import SearchSpace
    from pcl_edge.space.mutation import depth_up

    space = SearchSpace(in_channels=3, input_size=16, num_classes=4, ops=(op,), max_depth=8)
    rng = np.random.default_rng(7)
    kept = 0
    for i in range(20):
        parent_g = space.sample(rng, max_depth=6)
        child_g = depth_up(parent_g, space, rng)
        assert child_g is not None and child_g.depth == parent_g.depth + 1
        torch.manual_seed(i)
        parent = _perturbed(build_network(parent_g, 3, 4))
        child = build_network(child_g, 3, 4)
        frac = inherit_weights(child, child_g, parent.state_dict(), parent_g)
        child.eval()
        x = torch.randn(4, 3, 16, 16)
        assert 0.2 < frac < 1
        torch.testing.assert_close(child(x), parent(x), rtol=0, atol=1e-4)
        kept += 1
    assert kept == 20


def test_function_preserving_mutations_chained_keep_the_first_parents_function():
    """depth up, width up, kernel up and expansion up, one after another, each inheriting from the last."""
    g0 = Genome.parse("d3_w8_p2_x-_s0:res-k3_s1:mbconv-k3-e3")
    chain = [g0, Genome.parse("d4_w8_p2_x-_s0:res-k3_s1:mbconv-k3-e3"),  # a res layer inserted in stage 0
             Genome.parse("d4_w12_p2_x-_s0:res-k3_s1:mbconv-k3-e3"),
             Genome.parse("d4_w12_p2_x-_s0:res-k5_s1:mbconv-k3-e3"),
             Genome.parse("d5_w12_p3_x-_s0:res-k5_s1:mbconv-k3-e3"),  # a res layer inserted before the mbconv stage
             Genome.parse("d5_w12_p3_x-_s0:res-k5_s1:mbconv-k3-e6")]
    torch.manual_seed(3)
    net = _perturbed(build_network(g0, 1, 3))
    x = torch.randn(6, 1, 8, 8)
    want = net(x)
    for parent_g, child_g in zip(chain, chain[1:]):
        child = build_network(child_g, 1, 3)
        inherit_weights(child, child_g, net.state_dict(), parent_g)
        net = child.eval()
        torch.testing.assert_close(net(x), want, rtol=0, atol=1e-4)


def test_depth_down_keeps_the_layers_around_the_dropped_one_aligned():
    parent_g = Genome.parse("d5_w8_p3_x-_s0:res-k3_s1:mbconv-k3-e3")
    child_g = Genome.parse("d4_w8_p2_x-_s0:res-k3_s1:mbconv-k3-e3")  # one of the three res layers dropped
    parent = _perturbed(build_network(parent_g, 1, 3))
    child = build_network(child_g, 1, 3)
    inherit_weights(child, child_g, parent.state_dict(), parent_g)
    for c, p in ((0, 0), (1, 1), (2, 3), (3, 4)):  # the last res layer is the one dropped (depth_up silences the
        # last of a run of equal layers, so depth_up then depth_down returns to the parent); the mbconv stage keeps
        # its own layers (was: layer 2 <- 3 only)
        for (name, a), (_, b) in zip(child.layers[c].state_dict().items(), parent.layers[p].state_dict().items()):
            assert torch.equal(a, b), (c, p, name)


def test_without_preserve_depth_layers_align_by_position_as_older_runs_did():
    parent_g = Genome.parse("d3_w8_p-_x-_s0:res-k3")
    child_g = Genome.parse("d4_w8_p-_x-_s0:res-k3")
    parent = _perturbed(build_network(parent_g, 1, 3))
    torch.manual_seed(5)
    child = build_network(child_g, 1, 3)
    fresh = child.layers[3].conv2.bn.weight.clone()
    inherit_weights(child, child_g, parent.state_dict(), parent_g, preserve_depth=False)
    assert torch.equal(child.layers[3].conv2.bn.weight, fresh)  # the stage's last layer as initialised
    assert torch.equal(child.layers[2].conv1.conv.weight, parent.layers[2].conv1.conv.weight)
