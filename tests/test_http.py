"""The Open Inference Protocol service through a real uvicorn server on 127.0.0.1 (an ephemeral port)."""

import json
import os
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from pcl_edge.runtime import Router

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def server(bundles):  # noqa: F811
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    router = Router(bundles / "v0", backend="ort")
    with serving(create_app(router, TOKEN, max_body_bytes=1 << 20, allow_unsigned=True)) as url:
        yield url, router


def call(url, path, body=None, headers=None, method=None):
    req = urllib.request.Request(url + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def jbody(obj):
    return json.dumps(obj).encode(), {"content-type": "application/json"}


X = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)


def test_health_and_metadata(server):
    url, _ = server
    assert call(url, "/v2/health/live")[0] == 200 and call(url, "/v2/health/ready")[0] == 200
    meta = json.loads(call(url, "/v2")[2])
    assert meta["name"] == "pcl-edge" and "binary_tensor_data" in meta["extensions"]
    m = json.loads(call(url, "/v2/models/task_02")[2])
    assert m["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    assert m["parameters"]["task_id"] == 2 and m["parameters"]["class_names"] == ["2", "3"]
    assert json.loads(call(url, "/v2/models/2")[2])["name"] == "task_02"  # id and name both resolve
    assert call(url, "/v2/models/2/ready")[0] == 200


def test_json_infer_matches_the_router(server):
    url, router = server
    body, h = jbody({"id": "r1", "inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                             "data": X.ravel().tolist()}], "parameters": {"top_k": 1}})
    status, _, raw = call(url, "/v2/models/task_01/infer", body, h)
    assert status == 200
    res = json.loads(raw)
    out = np.array(res["outputs"][0]["data"], np.float32).reshape(res["outputs"][0]["shape"])
    np.testing.assert_allclose(out, router.infer(1, X).logits, rtol=1e-6)
    assert res["id"] == "r1" and res["parameters"]["top_k"][0][0]["class"] in ("0", "1")


def test_binary_tensor_extension_both_ways(server):
    url, router = server
    head = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                   "parameters": {"binary_data_size": X.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    status, headers, raw = call(url, "/v2/models/task_03/infer", head + X.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head)),
                                 "content-type": "application/octet-stream"})
    assert status == 200
    n = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    meta = json.loads(raw[:n])
    out = np.frombuffer(raw[n:], np.float32).reshape(meta["outputs"][0]["shape"])
    np.testing.assert_array_equal(out, router.infer(3, X).logits)


def test_uint8_images_are_preprocessed(server):
    url, router = server
    img = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 1), dtype=np.uint8)
    body, h = jbody({"inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "UINT8",
                                 "data": img.ravel().tolist()}]})
    res = json.loads(call(url, "/v2/models/1/infer", body, h)[2])
    np.testing.assert_allclose(res["outputs"][0]["data"], router.infer(1, img, preprocess=True).logits.ravel(),
                               rtol=1e-6)


_LIE = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                               "parameters": {"binary_data_size": 256}}]}).encode()
BAD = [
    ("/v2/models/task_09/infer", b'{"inputs": []}', {}, 404, "unknown task"),
    ("/v2/models/1/infer", b"{not json", {}, 400, "not valid JSON"),
    ("/v2/models/1/infer", b'{"inputs": []}', {}, 400, "non-empty 'inputs'"),
    ("/v2/models/1/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                                   "data": [0.0] * 192}]}).encode(), {}, 400, "shape [N, 1, 8, 8]"),
    ("/v2/models/1/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                   "data": [0.0] * 3}]}).encode(), {}, 400, "does not fit shape"),
    ("/v2/models/1/infer", json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "BF17",
                                                   "data": []}]}).encode(), {}, 400, "datatype"),
    ("/v2/models/1/infer", _LIE + b"\0" * 10, {"Inference-Header-Content-Length": str(len(_LIE))}, 400,
     "binary_data_size"),  # the header says 256 bytes follow; 10 do
    ("/v2/models/1/infer", b"{}", {"Inference-Header-Content-Length": "999"}, 400, "does not fit a body"),
]


