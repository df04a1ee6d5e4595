"""Issue 24 part 1: batches drawn up front, data resident on the training device, losses read back once. On the CPU
the new trainer must compute exactly what the per-step trainer computed (a copy of it is kept below as the
reference); where the arithmetic differs (float16 storage, the graph-capturable SGD) it must agree within float
tolerance."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcl_edge.evolve import batches, resident
from pcl_edge.evolve.cuda_graph import ForeachSGD, graphed_training
from pcl_edge.evolve.recipe import Schedule, TrainConfig
from pcl_edge.evolve.trainer import TensorSplit, build_seeded, evaluate, train, train_multi, training_steps
from pcl_edge.space import Genome

GENOME = Genome.parse("d3_w8_p1_x1_s0:res-k3_s1:res-k3")


# -- the per-step trainer as it was before issue 24 (the reference) ---------------------------------------------------
def _reference_augment(x, mode, gen):
    if mode == "none":
        return x
    n, c, h, w = x.shape
    pad = max(1, h // 8)
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    cols = (dx[:, None] + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    out = xp.gather(2, rows).gather(3, cols)
    if mode == "shift-flip":
        flip = torch.rand(n, generator=gen) < 0.5
        out[flip] = out[flip].flip(3)
    return out


def _reference_train_multi(module, views, cfg, seed, schedule=None):
    gen = torch.Generator().manual_seed(seed)
    total = max(1, cfg.steps)
    schedule = schedule or Schedule()
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule.factor(s, total))
    module.train()
    orders = [torch.empty(0, dtype=torch.long) for _ in views]
    losses = []
    for step in range(total):
        k = step % len(views)
        forward, data = views[k]
        if orders[k].numel() < cfg.batch_size:
            orders[k] = torch.cat([orders[k], torch.randperm(len(data), generator=gen)])
        idx, orders[k] = orders[k][: cfg.batch_size], orders[k][cfg.batch_size:]
        x = _reference_augment(data.x[idx], cfg.augment, gen)
        loss = F.cross_entropy(forward(x), data.y[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    module.eval()
    return float(np.mean(losses))


def _split(n=150, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g))


def _net(seed=1):
    return build_seeded(GENOME, 3, 3, seed)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("augment", ["none", "shift", "shift-flip"])
@pytest.mark.parametrize("resident_data", [True, False])
def test_the_planned_trainer_is_bit_identical_to_the_per_step_one_on_the_cpu(augment, resident_data):
    cfg = TrainConfig(steps=23, batch_size=32, augment=augment, label_smoothing=0.1)  # 150/32: orders run short
    data, schedule = _split(), Schedule(start=10, horizon=60)
    ref, new = _net(), _net()
    want = _reference_train_multi(ref, [(ref, data)], cfg, seed=7, schedule=schedule)
    got = train(new, data, cfg, seed=7, schedule=schedule, resident=resident_data)
    assert got == want and _same_weights(ref, new)
    assert not _same_weights(new, _net())  # it trained


def test_round_robin_views_draw_as_before():
    """Several heads on one trunk (``joint``): step s on view s % 2, each view with its own order of samples."""
    cfg = TrainConfig(steps=11, batch_size=16, augment="shift-flip")
    a, b = _split(90, seed=1), _split(40, seed=2)  # different sizes: the orders run short at different steps
    ref, new = _net(), _net()
    heads_ref, heads_new = [ref, ref], [new, new]
    want = _reference_train_multi(ref, list(zip(heads_ref, (a, b))), cfg, seed=3)
    assert train_multi(new, list(zip(heads_new, (a, b))), cfg, seed=3) == want and _same_weights(ref, new)


def test_views_smaller_than_a_batch_train_as_before():
    """A view of fewer samples than the batch size gives short batches, with as many shifts and flips as samples."""
    cfg = TrainConfig(steps=9, batch_size=32, augment="shift-flip")
    small, tiny = _split(20, seed=3), _split(7, seed=4)
    ref, new = _net(), _net()
    want = _reference_train_multi(ref, [(ref, small), (ref, tiny)], cfg, seed=1)
    assert train_multi(new, [(new, small), (new, tiny)], cfg, seed=1) == want and _same_weights(ref, new)
    assert not batches.draw([20, 7], [8, 8], 9, 32, "shift-flip", 1).uniform


def test_a_plan_holds_full_batches_and_in_range_augmentation():
    plan = batches.draw([50, 20], [8, 8], steps=9, batch_size=16, augment="shift-flip", seed=0)
    assert plan.uniform and plan.offsets == list(range(0, 16 * 10, 16)) and plan.view == [0, 1] * 4 + [0]
    assert all(int(plan.rows(s)[0].max()) < (50, 20)[s % 2] for s in range(9))
    assert all(len(t) == 16 for t in plan.rows(8))
    assert int(plan.dy.min()) >= 0 and int(plan.dy.max()) <= 2 and plan.flip.dtype == torch.bool
    assert [len(t) for t in batches.draw([50], [8], 4, 16, "none", 0).rows(3)] == [16, 0, 0, 0]
    with pytest.raises(ValueError, match="augmentation"):
        batches.draw([50], [8], 4, 16, "rotate", 0)
    with pytest.raises(ValueError, match="at least one step"):
        batches.draw([50], [8], 0, 16, "none", 0)


def test_a_training_is_a_generator_of_its_steps():
    cfg = TrainConfig(steps=5, batch_size=16)
    net, data = _net(), _split()
    steps = training_steps(net, [(net, data)], cfg, seed=0)
    n = 0
    with pytest.raises(StopIteration) as stop:
        while True:
            next(steps)
            n += 1
    assert n == 5 and stop.value.value == train(_net(), data, cfg, seed=0)


def test_float16_storage_agrees_within_tolerance(monkeypatch):
    """On a GPU the data is stored in float16: the batches differ by float16's rounding, the training barely (over
    a few steps: on these random labels, training amplifies any difference, from 3e-4 after one step to 1e-2 after
    twenty)."""
    cfg = TrainConfig(steps=5, batch_size=32, augment="shift-flip")
    data = _split()
    ref, half = _net(), _net()
    want = train(ref, data, cfg, seed=5)
    monkeypatch.setattr(resident, "storage_dtype", lambda device: torch.float16)
    got = train(half, data, cfg, seed=5)
    assert got == pytest.approx(want, rel=1e-3) and got != want  # float16 storage really was used
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(half.state_dict()[k].float(), v.float(), atol=3e-3, rtol=0)


def test_resident_copies_are_cached_per_split_and_dropped_with_it():
    data = _split()
    first = resident.on_device(data, "cpu", torch.float16)
    assert first is resident.on_device(data, "cpu", torch.float16) and first.x.dtype == torch.float16
    assert resident.on_device(data, "cpu") is data  # already there in the storage dtype: no copy
    before = resident.resident_count()
    del data, first
    import gc

    gc.collect()
    assert resident.resident_count() == before - 1


def test_evaluate_reads_the_resident_copy():
    net, data = _net(), _split()
    expected = float((net.eval()(data.x).argmax(1) == data.y).float().mean())
    assert evaluate(net, data) == pytest.approx(expected)


def test_the_graph_capturable_sgd_agrees_with_torch_sgd():
    """The step a CUDA graph captures, run eagerly here: ForeachSGD (rate in a tensor) against torch's SGD."""
    cfg = TrainConfig(steps=25, batch_size=32, augment="shift-flip", weight_decay=5e-4, momentum=0.9)
    data, schedule = _split(), Schedule(start=5, horizon=100)
    ref, new = _net(), _net()
    want = train(ref, data, cfg, seed=2, schedule=schedule)
    plan = batches.draw([len(data)], [8], cfg.steps, cfg.batch_size, cfg.augment, seed=2)
    new.train()
    gen = graphed_training(new, new, data, plan, cfg, schedule, capture=False)
    n = 0
    try:
        while True:
            next(gen)
            n += 1
    except StopIteration as stop:
        got = stop.value
    assert n == cfg.steps and got == pytest.approx(want, rel=1e-4)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(new.state_dict()[k], v, atol=1e-4, rtol=1e-4)


