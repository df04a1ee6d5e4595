"""TensorRT engine building against a fake ``tensorrt`` module (this machine has no GPU); the real-hardware test
is marked ``gpu`` and skips here with the reason."""

import dataclasses

import numpy as np
import pytest

from pcl_edge.bundle import tensorrt_builder as tb
from pcl_edge.bundle.engine import EngineHeader, EngineMismatch, EngineSpec, read_engine, write_engine
from pcl_edge.evolve import evolve, preset_config
from pcl_edge.export import export_bundle
from tests.fake_tensorrt import make_fake_tensorrt


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    evolve(preset_config("tiny", "digits", tasks="2x2"), out=root / "run", progress=False)
    export_bundle(root / "run", root / "bundle")
    return root / "bundle"


@pytest.fixture(autouse=True)
def fixed_gpu(monkeypatch):
    monkeypatch.setattr(tb, "gpu_name", lambda: "Orin (nvgpu)")


def names(trt):
    return [c[0] for c in trt.calls]


def test_builds_in_order_with_profile_workspace_and_header(bundle, tmp_path):
    trt = make_fake_tensorrt()
    paths = tb.build_engines(bundle, EngineSpec("fp16", max_batch=16, workspace_mb=64), tmp_path, trt=trt)
    assert len(paths) == 2
    seq = names(trt)
    first = seq[: seq.index("build_serialized_network") + 1]
    assert first == ["Logger", "Builder", "create_network", "parse", "create_builder_config", "set_memory_pool_limit",
                     "set_flag", "add_optimization_profile", "create_timing_cache", "set_timing_cache",
                     "build_serialized_network"]
    assert ("create_network", 0) in trt.calls  # TensorRT 10: explicit batch is implicit
    assert ("set_memory_pool_limit", "WORKSPACE", 64 << 20) in trt.calls
    assert ("add_optimization_profile", {"input": ((1, 1, 8, 8), (1, 1, 8, 8), (16, 1, 8, 8))}) in trt.calls
    header, plan = read_engine(paths[0])
    spec = header.spec
    assert plan.startswith(b"PLAN:") and spec.precision == "fp16" and spec.gpu == "Orin (nvgpu)"
    assert spec.tensorrt_version == "10.3.0" and spec.max_batch == 16 and len(header.model_sha256) == 64


def test_timing_cache_is_reused_across_tasks_and_builds(bundle, tmp_path):
    trt = make_fake_tensorrt()
    tb.build_engines(bundle, EngineSpec("fp32"), tmp_path, trt=trt)
    caches = [c[1] for c in trt.calls if c[0] == "create_timing_cache"]
    assert caches == [b"", b"+"]  # task 2 starts from what task 1 learned
    assert (tmp_path / "timing-trt10.3.0.cache").read_bytes() == b"++"
    assert ("set_flag", "FP16") not in trt.calls


def test_up_to_date_engines_are_reused_and_mismatches_rebuilt(bundle, tmp_path, monkeypatch):
    trt = make_fake_tensorrt()
    paths = tb.build_engines(bundle, EngineSpec("fp16"), tmp_path, trt=trt)
    trt.calls.clear()
    assert tb.build_engines(bundle, EngineSpec("fp16"), tmp_path, trt=trt) == paths
    assert "build_serialized_network" not in names(trt)
    # the same file claiming another GPU: refused at load, rebuilt by build_engines
    header, plan = read_engine(paths[0])
    write_engine(paths[0], EngineHeader(header.model_sha256, dataclasses.replace(header.spec, gpu="RTX 4090")), plan)
    with pytest.raises(EngineMismatch, match="gpu='RTX 4090'"):
        tb.load_engine_plan(paths[0], header)
    tb.build_engines(bundle, EngineSpec("fp16"), tmp_path, trt=trt)
    assert names(trt).count("build_serialized_network") == 1
    assert read_engine(paths[0])[0].spec.gpu == "Orin (nvgpu)"


def test_another_tensorrt_version_gets_its_own_engine(bundle, tmp_path):
    a = tb.build_engines(bundle, EngineSpec(), tmp_path, trt=make_fake_tensorrt("10.3.0"))
    b = tb.build_engines(bundle, EngineSpec(), tmp_path, trt=make_fake_tensorrt("8.6.2"))
    assert set(a).isdisjoint(b)
    with pytest.raises(EngineMismatch, match="tensorrt_version"):
        tb.load_engine_plan(b[0], read_engine(a[0])[0])


def test_tensorrt_8_6_shim_asks_for_explicit_batch(bundle, tmp_path):
    trt = make_fake_tensorrt("8.6.2")
    tb.build_engines(bundle, EngineSpec(), tmp_path, trt=trt)
    assert ("create_network", 1 << 0) in trt.calls


def test_parser_and_builder_errors_are_surfaced(bundle, tmp_path):
    with pytest.raises(tb.EngineBuildError, match="unsupported attribute"):
        tb.build_engines(bundle, EngineSpec(), tmp_path / "a", trt=make_fake_tensorrt(parse_ok=False))
    with pytest.raises(tb.EngineBuildError, match="failed to build"):
        tb.build_engines(bundle, EngineSpec(), tmp_path / "b", trt=make_fake_tensorrt(build_ok=False))
    assert not list((tmp_path / "b").glob("*.engine"))


