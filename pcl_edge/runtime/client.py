"""Python clients for both transports: the Open Inference Protocol over HTTP (binary tensors) and the serial
framing. Only numpy and the standard library (pyserial for a serial port given by name)."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request

import numpy as np

from .errors import BadRequest, RuntimeFailure
from .serial_protocol import ERROR, HEALTH, INFER, LIST, Frame, FrameReader, encode, tensor_frame


class HttpClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 10.0, token: str | None = None) -> None:
        self.url, self.timeout, self.token = url.rstrip("/"), timeout, token

    def _call(self, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[dict, bytes]:
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeFailure(f"HTTP {e.code}: {json.loads(e.read() or b'{}').get('error', e.reason)}") from None

    def ready(self) -> bool:
        try:
            return json.loads(self._call("/v2/health/ready")[1]).get("ready", False)
        except (OSError, RuntimeFailure):
            return False

    def metadata(self, task: str | int) -> dict:
        return json.loads(self._call(f"/v2/models/{task}")[1])

    def infer(self, task: str | int, x: np.ndarray, top_k: int = 0) -> tuple[np.ndarray, dict]:
        x = np.ascontiguousarray(x)
        dtype = {"float32": "FP32", "uint8": "UINT8"}.get(x.dtype.name)
        if dtype is None:
            raise BadRequest(f"send float32 tensors or uint8 images, not {x.dtype}")
        head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": dtype,
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True, **({"top_k": top_k} if top_k else {})}}).encode()
        headers, raw = self._call(f"/v2/models/{task}/infer", head + x.tobytes(),
                                  {"Inference-Header-Content-Length": str(len(head)),
                                   "Content-Type": "application/octet-stream"})
        n = int(headers["inference-header-content-length"])
        meta = json.loads(raw[:n])
        out = meta["outputs"][0]
        return np.frombuffer(raw[n: n + out["parameters"]["binary_data_size"]], np.float32).reshape(out["shape"]), \
            meta.get("parameters", {})


class SerialClient:
    def __init__(self, port, timeout: float = 5.0) -> None:
        if isinstance(port, str):
            from .serial_server import open_port

            port = open_port(port, 115200)
        self.port, self.timeout = port, timeout
        self.reader = FrameReader(port, frame_timeout=timeout)
        self._ids = itertools.count(1)

    def _request(self, frame: Frame) -> Frame:
        self.port.write(encode(frame))
        reply = self.reader.read(self.timeout)
        if reply is None:
            raise TimeoutError(f"no answer to request {frame.request_id} within {self.timeout} s")
        if reply.request_id != frame.request_id:
            raise RuntimeFailure(f"answer to request {reply.request_id}, expected {frame.request_id}")
        if reply.type == ERROR:
            raise RuntimeFailure(reply.json()["error"])
        return reply

    def infer(self, task_id: int, x: np.ndarray) -> np.ndarray:
        return self._request(tensor_frame(INFER, next(self._ids), task_id, x)).array()

    def tasks(self) -> list[dict]:
        return self._request(Frame(LIST, next(self._ids))).json()

    def health(self) -> dict:
        return self._request(Frame(HEALTH, next(self._ids))).json()