def test_foreach_sgd_skips_a_parameter_without_gradient_as_torch_does():
    used, unused = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = ForeachSGD([used, unused], lr=0.1, momentum=0.9, weight_decay=0.1)
    used.sum().backward()
    opt.step()
    assert torch.equal(unused.detach(), torch.ones(2)) and not torch.equal(used.detach(), torch.ones(3))


def test_foreach_sgd_first_step_is_torch_s():
    torch.manual_seed(0)
    p1 = torch.randn(5, requires_grad=True)
    p2 = p1.detach().clone().requires_grad_(True)
    ref = torch.optim.SGD([p1], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    mine = ForeachSGD([p2], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        for p in (p1, p2):
            (p ** 2).sum().backward()
        ref.step()
        ref.zero_grad()
        mine.step()
        mine.zero_grad()
    torch.testing.assert_close(p1, p2)


@pytest.mark.gpu
def test_on_a_gpu_graphs_and_eager_steps_agree():
    dev = torch.device("cuda")
    cfg = TrainConfig(steps=30, batch_size=64, augment="shift-flip")
    data = _split(300)
    eager, graphed = _net().to(dev), _net().to(dev)
    a = train(eager, data, cfg, seed=1)
    from pcl_edge.evolve.trainer import drain

    got = drain(training_steps(graphed, [(graphed, data)], cfg, seed=1, graphs=True))
    assert got == pytest.approx(a, rel=1e-3)
    assert resident.on_device(data, dev).x.dtype == torch.float16
