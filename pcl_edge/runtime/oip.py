"""The Open Inference Protocol (KServe v2) request/response codec, framework-free: JSON tensors and the binary
tensor data extension (``Inference-Header-Content-Length``: a JSON header, then each tensor's raw bytes in order).
Every malformed request becomes a BadRequest with the reason."""

from __future__ import annotations

import json
import math

import numpy as np

from .errors import BadRequest

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "INT8": np.int8,
          "INT32": np.int32, "INT64": np.int64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
HEADER = "inference-header-content-length"
MAX_DIMS = 8
MAX_DIM = 2**31 - 1


def decode_request(body: bytes, header_length: str | None) -> tuple[dict, list[np.ndarray]]:
    """(request JSON, input arrays) from a JSON or binary-extension body."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if not 0 < n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
        head, rest = body[:n], memoryview(body)[n:]
    else:
        head, rest = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request JSON is nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise BadRequest("request needs a non-empty 'inputs' list")
    arrays, offset = [], 0
    for i, spec in enumerate(req["inputs"]):
        if not isinstance(spec, dict):
            raise BadRequest(f"inputs[{i}] is not an object")
        shape, dtype = spec.get("shape"), spec.get("datatype")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape):
            raise BadRequest(f"inputs[{i}].shape must be a list of at most {MAX_DIMS} integers in 0..{MAX_DIM}")
        if dtype not in DTYPES:
            raise BadRequest(f"inputs[{i}].datatype {dtype!r} is not one of {sorted(DTYPES)}")
        count = math.prod(shape)  # Python integers: no overflow
        if count * np.dtype(DTYPES[dtype]).itemsize > len(body) * 8 + 64:  # more elements than a body can carry
            raise BadRequest(f"inputs[{i}].shape {shape} holds more elements than the request carries")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            want = count * np.dtype(DTYPES[dtype]).itemsize
            if not isinstance(size, int) or size != want or offset + size > len(rest):
                raise BadRequest(f"inputs[{i}]: binary_data_size {size!r} does not match shape {shape} x {dtype} "
                                 f"({want} bytes) or the bytes sent")
            arr = np.frombuffer(rest[offset: offset + size], DTYPES[dtype]).reshape(shape)
            offset += size
        else:
            data = spec.get("data")
            if not isinstance(data, list):
                raise BadRequest(f"inputs[{i}] has neither 'data' nor binary_data_size")
            try:
                arr = np.asarray(data, dtype=DTYPES[dtype]).reshape(shape)
            except RecursionError:
                raise BadRequest(f"inputs[{i}].data is nested too deeply") from None
            except (ValueError, TypeError, OverflowError) as exc:
                raise BadRequest(f"inputs[{i}].data does not fit shape {shape} x {dtype}: {exc}") from None
        arrays.append(arr)
    if offset != len(rest):
        raise BadRequest(f"{len(rest) - offset} bytes of binary data follow that no input claims")
    return req, arrays


HTTP_OUTPUT_PARAMETERS = {"binary_data"}  # the HTTP binary extension's own; the core checks its own
HTTP_REQUEST_PARAMETERS = {"binary_data_output"}


def requested_outputs(req: dict, core_parameters: set[str]) -> list[tuple[str, dict]]:
    """(name, parameters) of each requested output; a parameter neither this transport nor the core reads is a
    400 that names it."""
    outs = req.get("outputs") or []
    if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outs):
        raise BadRequest("'outputs' must be a list of objects with a name")
    result = []
    for o in outs:
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"outputs[{o['name']!r}].parameters must be an object")
        unknown = sorted(set(params) - HTTP_OUTPUT_PARAMETERS - core_parameters)
        if unknown:
            raise BadRequest(f"output parameter(s) {unknown} not supported; this server reads "
                             f"{sorted(HTTP_OUTPUT_PARAMETERS | core_parameters)}")
        result.append((o["name"], params))
    return result


def encode_response(model: str, version: str, req: dict, outputs: list[tuple[str, str, np.ndarray]],
                    parameters: dict | None = None) -> tuple[bytes, dict[str, str]]:
    """Response body and headers; binary when the request asked for it (``binary_data`` on an output, or
    ``binary_data_output`` in the request parameters). ``outputs``: (name, datatype, array); BYTES arrays hold
    bytes objects (JSON: strings; binary: each element a 4-byte little-endian length, then its bytes)."""
    wanted = {o.get("name"): (o.get("parameters") or {}) for o in req.get("outputs") or [] if isinstance(o, dict)}
    binary_all = bool((req.get("parameters") or {}).get("binary_data_output"))
    head_outputs, blobs = [], []
    for name, datatype, arr in outputs:
        if wanted and name not in wanted:
            continue
        entry = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if binary_all or wanted.get(name, {}).get("binary_data"):
            raw = serialize_bytes(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [b.decode() for b in arr.ravel()]
        else:
            entry["data"] = np.ascontiguousarray(arr).ravel().tolist()
        head_outputs.append(entry)
    body = {"model_name": model, "model_version": version, "outputs": head_outputs}
    if "id" in req:
        body["id"] = req["id"]
    if parameters:
        body["parameters"] = parameters
    head = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER: str(len(head))}


def serialize_bytes(arr: np.ndarray) -> bytes:
    """The protocol's BYTES layout: per element (row-major) a uint32 little-endian length, then the bytes."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in arr.ravel())
