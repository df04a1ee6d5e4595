"""Hardware profiles: versioned YAML (read with ``yaml.safe_load`` only) that say where every number comes from.

``source: measured`` profiles carry device, software versions, power mode, measurement settings and provenance
(command, code version, date, host); ``source: estimated`` ones carry the datasheet figures and sources of their
roofline. A measured profile without provenance is refused: no number is presented as measured on hardware that
nobody measured."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
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
    calibration: dict = field(default_factory=lambda: {"scale": 1.0, "offset": 0.0})
    accuracy: dict | None = None
    power_mode: dict | None = None
    provenance: dict | None = None
    estimate: dict | None = None
    energy: dict | None = None
    schema_version: int = SCHEMA_VERSION

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


def load_profile(path: str | os.PathLike) -> Profile:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"hardware profile {p} does not exist; see hw_profiles/ for the shipped ones")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{p} is not valid YAML: {exc}") from None
    return profile_from_dict(data, str(p))
