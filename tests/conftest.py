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
