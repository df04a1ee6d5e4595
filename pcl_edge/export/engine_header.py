"""Engine files carry their metadata: a small header before the serialized TensorRT plan.

    b"PCLENG1\\n" | uint32 little-endian header length | header JSON (utf-8) | plan bytes

An engine is tied to the GPU and the TensorRT version that built it, so a header that does not match the model,
precision, TensorRT version or GPU asked for means: rebuild, never load a silently wrong engine."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAGIC = b"PCLENG1\n"


class EngineMismatch(ValueError):
    """An engine file that does not belong to this model / precision / TensorRT / GPU."""


@dataclass(frozen=True)
class EngineHeader:
    model_sha256: str
    precision: str
    tensorrt_version: str
    gpu: str
    max_batch: int
    build_flags: dict = field(default_factory=dict)

    def key(self) -> str:
        """Cache file name: one engine per (model hash, TensorRT version, GPU, precision)."""
        gpu = "".join(c if c.isalnum() else "-" for c in self.gpu).strip("-").lower()
        return f"{self.model_sha256[:16]}-trt{self.tensorrt_version}-{gpu}-{self.precision}.engine"

    def check(self, expected: EngineHeader) -> None:
        for name in ("model_sha256", "precision", "tensorrt_version", "gpu", "max_batch"):
            got, want = getattr(self, name), getattr(expected, name)
            if got != want:
                raise EngineMismatch(f"engine was built for {name}={got!r}, this device needs {want!r}: rebuild it")


def write_engine(path: Path, header: EngineHeader, plan: bytes) -> None:
    from .._io import atomic_open

    blob = json.dumps(asdict(header), sort_keys=True).encode()
    with atomic_open(path, "wb") as fh:
        fh.write(MAGIC + struct.pack("<I", len(blob)) + blob + bytes(plan))


def read_engine(path: Path) -> tuple[EngineHeader, bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise EngineMismatch(f"{path} is not a pcl-edge engine (no header): rebuild it")
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = EngineHeader(**json.loads(data[start: start + n]))
    except (ValueError, TypeError) as exc:
        raise EngineMismatch(f"{path} has a damaged header ({exc}): rebuild it") from None
    plan = data[start + n:]
    if not plan:
        raise EngineMismatch(f"{path} holds a header but no engine: rebuild it")
    return header, plan
