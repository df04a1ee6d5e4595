"""A framed binary protocol for microcontroller hosts on a serial line (pyserial), documented here and in
deploy/README.md. Little-endian; one frame:

    offset size  field
    0      2     magic 0xA5 0x5A
    2      1     version (2)
    3      1     type: 1 INFER, 2 RESULT, 3 LIST, 4 TASKS, 5 HEALTH, 6 STATUS, 7 ERROR
    4      4     request id (uint32, echoed in the answer)
    8      2     task id (uint16; 0 when not applicable)
    10     1     dtype: 0 none, 1 FP32, 2 UINT8 (UINT8 = images HWC, normalised on the device)
    11     1     ndim (0..8)
    12     4*n   shape, uint32 each
    ..     4     payload length (uint32, <= MAX_PAYLOAD)
    ..     4     header CRC-32 (zlib) of every byte from version to the end of the length
    ..     len   payload (tensor bytes, or UTF-8 JSON for TASKS / STATUS / ERROR)
    ..     4     payload CRC-32 (zlib) of the payload

A reader scans for the magic, so garbage between frames is skipped (re-synchronisation). The header has a CRC of
its own, checked before the payload is awaited: noise in the length field costs one dropped frame, never the frames
after it. A frame whose header is impossible or fails its CRC, whose payload fails its CRC, or that stops arriving
within the frame timeout (checked on every read, however busy the line) is dropped and answered with an ERROR frame
when its request id can be trusted (the header CRC held). ERROR payload: {"code": int, "error": str}.

Version 1 (one CRC over header and payload) is not read: its length field was trusted before any check."""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"\xa5\x5a"
VERSION = 2
INFER, RESULT, LIST, TASKS, HEALTH, STATUS, ERROR = range(1, 8)
DTYPES = {0: None, 1: np.float32, 2: np.uint8}
DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2}
MAX_NDIM = 8
MAX_PAYLOAD = 4 << 20
_HEAD = struct.Struct("<BBIHBB")  # version, type, request id, task id, dtype, ndim


class FrameError(ValueError):
    """A frame that cannot be trusted; ``request_id`` is set when it could be read."""

    def __init__(self, msg: str, request_id: int | None = None) -> None:
        super().__init__(msg)
        self.request_id = request_id


@dataclass(frozen=True)
class Frame:
    type: int
    request_id: int
    task_id: int = 0
    dtype: int = 0
    shape: tuple[int, ...] = ()
    payload: bytes = b""

    def array(self) -> np.ndarray:
        dt = DTYPES.get(self.dtype)
        if dt is None:
            raise FrameError(f"frame carries no tensor (dtype {self.dtype})", self.request_id)
        want = int(np.prod(self.shape, dtype=np.int64)) * np.dtype(dt).itemsize
        if want != len(self.payload):
            raise FrameError(f"payload of {len(self.payload)} bytes does not match shape {list(self.shape)}",
                             self.request_id)
        return np.frombuffer(self.payload, dt).reshape(self.shape)

    def json(self):
        return json.loads(self.payload.decode())


def encode(frame: Frame) -> bytes:
    if len(frame.shape) > MAX_NDIM or len(frame.payload) > MAX_PAYLOAD:
        raise FrameError("frame too large")
    head = _HEAD.pack(VERSION, frame.type, frame.request_id & 0xFFFFFFFF, frame.task_id, frame.dtype,
                      len(frame.shape)) + struct.pack(f"<{len(frame.shape)}I", *frame.shape) + \
        struct.pack("<I", len(frame.payload))
    return MAGIC + head + struct.pack("<I", zlib.crc32(head)) + frame.payload + \
        struct.pack("<I", zlib.crc32(frame.payload))


def tensor_frame(type_: int, request_id: int, task_id: int, x: np.ndarray) -> Frame:
    x = np.ascontiguousarray(x)
    code = DTYPE_CODES.get(x.dtype)
    if code is None:
        raise FrameError(f"dtype {x.dtype} cannot travel in a frame (FP32 or UINT8)")
    return Frame(type_, request_id, task_id, code, tuple(int(d) for d in x.shape), x.tobytes())


def json_frame(type_: int, request_id: int, obj, task_id: int = 0) -> Frame:
    return Frame(type_, request_id, task_id, 0, (), json.dumps(obj, separators=(",", ":")).encode())


class FrameReader:
    """Pulls frames out of a byte stream (``port.read(n)`` returning b"" on timeout), re-synchronising on the
    magic after garbage. ``read()`` returns a Frame, raises FrameError for a bad one, or returns None when nothing
    arrives before ``idle_timeout``."""

    def __init__(self, port, frame_timeout: float = 2.0) -> None:
        self.port, self.frame_timeout, self.buf = port, frame_timeout, bytearray()
        self.skipped = 0  # garbage bytes dropped while re-synchronising

    def _fill(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:  # bounded by the deadline, checked after every read (a busy line never empties)
            chunk = self.port.read(n - len(self.buf))
            if chunk:
                self.buf += chunk
            if len(self.buf) < n and time.monotonic() > deadline:
                return False
        return True

    def read(self, idle_timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + idle_timeout
        while True:  # bounded by the deadline: each pass consumes bytes or waits one port timeout
            i = self.buf.find(MAGIC)
            if i >= 0:
                self.skipped += i
                del self.buf[:i]
                return self._frame()
            keep = 1 if self.buf[-1:] == MAGIC[:1] else 0  # a magic split across two reads
            self.skipped += len(self.buf) - keep
            del self.buf[: len(self.buf) - keep]
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            if chunk:
                self.buf += chunk
            elif time.monotonic() > deadline:
                return None

    def _frame(self) -> Frame:
        deadline = time.monotonic() + self.frame_timeout
        if not self._fill(2 + _HEAD.size, deadline):
            return self._drop("frame header did not arrive in time")
        version, type_, rid, task, dtype, ndim = _HEAD.unpack_from(self.buf, 2)
        if version != VERSION or not INFER <= type_ <= ERROR or ndim > MAX_NDIM or dtype not in DTYPES:
            return self._drop(f"impossible header (version {version}, type {type_}, ndim {ndim}, dtype {dtype})")
        n_shape = 2 + _HEAD.size + 4 * ndim
        if not self._fill(n_shape + 8, deadline):
            return self._drop("frame header did not arrive in time")
        (length, head_crc) = struct.unpack_from("<II", self.buf, n_shape)
        if zlib.crc32(bytes(self.buf[2: n_shape + 4])) != head_crc:
            return self._drop("header CRC mismatch")  # nothing in it can be trusted, the request id included
        shape = struct.unpack_from(f"<{ndim}I", self.buf, 2 + _HEAD.size)
        if length > MAX_PAYLOAD:
            return self._drop(f"payload length {length} exceeds {MAX_PAYLOAD}", rid)
        start = n_shape + 8
        total = start + length + 4
        if not self._fill(total, deadline):
            return self._drop("frame truncated (timeout)", rid)
        payload = bytes(self.buf[start: start + length])
        (crc,) = struct.unpack_from("<I", self.buf, total - 4)
        if zlib.crc32(payload) != crc:
            return self._drop("CRC mismatch", rid)
        del self.buf[:total]
        return Frame(type_, rid, task, dtype, tuple(shape), payload)

    def _drop(self, why: str, rid: int | None = None):
        del self.buf[:2]  # skip this magic; the scan finds the next frame
        raise FrameError(why, rid)
