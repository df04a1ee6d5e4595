import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_is_clean():
    res = subprocess.run(["ruff", "check", "pcl_edge", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_print_in_the_library():
    """logging, not print: the CLI writes its table through sys.stdout explicitly."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "pcl_edge").rglob("*.py") if "print(" in p.read_text()]
    assert offenders == []


def test_the_wheel_lists_every_package():
    """pyproject.toml lists the packages (hw_profiles/ ships inside the wheel as pcl_edge.hw_profiles): a package
    missing from the list would be missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "pcl_edge").rglob("*.py")}
    assert present | {"pcl_edge.hw_profiles"} == listed


def test_one_version_number():
    import tomllib

    import pcl_edge

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert f"## {pcl_edge.__version__} " in (ROOT / "CHANGELOG.md").read_text() and (ROOT / "LICENSE").is_file()


def test_the_jetson_image_check_reads_what_the_dockerfile_installs():
    """deploy/check_jetson_image.py resolves what Dockerfile.jetson pip-installs (the pins, and pcl-edge's extras
    expanded from pyproject.toml); the Jetson AI Lab index is checked on its own."""
    import sys

    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        from check_jetson_image import image_requirements
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    reqs = image_requirements((ROOT / "Dockerfile.jetson").read_text())
    assert "numpy==1.26.4" in reqs and "cuda-python==12.6.2.post1" in reqs and "tritonclient[grpc]>=2.40" in reqs
    assert any(r.startswith("starlette") for r in reqs) and not any("onnxruntime" in r for r in reqs)
    assert not any(r.startswith("torch") for r in reqs)
