import json
import shutil
import threading

import numpy as np
import pytest

from pcl_edge.export import export_bundle
from pcl_edge.runtime import BadRequest, Router, ServiceUnavailable, UnknownTask

pytest.importorskip("onnxruntime", reason="the runtime tests run bundles with onnxruntime (CPU)")


def x_for(n=1):
    return np.random.default_rng(0).standard_normal((n, 1, 8, 8)).astype(np.float32)


def test_routes_by_id_and_name_and_matches_the_expert(bundles):
    import onnxruntime as ort

    r = Router(bundles / "v1", backend="ort")
    a = r.infer(3, x_for(4), top_k=2)
    b = r.infer("task_03", x_for(4))
    raw = ort.InferenceSession(str(bundles / "v1" / "models" / "task_03.onnx")).run(None, {"input": x_for(4)})[0]
    np.testing.assert_array_equal(a.logits, raw)
    np.testing.assert_array_equal(b.logits, raw)
    assert a.top_k[0][0][0] in ("4", "5") and len(a.top_k[0]) == 2 and a.bundle_version == 2
    assert abs(sum(p for _, p in a.top_k[0]) - 1) < 1e-5  # two classes: the probabilities sum to one


@pytest.mark.parametrize("call,err,match", [
    (lambda r: r.infer(9, x_for()), UnknownTask, "unknown task 9; this bundle serves task_01"),
    (lambda r: r.infer("task_1", x_for()), UnknownTask, "unknown task"),
    (lambda r: r.infer(1, x_for().astype(np.float64)), BadRequest, "takes FP32"),
    (lambda r: r.infer(1, np.zeros((1, 3, 8, 8), np.float32)), BadRequest, r"shape \[N, 1, 8, 8\]"),
    (lambda r: r.infer(1, np.zeros((0, 1, 8, 8), np.float32)), BadRequest, "batch size 0"),
    (lambda r: r.infer(1, np.zeros((1025, 1, 8, 8), np.float32)), BadRequest, "batch size 1025"),
    (lambda r: r.infer(1, np.full((1, 1, 8, 8), np.nan, np.float32)), BadRequest, "NaN"),
    (lambda r: r.infer(1, np.zeros((8, 8, 3), np.uint8), preprocess=True), BadRequest, r"\[N, 8, 8, 1\]"),
    (lambda r: r.infer(1, np.zeros((8, 8, 1), np.float32), preprocess=True), BadRequest, "uint8"),
])
def test_bad_input_gets_a_precise_error(bundles, call, err, match):
    r = Router(bundles / "v1", backend="ort")
    with pytest.raises(err, match=match):
        call(r)
    assert r.infer(1, x_for()).logits.shape == (1, 2)  # and it keeps serving


