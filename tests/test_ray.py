"""The Ray executor on a local Ray instance with 2 CPUs (bounded: tiny runs, a few seconds of training)."""

import os
from pathlib import Path

import pytest
import torch

from pcl_edge.evolve import evolve
from pcl_edge.evolve.executors import create_executor
from tests.test_learner import StopAfterTask, assert_same_experts, expert_states, stop_after_task
from tests.test_search import searched

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


# ``tiny()``: two rungs and screening (from task 2 on): promoted candidates continue from their weights on whichever
# worker picks them up. The search tests' configuration, whose in-process run is the reference.
tiny = searched


@pytest.fixture
def local_reference(searched_run):
    return searched_run[0]


def test_same_experts_as_the_local_executor(ray_instance, local_reference, tmp_path):
    s = evolve(tiny(), out=tmp_path / "ray", progress=False, executor="ray",
               executor_options={"cpus_per_trial": 1})
    assert_same_experts(expert_states(local_reference), expert_states(tmp_path / "ray"))
    assert s["bwt"] == 0.0


def _dies_once(item, marker_dir):
    marker = Path(marker_dir) / f"{item}.tried"
    if not marker.exists():
        marker.write_text("1")
        os._exit(1)  # the worker process dies mid-candidate
    return item * 10


def _always_dies(item):
    os._exit(1)


def test_a_killed_worker_is_retried_then_a_hopeless_candidate_is_scored_failed(ray_instance, tmp_path):
    ex = create_executor("ray", max_retries=2, progress=False,
                         on_failure=lambda item, exc, **_: ("failed", item, type(exc).__name__))
    assert ex.map(_dies_once, [1, 2, 3], shared={"marker_dir": str(tmp_path)}) == [10, 20, 30]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.tried", "2.tried", "3.tried"]
    failed = ex.map(_always_dies, [7])
    assert failed[0][:2] == ("failed", 7) and "Crash" in failed[0][2]


def test_shared_data_is_put_in_the_object_store_once(ray_instance, monkeypatch):
    ex = create_executor("ray", progress=False)
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda obj: puts.append(obj) or real_put(obj))
    data = torch.zeros(1000)
    ex.map(_sum, [1, 2, 3, 4], shared={"data": data})
    ex.map(_sum, [5, 6], shared={"data": data})
    assert len(puts) == 1


def _sum(item, data):
    return item + float(data.sum())


def test_resume_with_ray_after_an_interruption(ray_instance, local_reference, tmp_path):
    with pytest.raises(StopAfterTask):
        evolve(tiny(), out=tmp_path / "r", progress=False, executor="ray", on_task_end=stop_after_task(0))
    evolve(resume=tmp_path / "r", progress=False, executor="ray")
    assert_same_experts(expert_states(local_reference), expert_states(tmp_path / "r"))
