"""Every sub-command meets a missing optional dependency with one line naming the extra to install, exit 2, no
traceback (issue 14 item 2): the module is made unimportable in a fresh interpreter."""

import pytest

from tests._isolation import run_without


@pytest.fixture(scope="module")
def run_and_bundle(tmp_path_factory):
    from pcl_edge.evolve import evolve, preset_config
    from pcl_edge.export import export_bundle

    root = tmp_path_factory.mktemp("extras")
    evolve(preset_config("tiny", "digits", tasks="2x2", generations=0), out=root / "run", progress=False)
    export_bundle(root / "run", root / "bundle")
    return root


CASES = [
    (["evolve", "--preset", "tiny"], "torch", "pcl-edge[train]"),
    (["export", "{run}", "--out", "{tmp}/b"], "onnxruntime", "pcl-edge[ort]"),
    (["export", "{run}", "--out", "{tmp}/b"], "onnx", "pcl-edge[train]"),
    (["serve", "{bundle}", "--port", "0"], "uvicorn", "pcl-edge[serve]"),
    (["serve", "{bundle}", "--port", "0", "--backend", "ort"], "onnxruntime", "pcl-edge[ort]"),
    (["profile", "--out", "{tmp}/p.yaml", "--input-shapes", "1x8x8"], "onnxruntime", "pcl-edge[ort]"),
    (["keygen", "{tmp}/k"], "cryptography", "pcl-edge[serve]"),
    (["build-engines", "{bundle}"], "tensorrt", "tensorrt"),
    (["report", "{run}"], "matplotlib", "pcl-edge[train]"),
    (["bundle", "verify", "{bundle}", "--trusted-key", "{tmp}/none.pub"], "cryptography", "pcl-edge[serve]"),
]


@pytest.mark.parametrize("argv,module,extra", CASES, ids=[f"{c[0][0]}-without-{c[1]}" for c in CASES])
def test_a_missing_optional_dependency_is_one_line_and_exit_2(run_and_bundle, tmp_path, argv, module, extra):
    argv = [a.format(run=run_and_bundle / "run", bundle=run_and_bundle / "bundle", tmp=tmp_path) for a in argv]
    res = run_without((module,), f"import sys\nfrom pcl_edge.cli import main\nsys.exit(main({['-q', *argv]!r}))",
                      timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and extra in res.stderr, res.stderr
    assert len([line for line in res.stderr.splitlines() if "error" in line]) == 1, res.stderr
