"""The bundle manifest: schema, canonical digest, validation. Pure stdlib + json: the device side reads it too.

Integrity: ``manifest_sha256`` is the sha256 of the canonical JSON (sorted keys, no spaces) of the manifest
without that field, and every model file carries its sha256; so an edited manifest or a flipped byte in any file
is detected. This protects against corruption and accidental edits, not against an attacker who rewrites both
(that needs signing, which a deployment can add on top)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
_TASK_KEYS = {"id", "name", "class_names", "input", "output", "model", "sha256", "opset", "genome", "metrics"}
_INPUT_KEYS = {"name", "shape", "dtype", "layout", "mean", "std"}


class BundleError(ValueError):
    """A bundle that cannot be trusted or used as it is."""


def canonical_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(manifest: dict) -> dict:
    return {**manifest, "manifest_sha256": canonical_digest(manifest)}


def validate_manifest(m: Any) -> dict:
    """Schema check with precise messages; returns the manifest."""
    if not isinstance(m, dict):
        raise BundleError("manifest.json is not a JSON object")
    version = m.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"unknown manifest schema_version {version!r}; this pcl-edge reads version {SCHEMA_VERSION}")
    for key in ("bundle_version", "tool", "tool_version", "created", "tasks", "manifest_sha256"):
        if key not in m:
            raise BundleError(f"manifest lacks {key!r}")
    if m["manifest_sha256"] != canonical_digest(m):
        raise BundleError("manifest.json was edited after export (its manifest_sha256 does not match)")
    if not isinstance(m["tasks"], list) or not m["tasks"]:
        raise BundleError("manifest has no tasks")
    ids = set()
    for t in m["tasks"]:
        missing = _TASK_KEYS - set(t)
        if missing:
            raise BundleError(f"task {t.get('id', '?')} lacks {sorted(missing)}")
        if _INPUT_KEYS - set(t["input"]):
            raise BundleError(f"task {t['id']} input spec lacks {sorted(_INPUT_KEYS - set(t['input']))}")
        if t["id"] in ids:
            raise BundleError(f"task id {t['id']} appears twice")
        ids.add(t["id"])
        for rel in [t["model"], (t.get("calibration") or {}).get("file", "")]:
            p = Path(rel)
            if p.is_absolute() or ".." in p.parts:
                raise BundleError(f"task {t['id']} file path {rel!r} leaves the bundle")
    return m


def read_manifest(bundle: Path) -> dict:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle (no {MANIFEST})")
    try:
        return validate_manifest(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
