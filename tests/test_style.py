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
