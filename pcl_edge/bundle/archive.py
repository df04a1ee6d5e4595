"""Bundles on disk: a directory (optionally packed as .tar) with ``manifest.json`` and one ONNX model per task.

    BUNDLE/manifest.json
    BUNDLE/models/task_01.onnx ...

Verification (schema, manifest digest, every file's size and sha256), unpacking that verifies before it writes and
writes only what the manifest lists (no absolute paths, ``..``, links, devices, sparse files, compressed archives or
unlisted members), and packing. Stdlib only: the device side uses it, and never imports ``pcl_edge.export``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .._io import sha256_file
from .manifest import BundleError, read_manifest


@contextlib.contextmanager
def bundle_dir(path: str | os.PathLike, trusted_keys: dict | None = None) -> Iterator[Path]:
    """A bundle as a directory: itself, or a tar unpacked (verified first, bounded) into a temporary directory."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist")
    if path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield unpack_bundle(path, Path(tmp) / "bundle", trusted_keys)


def verify_bundle(path: str | os.PathLike, trusted_keys: dict | None = None) -> dict:
    """Schema, manifest digest and every model's sha256, and with ``trusted_keys`` a valid signature by one of them
    (``signing``); returns the manifest. Accepts a directory or a .tar (checked as it is unpacked: the signature
    before any model)."""
    with bundle_dir(path, trusted_keys) as d:
        return verify_dir(d, trusted_keys)


def verify_dir(path: Path, trusted_keys: dict | None = None) -> dict:
    m = read_manifest(path)
    if trusted_keys is not None:
        from .signing import check_signature

        check_signature(path, m, trusted_keys)
    for t in m["tasks"]:
        for rel, digest, size in task_file_sizes(t):
            f = path / rel
            if not f.is_file():
                raise BundleError(f"task {t['id']}: file {rel} is missing")
            if size is not None and f.stat().st_size != size:
                raise BundleError(f"task {t['id']}: {rel} is {f.stat().st_size} bytes, the manifest says {size}")
            if sha256_file(f) != digest:
                raise BundleError(f"task {t['id']}: {rel} does not match its sha256 (corrupted or modified)")
    return m


def read_verified(root: str | os.PathLike, rel: str, digest: str) -> bytes:
    """A bundle file's bytes, re-hashed now: what a session or an engine build uses is exactly what was verified
    (a lazy reload after an eviction re-checks too)."""
    data = (Path(root) / rel).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{rel} no longer matches the sha256 the bundle was verified with (changed on disk)")
    return data


def task_files(task: dict) -> list[tuple[str, str]]:
    """Every file a task entry owns, with its recorded sha256."""
    return [(rel, digest) for rel, digest, _ in task_file_sizes(task)]


def task_file_sizes(task: dict) -> list[tuple[str, str, int | None]]:
    """Every file a task entry owns, with its sha256 and its size in bytes (None in bundles made before sizes were
    recorded: then the archive member's own size, under the archive's bounds)."""
    files = [(task["model"], task["sha256"], task.get("size"))]
    if task.get("calibration"):
        c = task["calibration"]
        files.append((c["file"], c["sha256"], c.get("size")))
    return files


def pack_bundle(src: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=p.relative_to(src).as_posix(), recursive=False)
    os.replace(tmp, out)


# Bounds of a bundle archive, checked before anything is written: one plain (uncompressed) tar; a manifest and a
# signature list of sane size; a bounded number of members; only the listed files extracted, each of its declared
# size and sha256.
MAX_MEMBERS = 4096
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURES_BYTES = 1 << 20
MAX_BUNDLE_BYTES = 8 << 30  # what the listed files may add up to
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def unpack_bundle(archive: str | os.PathLike, dest: str | os.PathLike, trusted_keys: dict | None = None) -> Path:
    """Unpack a bundle tar into ``dest`` (new), verified first: ``manifest.json`` (schema and digest) and, with
    ``trusted_keys``, ``signatures.json`` are read and checked before any other member is touched; then only the
    files the manifest lists are extracted, each bounded by its declared size and checked against its sha256 as it
    is written, and fsynced. Links, devices, sparse files, compressed archives, unlisted members (skipped, never
    read) and paths leaving the bundle cannot produce a file. On any failure ``dest`` is removed."""
    from .manifest import MANIFEST, validate_manifest

    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise BundleError(f"{dest} already exists; unpack into a new directory")
    _refuse_compressed(archive)
    _prescan(archive)
    try:
        with tarfile.open(archive, "r:") as tar:
            members = _members(tar, archive)
            manifest_raw = _read_member(tar, members, MANIFEST, MAX_MANIFEST_BYTES, archive)
            try:
                manifest = validate_manifest(json.loads(manifest_raw))
            except (ValueError, RecursionError) as exc:
                raise BundleError(f"{archive}: manifest.json: {exc or type(exc).__name__}") from None
            sigs_raw = _read_member(tar, members, "signatures.json", MAX_SIGNATURES_BYTES, archive, required=False)
            if trusted_keys is not None:
                from .signing import check_signatures, parse_signatures

                check_signatures(parse_signatures(sigs_raw, f"{archive}: signatures.json") if sigs_raw else [],
                                 manifest, trusted_keys)
            files = _listed(manifest, members, archive)
            dest.mkdir(parents=True)
            try:
                _write(dest / MANIFEST, [manifest_raw])
                if sigs_raw is not None:
                    _write(dest / "signatures.json", [sigs_raw])
                for rel, digest, member in files:
                    _extract(tar, member, dest / rel, digest, archive)
                for d in sorted({p for rel, *_ in files for p in (dest / rel).parents if dest in p.parents},
                                key=lambda p: -len(p.parts)) + [dest]:
                    _fsync_dir(d)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except tarfile.TarError as exc:
        raise BundleError(f"{archive} is not a readable tar: {exc}") from None
    return dest


