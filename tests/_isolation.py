"""Running code in a fresh interpreter where some modules cannot be imported: how the tests prove that the
device side and the predictor never need torch (or a runtime)."""

from __future__ import annotations

import subprocess
import sys


def blocker(*modules: str) -> str:
    """Python source that makes ``modules`` (and their submodules) fail to import, as on a device without them."""
    names = repr(tuple(modules))
    return ("import sys\n"
            "class _Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {names}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, _Block())\n")


def run_without(modules: tuple[str, ...], code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", blocker(*modules) + code], capture_output=True, text=True,
                          timeout=timeout)


def popen_without(modules: tuple[str, ...], code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", blocker(*modules) + code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
