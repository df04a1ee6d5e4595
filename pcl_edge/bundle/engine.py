"""One ``EngineSpec`` for every command that builds or loads a TensorRT engine (``build-engines``, ``serve``, the
runtime session, the TensorRT timing backend), and engine files that carry it.

    b"PCLENG2\\n" | uint32 little-endian header length | header JSON (utf-8) | plan bytes

An engine is tied to the model, the GPU and the TensorRT version that built it and to its build settings; its file
name is the model's sha256 plus a digest of the whole spec, so ``build-engines`` then ``serve`` then a restart find
the same file, and a different spec (another max batch, another precision) never overwrites it. A header that does
not match what is asked for means: rebuild, never load a silently wrong engine."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

MAGIC = b"PCLENG2\n"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 32  # the one default: build-engines, serve, the runtime session and the router all use it


class EngineMismatch(ValueError):
    """An engine file that does not belong to this model / spec / TensorRT / GPU."""


@dataclass(frozen=True)
class EngineSpec:
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1  # the edge case: one request at a time
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = 256
    tensorrt_version: str = ""  # filled on the device (``for_device``)
    gpu: str = ""
    build_flags: tuple[str, ...] = ()  # extra TensorRT builder flags by name, recorded for the cache key
    dla_core: int | None = None  # Orin's deep-learning accelerators: build for DLA core N (GPU fallback for the rest)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min_batch ({self.min_batch}) <= opt_batch ({self.opt_batch}) <= max_batch "
                             f"({self.max_batch})")
        if self.workspace_mb < 1:
            raise ValueError(f"workspace_mb must be >= 1 (got {self.workspace_mb})")
        if self.dla_core is not None and not (isinstance(self.dla_core, int) and 0 <= self.dla_core <= 7):
            raise ValueError(f"dla_core must be a DLA core index (0, 1, ...), got {self.dla_core!r}")
        if self.dla_core is not None and self.precision == "fp32":
            raise ValueError("DLA runs fp16 or int8, not fp32: pass --precision fp16 with --dla-core")
        object.__setattr__(self, "build_flags", tuple(sorted(self.build_flags)))

    def for_device(self, trt, gpu: str | None = None) -> EngineSpec:
        """This spec on this device: the TensorRT version and the GPU filled in."""
        from .tensorrt_builder import gpu_name

        return replace(self, tensorrt_version=str(trt.__version__), gpu=gpu if gpu is not None else gpu_name())

    def digest(self) -> str:
        fields = asdict(self)
        if fields["dla_core"] is None:  # specs without DLA keep the keys they had before the field existed
            del fields["dla_core"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def key(self, model_sha256: str) -> str:
        """Cache file name: the model's hash and everything ``check`` compares."""
        gpu = "".join(c if c.isalnum() else "-" for c in self.gpu).strip("-").lower() or "gpu"
        dla = f"-dla{self.dla_core}" if self.dla_core is not None else ""
        return (f"{model_sha256[:16]}-trt{self.tensorrt_version}-{gpu}-{self.precision}{dla}-{self.digest()[:12]}"
                ".engine")


@dataclass(frozen=True)
class EngineHeader:
    model_sha256: str
    spec: EngineSpec

    def key(self) -> str:
        return self.spec.key(self.model_sha256)

    def check(self, expected: EngineHeader) -> None:
        if self.model_sha256 != expected.model_sha256:
            raise EngineMismatch(f"engine was built for model {self.model_sha256[:16]}, this task needs "
                                 f"{expected.model_sha256[:16]}: rebuild it")
        for name in EngineSpec.__dataclass_fields__:
            got, want = getattr(self.spec, name), getattr(expected.spec, name)
            if got != want:
                raise EngineMismatch(f"engine was built for {name}={got!r}, this device needs {want!r}: rebuild it")


_LEDGER_LOCK = threading.Lock()


class EngineLedger:
    """What this service itself built (or recorded): engine file -> the sha256 of the model bytes it was built from
    and of its plan. It lives where only the service writes (its bundle store), not in the engine cache, so an
    engine planted in the cache with a forged header is never loaded: a plan whose sha256 is not recorded here, or
    no longer matches, is rebuilt. Rewritten atomically."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def _read(self) -> dict:
        try:
            raw = json.loads(self.path.read_text())
            return raw if isinstance(raw, dict) else {}
        except (OSError, ValueError):
            return {}

    def matches(self, name: str, model_sha256: str, plan: bytes) -> bool:
        entry = self._read().get(name) or {}
        return entry.get("model_sha256") == model_sha256 and entry.get("plan_sha256") == \
            hashlib.sha256(plan).hexdigest()

    def record(self, name: str, model_sha256: str, plan: bytes) -> None:
        """Add an entry: read, modify and write under a lock held across threads and processes (a lazy load and an
        activation, or build-engines and the service, may build at the same time), so no entry is lost."""
        import fcntl

        from .._io import atomic_open

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _LEDGER_LOCK, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            entries[name] = {"model_sha256": model_sha256, "plan_sha256": hashlib.sha256(plan).hexdigest()}
            with atomic_open(self.path, "w") as fh:
                json.dump(entries, fh, indent=1, sort_keys=True)


def engine_dir(bundle: str | os.PathLike) -> Path:
    """Where a bundle's engines live by default: next to the bundle as given (a directory or a .tar), never inside
    a per-start unpack directory, so engines are reused across restarts."""
    p = Path(bundle)
    return p.with_name(p.name + ".engines")


def write_engine(path: Path, header: EngineHeader, plan: bytes) -> None:
    from .._io import atomic_open

    blob = json.dumps({"model_sha256": header.model_sha256, "spec": asdict(header.spec)}, sort_keys=True).encode()
    with atomic_open(path, "wb") as fh:
        fh.write(MAGIC + struct.pack("<I", len(blob)) + blob + bytes(plan))


def read_engine(path: Path) -> tuple[EngineHeader, bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise EngineMismatch(f"{path} is not a pcl-edge engine of this version (no header): rebuild it")
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        raw = json.loads(data[start: start + n])
        spec = raw["spec"]
        header = EngineHeader(raw["model_sha256"], EngineSpec(**{**spec, "build_flags": tuple(spec["build_flags"])}))
    except (ValueError, TypeError, KeyError) as exc:
        raise EngineMismatch(f"{path} has a damaged header ({exc}): rebuild it") from None
    plan = data[start + n:]
    if not plan:
        raise EngineMismatch(f"{path} holds a header but no engine: rebuild it")
    return header, plan