@pytest.mark.parametrize("path,body,headers,status,match", BAD)
def test_bad_requests_get_the_right_code_and_the_service_keeps_serving(server, path, body, headers, status, match):
    url, _ = server
    code, _, raw = call(url, path, body, headers)
    assert code == status and match in json.loads(raw)["error"]
    ok, _h = jbody({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]})
    assert call(url, "/v2/models/1/infer", ok, _h)[0] == 200


def test_an_oversized_body_is_refused_from_its_declared_length(server):
    """413 comes from Content-Length alone, before the body: the client sends only the headers and 1 KB."""
    import http.client

    url, _ = server
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    conn.putrequest("POST", "/v2/models/1/infer")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders()
    conn.send(b"x" * 1024)
    r = conn.getresponse()
    assert r.status == 413 and "exceeds" in json.loads(r.read())["error"]
    conn.close()
    ok, h = jbody({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]})
    assert call(url, "/v2/models/1/infer", ok, h)[0] == 200


def test_statistics_and_metrics(server):
    url, _ = server
    stats = json.loads(call(url, "/v2/models/task_01/stats")[2])["model_stats"][0]
    assert stats["name"] == "task_01" and stats["execution_count"] >= 1
    text = call(url, "/metrics")[2].decode()
    assert count_of(text, "task_01", "ok") >= 1 and "pcl_edge_bundle_version" in text
    assert 'pcl_edge_bundle_info{digest="' in text


