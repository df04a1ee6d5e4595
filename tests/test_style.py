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
