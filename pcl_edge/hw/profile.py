"""Hardware profiles: versioned YAML (read with ``yaml.safe_load`` only) that say where every number comes from.

``source: measured`` profiles carry device, software versions, power mode, measurement settings and provenance
(command, code version, date, host); ``source: estimated`` ones carry the datasheet figures and sources of their
roofline. A measured profile without provenance is refused: no number is presented as measured on hardware that
nobody measured.

Schema 2 (this version) keys kernels by *fused* kernels (``hw.fusion``) and records the fusion rules, how the timed
networks were drawn (``sampling``), the measured repeat-to-repeat noise (``noise``), a small reference set that
``pcl-edge profile --check`` re-times to detect drift (``reference``), and the drift ``scale`` a ``--rescale``
applied. Schema 1 profiles were keyed by whole blocks timed alone; they are refused with a pointer to re-profile."""

from __future__ import annotations

import calendar
import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 2
MAX_AGE_DAYS = 30  # a measured profile older than this (since measured or last checked) draws a warning
SOURCES = ("measured", "estimated")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class KernelStats:
    median: float  # ms
    p90: float
    p99: float
    std: float
    count: int


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    device: dict
    software: dict
    measurement: dict
    kernels: dict[str, KernelStats]
    fallback: dict  # {"kind": "linear", "coefficients": {op: [...]}} or {"kind": "roofline", ...}
    overhead_ms: float = 0.0
    # per input shape (``CxHxW``) or ``default``: {"model": name, "coef": {feature: value}} (``hw.predictor``)
    calibration: dict = field(default_factory=lambda: {"default": {"model": "scale", "coef": {"kernels_ms": 1.0}}})
    accuracy: dict | None = None
    power_mode: dict | None = None
    provenance: dict | None = None
    estimate: dict | None = None
    energy: dict | None = None
    fusion: dict | None = None  # {"rules": ["Conv+Relu", ...], "source": "detected ..." | "assumed ..."}
    sampling: dict | None = None  # how the timed networks were drawn
    noise: dict | None = None  # repeat-to-repeat spread of the held-out measurements and the noise floor
    reference: dict | None = None  # {"networks": [{"shape", "genome", "ms"}], ...}: what ``--check`` re-times
    scale: float = 1.0  # drift factor applied by ``profile --check --rescale`` (provenance says when and why)
    stale: bool = False  # set by hand (or by a tool) when the device changed: the search warns
    schema_version: int = SCHEMA_VERSION

    def checked_at(self) -> float | None:
        """When the numbers were last confirmed on the device (measured, or re-checked and rescaled): epoch s."""
        prov = self.provenance or {}
        dates = [prov.get("date")] + [r.get("date") for r in prov.get("rescaled", [])]
        stamps = []
        for d in dates:
            with contextlib.suppress(TypeError, ValueError):
                stamps.append(calendar.timegm(time.strptime(d, "%Y-%m-%dT%H:%M:%SZ")))
        return max(stamps) if stamps else None

    def staleness(self, max_age_days: float = MAX_AGE_DAYS, now: float | None = None) -> str | None:
        """Why this profile's absolute numbers should not be trusted without a check, or None."""
        if self.source != "measured":
            return None
        if self.stale:
            return f"profile {self.name} is marked stale: run pcl-edge profile --check (and --rescale) or re-profile"
        at = self.checked_at()
        if at is None:
            return None
        age = ((now or time.time()) - at) / 86400
        if age > max_age_days:
            return (f"profile {self.name} was measured or last checked {age:.0f} days ago (> {max_age_days:g}): "
                    "the device may have drifted; run pcl-edge profile --check PROFILE")
        return None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernels"] = {k: asdict(v) for k, v in sorted(self.kernels.items())}
        return {k: v for k, v in d.items() if v is not None}

    def save(self, path: str | os.PathLike) -> None:
        import yaml

        from .._io import write_text

        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, width=120))


_REQUIRED = ("name", "source", "device", "software", "measurement", "kernels", "fallback")


def profile_from_dict(d: dict, where: str = "profile") -> Profile:
    if not isinstance(d, dict):
        raise ProfileError(f"{where}: not a mapping")
    version = d.get("schema_version")
    if version == 1:
        raise ProfileError(f"{where}: schema_version 1 (kernels timed alone, keyed by whole blocks) is no longer read: "
                           "re-run pcl-edge profile on the device (schema 2 keys kernels as the runtime fuses them)")
    if version != SCHEMA_VERSION:
        raise ProfileError(f"{where}: unknown schema_version {version!r}; this pcl-edge reads {SCHEMA_VERSION}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ProfileError(f"{where}: missing field(s) {missing}")
    if d["source"] not in SOURCES:
        raise ProfileError(f"{where}: source must be one of {SOURCES}, got {d['source']!r}")
    if d["source"] == "measured":
        prov = d.get("provenance") or {}
        lacking = [k for k in ("command", "code_version", "date", "host") if k not in prov]
        if lacking:
            raise ProfileError(f"{where}: a measured profile needs provenance {lacking}; without it mark the "
                               "profile source: estimated")
    if d["source"] == "estimated" and not d.get("estimate"):
        raise ProfileError(f"{where}: an estimated profile must list the figures it used and their sources (estimate)")
    try:
        kernels = {str(k): KernelStats(**v) for k, v in (d["kernels"] or {}).items()}
        known = {f for f in Profile.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ProfileError(f"{where}: unknown field(s) {sorted(unknown)}")
        if (d["fallback"] or {}).get("kind") not in ("linear", "roofline"):
            raise ProfileError(f"{where}: fallback.kind must be linear or roofline")
        return Profile(**{**d, "kernels": kernels})
    except TypeError as exc:
        raise ProfileError(f"{where}: malformed entry ({exc})") from None


def shipped_profiles() -> dict[str, Path]:
    """Name -> file of the profiles that ship with pcl-edge (hw_profiles/, inside the wheel as
    ``pcl_edge.hw_profiles``; from a source checkout, the directory itself)."""
    package = Path(__file__).resolve().parents[1]  # pcl_edge/
    roots = [package / "hw_profiles", package.parent / "hw_profiles"]  # an installed wheel; a source checkout
    out: dict[str, Path] = {}
    for root in roots:
        for f in sorted(root.glob("*.yaml")) if root.is_dir() else []:
            out.setdefault(f.stem, f)
    return out


def resolve_profile(ref: str | os.PathLike) -> Path:
    """A profile by path, or by the name of a shipped one (``cpu-ort-epyc-2core``, ``jetson-orin-nano-8gb``)."""
    p = Path(ref)
    if p.is_file():
        return p
    shipped = shipped_profiles()
    name = p.stem if p.suffix in ("", ".yaml") and len(p.parts) == 1 else None
    if name in shipped:
        return shipped[name]
    raise ProfileError(f"hardware profile {ref} is neither a file nor a shipped profile ({', '.join(shipped)})")


def load_profile(path: str | os.PathLike) -> Profile:
    import yaml

    p = resolve_profile(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{p} is not valid YAML: {exc}") from None
    return profile_from_dict(data, str(p))
