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
    """Schema check with precise messages; returns the manifest. Every field a device reads is type-checked here, so a
    hostile manifest is a BundleError (a 400), never a TypeError deep in the runtime."""
    if not isinstance(m, dict):
        raise BundleError("manifest.json is not a JSON object")
    version = m.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"unknown manifest schema_version {version!r}; this pcl-edge reads version {SCHEMA_VERSION}")
    for key in ("bundle_version", "tool", "tool_version", "created", "tasks", "manifest_sha256"):
        if key not in m:
            raise BundleError(f"manifest lacks {key!r}")
    if not _is_int(m["bundle_version"]) or m["bundle_version"] < 1:
        raise BundleError(f"manifest bundle_version {m['bundle_version']!r} is not a positive integer")
    if not _is_hex(m["manifest_sha256"]) or m["manifest_sha256"] != canonical_digest(m):
        raise BundleError("manifest.json was edited after export (its manifest_sha256 does not match)")
    if not isinstance(m["tasks"], list) or not m["tasks"]:
        raise BundleError("manifest has no tasks")
    ids, files = set(), []
    for t in m["tasks"]:
        if not isinstance(t, dict):
            raise BundleError("a manifest task is not a JSON object")
        missing = _TASK_KEYS - set(t)
        if missing:
            raise BundleError(f"task {t.get('id', '?')!r} lacks {sorted(missing)}")
        _check_task(t)
        if t["id"] in ids:
            raise BundleError(f"task id {t['id']} appears twice")
        ids.add(t["id"])
        files.append(t["model"])
        if t.get("calibration") is not None:
            files.append(t["calibration"]["file"])
    _check_paths(files)
    return m


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hex(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _check_task(t: dict) -> None:
    tid = t["id"]
    if not _is_int(tid) or not 1 <= tid <= 65535:
        raise BundleError(f"task id {tid!r} is not an integer in 1..65535")
    if not isinstance(t["name"], str) or not 0 < len(t["name"]) <= 128:
        raise BundleError(f"task {tid}: name must be a string of 1..128 characters")
    if not isinstance(t["class_names"], list) or not t["class_names"] or \
            not all(isinstance(c, str) for c in t["class_names"]):
        raise BundleError(f"task {tid}: class_names must be a non-empty list of strings")
    for key in ("model", "sha256"):
        if not isinstance(t[key], str) or not t[key]:
            raise BundleError(f"task {tid}: {key} must be a non-empty string")
    if not _is_hex(t["sha256"]) or ("size" in t and (not _is_int(t["size"]) or t["size"] < 0)):
        raise BundleError(f"task {tid}: sha256 must be 64 lowercase hex digits and size a non-negative integer")
    inp, out = t["input"], t["output"]
    if not isinstance(inp, dict):
        raise BundleError(f"task {tid}: input spec is not a JSON object")
    if _INPUT_KEYS - set(inp):
        raise BundleError(f"task {tid} input spec lacks {sorted(_INPUT_KEYS - set(inp))}")
    shape = inp["shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(d) and 0 < d <= 65535 for d in shape):
        raise BundleError(f"task {tid}: input shape must be [C, H, W] of positive integers")
    for key in ("mean", "std"):
        if not isinstance(inp[key], list) or len(inp[key]) != shape[0] or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in inp[key]):
            raise BundleError(f"task {tid}: input {key} must hold one number per channel")
    if not all(isinstance(inp[k], str) for k in ("name", "dtype", "layout")):
        raise BundleError(f"task {tid}: input name, dtype and layout must be strings")
    if not isinstance(out, dict) or not isinstance(out.get("name"), str) or not isinstance(out.get("shape"), list) \
            or len(out["shape"]) != 1 or not _is_int(out["shape"][0]) or out["shape"][0] != len(t["class_names"]):
        raise BundleError(f"task {tid}: output must name one tensor of shape [number of classes]")
    cal = t.get("calibration")
    if cal is not None and (not isinstance(cal, dict) or not isinstance(cal.get("file"), str) or not cal["file"]
                            or not _is_hex(cal.get("sha256"))
                            or ("size" in cal and (not _is_int(cal["size"]) or cal["size"] < 0))):
        raise BundleError(f"task {tid}: calibration must name a file with its sha256 (and size)")


def _check_paths(files: list[str]) -> None:
    """Relative, inside the bundle, distinct, not the manifest or the signatures, none a directory of another."""
    seen: set[str] = set()
    for rel in files:
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or rel.startswith("./") or rel in ("manifest.json", "signatures.json") \
                or p.as_posix() != rel:
            raise BundleError(f"file path {rel!r} leaves the bundle or is not a plain relative path")
        if rel in seen:
            raise BundleError(f"file path {rel!r} is listed twice")
        seen.add(rel)
    for rel in seen:
        for parent in Path(rel).parents:
            if parent.as_posix() in seen:
                raise BundleError(f"file path {parent.as_posix()!r} is also a directory of {rel!r}")


def read_manifest(bundle: Path) -> dict:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle (no {MANIFEST})")
    try:
        return validate_manifest(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleError(f"{path} is nested too deeply") from None
