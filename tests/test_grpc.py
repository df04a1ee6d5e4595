"""The service over gRPC (issue 23 items 1-3), tested with Triton's own clients: ``tritonclient.grpc`` against the
gRPC transport, ``tritonclient.http`` against the HTTP one, both over one service core."""

import numpy as np
import pytest

from pcl_edge.runtime import Router

grpcclient = pytest.importorskip("tritonclient.grpc", reason="the gRPC transport needs the 'grpc' extra")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] compares the two transports")
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "grpc-token-0123456789abcdef"


@pytest.fixture(scope="module")
def device(bundles):
    from pcl_edge.runtime.grpc_server import create_grpc_server
    from pcl_edge.runtime.http import create_app
    from pcl_edge.runtime.service import ServiceCore
    from tests._server import serving

    core = ServiceCore(Router(bundles / "v1", backend="ort"), TOKEN)
    server = create_grpc_server(core, "127.0.0.1", 0)
    try:
        with serving(create_app(core.router, core=core)) as url:
            yield (grpcclient.InferenceServerClient(f"127.0.0.1:{server.pcl_port}"),
                   httpclient.InferenceServerClient(url.removeprefix("http://")), core, url)
    finally:
        server.stop(0)


def x_for(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def infer(client, module, task, x, outputs=None, **kw):
    inp = module.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(task, [inp], outputs=outputs, **kw)


def test_health_and_metadata_over_grpc(device):
    g, _, core, _ = device
    assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("task_03")
    meta = g.get_server_metadata(as_json=True)
    assert meta["name"] == "pcl-edge" and "classification" in meta["extensions"]
    m = g.get_model_metadata("task_03", as_json=True)
    assert m["versions"] == ["2"] and m["inputs"][0]["name"] == "input" and m["inputs"][0]["shape"] == ["-1", "1",
                                                                                                         "8", "8"]
    assert g.get_model_metadata("task_03", model_version="2", as_json=True)["name"] == "task_03"
    config = g.get_model_config("task_03", as_json=True)["config"]
    assert config["input"][0]["dims"] == ["1", "8", "8"] and config["output"][0]["label_filename"] == "labels.txt"


def test_grpc_and_http_infer_are_bit_identical_on_every_task(device):
    g, h, core, _ = device
    x = x_for(3)
    for task in core.router.tasks():
        a = infer(g, grpcclient, task["name"], x).as_numpy("logits")
        b = infer(h, httpclient, task["name"], x).as_numpy("logits")
        assert a.shape == (3, 2) and a.dtype == np.float32 and np.array_equal(a, b)


@pytest.mark.parametrize("call,code,match", [
    (lambda g: infer(g, grpcclient, "task_99", x_for()), "StatusCode.NOT_FOUND", "unknown task"),
    (lambda g: infer(g, grpcclient, "task_01", np.zeros((1, 3, 8, 8), np.float32)), "StatusCode.INVALID_ARGUMENT",
     r"shape \[N, 1, 8, 8\]"),
    (lambda g: g.get_model_metadata("task_01", model_version="7"), "StatusCode.NOT_FOUND", "version '7'"),
    (lambda g: infer(g, grpcclient, "task_01", x_for(), parameters={"my_hint": 3}), "StatusCode.INVALID_ARGUMENT",
     "my_hint"),
    (lambda g: g.get_model_repository_index(), "StatusCode.UNAUTHENTICATED", "bearer token"),
    (lambda g: g.get_system_shared_memory_status(), "StatusCode.UNIMPLEMENTED", "not offered"),
], ids=["unknown-task", "wrong-shape", "unknown-version", "unsupported-parameter", "admin-without-token",
        "shared-memory"])
def test_grpc_errors_say_what_is_wrong(device, call, code, match):
    import re

    g, _, _, _ = device
    with pytest.raises(InferenceServerException) as err:
        call(g)
    assert err.value.status() == code and re.search(match, err.value.message()), err.value
    assert g.is_server_ready()  # and it keeps serving


def test_classification_extension_on_both_transports(device):
    g, h, core, _ = device
    x = x_for(4)
    logits = infer(g, grpcclient, "task_02", x).as_numpy("logits")
    for client, module in ((g, grpcclient), (h, httpclient)):
        out = infer(client, module, "task_02", x, outputs=[module.InferRequestedOutput("logits", class_count=2)])
        classes = out.as_numpy("logits")
        assert classes.shape == (4, 2)
        for i, row in enumerate(classes):
            first = row[0].decode().split(":")
            best = int(np.argmax(logits[i]))
            assert int(first[1]) == best and first[2] == core.router.resolve(2)["class_names"][best]
            assert abs(float(first[0]) - logits[i, best]) < 1e-5


def test_admin_over_grpc_takes_the_same_token(device):
    g, _, _, _ = device
    index = g.get_model_repository_index(headers={"authorization": f"bearer {TOKEN}"}, as_json=True)
    assert {m["name"] for m in index["models"]} == {f"task_{i:02d}" for i in range(1, 6)}
    g.unload_model("task_04", headers={"authorization": f"Bearer {TOKEN}"})
    assert not g.is_model_ready("task_04")
    g.load_model("task_04", headers={"authorization": f"Bearer {TOKEN}"})
    assert g.is_model_ready("task_04")


def test_versions_urls_and_unsupported_parameters_over_http(device):
    import json
    import urllib.error
    import urllib.request

    _, _, _, base = device

    def post(path, body):
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    one = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}
    assert post("/v2/models/task_01/versions/2/infer", {"inputs": [one]})[0] == 200
    status, answer = post("/v2/models/task_01/versions/9/infer", {"inputs": [one]})
    assert status == 404 and "version '9'" in answer["error"]
    status, answer = post("/v2/models/task_01/infer", {"inputs": [one], "parameters": {"priority": 1}})
    assert status == 400 and "priority" in answer["error"]
    status, answer = post("/v2/models/task_01/infer", {"inputs": [one], "outputs": [
        {"name": "logits", "parameters": {"shared_memory_region": "x"}}]})
    assert status == 400 and "shared_memory_region" in answer["error"]
    status, answer = post("/v2/models/task_01/infer", {"inputs": [one], "outputs": [
        {"name": "logits", "parameters": {"classification": 1}}]})
    assert status == 200 and answer["outputs"][0]["datatype"] == "BYTES" and len(answer["outputs"][0]["data"]) == 1


