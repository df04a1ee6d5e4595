import os

import pytest

# Keep the decode cache of tests away from the user's cache.
os.environ.setdefault("PCL_EDGE_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test-cache"))
# The test networks are tiny: one intra-op thread is as fast, and immune to OpenMP oversubscription on a busy
# shared machine (subprocesses inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Each run's worker processes take seconds to start (they import torch); tests run candidates in process unless
# they test the workers themselves (bit-identical results are what those tests check).
os.environ.setdefault("PCL_EDGE_WORKERS", "1")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    """`gpu` and `jetson` tests skip, with the reason, on machines that lack them."""
    has_gpu = False
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        pass
    is_jetson = os.path.exists("/etc/nv_tegra_release")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none on this machine"))
        if "jetson" in item.keywords and not is_jetson:
            item.add_marker(pytest.mark.skip(reason="needs a Jetson (no /etc/nv_tegra_release here)"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("PCL_EDGE_CACHE", str(d))
    return d


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """The loop as a user runs it, on Split Digits (tiny preset): tasks 1-3 learned (``run3``: a copy of the run as it
    was then) and exported (``v0``, bundle version 1); tasks 4-5 learned later in the same run (``run``) and exported
    against v0 (``v1``, version 2: tasks 1-3 byte-identical). ``expert_sha`` holds tasks 1-3's weights' sha256 from
    before the second call. Read-only: tests copy what they change."""
    import shutil

    from pcl_edge.evolve import RunDir, evolve, learn, preset_config
    from pcl_edge.export import export_bundle

    root = tmp_path_factory.mktemp("stream")
    evolve(preset_config("tiny", "digits", tasks="3x2"), out=root / "run", progress=False)
    shutil.copytree(root / "run", root / "run3")
    export_bundle(root / "run", root / "v0")
    rd = RunDir(root / "run")
    (root / "expert_sha.txt").write_text(" ".join(rd.verify_expert(i)["model_sha256"] for i in rd.expert_ids()))
    learn(root / "run", tasks="2x2", progress=False)
    export_bundle(root / "run", root / "v1", base=root / "v0")
    return root


@pytest.fixture(scope="session")
def searched_run(tmp_path_factory):
    """``tests.test_search.searched()`` run in process: (run directory, summary), the reference that the search, Ray
    and GPU-executor tests compare their experts with. Read-only."""
    from pcl_edge.evolve import evolve
    from tests.test_search import searched

    out = tmp_path_factory.mktemp("searched") / "run"
    return out, evolve(searched(), out=out, progress=False, executor_options={"workers": 1})