def test_damaged_engine_files_mean_rebuild(tmp_path):
    (tmp_path / "x.engine").write_bytes(b"not an engine")
    with pytest.raises(EngineMismatch, match="no header"):
        read_engine(tmp_path / "x.engine")


class FakeBuffer:
    def __init__(self, nbytes):
        self.nbytes = nbytes

    def upload(self, host):
        assert host.dtype == np.float32 and host.nbytes <= self.nbytes
        return 1234


def test_int8_calibration_uses_user_images_and_a_keyed_cache(bundle, tmp_path, monkeypatch):
    from pcl_edge.bundle import calibration

    monkeypatch.setattr(calibration, "CudaBuffer", FakeBuffer)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        np.save(calib / f"{i}.npy", rng.integers(0, 255, (8, 8, 1), dtype=np.uint8))
    trt = make_fake_tensorrt()
    tb.build_engines(bundle, EngineSpec("int8"), tmp_path / "e", calib_dir=calib, trt=trt)
    assert ("set_flag", "INT8") in trt.calls and names(trt).count("calibration_batch") == 2 * 2  # 20 // 8 per task
    caches = sorted(p.name for p in (tmp_path / "e").glob("calib-*.cache"))
    assert len(caches) == 2
    trt.calls.clear()  # same model + same images: the scales come from the cache
    import shutil

    shutil.copytree(tmp_path / "e", tmp_path / "f", ignore=shutil.ignore_patterns("*.engine"))
    tb.build_engines(bundle, EngineSpec("int8"), tmp_path / "f", calib_dir=calib, trt=trt)
    assert "calibration_batch" not in names(trt) and names(trt).count("build_serialized_network") == 2
    with pytest.raises(calibration.CalibrationError, match="--calib-dir"):
        tb.build_engines(bundle, EngineSpec("int8"), tmp_path / "g", trt=make_fake_tensorrt())
    np.save(calib / "bad.npy", np.zeros((4, 4, 1), np.uint8))
    with pytest.raises(calibration.CalibrationError, match="shape"):
        tb.build_engines(bundle, EngineSpec("int8"), tmp_path / "h", calib_dir=calib, trt=make_fake_tensorrt())


def test_trtexec_equivalent(tmp_path):
    cmd = tb.trtexec_command(tmp_path / "m.onnx", tmp_path / "m.engine", "input", (3, 32, 32),
                             EngineSpec("fp16", max_batch=8), tmp_path / "t.cache")
    assert "--minShapes=input:1x3x32x32" in cmd and "--maxShapes=input:8x3x32x32" in cmd and "--fp16" in cmd


def test_missing_tensorrt_is_a_clear_error(bundle, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trt(name, *a, **kw):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_trt)
    from pcl_edge.bundle._trt_compat import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        tb.build_engines(bundle, EngineSpec(), tmp_path)


@pytest.mark.gpu
def test_real_tensorrt_engine_builds(bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT Python package not installed")
    paths = tb.build_engines(bundle, EngineSpec("fp16"), tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_int8_from_samples_stored_in_the_bundle_when_opted_in(tmp_path, monkeypatch):
    from pcl_edge.bundle import calibration, verify_bundle

    monkeypatch.setattr(calibration, "CudaBuffer", FakeBuffer)
    evolve(preset_config("tiny", "digits", tasks="2x2"), out=tmp_path / "run", progress=False)
    m = export_bundle(tmp_path / "run", tmp_path / "b", calib_samples=16)
    assert m["tasks"][0]["calibration"]["count"] == 16 and m["tasks"][0]["calibration"]["split"] == "validation"
    verify_bundle(tmp_path / "b")
    trt = make_fake_tensorrt()
    tb.build_engines(tmp_path / "b", EngineSpec("int8"), tmp_path / "e", trt=trt)
    assert names(trt).count("calibration_batch") == 2 * 2
    (tmp_path / "b" / "calib" / "task_01.npy").write_bytes(b"tampered")
    from pcl_edge.export import BundleError

    with pytest.raises(BundleError, match="calib/task_01.npy (does not match|is 8 bytes)"):
        verify_bundle(tmp_path / "b")


def test_tensorrt_timing_backend_logic():
    from pcl_edge.hw.backends import create_backend
    from pcl_edge.hw.onnx_graphs import genome_model
    from pcl_edge.space import Genome
    from tests.fake_tensorrt import FakeCuda

    trt, cuda = make_fake_tensorrt(), FakeCuda(ms=0.25)
    backend = create_backend("tensorrt", trt=trt, cuda=cuda, warmup=3, iterations=7)
    m = backend.measure(genome_model(Genome.parse("d2_w8_p1_x-_s0:dws-k3_s1:dws-k3"), (3, 32, 32)))
    assert m.median == 0.25 and m.count == 7
    assert ("add_optimization_profile", {"input": ((1, 3, 32, 32),) * 3}) in trt.calls  # batch 1 engine
    assert ("set_input_shape", "input", (1, 3, 32, 32)) in trt.calls
    assert [c[1] for c in trt.calls if c[0] == "set_tensor_address"] == ["input", "logits"]
    assert names(trt).count("execute_async_v3") == 3 + 7
    records = [c for c in cuda.calls if c[0] == "record"]
    assert len(records) == 2 * 7 and len({c[1] for c in records}) == 1  # one stream, start + end per iteration
    assert not cuda.live  # every buffer, the stream and both events freed
    assert backend.settings()["profiler"] == "none attached"
