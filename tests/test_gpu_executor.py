"""Issue 24 part 1 item 2: the ``gpu`` executor keeps K trainings in flight in one process. Its scheduling (slots,
refills, failures, an interrupted map, resume) runs here on the CPU, where it must give the local executor's results
bit for bit; what needs CUDA (streams, graphs) is marked ``gpu``."""

import pytest
import torch

from pcl_edge.evolve import RunDir, evolve, preset_config
from pcl_edge.evolve.executors import create_executor
from pcl_edge.evolve.executors.gpu import SlotStats, run_slots
from tests.test_learner import StopAfterTask, assert_same_experts, expert_states, stop_after_task
from tests.test_search import searched


def counting(log, n_steps):
    """A fake training: ``n_steps[i]`` steps, each logged as (item, step); returns the item times 10."""
    def start(i):
        for s in range(n_steps[i]):
            log.append((i, s))
            yield
        return i * 10
    return start


def test_results_come_back_in_submission_order_with_at_most_k_in_flight():
    log, stats = [], SlotStats()
    lengths = [5, 1, 3, 1, 4, 2, 1]
    out = run_slots(list(range(7)), counting(log, lengths), slots=3, stats=stats)
    assert out == [i * 10 for i in range(7)]
    assert stats.peak == 3 and stats.started == stats.finished == 7 and stats.failed == 0
    assert stats.refills == 4 and stats.steps == sum(lengths)
    spans = {i: (log.index((i, 0)), log.index((i, lengths[i] - 1))) for i in range(7)}
    assert max(sum(a <= k <= b for a, b in spans.values()) for k in range(len(log))) <= 3  # never more than 3 at once
    assert stats.order.index(1) < stats.order.index(0)  # the short one finished first...
    assert log.index((3, 0)) < log.index((0, 4))  # ...and its slot was refilled while item 0 still trained


def test_round_robin_one_step_each():
    log = []
    run_slots([0, 1], counting(log, [3, 3]), slots=2)
    assert log == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]


class FakeOOM(RuntimeError):
    pass


def failing_at(bad, at_step, error=FakeOOM):
    closed = []

    def start(i):
        try:
            for s in range(3):
                if i == bad and s == at_step:
                    raise error("out of memory")
                yield
            return i
        finally:
            closed.append(i)
    return start, closed


def test_a_failure_is_scored_and_its_slot_refilled():
    start, _ = failing_at(bad=1, at_step=1)
    stats = SlotStats()
    out = run_slots(list(range(5)), start, slots=2, is_failure=lambda e: isinstance(e, FakeOOM),
                    on_failure=lambda item, exc: f"failed {item}: {exc}", stats=stats)
    assert out == [0, "failed 1: out of memory", 2, 3, 4] and stats.failed == 1 and stats.finished == 4


def test_any_other_error_closes_the_trainings_in_flight_and_propagates():
    start, closed = failing_at(bad=2, at_step=1, error=ValueError)
    with pytest.raises(ValueError):
        run_slots(list(range(6)), start, slots=3, is_failure=lambda e: isinstance(e, FakeOOM),
                  on_failure=lambda item, exc: None)
    assert sorted(closed) == [0, 1, 2]  # 0 and 1 were in flight: closed, not left holding memory
    with pytest.raises(ValueError, match="slots"):
        run_slots([1], counting([], [1]), slots=0)


def test_streams_are_reused_by_the_slot_that_takes_over():
    made = []

    def stream():
        made.append(object())
        return made[-1]

    entered = []
    run_slots(list(range(6)), counting([], [2] * 6), slots=2, stream=stream,
              enter=lambda s: entered.append(s) or __import__("contextlib").nullcontext())
    assert len(made) == 2 and set(map(id, entered)) == set(map(id, made))


_tiny = searched  # the search tests' configuration, whose in-process run is the reference


@pytest.fixture
def local_reference(searched_run):
    return searched_run


def test_the_gpu_executor_on_the_cpu_gives_the_local_executor_s_experts(local_reference, tmp_path):
    ref_out, ref = local_reference
    s = evolve(_tiny(), out=tmp_path / "g", progress=False, executor="gpu", executor_options={"slots": 3})
    assert_same_experts(expert_states(ref_out), expert_states(tmp_path / "g"))
    assert s["accuracy_matrix"] == ref["accuracy_matrix"]


