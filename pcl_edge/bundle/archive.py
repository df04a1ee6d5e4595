"""Bundles on disk: a directory (optionally packed as .tar) with ``manifest.json`` and one ONNX model per task.

    BUNDLE/manifest.json
    BUNDLE/models/task_01.onnx ...

Verification (schema, manifest digest, every file's sha256), safe unpacking (no absolute paths, ``..``, links or
devices) and packing. Stdlib only: the device side uses it, and never imports ``pcl_edge.export``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .._io import sha256_file
from .manifest import BundleError, read_manifest


@contextlib.contextmanager
def bundle_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A bundle as a directory: itself, or a tar unpacked (safely) into a temporary directory."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist")
    if path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield unpack_bundle(path, Path(tmp) / "bundle")


def verify_bundle(path: str | os.PathLike, trusted_keys: dict | None = None) -> dict:
    """Schema, manifest digest and every model's sha256, and with ``trusted_keys`` a valid signature by one of them
    (``signing``); returns the manifest. Accepts a directory or a .tar."""
    with bundle_dir(path) as d:
        return verify_dir(d, trusted_keys)


def verify_dir(path: Path, trusted_keys: dict | None = None) -> dict:
    m = read_manifest(path)
    if trusted_keys is not None:
        from .signing import check_signature

        check_signature(path, m, trusted_keys)
    for t in m["tasks"]:
        for rel, digest in task_files(t):
            f = path / rel
            if not f.is_file():
                raise BundleError(f"task {t['id']}: file {rel} is missing")
            if sha256_file(f) != digest:
                raise BundleError(f"task {t['id']}: {rel} does not match its sha256 (corrupted or modified)")
    return m


def task_files(task: dict) -> list[tuple[str, str]]:
    """Every file a task entry owns, with its recorded sha256."""
    files = [(task["model"], task["sha256"])]
    if task.get("calibration"):
        files.append((task["calibration"]["file"], task["calibration"]["sha256"]))
    return files


def pack_bundle(src: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=p.relative_to(src).as_posix(), recursive=False)
    os.replace(tmp, out)


def unpack_bundle(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a bundle tar, refusing absolute paths, ``..``, links and devices before writing anything."""
    dest = Path(dest)
    if dest.exists():
        raise BundleError(f"{dest} already exists; unpack into a new directory")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                p = Path(m.name)
                if p.is_absolute() or ".." in p.parts:
                    raise BundleError(f"{archive}: member {m.name!r} would be written outside the bundle")
                if not (m.isfile() or m.isdir()):
                    raise BundleError(f"{archive}: member {m.name!r} is a link or device; bundles hold plain files")
            dest.mkdir(parents=True)
            for m in members:
                target = dest / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(m) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except tarfile.TarError as exc:
        raise BundleError(f"{archive} is not a readable tar: {exc}") from None
    return dest


def tar_manifest(archive: str | os.PathLike) -> dict:
    """The manifest a bundle .tar carries, read from its manifest.json alone (nothing unpacked, nothing verified:
    what it claims; verification of the unpacked files still decides whether it holds)."""
    import json

    try:
        with tarfile.open(archive) as tar:
            member = tar.getmember("manifest.json")
            if not member.isfile() or member.size > 16 << 20:
                raise BundleError(f"{archive}: manifest.json is not a plain file of sane size")
            with tar.extractfile(member) as fh:
                manifest = json.load(fh)
    except (tarfile.TarError, KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{archive} is not a readable bundle tar: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{archive}: its manifest.json is not a JSON object")
    return manifest


def claimed_identity(bundle: str | os.PathLike) -> tuple[str, int]:
    """(manifest digest, bundle version) a bundle (directory or .tar) claims, unverified."""
    import json

    path = Path(bundle)
    if path.is_dir():
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} is not a readable bundle: {exc}") from None
    elif path.is_file():
        manifest = tar_manifest(path)
    else:
        raise BundleError(f"{path} does not exist")
    digest, version = manifest.get("manifest_sha256", ""), manifest.get("bundle_version")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise BundleError(f"{path}: its manifest carries no valid manifest_sha256")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{path}: its manifest carries no integer bundle_version")
    return digest, version


def tar_digest(archive: str | os.PathLike) -> str:
    """The manifest digest a bundle .tar claims (``tar_manifest``)."""
    return claimed_identity(archive)[0]
