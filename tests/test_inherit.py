import pytest
import torch

from pcl_edge.space import Genome, build_network, inherit_weights

PARENT = "d4_w8_p2_x1_s0:res-k3_s1:mbconv-k3-e3"


def _parent():
    torch.manual_seed(0)
    net = build_network(Genome.parse(PARENT), 1, 3)
    with torch.no_grad():  # non-trivial BN statistics so that preservation is really tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return net.eval()


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