def test_a_scrape_parses_and_carries_the_triton_names(device):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    g, _, core, url = device
    infer(g, grpcclient, "task_01", x_for(3))
    with pytest.raises(InferenceServerException):
        infer(g, grpcclient, "task_01", np.zeros((1, 3, 8, 8), np.float32))
    core.metrics.gauges["pcl_edge_gpu_temperature_celsius"] = ("a sensor, read at scrape time", lambda: 41.5)
    core.metrics.gauges["nv_gpu_power_usage"] = ("a sensor that fails this scrape", lambda: 1 / 0)
    text, _ = core.metrics_text()
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["pcl_edge_gpu_temperature_celsius"].samples[0].value == 41.5 and b"nv_gpu_power_usage" not in text
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_request_duration_us", "pcl_edge_request_duration_seconds"):
        assert name in families, name
    ok = [s for s in families["nv_inference_request_success"].samples if s.labels == {"model": "task_01",
                                                                                      "version": "2"}]
    assert ok and ok[0].value >= 1
    failed = [s for s in families["nv_inference_request_failure"].samples if s.labels.get("model") == "task_01"]
    assert failed and failed[0].labels["reason"] == "REJECTED"
    buckets = [s for s in families["pcl_edge_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and any(s.labels["le"] == "+Inf" for s in buckets)  # p50/p95/p99 computable
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:  # the same text over HTTP
        assert r.status == 200 and "nv_inference_request_success" in r.read().decode()


def test_pcl_edge_serve_grpc_port_answers_for_as_long_as_it_serves(bundles, tmp_path):
    """The CLI's --grpc-port, end to end: a `pcl-edge serve` subprocess answers tritonclient.grpc."""
    import re
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pcl_edge.cli", "serve", str(bundles / "v1"), "--backend", "ort",
                             "--port", "0", "--grpc-port", "0", "--bundle-store", str(tmp_path / "store")],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            m = re.search(r"gRPC \(KServe v2\) on [\d.]+:(\d+)", line)
            port = int(m.group(1)) if m else port
            if " on http://" in line:
                break
        assert port, "serve logged no gRPC port"
        time.sleep(1.0)  # the HTTP side is up too: the gRPC server must still be serving
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready() and infer(client, grpcclient, "task_05", x_for(1)).as_numpy("logits").shape \
            == (1, 2)
    finally:
        proc.terminate()
        proc.wait(30)
