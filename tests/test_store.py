"""The device keeps what it was given (issue 20): the active bundle and the rollback history live in the bundle store
on disk; a restart serves what was last activated; older bundles are refused except through rollback; a kill -9 at
any point leaves the old or the new bundle in full; operators' bundles are never pruned."""

import json
import logging
import shutil

import numpy as np
import pytest

from pcl_edge.bundle import pack_bundle
from pcl_edge.bundle.manifest import seal
from pcl_edge.runtime import Router
from pcl_edge.runtime.errors import VersionConflict
from pcl_edge.runtime.store import BundleStore, StoreError

pytest.importorskip("onnxruntime", reason="the runtime tests run bundles with onnxruntime (CPU)")
X = np.zeros((1, 1, 8, 8), np.float32)


def digest(bundle):
    return json.loads((bundle / "manifest.json").read_text())["manifest_sha256"][:12]


def resealed(src, dst, version):
    """A copy of a bundle under another bundle_version (unsigned): a later export, as far as the device can tell."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m = seal({**{k: v for k, v in m.items() if k != "manifest_sha256"}, "bundle_version": version})
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.fixture
def device(bundles, tmp_path):
    """v0 (version 1, 3 tasks) and v1 (version 2, 5 tasks) as an operator has them, and an empty store."""
    for name in ("v0", "v1"):
        shutil.copytree(bundles / name, tmp_path / name)
    return tmp_path, tmp_path / "store"


def test_a_restart_serves_what_was_last_activated_and_the_rollback_persists(device):
    root, store = device
    r = Router(root / "v0", backend="ort", store=store)
    r.activate(root / "v1")
    again = Router(root / "v0", backend="ort", store=store)  # the same command line after a crash
    assert again.version.digest == digest(root / "v1") and again.infer(5, X).logits.shape == (1, 2)
    assert [e.bundle_version for e in again.store.history] == [1, 2]
    again.rollback()
    after = Router(root / "v0", backend="ort", store=store)
    assert after.version.digest == digest(root / "v0") and [e.bundle_version for e in after.store.history] == [1]
    assert (root / "v0").is_dir() and (root / "v1").is_dir()  # an operator's bundles stay where they were


def test_a_bundle_that_is_not_newer_is_refused_and_only_rollback_goes_back(device):
    root, store = device
    r = Router(root / "v1", backend="ort", store=store)
    pack_bundle(root / "v0", root / "v0.tar")
    with pytest.raises(VersionConflict, match=r"bundle version 1 \(.*\) is not newer than the active bundle version "
                                              r"2 \(.*\): refused \(anti-rollback\)"):
        r.activate(root / "v0.tar")
    pack_bundle(resealed(root / "v0", root / "twin", 2), root / "twin.tar")  # another bundle of the active version
    with pytest.raises(VersionConflict, match="bundle version 2"):
        r.activate(root / "twin.tar")
    assert r.version.digest == digest(root / "v1") and r.activate(root / "v1")["bundle_version"] == 2  # same: no-op
    assert [e.bundle_version for e in r.store.history] == [2]
    assert list((store / "unpacked").iterdir()) == []  # the refused tars were unpacked to be verified: gone again


def test_an_older_command_line_bundle_never_replaces_the_stored_one_and_a_newer_one_does(device, caplog):
    root, store = device
    Router(root / "v1", backend="ort", store=store)
    with caplog.at_level(logging.WARNING):
        r = Router(root / "v0", backend="ort", store=store)
    assert r.version.digest == digest(root / "v1")
    assert any("not newer than the store's active bundle (version 2" in m for m in caplog.messages)
    v3 = resealed(root / "v1", root / "v3", 3)  # the operator put a newer bundle on the command line
    assert Router(v3, backend="ort", store=store).version.bundle_version == 3
    assert [e.bundle_version for e in BundleStore(store).history] == [2, 3]


def test_a_stored_bundle_that_no_longer_verifies_is_an_error_and_the_previous_one_serves(device, caplog):
    root, store = device
    r = Router(root / "v0", backend="ort", store=store)
    pack_bundle(root / "v1", root / "v1.tar")
    r.activate(root / "v1.tar")
    shutil.rmtree(next((store / "unpacked").iterdir()))
    (root / "v1.tar").write_bytes(b"garbage")  # the disk lost it
    with caplog.at_level(logging.ERROR):
        again = Router(root / "v0", backend="ort", store=store)
    assert again.version.digest == digest(root / "v0")
    said = " ".join(caplog.messages)
    assert "cannot serve" in said and "serving the older stored bundle" in said


@pytest.mark.parametrize("crash", ["mid-upload", "uploaded", "mid-unpack", "unpacked", "mid-record", "recorded"])
def test_a_kill_9_at_any_point_leaves_the_old_or_the_new_bundle_in_full(device, crash):
    """What a kill -9 leaves at each step of an upload + activation, rebuilt on disk; the next start serves one
    whole bundle (the old one until the record names the new one) and removes every leftover."""
    root, store = device
    r = Router(root / "v0", backend="ort", store=store)
    pack_bundle(root / "v1", root / "v1.tar")
    upload = store / "uploads" / "bundle-20260101-000000-abcd1234.tar"
    new = False
    if crash == "mid-upload":
        (store / ".upload-20260101-000000-abcd1234.part").write_bytes((root / "v1.tar").read_bytes()[:5000])
    elif crash == "uploaded":
        shutil.copy(root / "v1.tar", upload)
    elif crash in ("mid-unpack", "unpacked"):
        shutil.copy(root / "v1.tar", upload)
        name = json.loads((root / "v1" / "manifest.json").read_text())["manifest_sha256"][:16]
        target = store / "unpacked" / (name if crash == "unpacked" else f".{name}-0f0f0f0f")
        shutil.copytree(root / "v1", target)
        if crash == "mid-unpack":
            (target / "models" / "task_05.onnx").unlink()
    elif crash == "mid-record":
        shutil.copy(root / "v1.tar", upload)
        (store / ".store.json.x1y2.tmp").write_text('{"format": "pcl-edge-store", "hist')
    else:  # the record names the new bundle; the dropped ones were not deleted yet
        shutil.copy(root / "v1.tar", upload)
        r.activate(upload)
        (store / ".upload-20260101-000001-ffff0000.part").write_bytes(b"x")
        new = True
    again = Router(root / "v0", backend="ort", store=store)
    want = root / ("v1" if new else "v0")
    assert again.version.digest == digest(want) and len(again.tasks()) == (5 if new else 3)
    for t in again.tasks():
        assert again.infer(t["id"], X).logits.shape == (1, 2)
    left = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    kept = {"store.json", ".lock"} | ({f"uploads/{upload.name}"} if new else set())
    assert {p for p in left if not p.startswith("unpacked/")} == kept
    assert all(p.split("/")[1] == again.version.root.name for p in left if p.startswith("unpacked/"))


def test_pruning_deletes_uploads_and_never_an_operators_bundle(device):
    root, store = device
    r = Router(root / "v0", backend="ort", store=store, keep=1)
    pack_bundle(resealed(root / "v1", root / "v3", 3), root / "v3.tar")
    upload = store / "uploads" / "bundle-x.tar"
    shutil.copy(root / "v3.tar", upload)
    r.activate(root / "v1")  # an operator's directory
    r.activate(upload)  # received over the air: the store's own
    assert (root / "v0").is_dir() and (root / "v1").is_dir()  # dropped from the history, never deleted
    v4 = resealed(root / "v1", root / "v4", 4)
    r.activate(v4)
    assert not upload.exists() and list((store / "unpacked").iterdir()) == []  # the store's upload: deleted
    assert [e.bundle_version for e in r.store.history] == [4]


@pytest.mark.parametrize("make,match", [
    (lambda s: s.write_text("x"), "is a file, not a directory"),
    (lambda s: (s.mkdir(), (s / "notes.txt").write_text("mine")), "is not a pcl-edge bundle store"),
    (lambda s: (s.mkdir(), (s / "store.json").write_text("{not json")), "not a pcl-edge bundle store record"),
    (lambda s: (s.mkdir(), (s / "store.json").write_text('{"format": "other"}')), "record"),
])
def test_a_bundle_store_that_is_not_one_is_refused_and_left_alone(device, make, match, capsys):
    pytest.importorskip("uvicorn", reason="serve needs the 'serve' extra")
    from pcl_edge.cli import main

    root, store = device
    make(store)
    before = sorted((p.name, p.read_bytes()) for p in ([store] if store.is_file() else store.iterdir()))
    with pytest.raises(StoreError, match=match):
        Router(root / "v0", backend="ort", store=store)
    assert main(["-q", "serve", str(root / "v0"), "--backend", "ort", "--bundle-store", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match.split()[0] in err[0]
    assert sorted((p.name, p.read_bytes()) for p in ([store] if store.is_file() else store.iterdir())) == before


def test_tasks_that_did_not_change_reuse_their_engines(device, monkeypatch):
    """With the fake TensorRT: v1's tasks 1-3 are v0's bytes, so activating v1 builds engines for tasks 4-5 only."""
    from pcl_edge.bundle import tensorrt_builder
    from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt

    root, store = device
    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    trt = make_fake_tensorrt()
    builds = lambda: [c[0] for c in trt.calls].count("build_serialized_network")  # noqa: E731
    pack_bundle(root / "v1", root / "v1.tar")
    r = Router(root / "v0", backend="tensorrt", store=store, backend_options={"trt": trt, "cuda": FakeCuda()})
    assert builds() == 3
    shutil.copy(root / "v1.tar", store / "uploads" / "bundle-ota.tar")
    r.activate(store / "uploads" / "bundle-ota.tar")
    assert builds() == 5  # 0 rebuilds for the 3 unchanged tasks
    Router(root / "v0", backend="tensorrt", store=store, backend_options={"trt": trt, "cuda": FakeCuda()})
    assert builds() == 5  # and none after a restart


def test_a_record_that_cannot_be_written_changes_nothing(device, monkeypatch):
    """The record is written before the swap: a full disk at that moment refuses the activation, v0 keeps serving,
    memory and disk agree."""
    from pcl_edge.runtime import store as store_module

    root, store = device
    r = Router(root / "v0", backend="ort", store=store)
    record = (store / "store.json").read_bytes()

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_open", full_disk)
    with pytest.raises(OSError, match="No space left"):
        r.activate(root / "v1")
    assert r.version.digest == digest(root / "v0") and [e.bundle_version for e in r.store.history] == [1]
    assert (store / "store.json").read_bytes() == record


def test_an_engine_planted_in_the_cache_is_never_loaded(device, monkeypatch):
    """The chain of trust goes past the ONNX file (issue 22 item 6): an engine file in the shared cache whose header
    is right but whose plan this service never built (a forged plan) is rebuilt, not deserialised; a model file
    changed after verification is refused when a session (re)opens."""
    from pcl_edge.bundle import tensorrt_builder
    from pcl_edge.bundle.engine import read_engine, write_engine
    from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt

    root, store = device
    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    trt = make_fake_tensorrt()
    builds = lambda: [c[0] for c in trt.calls].count("build_serialized_network")  # noqa: E731
    opts = {"trt": trt, "cuda": FakeCuda()}
    Router(root / "v0", backend="tensorrt", store=store, backend_options=opts)
    assert builds() == 3
    engine = next(p for p in (root / "v0.engines").glob("*.engine"))
    header, plan = read_engine(engine)
    write_engine(engine, header, b"forged" + bytes(plan))  # same header, another plan
    Router(root / "v0", backend="tensorrt", store=store, backend_options=opts)
    assert builds() == 4 and read_engine(engine)[1] == plan  # rebuilt: the forged plan was never deserialised
    ort = Router(root / "v0", backend="ort")
    ort.load(2)
    (root / "v0" / "models" / "task_02.onnx").write_bytes(b"changed after verification")
    ort.unload(2)  # a lazy reload (after an eviction or an unload) reads the file again: re-hashed
    from pcl_edge.runtime import ServiceUnavailable

    with pytest.raises(ServiceUnavailable, match="no longer matches the sha256"):
        ort.load(2)


def test_engines_of_models_no_kept_bundle_has_are_removed(device, monkeypatch):
    """Pruned bundles and refused ones leave no engines behind (issue 22 item 9): with keep=1, v1 (tasks 1-5) dropped
    for a v3 that has tasks 1-3 only removes the engines of tasks 4-5; a refused bundle's new engines go too."""
    from pcl_edge.bundle import tensorrt_builder
    from pcl_edge.runtime import backends
    from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt

    root, store = device
    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    opts = {"trt": make_fake_tensorrt(), "cuda": FakeCuda()}
    r = Router(root / "v0", backend="tensorrt", store=store, keep=1, backend_options=opts)
    engines = lambda: len(list((root / "v0.engines").glob("*.engine")))  # noqa: E731
    r.activate(root / "v1")
    assert engines() == 5
    r.activate(resealed(root / "v0", root / "v3", 3))
    assert engines() == 3
    real = backends.self_test

    def task_5_fails(session, task):
        if task["id"] == 5:
            raise RuntimeError("self-test failed")
        real(session, task)

    monkeypatch.setattr(backends, "self_test", task_5_fails)
    with pytest.raises(Exception, match="task 5"):
        r.activate(resealed(root / "v1", root / "v4", 4))
    assert engines() == 3 and r.version.bundle_version == 3


