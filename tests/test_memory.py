"""The memory budget is honoured (issue 22 item 3): sessions taken out of service are closed (GPU buffers and
streams freed), old versions keep nothing resident, concurrent loads are accounted one at a time, and what a request
still holds is counted."""

import threading
import time

import numpy as np
import pytest

from pcl_edge.runtime import Router

X = np.zeros((1, 1, 8, 8), np.float32)


class Slow:
    """A fake backend whose sessions take a while to open and can be held open mid-request; it tracks what is
    resident (opened, not closed) at every moment."""

    resident: set = set()
    most = 0
    lock = threading.Lock()
    gate: threading.Event | None = None

    def __init__(self, root, task, **_):
        time.sleep(0.05)
        self.name, self.nbytes, self.classes = "slow", 100, task["output"]["shape"][0]
        with Slow.lock:
            Slow.resident.add(self)
            Slow.most = max(Slow.most, len(Slow.resident))

    def run(self, x):
        if Slow.gate is not None and threading.current_thread().name == "held":
            Slow.gate.wait(10)
        return np.zeros((len(x), self.classes), np.float32)

    def close(self):
        with Slow.lock:
            Slow.resident.discard(self)


@pytest.fixture
def slow(monkeypatch):
    from pcl_edge.runtime import backends

    backends._register()
    monkeypatch.setitem(backends.BACKENDS._items, "slow", Slow)
    Slow.resident, Slow.most, Slow.gate = set(), 0, None
    return Slow


def test_concurrent_loads_never_pass_the_budget_each_alone(bundles, slow):
    r = Router(bundles / "v1", backend="slow", memory_budget_bytes=250)  # room for 2 sessions of 100 bytes
    slow.most = len(slow.resident)
    threads = [threading.Thread(target=r.infer, args=(tid, X)) for tid in (1, 2, 3, 4, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.most <= 2 and len(slow.resident) <= 2 and sum(r.loaded().values()) <= 250


def test_evicted_and_unloaded_sessions_are_closed(bundles, slow):
    r = Router(bundles / "v1", backend="slow", memory_budget_bytes=250)
    for _ in range(3):
        for tid in range(1, 6):
            r.infer(tid, X)
    assert len(slow.resident) == 2 == len(r.loaded())
    r.unload(next(iter(r.loaded())))
    assert len(slow.resident) == 1


def test_an_old_version_keeps_nothing_resident_once_its_requests_finish(bundles, slow):
    r = Router(bundles / "v0", backend="slow")
    for tid in (1, 2, 3):
        r.infer(tid, X)
    held = threading.Thread(target=r.infer, args=(1, X), name="held")
    slow.gate = threading.Event()
    held.start()
    time.sleep(0.2)  # task 1 of v0 is mid-request
    r.activate(bundles / "v1")
    assert r.resident_bytes() == 100  # only the session the request still holds: counted, not yet closed
    slow.gate.set()
    held.join()
    assert r.resident_bytes() == 0 and slow.resident == set()  # closed by its last user; rollback would reopen


def test_tensorrt_sessions_free_their_buffers_and_stream_when_evicted(bundles, tmp_path, monkeypatch):
    from pcl_edge.bundle import EngineSpec, tensorrt_builder
    from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt

    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    trt, cuda = make_fake_tensorrt(), FakeCuda()
    r = Router(bundles / "v1", backend="tensorrt", engine_spec=EngineSpec(max_batch=4), cache_dir=tmp_path / "e",
               backend_options={"trt": trt, "cuda": cuda})
    r.load(1)
    one = r.loaded()[1]
    r.set_memory_budget(int(2.5 * one))
    for _ in range(4):
        for tid in range(1, 6):
            r.infer(tid, X)
    assert len(r.loaded()) == 2 and len(cuda.live) == 2 * 3  # 2 sessions: input, output, stream each
    for tid in list(r.loaded()):
        r.unload(tid)
    assert cuda.live == set()


def test_a_rollback_landing_during_an_activation_waits_for_it(bundles, slow, tmp_path):
    """Activation, rollback and upload are serialised (issue 22 item 4): a rollback that arrives while a newer bundle
    is being verified and self-tested runs after it, and whatever serves at the end has its files and answers."""
    import json
    import shutil

    from pcl_edge.bundle import pack_bundle
    from pcl_edge.bundle.manifest import seal

    store = tmp_path / "store"
    shutil.copytree(bundles / "v0", tmp_path / "v0")
    pack_bundle(bundles / "v1", tmp_path / "v1.tar")
    r = Router(tmp_path / "v0", backend="slow", store=store)
    (store / "uploads").mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "v1.tar", store / "uploads" / "bundle-v1.tar")
    r.activate(store / "uploads" / "bundle-v1.tar")  # history: v0, v1 (an upload the store owns)
    shutil.copytree(bundles / "v1", tmp_path / "v2")
    m = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    m = seal({**{k: v for k, v in m.items() if k != "manifest_sha256"}, "bundle_version": 3})
    (tmp_path / "v2" / "manifest.json").write_text(json.dumps(m))
    pack_bundle(tmp_path / "v2", store / "uploads" / "bundle-v2.tar")
    results = {}
    upload = threading.Thread(target=lambda: results.setdefault("up", r.activate(store / "uploads" / "bundle-v2.tar")))
    upload.start()
    time.sleep(0.1)  # the upload's self-test is under way (5 sessions of 50 ms)
    rollback = threading.Thread(target=lambda: results.setdefault("back", r.rollback()))
    rollback.start()
    upload.join()
    rollback.join()
    assert results["up"]["bundle_version"] == 3 and results["back"]["bundle_version"] == 2  # in that order
    assert r.version.bundle_version == 2 and [e.bundle_version for e in r.store.history] == [1, 2]
    assert r.version.root.is_dir() and all(r.infer(t["id"], X).logits.shape == (1, 2) for t in r.tasks())
    assert not (store / "uploads" / "bundle-v2.tar").exists()  # the rolled-back upload went, nothing else


def test_two_activations_of_one_tar_at_once_both_answer_and_it_serves(bundles, slow, tmp_path):
    from pcl_edge.bundle import pack_bundle

    r = Router(bundles / "v0", backend="slow", store=tmp_path / "store")
    pack_bundle(bundles / "v1", tmp_path / "v1.tar")
    answers, errors = [], []

    def go():
        try:
            answers.append(r.activate(tmp_path / "v1.tar")["bundle_version"])
        except Exception as exc:  # noqa: BLE001 - the figure is zero
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and answers == [2, 2, 2] and r.version.root.is_dir()
    assert all(r.infer(t["id"], X).logits.shape == (1, 2) for t in r.tasks())
    assert len(list((tmp_path / "store" / "unpacked").iterdir())) == 1