MAX_META_HEADER = 64 << 10  # a pax or GNU long-name header (tarfile reads one whole into memory)
_META_TYPES = (b"x", b"g", b"L", b"K")


def _prescan(archive: Path) -> None:
    """Walk the raw 512-byte headers before ``tarfile`` parses anything: it reads pax and GNU long-name headers
    whole into memory, so one claiming hundreds of MB would be read before any bound applies. Also bounds the
    member count. Only headers are read; data blocks are skipped by seeking."""
    total = archive.stat().st_size
    members = offset = 0
    with open(archive, "rb") as fh:
        while offset + 512 <= total:
            fh.seek(offset)
            block = fh.read(512)
            if block == bytes(512):
                return
            size = _header_size(block[124:136], archive)
            kind = block[156:157]
            if kind in _META_TYPES:
                if size > MAX_META_HEADER:
                    raise BundleError(f"{archive}: a {size}-byte extended header (more than {MAX_META_HEADER}); "
                                      "not a bundle")
            else:
                members += 1
                if members > MAX_MEMBERS:
                    raise BundleError(f"{archive} holds more than {MAX_MEMBERS} members; not a bundle")
            offset += 512 + (size + 511) // 512 * 512


def _header_size(field: bytes, archive: Path) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BundleError(f"{archive} is not a readable tar (a header size is not a number)") from None


def _refuse_compressed(archive: Path) -> None:
    """One format: a plain tar. A compressed one is refused before a byte of it is inflated (no bombs)."""
    try:
        with open(archive, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise BundleError(f"{archive} is not readable: {exc}") from None
    kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
    if kind:
        raise BundleError(f"{archive} is {kind}-compressed; bundles are plain .tar files (pcl-edge export --out X.tar)")


def _members(tar: tarfile.TarFile, archive: Path) -> dict[str, tarfile.TarInfo]:
    """Regular files by normalised name (headers only: no member's data is read here)."""
    out: dict[str, tarfile.TarInfo] = {}
    for i, m in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise BundleError(f"{archive} holds more than {MAX_MEMBERS} members; not a bundle")
        name = m.name.removeprefix("./")
        if m.isdir() or name in ("", "."):
            continue
        if m.issparse() or m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            what = "a sparse file" if m.issparse() else "a link or device"
            raise BundleError(f"{archive}: member {m.name!r} is {what}; bundles hold plain files")
        if name in out:
            raise BundleError(f"{archive}: member {m.name!r} appears twice")
        out[name] = m
    return out


def _read_member(tar, members, name: str, limit: int, archive: Path, required: bool = True) -> bytes | None:
    m = members.get(name)
    if m is None:
        if required:
            raise BundleError(f"{archive} is not a bundle (no {name})")
        return None
    if m.size > limit:
        raise BundleError(f"{archive}: {name} is {m.size} bytes (more than {limit}); not a bundle")
    with tar.extractfile(m) as fh:
        return fh.read(limit + 1)


def _listed(manifest: dict, members: dict, archive: Path) -> list[tuple[str, str, tarfile.TarInfo]]:
    """The members the manifest lists, each checked against its declared size, within the total bound."""
    out, total = [], 0
    for t in manifest["tasks"]:
        for rel, digest, size in task_file_sizes(t):
            m = members.get(rel)
            if m is None:
                raise BundleError(f"task {t['id']}: file {rel} is missing from {archive}")
            if size is not None and m.size != size:
                raise BundleError(f"task {t['id']}: {rel} is {m.size} bytes in {archive}, the manifest says {size}")
            total += m.size
            if total > MAX_BUNDLE_BYTES:
                raise BundleError(f"{archive}: its files add up to more than {MAX_BUNDLE_BYTES} bytes")
            out.append((rel, digest, m))
    return out


def _extract(tar, member: tarfile.TarInfo, target: Path, digest: str, archive: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    h, left = hashlib.sha256(), member.size
    with tar.extractfile(member) as src, open(target, "xb") as dst:
        while left > 0:
            chunk = src.read(min(1 << 20, left))
            if not chunk:
                raise BundleError(f"{archive}: {member.name} is truncated")
            h.update(chunk)
            dst.write(chunk)
            left -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    if h.hexdigest() != digest:
        raise BundleError(f"{archive}: {member.name} does not match its sha256 (corrupted or modified)")


def _write(path: Path, chunks: list[bytes]) -> None:
    with open(path, "xb") as fh:
        for c in chunks:
            fh.write(c)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tar_manifest(archive: str | os.PathLike) -> dict:
    """The manifest a bundle .tar carries, read from its manifest.json alone (headers scanned within the archive's
    bounds, nothing unpacked, nothing verified: what it claims; verification still decides whether it holds)."""
    archive = Path(archive)
    _refuse_compressed(archive)
    _prescan(archive)
    try:
        with tarfile.open(archive, "r:") as tar:
            manifest = json.loads(_read_member(tar, _members(tar, archive), "manifest.json", MAX_MANIFEST_BYTES,
                                               archive))
    except (tarfile.TarError, ValueError, OSError, RecursionError) as exc:
        raise BundleError(f"{archive} is not a readable bundle tar: {exc or type(exc).__name__}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{archive}: its manifest.json is not a JSON object")
    return manifest


def claimed_identity(bundle: str | os.PathLike) -> tuple[str, int]:
    """(manifest digest, bundle version) a bundle (directory or .tar) claims, unverified."""
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