def test_what_a_kill_during_the_first_start_leaves_does_not_stop_the_next(device):
    """A kill -9 while the store's first record (or the engine ledger) was being written leaves a temporary file and
    no store.json: the next start adopts the directory, removes the leftover and serves."""
    root, store = device
    store.mkdir()
    (store / ".store.json.ab12cd.tmp").write_text('{"format": "pcl-e')
    (store / ".engines.json.ef34gh.tmp").write_text("{")
    r = Router(root / "v0", backend="ort", store=store)
    assert r.version.digest == digest(root / "v0")
    assert not list(store.glob(".*.tmp"))


def test_one_service_per_store(device):
    """A second service on the same store (an overlapping restart) is refused with one clear error; the first one's
    files are untouched."""
    import subprocess
    import sys

    root, store = device
    Router(root / "v0", backend="ort", store=store)  # this process holds the store
    before = sorted(p.name for p in store.rglob("*"))
    res = subprocess.run([sys.executable, "-c", "from pcl_edge.runtime import Router\n"
                          f"Router({str(root / 'v1')!r}, backend='ort', store={str(store)!r})"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "in use by another process" in res.stderr
    assert sorted(p.name for p in store.rglob("*")) == before


def test_a_tar_claiming_a_known_digest_is_verified_itself(device):
    """An upload whose manifest is the serving bundle's but whose signature (or a model) is not: refused, never
    waved through on the strength of the verified copy already unpacked under that digest."""
    pytest.importorskip("cryptography")
    from pcl_edge.bundle.signing import keygen, load_trusted_keys, sign_dir

    root, store = device
    key, pub = keygen(root / "k")
    rogue, _ = keygen(root / "rogue")
    sign_dir(root / "v1", key)
    pack_bundle(root / "v1", root / "v1.tar")
    r = Router(root / "v1.tar", backend="ort", store=store, trusted_keys=load_trusted_keys(pub))
    shutil.copytree(root / "v1", root / "forged")
    (root / "forged" / "signatures.json").unlink()
    sign_dir(root / "forged", rogue)
    pack_bundle(root / "forged", root / "forged.tar")
    from pcl_edge.bundle.manifest import BundleError

    with pytest.raises(BundleError, match="none of them trusted"):
        r.activate(root / "forged.tar")
    assert r.version.digest == digest(root / "v1") and [e.path for e in r.store.history] == [str(root / "v1.tar")]
