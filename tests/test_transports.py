"""Nothing kills a transport (issue 13): whatever a backend raises becomes an error answer (HTTP 500 with a message,
a serial ERROR frame) and the transport keeps serving; a request answers from one bundle version start to end."""

import json
import os
import threading
import tty

import numpy as np
import pytest

from pcl_edge.runtime import Router
from pcl_edge.runtime.backends import BACKENDS
from pcl_edge.runtime.backends.ort import OrtSession

FAULT: dict = {"exc": None}
ERRORS = [ValueError("bad value inside the backend"), RuntimeError("CUDA error 700"), KeyError("binding"),
          OSError("device gone"), MemoryError("out of device memory"), ZeroDivisionError("division by zero"),
          AssertionError("invariant")]


class FlakySession(OrtSession):
    """onnxruntime, except that ``run`` raises ``FAULT["exc"]`` while it is set."""

    def run(self, x):
        if FAULT["exc"] is not None:
            raise FAULT["exc"]
        return super().run(x)


@pytest.fixture
def flaky():
    BACKENDS.register("flaky")(FlakySession) if "flaky" not in BACKENDS.names() else None
    FAULT["exc"] = None
    yield FAULT
    FAULT["exc"] = None


X = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_a_backend_failure_is_a_runtime_failure_with_its_message(bundles, flaky, exc):  # noqa: F811
    from pcl_edge.runtime import RuntimeFailure

    r = Router(bundles / "v1", backend="flaky")
    r.load(1)  # opened and self-tested while healthy
    flaky["exc"] = exc
    with pytest.raises(RuntimeFailure, match=type(exc).__name__) as info:
        r.infer(1, X)
    assert info.value.status == 500 and r.stats[1].errors == 1
    flaky["exc"] = None
    assert r.infer(1, X).logits.shape == (2, 2)


def test_http_answers_500_for_every_backend_failure_and_keeps_serving(bundles, flaky):  # noqa: F811
    pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
    import urllib.error
    import urllib.request

    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                   "data": X.ravel().tolist()}]}).encode()

    def post():
        req = urllib.request.Request(f"{url}/v2/models/1/infer", data=body,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with serving(create_app(Router(bundles / "v1", backend="flaky"))) as url:
        assert post()[0] == 200  # the session opens (and self-tests) while healthy
        for exc in ERRORS:
            flaky["exc"] = exc
            status, answer = post()
            assert status == 500 and type(exc).__name__ in answer["error"], (exc, answer)
            flaky["exc"] = None
            status, answer = post()
            assert status == 200 and answer["outputs"][0]["shape"] == [2, 2]


def test_serial_answers_an_error_frame_for_every_backend_failure_and_keeps_serving(bundles, flaky):  # noqa: F811
    pytest.importorskip("serial", reason="pyserial is not installed")
    from pcl_edge.runtime.client import SerialClient
    from pcl_edge.runtime.errors import RuntimeFailure
    from pcl_edge.runtime.serial_server import SerialServer, open_port
    from tests.test_serial import FdPort

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    server = SerialServer(Router(bundles / "v1", backend="flaky"), open_port(os.ttyname(slave), 115200, timeout=0.05))
    real_read, broken = server.reader.read, {"left": 2}

    def read(timeout):  # the port itself fails twice: the loop logs, pauses and goes on
        if broken["left"]:
            broken["left"] -= 1
            raise OSError("port error")
        return real_read(timeout)

    server.reader.read = read
    thread = threading.Thread(target=server.serve_forever, kwargs={"retry_s": 0.01}, daemon=True)
    thread.start()
    try:
        client = SerialClient(FdPort(master), timeout=10)
        assert client.infer(1, X).shape == (2, 2)  # the session opens (and self-tests) while healthy
        for exc in ERRORS:
            flaky["exc"] = exc
            with pytest.raises(RuntimeFailure, match=type(exc).__name__):
                client.infer(1, X)
            flaky["exc"] = None
            assert client.infer(1, X).shape == (2, 2)
        assert thread.is_alive() and broken["left"] == 0 and server.errors >= 2 + len(ERRORS)
    finally:
        server.stop()
        thread.join(timeout=5)
        os.close(master)
        os.close(slave)


def test_a_request_answers_from_one_version_and_says_which(bundles):  # noqa: F811
    """An activation that lands while a request is in flight: the answer comes from the version the router used,
    and every version field of the response names that one."""
    pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
    from pcl_edge.runtime.http import create_app

    class Racing(Router):
        def infer(self, *a, **kw):  # the activation lands after the HTTP handler looked the task up
            if self.version.digest == v0:
                self.activate(bundles / "v1")
            return super().infer(*a, **kw)

    r = Racing(bundles / "v0", backend="ort")
    v0 = r.version.digest
    app = create_app(r)
    route = next(x for x in app.routes if getattr(x, "path", "") == "/v2/models/{model}/infer")

    import asyncio

    from starlette.requests import Request

    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                   "data": X.ravel().tolist()}]}).encode()

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v2/models/task_02/infer", "headers": [],
             "query_string": b"", "path_params": {"model": "task_02"}}
    answer = json.loads(asyncio.run(route.endpoint(Request(scope, receive))).body)
    active = r.version
    assert active.digest != v0 and answer["parameters"]["bundle_digest"] == active.digest
    assert answer["model_version"] == str(active.bundle_version) == str(answer["parameters"]["bundle_version"])
