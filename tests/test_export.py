import io
import json
import shutil
import tarfile

import numpy as np
import onnx
import pytest
import torch

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.export import BundleError, export_bundle, unpack_bundle, verify_bundle
from pcl_edge.export.onnx_export import export_onnx, verify_onnx
from pcl_edge.space import BLOCKS, BlockGene, Genome, build_network


@pytest.mark.parametrize("op", BLOCKS.names())
def test_onnx_parity_for_every_block(op):
    torch.manual_seed(0)
    gene = BlockGene(op, 5, 6 if op == "mbconv" else 1)
    g = Genome(4, 8, (1, 3), (1,), (gene, gene, gene))
    net = build_network(g, 3, 4)
    with torch.no_grad():  # non-trivial BatchNorm statistics: folding must be exact, not luckily the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    net.eval()
    model = export_onnx(net, (3, 16, 16), None)
    ops = {n.op_type for n in onnx.load_from_string(model).graph.node}
    assert "BatchNormalization" not in ops and ops <= {"Conv", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm",
                                                       "Identity"}
    report = verify_onnx(model, net, (3, 16, 16), real=np.random.default_rng(1).random((8, 3, 16, 16)))
    assert report.passed and report.n_inputs == 72 and report.max_abs_diff <= 1e-4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    evolve(preset_config("tiny", "digits", tasks="2x2"), out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "v1"
    export_bundle(run_dir, out)
    return out


def test_bundle_manifest(bundle):
    m = verify_bundle(bundle)
    assert m["schema_version"] == 1 and m["bundle_version"] == 1 and [t["id"] for t in m["tasks"]] == [1, 2]
    t = m["tasks"][0]
    assert t["input"]["shape"] == [1, 8, 8] and t["input"]["layout"] == "NCHW" and len(t["input"]["mean"]) == 1
    assert t["opset"] == 17 and Genome.parse(t["genome"]) and t["class_names"] == ["0", "1"]
    assert "calibration" not in t and not (bundle / "calib").exists()  # samples only when opted in
    v = t["verification"]
    assert v["passed"] and v["n_inputs"] >= 64 and v["n_real"] > 0 and v["max_abs_diff"] <= 1e-4
    graph = onnx.load(bundle / t["model"]).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch axis


def _tamper_byte(b):
    f = b / "models" / "task_02.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def _edit_manifest(b):
    m = json.loads((b / "manifest.json").read_text())
    m["tasks"][0]["class_names"] = ["cat", "dog"]
    (b / "manifest.json").write_text(json.dumps(m))


def _schema(b):
    m = json.loads((b / "manifest.json").read_text())
    m["schema_version"] = 99
    (b / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("tamper,match", [
    (_tamper_byte, "does not match its sha256"),
    (_edit_manifest, "edited after export"),
    (lambda b: (b / "models" / "task_01.onnx").unlink(), "is missing"),
    (_schema, "unknown manifest schema_version 99"),
    (lambda b: (b / "manifest.json").write_text("{"), "not valid JSON"),
    (lambda b: (b / "manifest.json").unlink(), "not a bundle"),
])
def test_tampered_bundles_are_refused(bundle, tmp_path, tamper, match):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    tamper(copy)
    with pytest.raises(BundleError, match=match):
        verify_bundle(copy)


def test_the_next_bundle_of_a_grown_run_keeps_old_tasks_byte_identical(bundles, tmp_path):
    """Tasks 4-5 learned weeks later in the same run (pcl-edge learn), exported against the bundle the device has."""
    v0 = json.loads((bundles / "v0" / "manifest.json").read_text())
    v1 = json.loads((bundles / "v1" / "manifest.json").read_text())
    assert v1["bundle_version"] == 2 > v0["bundle_version"] == 1 and v1["base_bundle_version"] == 1
    assert [t["id"] for t in v1["tasks"]] == [1, 2, 3, 4, 5]
    for old in v0["tasks"]:
        assert (bundles / "v1" / old["model"]).read_bytes() == (bundles / "v0" / old["model"]).read_bytes()
        assert next(t for t in v1["tasks"] if t["id"] == old["id"]) == old
    with pytest.raises(BundleError, match="no task beyond"):
        export_bundle(bundles / "run", tmp_path / "v3", base=bundles / "v1")
    assert not (tmp_path / "v3").exists()


def test_a_base_bundle_of_another_run_is_refused(bundles, tmp_path):
    """Another run's bundle as the base of bundles/run would keep foreign models under this run's task ids."""
    evolve(preset_config("tiny", "digits", tasks="2x2", generations=0, seed=1), out=tmp_path / "other",
           progress=False)
    export_bundle(tmp_path / "other", tmp_path / "foreign")
    with pytest.raises(BundleError, match="not .*expert of that task"):
        export_bundle(bundles / "run", tmp_path / "v2", base=tmp_path / "foreign")
    assert not (tmp_path / "v2").exists()


def test_export_refuses_to_overwrite_and_needs_experts(run_dir, bundle, tmp_path):
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(run_dir, bundle)
    assert (bundle / "manifest.json").read_bytes() == before
    empty = tmp_path / "empty"
    shutil.copytree(run_dir, empty)
    shutil.rmtree(empty / "experts")
    with pytest.raises(BundleError, match="no archived experts"):
        export_bundle(empty, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_tar_round_trip(run_dir, tmp_path):
    export_bundle(run_dir, tmp_path / "b.tar")
    m = verify_bundle(tmp_path / "b.tar")
    assert len(m["tasks"]) == 2
    out = unpack_bundle(tmp_path / "b.tar", tmp_path / "unpacked")
    assert verify_bundle(out) == m


def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"x"):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize("make,match", [  # a member no manifest lists is never written: refused for lacking one
    (lambda: tarfile.TarInfo("../escape.txt"), "no manifest.json"),
    (lambda: tarfile.TarInfo("/abs/escape.txt"), "no manifest.json"),
    (lambda: _link("models/x.onnx", "/etc/passwd"), "link or device"),
    (lambda: _dev("dev0"), "link or device"),
])
def test_unpacking_refuses_traversal_links_and_devices(tmp_path, make, match):
    member = make()
    if member.isfile():
        member.size = 1
    archive = _tar_with(tmp_path, member)
    with pytest.raises(BundleError, match=match):
        unpack_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape.txt").exists()


def _link(name, target):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = tarfile.SYMTYPE, target
    return m


def _dev(name):
    m = tarfile.TarInfo(name)
    m.type = tarfile.CHRTYPE
    return m


def _parse_pbtxt_tensors(text, section):
    """(name, data type, dims) of a config.pbtxt's inputs or outputs, read with Triton's own ModelConfig proto."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    return [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, section)]


def test_triton_repository_matches_the_onnx_graphs(run_dir, tmp_path):
    from pcl_edge.export import bundle_to_triton

    export_bundle(run_dir, tmp_path / "b")
    names = bundle_to_triton(tmp_path / "b", tmp_path / "repo")
    assert names == ["task_01", "task_02"]
    for name in names:
        text = (tmp_path / "repo" / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in text and 'platform: "onnxruntime_onnx"' in text
        graph = onnx.load(tmp_path / "repo" / name / "1" / "model.onnx").graph
        for section, values in (("input", graph.input), ("output", graph.output)):
            (pname, ptype, pdims), = _parse_pbtxt_tensors(text, section)
            v = values[0]
            dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
            assert pname == v.name and ptype == "TYPE_FP32" and pdims == dims[1:] and dims[0] == 0
    manifest = json.loads((tmp_path / "repo" / "pcl_edge_manifest.json").read_text())
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for task in manifest["tasks"]:  # what a Triton user needs to normalise inputs travels with the repository
        config = text_format.Parse((tmp_path / "repo" / task["name"] / "config.pbtxt").read_text(),
                                   model_config_pb2.ModelConfig())
        assert json.loads(config.parameters["input_mean"].string_value) == task["input"]["mean"]
        assert json.loads(config.parameters["class_names"].string_value) == task["class_names"]
        assert config.output[0].label_filename == "labels.txt" and config.dynamic_batching.max_queue_delay_microseconds
        labels = (tmp_path / "repo" / task["name"] / "labels.txt").read_text().splitlines()
        assert labels == task["class_names"]


def test_triton_configs_escape_class_names_and_ask_for_tensorrt(bundles, tmp_path):
    """Class names with quotes, backslashes and line breaks survive the text format; --triton-tensorrt sets the
    ONNX Runtime backend's TensorRT accelerator."""
    import shutil as _shutil

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from pcl_edge.bundle.manifest import seal
    from pcl_edge.export import bundle_to_triton

    _shutil.copytree(bundles / "v0", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    weird = ['a "quoted" \\ name', "two\nlines"]
    m["tasks"][0]["class_names"] = weird
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(seal({k: v for k, v in m.items()
                                                                    if k != "manifest_sha256"})))
    bundle_to_triton(tmp_path / "b", tmp_path / "repo", tensorrt="FP16")
    config = text_format.Parse((tmp_path / "repo" / "task_01" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert json.loads(config.parameters["class_names"].string_value) == weird
    acc = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert (tmp_path / "repo" / "task_01" / "labels.txt").read_text().splitlines() == [weird[0], "two lines"]


def test_bundle_verification_needs_no_torch(bundle):
    """The device verifies bundles too, and the device has no torch."""

    from tests._isolation import run_without

    res = run_without(("torch",), "from pcl_edge.bundle import verify_bundle\n"
                                  f"print(len(verify_bundle({str(bundle)!r})['tasks']))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "2"


def test_cli_export_and_verify(run_dir, tmp_path, capsys):
    from pcl_edge.cli import main

    assert main(["-q", "export", str(run_dir), "--out", str(tmp_path / "b")]) == 0
    assert "bundle version 1" in capsys.readouterr().out
    assert main(["-q", "bundle", "verify", str(tmp_path / "b")]) == 0
    assert "every sha256 matches" in capsys.readouterr().out
    _tamper_byte(tmp_path / "b")
    assert main(["-q", "bundle", "verify", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pcl-edge bundle: error: task 2" in err[0]
