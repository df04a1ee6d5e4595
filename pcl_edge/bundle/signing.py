"""Signed bundles (ed25519, the ``cryptography`` package). A manifest seal is a sha256: anyone who edits a model can
re-seal the manifest. A signature cannot be re-made without the private key.

What is signed is the manifest digest (``manifest_sha256``), which covers every field of the manifest and, through
the per-file sha256 it lists, every file of the bundle. Signatures live beside the manifest in
``signatures.json``: ``[{"key_id", "algorithm": "ed25519", "signature": base64}]`` (several, for key rotation).
A key's id is the first 16 hex digits of the sha256 of its raw public bytes.

Keys on disk: ``NAME.key`` (PKCS#8 PEM, mode 0600, the signer's) and ``NAME.pub`` (SubjectPublicKeyInfo PEM, what a
device trusts). A device given trusted keys (a file, or a directory of ``*.pub``) refuses unsigned bundles, unknown
keys and signatures that do not verify."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from .manifest import BundleError, read_manifest

SIGNATURES = "signatures.json"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError("signed bundles need the 'cryptography' package: pip install 'pcl-edge[serve]' "
                          "(device) or 'pcl-edge[train]' (signing)") from None
    return ed25519, serialization, InvalidSignature


def key_id(public_key) -> str:
    _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (private, 0600) and ``PREFIX.pub``; never over existing files."""
    ed25519, serialization, _ = _crypto()
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (key_path, pub_path):
        if p.exists():
            raise BundleError(f"{p} exists; keys are never overwritten: choose another name")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: str | os.PathLike):
    ed25519, serialization, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path} is not an ed25519 private key")
    return key


def load_trusted_keys(path: str | os.PathLike) -> dict[str, object]:
    """Public keys by id from a ``.pub`` file or every ``*.pub`` of a directory (several: key rotation)."""
    ed25519, serialization, _ = _crypto()
    p = Path(path)
    files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise BundleError(f"no trusted public key at {p} (a .pub file, or a directory of them)")
    keys = {}
    for f in files:
        try:
            key = serialization.load_pem_public_key(f.read_bytes())
        except ValueError as exc:
            raise BundleError(f"{f} is not a PEM public key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise BundleError(f"{f} is not an ed25519 public key")
        keys[key_id(key)] = key
    return keys


def signatures_of(root: Path) -> list[dict]:
    path = Path(root) / SIGNATURES
    return parse_signatures(path.read_bytes(), str(path)) if path.exists() else []


def parse_signatures(raw: bytes, where: str = SIGNATURES) -> list[dict]:
    try:
        sigs = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{where} is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(sigs, list) or not all(isinstance(s, dict) and isinstance(s.get("key_id"), str)
                                             and isinstance(s.get("signature"), str) for s in sigs):
        raise BundleError(f"{where} is not a list of signatures (key_id and signature strings)")
    return sigs


def sign_dir(root: Path, key_path: str | os.PathLike) -> dict:
    """Add (or replace) this key's signature of the bundle directory's manifest digest; returns the entry."""
    from .._io import write_json

    key = load_private_key(key_path)
    digest = read_manifest(root)["manifest_sha256"]
    entry = {"key_id": key_id(key.public_key()), "algorithm": "ed25519",
             "signature": base64.b64encode(key.sign(digest.encode())).decode()}
    sigs = [s for s in signatures_of(root) if s["key_id"] != entry["key_id"]] + [entry]
    write_json(Path(root) / SIGNATURES, sigs)
    return entry


def check_signature(root: Path, manifest: dict, trusted: dict[str, object]) -> str:
    """The id of a trusted key whose signature of this manifest verifies; BundleError otherwise."""
    return check_signatures(signatures_of(root), manifest, trusted)


def check_signatures(sigs: list[dict], manifest: dict, trusted: dict[str, object]) -> str:
    """``check_signature`` on signatures already read (an archive's, before anything of it is unpacked)."""
    _, _, invalid = _crypto()
    if not sigs:
        raise BundleError("bundle is not signed, and this device only accepts bundles signed by a trusted key")
    known = [s for s in sigs if s["key_id"] in trusted]
    if not known:
        raise BundleError(f"bundle is signed by key(s) {[s['key_id'] for s in sigs]}, none of them trusted here "
                          f"(trusted: {sorted(trusted)})")
    for s in known:
        try:
            trusted[s["key_id"]].verify(base64.b64decode(s["signature"]), manifest["manifest_sha256"].encode())
            return s["key_id"]
        except (invalid, ValueError):
            continue
    raise BundleError("bundle signature does not verify: the manifest was changed after signing (or re-sealed)")


def sign_bundle(bundle: str | os.PathLike, key_path: str | os.PathLike) -> dict:
    """Sign a bundle directory in place, or a .tar (re-packed atomically: the old file stays until the new one is
    complete)."""
    import tempfile

    from .archive import pack_bundle, unpack_bundle, verify_dir

    p = Path(bundle)
    if p.is_dir():
        verify_dir(p)
        return sign_dir(p, key_path)
    if not p.is_file():
        raise BundleError(f"{p} does not exist")
    with tempfile.TemporaryDirectory(dir=p.parent) as tmp:
        root = unpack_bundle(p, Path(tmp) / "b")
        verify_dir(root)
        entry = sign_dir(root, key_path)
        pack_bundle(root, p)
    return entry