def count_of(text, task, outcome):
    """pcl_edge_requests_total{task, outcome} read with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return next((int(s.value) for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "pcl_edge_requests_total" and s.labels == {"task": task, "outcome": outcome}), 0)


def test_every_inference_request_is_counted_by_outcome(server):
    url, router = server

    count = count_of

    before = call(url, "/metrics")[2].decode()
    call(url, "/v2/models/task_02/infer", b"{not json", {})  # a parse error is a client error too
    call(url, "/v2/models/task_99/infer", b"{}", {})
    after = call(url, "/metrics")[2].decode()
    assert count(after, "task_02", "client_error") == count(before, "task_02", "client_error") + 1
    assert count(after, "unknown", "client_error") == count(before, "unknown", "client_error") + 1
    errors = next(ln for ln in after.splitlines() if ln.startswith('pcl_edge_errors_total{task="task_02"}'))
    assert int(float(errors.split()[-1])) >= 1


def test_admin_needs_the_token_and_activates_a_new_bundle_while_serving(server, bundles, caplog):  # noqa: F811
    url, router = server
    assert call(url, "/v2/repository/index", b"", method="POST")[0] == 401
    assert call(url, "/v2/repository/index", b"", {"Authorization": "Bearer wrong"}, "POST")[0] == 401
    refused = [r.getMessage() for r in caplog.records if "refused admin call" in r.getMessage()]
    assert len(refused) == 2 and not any("Bearer" in m or TOKEN in m for m in refused)  # logged, never a token
    auth = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    assert call(url, "/v2/repository/models/task_02/load", b"", auth, "POST")[0] == 200
    index = json.loads(call(url, "/v2/repository/index", b"", auth, "POST")[2])
    assert {"name": "task_02", "version": "1", "state": "READY", "reason": "loaded"} in index
    bad = call(url, "/v2/admin/activate", json.dumps({"bundle": str(bundles / "missing")}).encode(), auth, "POST")
    assert bad[0] == 400 and "does not exist" in json.loads(bad[2])["error"]
    assert call(url, "/v2/models/task_05")[0] == 404  # v0 has 3 tasks
    status, _, raw = call(url, "/v2/admin/activate", json.dumps({"bundle": str(bundles / "v1")}).encode(), auth,
                          "POST")
    assert status == 200 and json.loads(raw)["tasks"][-1] == "task_05"
    assert call(url, "/v2/models/task_05")[0] == 200


def test_readiness_answers_from_one_definition(server):
    url, router = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok, h = jbody({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]})

    def index_state(name):
        index = json.loads(call(url, "/v2/repository/index", b"", auth, "POST")[2])
        return next((e["state"], e["reason"]) for e in index if e["name"] == name)

    router.unload("task_03")
    router.version.unloaded.discard(router.resolve("task_03")["id"])  # a task never loaded: lazily READY
    assert index_state("task_03") == ("READY", "loads on first request")
    assert json.loads(call(url, "/v2/models/task_03/ready")[2])["ready"] is True
    assert call(url, "/v2/repository/models/task_03/unload", b"", auth, "POST")[0] == 200
    assert index_state("task_03") == ("UNAVAILABLE", "unloaded")
    assert call(url, "/v2/models/task_03/ready")[0] == 400
    code, _, raw = call(url, "/v2/models/task_03/infer", ok, h)
    assert code == 503 and "unloaded" in json.loads(raw)["error"]
    assert call(url, "/v2/repository/models/task_03/load", b"", auth, "POST")[0] == 200
    assert index_state("task_03") == ("READY", "loaded") and call(url, "/v2/models/task_03/infer", ok, h)[0] == 200


def test_pcl_edge_serve_runs_without_torch(bundles, tmp_path):  # noqa: F811

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests._isolation import popen_without

    proc = popen_without(("torch",), "import sys\nfrom pcl_edge.cli import main\n"
                         f"sys.exit(main(['-q', 'serve', {str(bundles / 'v1')!r}, '--port', '{port}', '--backend', "
                         "'ort']))")
    try:
        deadline, status = time.time() + 60, None
        while time.time() < deadline and proc.poll() is None:
            try:
                status = call(f"http://127.0.0.1:{port}", "/v2/health/ready")[0]
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200, proc.stderr.read().decode() if proc.poll() is not None else "no answer"
        body, h = jbody({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                     "data": [0.0] * 64}]})
        assert call(f"http://127.0.0.1:{port}", "/v2/models/task_04/infer", body, h)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_unknown_input_and_output_names_are_400_with_the_names_that_exist(server):
    url, _ = server
    bad_in, h = jbody({"inputs": [{"name": "foo", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]})
    code, _, raw = call(url, "/v2/models/1/infer", bad_in, h)
    assert code == 400 and "unknown input 'foo'" in json.loads(raw)["error"] and "'input'" in json.loads(raw)["error"]
    bad_out, h = jbody({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}],
                        "outputs": [{"name": "probs"}]})
    code, _, raw = call(url, "/v2/models/1/infer", bad_out, h)
    assert code == 400 and "probs" in json.loads(raw)["error"] and "logits" in json.loads(raw)["error"]


def test_every_error_body_is_json_and_the_model_config_answers_as_triton_does(server, caplog):
    url, _ = server
    for path, method, status in (("/v2/nothing/here", "GET", 404), ("/v2/models/1/infer", "GET", 405)):
        code, headers, raw = call(url, path, method=method)
        assert code == status and "error" in json.loads(raw)
        assert any(f"{method} {path} -> {status}" in r.getMessage() for r in caplog.records)  # 4xx are logged
    code, _, raw = call(url, "/v2/models/task_02/config")
    cfg = json.loads(raw)
    assert code == 200 and cfg["name"] == "task_02" and cfg["input"][0]["dims"] == [1, 8, 8]
    assert cfg["output"][0]["dims"] == [2] and json.loads(cfg["parameters"]["input_mean"]["string_value"])


def _off_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def test_parsing_a_request_body_runs_off_the_event_loop(server, monkeypatch):
    """A JSON body of up to the size limit takes a while to parse: done on the event loop, every health check
    would wait behind it (issue 22 item 5)."""
    from pcl_edge.runtime import http, oip

    url, _ = server
    where = []
    monkeypatch.setattr(http, "decode_request", lambda *a: where.append(_off_loop()) or oip.decode_request(*a))
    ok, h = jbody({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]})
    assert call(url, "/v2/models/task_01/infer", ok, h)[0] == 200 and where == [True]


def test_a_client_that_trickles_its_body_is_cut_off_and_health_answers_meanwhile(bundles):
    import socket

    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    router = Router(bundles / "v0", backend="ort")
    with serving(create_app(router, TOKEN, body_timeout_s=0.5)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v2/models/task_01/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            t0 = time.monotonic()
            assert call(url, "/v2/health/live")[0] == 200  # the event loop is free
            s.settimeout(10)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5


def test_an_upload_writes_and_fsyncs_off_the_event_loop(bundles, tmp_path, monkeypatch):
    import shutil

    from pcl_edge.bundle import pack_bundle
    from pcl_edge.runtime import ota
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    shutil.copytree(bundles / "v0", tmp_path / "v0")
    pack_bundle(bundles / "v1", tmp_path / "v1.tar")
    where = []

    class Recording:
        def __init__(self, path, mode):
            self.fh = open(path, mode)  # noqa: SIM115

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            where.append(_off_loop())
            return self.fh.write(data)

        def flush(self):
            where.append(_off_loop())
            self.fh.flush()

        def fileno(self):
            return self.fh.fileno()

    monkeypatch.setattr(ota, "_open", Recording)
    router = Router(tmp_path / "v0", backend="ort", store=tmp_path / "store")
    with serving(create_app(router, TOKEN, allow_unsigned=True)) as url:
        req = urllib.request.Request(url + "/v2/admin/bundle", data=(tmp_path / "v1.tar").read_bytes(), method="PUT",
                                     headers={"authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
    assert where and all(where)


@pytest.mark.parametrize("body,match", [
    ({"inputs": [{"name": "input", "shape": [2**64, 1], "datatype": "FP32", "data": [0.0]}]}, "integers in 0.."),
    ({"inputs": [{"name": "input", "shape": [2**31 - 1] * 4, "datatype": "FP32", "data": [0.0]}]}, "more elements"),
], ids=["above-2^63", "absurd-product"])
def test_absurd_shapes_are_a_400_not_a_500(server, body, match):
    url, _ = server
    status, _, raw = call(url, "/v2/models/task_01/infer", json.dumps(body).encode(),
                          {"content-type": "application/json"}, "POST")
    assert status == 400 and match in json.loads(raw)["error"], raw


def test_deeply_nested_json_is_a_400_not_a_500(server):
    url, _ = server
    deep = b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ' + b"[" * 100_000 + \
        b"]" * 100_000 + b"}]}"
    status, _, raw = call(url, "/v2/models/task_01/infer", deep, {"content-type": "application/json"}, "POST")
    assert status == 400 and "nested too deeply" in json.loads(raw)["error"]


@pytest.mark.parametrize("header,status", [(f"Bearer {TOKEN}", 200), (f"bearer {TOKEN}", 200),
                                           (f"BEARER  {TOKEN}", 200), (f"Basic {TOKEN}", 401), (TOKEN, 401)])
def test_the_bearer_scheme_is_case_insensitive(server, header, status):
    url, _ = server
    assert call(url, "/v2/repository/index", b"", {"Authorization": header}, "POST")[0] == status


def test_task_names_are_escaped_in_prometheus_labels(bundles, tmp_path):
    import shutil

    from pcl_edge.bundle.manifest import seal
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    shutil.copytree(bundles / "v0", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m["tasks"][0]["name"] = 'evil"} 1\nfake_metric{x="'
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(seal({k: v for k, v in m.items()
                                                                    if k != "manifest_sha256"})))
    with serving(create_app(Router(tmp_path / "b", backend="ort"))) as url:
        text = call(url, "/metrics")[2].decode()
    assert not any(line.startswith("fake_metric") for line in text.splitlines())
    assert 'task="evil\\"} 1\\nfake_metric{x=\\""' in text


def test_a_large_json_body_is_parsed_in_a_worker_process(bundles):
    """CPython's JSON parser holds the GIL for the whole parse: a body over 1 MiB goes to a worker process, so the
    event loop keeps answering; the answer is the same as for a small body."""
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    app = create_app(Router(bundles / "v0", backend="ort"))
    big = json.dumps({"inputs": [{"name": "input", "shape": [3000, 1, 8, 8], "datatype": "FP32",
                                  "data": [0.25] * (3000 * 64)}]}).encode()
    assert len(big) > 1 << 20
    with serving(app) as url:
        status, _, raw = call(url, "/v2/models/task_01/infer", big, {"content-type": "application/json"}, "POST")
        assert status == 400 and "batch size 3000" in json.loads(raw)["error"]
        one = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                      "data": [0.25] * 64}]}).encode()
        assert call(url, "/v2/models/task_01/infer", one, {"content-type": "application/json"}, "POST")[0] == 200
        pool = app.state.decoder._pool
        assert app.state.decoder.in_process == 1 and pool is not None
        assert pool._processes and os.getpid() not in pool._processes  # a process of its own, not a thread