def test_resume_under_the_gpu_executor_after_an_interruption(local_reference, tmp_path):
    with pytest.raises(StopAfterTask):
        evolve(_tiny(), out=tmp_path / "r", progress=False, executor="gpu",
               executor_options={"slots": 4, "graphs": False}, on_task_end=stop_after_task(0))
    evolve(resume=tmp_path / "r", progress=False, executor="gpu", executor_options={"slots": 2})
    assert_same_experts(expert_states(local_reference[0]), expert_states(tmp_path / "r"))
    # the executor is not part of the configuration; each session records the one it ran under, as it resolved its
    # options: the second asked for CUDA graphs by default, and on a machine without CUDA ran without them
    sessions = [(e["executor"], e["settings"]) for e in RunDir(tmp_path / "r").events() if e["event"] == "session"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert sessions == [("gpu", {"slots": 4, "device": device, "graphs": False}),
                        ("gpu", {"slots": 2, "device": device, "graphs": device == "cuda"})]


def test_out_of_memory_in_one_candidate_scores_it_failed(monkeypatch):
    from pcl_edge.evolve import candidate as cand_mod
    from pcl_edge.evolve.candidate import Candidate, failed_candidate, train_candidate
    from pcl_edge.evolve.trainer import TensorSplit, TensorTask
    from pcl_edge.space import Genome

    real = cand_mod.candidate_steps

    def steps(cand, task, cfg, **kw):
        if cand.uid == "boom":
            yield
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return (yield from real(cand, task, cfg, **kw))

    monkeypatch.setattr(train_candidate, "stepwise", steps)
    g = torch.Generator().manual_seed(0)
    split = TensorSplit(torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 2, (64,), generator=g))
    task = TensorTask(1, 2, 1, split, split, split).search_view()
    genome = Genome.parse("d2_w8_p1_x1_s0:res-k3_s1:res-k3")
    cands = [Candidate(uid=u, genome=genome, op="init", run_seed=0) for u in ("a", "boom", "c")]
    ex = create_executor("gpu", progress=False, slots=2, device="cpu", on_failure=failed_candidate)
    out = ex.map(train_candidate, cands, shared={"task": task, "cfg": preset_config("tiny").proxy})
    assert [o.uid for o in out] == ["a", "boom", "c"] and out[1].extra == {"failed": "OutOfMemoryError"}
    assert out[0].val_acc > 0 and ex.stats.failed == 1
    one = ex.map(train_candidate, cands[:1], shared={"task": task, "cfg": preset_config("tiny").proxy})
    assert ex.stats.started == 1 and one[0].val_acc == out[0].val_acc  # one item goes through the slots too


def test_the_cli_takes_the_gpu_executor_and_its_slots(monkeypatch, caplog):
    from pcl_edge.cli import _run_options, build_parser

    def options(*argv):
        return _run_options(build_parser().parse_args(["evolve", *argv]))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here, also on a machine with CUDA
    assert options("--executor", "gpu", "--slots", "8")["executor_options"] == {"slots": 8, "graphs": True}
    assert options("--executor", "gpu", "--no-cuda-graphs")["executor_options"] == {"slots": 16, "graphs": False}
    assert options()["executor"] == "local"  # no CUDA
    assert "ignores it" not in caplog.text
    assert options("--no-cuda-graphs")["executor"] == "local" and "the local executor ignores it" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert options()["executor"] == "gpu" and options()["executor_options"] == {"slots": 16, "graphs": True}
    assert options("--workers", "2")["executor"] == "local"  # asking for worker processes means the local one
    # a resumed run keeps the local default: its numbers must not change because a GPU is now visible
    assert options("--resume", "runs/x")["executor"] == "local"
    with pytest.raises(ValueError, match="--slots"):
        options("--executor", "gpu", "--slots", "0")


def test_an_expert_whose_training_failed_is_never_archived(tmp_path, monkeypatch):
    """Out of memory in the expert's final training (a one-item map): the run stops, resumable, with no expert."""
    from pcl_edge.evolve.candidate import train_candidate

    real = train_candidate.stepwise

    def steps(cand, task, cfg, **kw):
        if cand.op == "final":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
            yield
        return (yield from real(cand, task, cfg, **kw))

    monkeypatch.setattr(train_candidate, "stepwise", steps)
    with pytest.raises(RuntimeError, match="final training failed"):
        evolve(_tiny(generations=1), out=tmp_path / "oom", progress=False, executor="gpu")
    assert not (tmp_path / "oom" / "experts").exists() or not any((tmp_path / "oom" / "experts").iterdir())


@pytest.mark.gpu
def test_on_a_gpu_k_slots_give_the_one_slot_results(local_reference, tmp_path):
    """On CUDA, interleaving on streams changes no candidate's numbers: K=8 equals K=1 bit for bit."""
    one = evolve(_tiny(), out=tmp_path / "k1", progress=False, executor="gpu", executor_options={"slots": 1})
    eight = evolve(_tiny(), out=tmp_path / "k8", progress=False, executor="gpu", executor_options={"slots": 8})
    assert_same_experts(expert_states(tmp_path / "k1"), expert_states(tmp_path / "k8"))
    assert one["accuracy_matrix"] == eight["accuracy_matrix"]


def test_the_cache_is_released_before_a_capture_only_when_the_device_is_full(monkeypatch):
    """Issue 24, seen on an H200: a capture cannot free memory, so one failed out of memory with 15.6 MiB free
    while its process held 13.3 GiB cached and unused. Before a capture the cache is emptied when the device (every
    process on it) is more than CACHE_LIMIT full and the cache holds unused blocks; otherwise nothing is done
    (emptying waits for the device). torch.cuda's readings are faked here."""
    from pcl_edge.evolve import cuda_graph

    emptied, mem = [], {"free": 100, "reserved": 0, "allocated": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (mem["free"], 100))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: mem["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: mem["allocated"])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(dict(mem)))
    dev = torch.device("cuda", 0)

    def release(free, reserved, allocated, **kw):
        mem.update(free=free, reserved=reserved, allocated=allocated)
        return cuda_graph.release_cache_if_full(dev, **kw)

    assert cuda_graph.CACHE_LIMIT == 0.5
    assert not release(free=60, reserved=30, allocated=10)  # the device is 40 % full: nothing
    assert release(free=40, reserved=30, allocated=10)  # 60 % full, 20 cached and unused: released
    assert not release(free=1, reserved=30, allocated=30)  # full, but nothing of this process's is idle
    assert release(free=1, reserved=13, allocated=10)  # full, mostly another process's: this one's idle 3 go back
    assert not release(free=40, reserved=30, allocated=10, limit=0.9)  # an explicit limit
    monkeypatch.setattr(cuda_graph, "CACHE_LIMIT", 0.9)  # read at call time, so a bench can change it
    assert not release(free=40, reserved=30, allocated=10)
    assert [e["free"] for e in emptied] == [40, 1]