def test_preprocessing_uses_the_manifest(bundles):
    r = Router(bundles / "v1", backend="ort")
    img = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    task = r.resolve(2)
    mean, std = np.array(task["input"]["mean"]), np.array(task["input"]["std"])
    manual = ((img / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(r.infer(2, img, preprocess=True).logits, r.infer(2, manual).logits, atol=1e-5)


class FakeSession:
    def __init__(self, root, task, nbytes=100, **_):
        self.name, self.nbytes, self.classes, self.closed = "fake", nbytes, task["output"]["shape"][0], False

    def run(self, x):
        return np.zeros((len(x), self.classes), np.float32)

    def close(self):
        self.closed = True


def test_lru_eviction_under_a_memory_budget(bundles, monkeypatch):
    from pcl_edge.runtime import backends

    backends._register()
    monkeypatch.setitem(backends.BACKENDS._items, "fake", FakeSession)
    r = Router(bundles / "v1", backend="fake", memory_budget_bytes=250)  # fits 2 sessions of 100 bytes
    for tid in (1, 2, 3):
        r.infer(tid, x_for())
    assert list(r.loaded()) == [2, 3]  # 1 was least recently used
    r.infer(2, x_for())
    r.infer(4, x_for())
    assert list(r.loaded()) == [2, 4]
    assert r.stats[1].evictions == 1 and r.stats[3].evictions == 1 and r.stats[2].loads == 1
    for _ in range(20):  # round robin over all 5: never more than the budget, never an error
        for tid in range(1, 6):
            r.infer(tid, x_for())
            assert sum(r.loaded().values()) <= 250
    tight = Router(bundles / "v1", backend="fake", memory_budget_bytes=50)
    with pytest.raises(ServiceUnavailable, match="more than the whole memory budget"):
        tight.infer(1, x_for())


def test_measured_sizes_drive_the_budget(bundles):
    r = Router(bundles / "v1", backend="ort")
    r.infer(1, x_for())
    size = r.loaded()[1]
    model_bytes = (bundles / "v1" / "models" / "task_01.onnx").stat().st_size
    assert size >= model_bytes


def test_update_without_downtime_under_load(bundles):
    r = Router(bundles / "v0", backend="ort")
    assert [t["id"] for t in r.tasks()] == [1, 2, 3]
    errors, done = [], threading.Event()

    def client():
        while not done.is_set():
            try:
                r.infer(1, x_for())
            except Exception as exc:  # noqa: BLE001 - counted: the figure is zero
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    manifest = r.activate(bundles / "v1")
    done.set()
    for t in threads:
        t.join()
    assert errors == [] and manifest["bundle_version"] == 2 and r.infer(5, x_for()).logits.shape == (1, 2)


def test_a_failing_bundle_is_refused_and_the_old_one_keeps_serving(bundles, tmp_path):
    r = Router(bundles / "v1", backend="ort")
    bad = tmp_path / "bad"
    shutil.copytree(bundles / "v1", bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["tasks"][0]["class_names"] = ["x", "y"]
    (bad / "manifest.json").write_text(json.dumps(m))
    from pcl_edge.export import BundleError

    with pytest.raises(BundleError, match="edited"):
        r.activate(bad)
    broken = tmp_path / "broken"  # passes verification but cannot run: a model that is not ONNX, re-sealed
    shutil.copytree(bundles / "v1", broken)
    (broken / "models" / "task_02.onnx").write_bytes(b"not onnx")
    from pcl_edge.bundle.manifest import seal, sha256_bytes

    m = json.loads((broken / "manifest.json").read_text())
    m["tasks"][1]["sha256"], m["tasks"][1]["size"] = sha256_bytes(b"not onnx"), len(b"not onnx")
    m["bundle_version"] += 1  # newer than the active one: what decides is the self-test
    (broken / "manifest.json").write_text(json.dumps(seal({k: v for k, v in m.items() if k != "manifest_sha256"})))
    with pytest.raises(ServiceUnavailable, match="no backend can run task 2"):
        r.activate(broken)
    assert r.version.root == bundles / "v1" and r.infer(2, x_for()).logits.shape == (1, 2)


def test_tar_bundles_are_unpacked_safely(bundles, tmp_path):
    export_bundle(bundles / "run", tmp_path / "b.tar")
    r = Router(tmp_path / "b.tar", backend="ort", workdir=tmp_path / "work")
    assert r.infer(1, x_for()).logits.shape == (1, 2) and r.version.root.parent == tmp_path / "work"
    root = r.version.root
    for _ in range(2):  # the same tar again, twice in the same second: the same managed copy, reused
        r.activate(tmp_path / "b.tar")
    assert r.version.root == root and len(list((tmp_path / "work").iterdir())) == 1


def test_the_device_side_never_imports_torch(bundles):
    from tests._isolation import run_without

    res = run_without(("torch",), "import sys\nimport numpy as np\nfrom pcl_edge.runtime import Router\n"
                      f"r = Router({str(bundles / 'v1')!r}, backend='auto')\n"
                      "print(r.infer(1, np.zeros((1, 1, 8, 8), np.float32)).logits.shape, 'torch' in sys.modules,\n"
                      "      any(m.split('.')[1:2] in (['export'], ['evolve'], ['data']) for m in sys.modules\n"
                      "          if m.startswith('pcl_edge.')))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(1, 2) False False"  # no torch, and nothing of the training side


def test_pcl_edge_serve_imports_no_torch_even_where_torch_is_installed(bundles, tmp_path):
    """The device contract with torch importable (a workstation serving, or a device image that happens to carry it):
    building the CLI (whose help lists the presets) and running serve up to the point it listens imports no torch
    and nothing of the training side."""
    import subprocess
    import sys

    code = ("import sys\nimport pcl_edge.runtime.http as http\n"
            "http.serve = lambda router, *a, **k: print(len(router.tasks()))\n"
            "from pcl_edge.cli import main\n"
            f"rc = main(['-q', 'serve', {str(bundles / 'v1')!r}, '--backend', 'ort', '--bundle-store', "
            f"{str(tmp_path / 'store')!r}])\n"
            "training = {m.split('.')[1] for m in sys.modules if m.startswith('pcl_edge.')} & "
            "{'export', 'data', 'space', 'report'}\n"
            "print(rc, 'torch' in sys.modules, sorted(training))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["5", "0 False []"], res.stdout
    import importlib.util

    assert importlib.util.find_spec("torch") is not None  # the point: torch was there to be imported


def test_a_missing_pillow_on_the_device_names_the_device_extra(tmp_path):
    from tests._isolation import run_without

    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    res = run_without(("PIL",), "from pathlib import Path\nfrom pcl_edge.bundle.calibration import load_images\n"
                      "from pcl_edge.cli import missing_dependency\n"
                      "try:\n"
                      f"    load_images([Path({str(tmp_path / 'a.jpg')!r})], {{'input': {{'shape': [1, 8, 8]}}}})\n"
                      "except ImportError as exc:\n    print(missing_dependency(exc))\n")
    assert res.returncode == 0, res.stderr
    assert "pip install 'pcl-edge[calib]'" in res.stdout and "[train]" not in res.stdout


def test_tensorrt_session_logic_against_a_fake_tensorrt(bundles, tmp_path, monkeypatch):  # noqa: F811
    from pcl_edge.bundle import EngineSpec, tensorrt_builder
    from pcl_edge.runtime.backends import open_session
    from tests.fake_tensorrt import FakeCuda, make_fake_tensorrt

    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    trt, cuda = make_fake_tensorrt(), FakeCuda()
    import json as _json

    task = _json.loads((bundles / "v1" / "manifest.json").read_text())["tasks"][2]
    s = open_session("tensorrt", bundles / "v1", task, trt=trt, cuda=cuda, spec=EngineSpec(max_batch=4),
                     cache_dir=tmp_path)
    assert s.name == "tensorrt:fp16" and s.nbytes > 4096  # device memory + plan + I/O buffers
    out = s.run(np.zeros((3, 1, 8, 8), np.float32))
    assert out.shape == (3, 2) and np.all(out == 0.5)
    assert ("set_input_shape", "input", (3, 1, 8, 8)) in trt.calls
    assert [c[0] for c in cuda.calls if c[0] in ("upload", "download")][-2:] == ["upload", "download"]
    assert list(tmp_path.glob("*.engine"))  # built on this device and cached
    with pytest.raises(ValueError, match="max batch 4"):
        s.run(np.zeros((5, 1, 8, 8), np.float32))
    trt.calls.clear()
    open_session("tensorrt", bundles / "v1", task, trt=trt, cuda=FakeCuda(), spec=EngineSpec(max_batch=4),
                 cache_dir=tmp_path)
    assert "build_serialized_network" not in [c[0] for c in trt.calls]  # the cached engine is reused
    s.close()
    assert not cuda.live


def _fake_trt_router(bundle, monkeypatch, trt, **kw):
    from pcl_edge.bundle import tensorrt_builder
    from tests.fake_tensorrt import FakeCuda

    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    return Router(bundle, backend="tensorrt", backend_options={"trt": trt, "cuda": FakeCuda()}, **kw)


def _builds(trt) -> int:
    return [c[0] for c in trt.calls].count("build_serialized_network")


def test_build_engines_then_serve_then_restart_builds_each_engine_once(bundles, tmp_path, monkeypatch):
    """One EngineSpec from the CLI to the session: serve finds what build-engines built, a restart finds it too, and
    another max batch gets its own engine instead of overwriting the first."""
    from pcl_edge.bundle import EngineSpec, engine_dir, tensorrt_builder
    from tests.fake_tensorrt import make_fake_tensorrt

    monkeypatch.setattr(tensorrt_builder, "gpu_name", lambda: "Orin (nvgpu)")
    shutil.copytree(bundles / "v1", tmp_path / "b")
    trt = make_fake_tensorrt()
    built = tensorrt_builder.build_engines(tmp_path / "b", EngineSpec(), trt=trt)
    assert _builds(trt) == 5 and all(p.parent == engine_dir(tmp_path / "b") for p in built)
    for _ in range(2):  # serve, then a restart
        r = _fake_trt_router(tmp_path / "b", monkeypatch, trt)
        r.infer(3, x_for(2))
    assert _builds(trt) == 5
    stamps = {p: p.stat().st_mtime_ns for p in built}
    _fake_trt_router(tmp_path / "b", monkeypatch, trt, engine_spec=EngineSpec(max_batch=8))
    assert _builds(trt) == 10 and {p: p.stat().st_mtime_ns for p in built} == stamps  # nothing overwritten
    assert len(list(engine_dir(tmp_path / "b").glob("*.engine"))) == 10


def test_batches_above_the_engine_max_are_split_and_answered_whole(bundles, tmp_path, monkeypatch):
    from pcl_edge.bundle import EngineSpec
    from tests.fake_tensorrt import make_fake_tensorrt

    trt = make_fake_tensorrt()
    r = _fake_trt_router(bundles / "v1", monkeypatch, trt, engine_spec=EngineSpec(max_batch=8),
                         cache_dir=tmp_path / "e")
    r.load(2)  # opened and self-tested first
    trt.calls.clear()
    out = r.infer(2, x_for(20)).logits
    assert out.shape == (20, 2)
    assert [c[2][0] for c in trt.calls if c[0] == "set_input_shape"] == [8, 8, 4]
    with pytest.raises(BadRequest, match="batch size 2000"):
        r.infer(2, x_for(2000))


def test_tar_bundle_engines_live_next_to_the_tar_and_survive_restarts(bundles, tmp_path, monkeypatch):
    from pcl_edge.bundle import engine_dir
    from tests.fake_tensorrt import make_fake_tensorrt

    export_bundle(bundles / "run", tmp_path / "b.tar")
    trt = make_fake_tensorrt()
    for _ in range(2):
        _fake_trt_router(tmp_path / "b.tar", monkeypatch, trt, workdir=tmp_path / "work")
    assert _builds(trt) == 5 and len(list(engine_dir(tmp_path / "b.tar").glob("*.engine"))) == 5


def test_bundle_package_imports_nothing_upward():
    """pcl_edge.bundle is torch-free and imports neither the training side nor the runtime; export sits above it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pcl_edge"
    for path in (root / "bundle").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module in ("_io", "_cuda", "preprocess"), f"{path.name} imports ..{node.module}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [node.module or ""] if isinstance(node, ast.ImportFrom) \
                    else [a.name for a in node.names]
                assert not any(n.split(".")[0] == "torch" for n in names), f"{path.name} imports torch"
    for side in ("runtime",):
        for path in (root / side).rglob("*.py"):
            assert "export" not in {n.module for n in ast.walk(ast.parse(path.read_text()))
                                    if isinstance(n, ast.ImportFrom) and n.module}, f"{path} imports export"


def test_a_triton_repository_from_a_tar_bundle(bundles, tmp_path):
    from pcl_edge.export import bundle_to_triton

    export_bundle(bundles / "run", tmp_path / "b.tar")
    names = bundle_to_triton(tmp_path / "b.tar", tmp_path / "triton")
    assert names == [f"task_{i:02d}" for i in range(1, 6)]
    assert (tmp_path / "triton" / "task_03" / "1" / "model.onnx").read_bytes() == \
        (bundles / "v1" / "models" / "task_03.onnx").read_bytes()


def test_ort_trt_opens_the_tensorrt_provider_with_caches_precision_and_dla(bundles, tmp_path, monkeypatch):
    """onnxruntime's TensorRT execution provider as a backend (issue 23 item 5): engine and timing caches on disk
    under the router's engine cache, FP16 from the spec, the batch profile, a DLA core when asked. This machine's
    onnxruntime has no TensorRT provider: the test stands in a fake one and checks what the session asks for."""
    import onnxruntime as ort

    from pcl_edge.bundle import EngineSpec
    from pcl_edge.runtime.backends import open_session

    seen = {}
    real = ort.InferenceSession

    class Recording(real):
        def __init__(self, model, options=None, providers=None, **kw):
            seen["providers"] = providers
            super().__init__(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                                  "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    task = json.loads((bundles / "v1" / "manifest.json").read_text())["tasks"][0]
    spec = EngineSpec("fp16", max_batch=8, dla_core=1)
    s = open_session("ort-trt", bundles / "v1", task, spec=spec, cache_dir=tmp_path / "engines")
    (name, opts), cuda = seen["providers"]
    assert name == "TensorrtExecutionProvider" and cuda == "CUDAExecutionProvider"  # never the CPU
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "engines" / "ort-trt") and opts["trt_fp16_enable"] == "True"
    assert opts["trt_profile_max_shapes"] == "input:8x1x8x8" and opts["trt_dla_core"] == "1"
    assert s.run(x_for()).shape == (1, 2)
    with pytest.raises(ValueError, match="DLA runs fp16 or int8"):
        EngineSpec("fp32", dla_core=0)
    assert EngineSpec().key("ab" * 32) == EngineSpec(dla_core=None).key("ab" * 32)  # old caches keep their names
    assert "-dla1-" in spec.key("ab" * 32)
