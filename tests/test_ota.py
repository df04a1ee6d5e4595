"""Over-the-air updates (issue 13): PUT /v2/admin/bundle, rollback, pcl-edge push; whatever goes wrong, the
serving bundle stays and no half-written file stays behind."""

import asyncio
import json
import shutil
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from pcl_edge.runtime import Router

pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
TOKEN = "ota-token-0123456789abcdef"
X = np.zeros((1, 1, 8, 8), np.float32)


@pytest.fixture
def device(bundles, tmp_path):  # noqa: F811
    """A device serving v0, with an upload store, accepting unsigned bundles (--allow-unsigned: these tests are about
    uploads, not signatures); yields (url, router, store)."""
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    shutil.copytree(bundles / "v0", tmp_path / "v0")
    store = tmp_path / "store"
    router = Router(tmp_path / "v0", backend="ort", store=store, keep=2)
    with serving(create_app(router, TOKEN, max_bundle_bytes=4 << 20, allow_unsigned=True)) as url:
        yield url, router, store


def put(url, data, token=TOKEN):
    req = urllib.request.Request(url + "/v2/admin/bundle", data=data, method="PUT",
                                 headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def leftovers(store):
    """Files left under the store besides its record and lock (empty managed directories do not count)."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file() and p.name not in
                  ("store.json", ".lock")) if store.exists() else []


@pytest.fixture(scope="module")
def v1_tar(bundles, tmp_path_factory):  # noqa: F811
    from pcl_edge.bundle import pack_bundle

    out = tmp_path_factory.mktemp("ota") / "v1.tar"
    pack_bundle(bundles / "v1", out)
    return out


def test_an_uploaded_bundle_is_verified_self_tested_and_activated_then_rolled_back(device, v1_tar):
    url, router, store = device
    before = router.version.digest
    status, answer = put(url, v1_tar.read_bytes())
    assert status == 200 and len(answer["tasks"]) == 5 and answer["bundle_digest"] == router.version.digest != before
    assert router.infer(5, X).logits.shape == (1, 2)  # task 5 exists only in the new bundle
    assert not [n for n in leftovers(store) if n.startswith(".upload")]
    req = urllib.request.Request(url + "/v2/admin/rollback", data=b"", method="POST",
                                 headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["bundle_digest"] == before == router.version.digest
    assert leftovers(store) == []  # the rolled-back upload and its unpacked copy are gone


@pytest.mark.parametrize("body,token,status,match", [
    (b"not a tar at all", TOKEN, 400, "is not a readable bundle tar"),
    (b"", "wrong-token", 401, "bearer token"),
], ids=["garbage", "wrong-token"])
def test_bad_uploads_change_nothing(device, body, token, status, match):
    url, router, store = device
    before = router.version.digest
    code, answer = put(url, body, token)
    assert code == status and match in answer["error"]
    assert router.version.digest == before and leftovers(store) == []
    assert router.infer(1, X).logits.shape == (1, 2)


def test_an_oversized_upload_is_refused_from_its_declared_length(device):
    url, router, store = device
    before = router.version.digest
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"PUT /v2/admin/bundle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Length: {5 << 20}\r\n\r\n".encode())
        answer = b""
        while b"}" not in answer:  # headers, then the JSON body
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    answer = answer.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413") and "cap" in answer
    assert router.version.digest == before and leftovers(store) == []


def test_a_disconnect_mid_upload_leaves_no_partial_file(device, v1_tar):
    url, router, store = device
    before = router.version.digest
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"PUT /v2/admin/bundle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Length: {3 << 20}\r\n\r\n".encode() + v1_tar.read_bytes()[:50_000])
        time.sleep(0.3)
    deadline = time.time() + 10
    while leftovers(store) and time.time() < deadline:
        time.sleep(0.1)
    assert leftovers(store) == [] and router.version.digest == before


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(device, v1_tar, monkeypatch):
    from pcl_edge.runtime import ota

    url, router, store = device
    before = router.version.digest

    class FullDisk:
        def __init__(self, path, mode):
            self.fh = open(path, mode)  # noqa: SIM115

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ota, "_open", FullDisk)
    code, answer = put(url, v1_tar.read_bytes())
    assert code == 507 and "No space left" in answer["error"]
    assert leftovers(store) == [] and router.version.digest == before


def test_the_streamed_cap_holds_without_a_declared_length(tmp_path):
    from pcl_edge.runtime.ota import UploadTooLarge, receive_bundle
    from pcl_edge.runtime.store import BundleStore

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    with pytest.raises(UploadTooLarge):
        asyncio.run(receive_bundle(chunks(), BundleStore(tmp_path / "store"), max_bytes=5000))
    assert leftovers(tmp_path / "store") == []


def test_a_device_with_trusted_keys_refuses_an_unsigned_upload(bundles, tmp_path, v1_tar):  # noqa: F811
    pytest.importorskip("cryptography")
    from pcl_edge.bundle.signing import keygen, load_trusted_keys, sign_bundle
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    key, pub = keygen(tmp_path / "k")
    shutil.copytree(bundles / "v0", tmp_path / "v0")
    sign_bundle(tmp_path / "v0", key)
    router = Router(tmp_path / "v0", backend="ort", store=tmp_path / "store", trusted_keys=load_trusted_keys(pub))
    with serving(create_app(router, TOKEN)) as url:
        code, answer = put(url, v1_tar.read_bytes())
        assert code == 400 and "not signed" in answer["error"] and leftovers(tmp_path / "store") == []
        signed = tmp_path / "signed.tar"
        shutil.copy(v1_tar, signed)
        sign_bundle(signed, key)
        from pcl_edge.cli import main

        (tmp_path / "token").write_text(TOKEN)
        assert main(["-q", "push", str(signed), "--url", url, "--token-file", str(tmp_path / "token")]) == 0
        assert len(router.tasks()) == 5


def test_without_trusted_keys_uploads_and_activations_are_refused_by_default(bundles, tmp_path, v1_tar):
    """The token alone must not decide what code runs on the device: no --trusted-key, no --allow-unsigned, no OTA."""
    from pcl_edge.runtime.http import create_app
    from tests._server import serving

    shutil.copytree(bundles / "v0", tmp_path / "v0")
    router = Router(tmp_path / "v0", backend="ort", store=tmp_path / "store")
    before = router.version.digest
    with serving(create_app(router, TOKEN)) as url:
        # the refusal comes before any byte of the body is read; a body larger than the socket buffers can then be
        # cut by the server closing (connection reset before the client reads the 403: a transport race, seen once in
        # CI), so a small one: what is sent does not matter, the device has no keys
        code, answer = put(url, v1_tar.read_bytes()[:4096])
        assert code == 403 and "no trusted keys" in answer["error"] and "--allow-unsigned" in answer["error"]
        req = urllib.request.Request(url + "/v2/admin/activate", data=json.dumps({"bundle": str(bundles / "v1")})
                                     .encode(), method="POST", headers={"authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == 403
    assert router.version.digest == before and leftovers(tmp_path / "store") == []


def test_push_asks_first_and_sends_nothing_a_device_would_refuse(bundles, tmp_path, v1_tar):  # noqa: F811
    """A refusal that comes before the body is read can reach a client mid-upload as a connection reset (the server
    closes with the body unread, and a large bundle fills the socket buffers first). So push asks GET
    /v2/admin/bundle first: a wrong token, a device without keys or a bundle over the device's cap is a clear
    error before a byte of the bundle is sent."""
    from pcl_edge.runtime.http import create_app
    from pcl_edge.runtime.ota import push
    from tests._server import serving

    shutil.copytree(bundles / "v0", tmp_path / "v0")
    cases = [  # (serve options, token, what the error says)
        ({}, TOKEN, "no trusted keys"),
        ({"allow_unsigned": True}, "not-the-token-0123456789", "HTTP 401"),
        ({"allow_unsigned": True, "max_bundle_bytes": 1024}, TOKEN, f"{v1_tar.stat().st_size} bytes.*1024-byte cap"),
    ]
    for options, token, says in cases:
        router = Router(tmp_path / "v0", backend="ort", store=tmp_path / "store")
        app, seen = create_app(router, TOKEN, **options), []

        async def recording(scope, receive, send, app=app, seen=seen):
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await app(scope, receive, send)

        with serving(recording) as url, pytest.raises(RuntimeError, match=says):
            push(v1_tar, url, token)
        assert seen == ["GET /v2/admin/bundle"], (options, seen)
        assert leftovers(tmp_path / "store") == []


def test_the_upload_terms_say_what_the_device_takes(device, caplog):
    url, router, store = device
    req = urllib.request.Request(url + "/v2/admin/bundle", headers={"authorization": f"Bearer {TOKEN}"})
    with caplog.at_level("WARNING"), urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read()) == {"max_bundle_bytes": 4 << 20, "signature_required": False}
    assert not any("without a signature check" in m.getMessage() for m in caplog.records)  # asking activates nothing
    with pytest.raises(urllib.error.HTTPError) as err:  # the terms are the admin's: no token, no answer
        urllib.request.urlopen(url + "/v2/admin/bundle", timeout=60)
    assert err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url + "/v2/admin/bundle", method="POST", headers={
            "authorization": f"Bearer {TOKEN}"}), timeout=60)
    assert err.value.code == 405 and set(err.value.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT"}


def test_push_to_a_device_that_cannot_say_its_terms_uploads_as_before(device, v1_tar):
    """A device from before GET /v2/admin/bundle answers it 405: push then uploads without asking."""
    from pcl_edge.runtime.http import create_app
    from pcl_edge.runtime.ota import push
    from tests._server import serving

    _, router, _ = device
    inner, seen = create_app(router, TOKEN, max_bundle_bytes=4 << 20, allow_unsigned=True), []

    async def older(scope, receive, send):
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
            if scope["method"] == "GET" and scope["path"] == "/v2/admin/bundle":
                await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"PUT")]})
                await send({"type": "http.response.body", "body": b'{"error": "Method Not Allowed"}'})
                return
        await inner(scope, receive, send)

    with serving(older) as old_url:
        answer = push(v1_tar, old_url, TOKEN)
    assert seen == ["GET /v2/admin/bundle", "PUT /v2/admin/bundle"] and len(answer["tasks"]) == len(router.tasks()) == 5


def test_push_to_a_closed_port_says_it_cannot_reach_the_device(v1_tar):
    from pcl_edge.runtime.ota import push

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match="cannot reach"):
        push(v1_tar, f"http://127.0.0.1:{port}", TOKEN)


def test_allow_unsigned_warns_on_every_activation(device, v1_tar, caplog):
    import logging

    url, router, store = device
    with caplog.at_level(logging.WARNING):
        assert put(url, v1_tar.read_bytes())[0] == 200
    assert any("without a signature check" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url,insecure,ok", [
    ("http://jetson.example:8000", False, False),
    ("http://jetson.example:8000", True, True),
    ("https://jetson.example:8000", False, True),
    ("http://127.0.0.1:8000", False, True),
    ("ftp://jetson.example", True, False),
])
def test_push_keeps_the_token_off_plain_http_to_other_hosts(url, insecure, ok):
    from pcl_edge.runtime.ota import check_transport

    if ok:
        check_transport(url, insecure)
    else:
        with pytest.raises(ValueError, match="plain http|not an http"):
            check_transport(url, insecure)


def test_serve_over_tls_and_push_to_it(bundles, tmp_path, v1_tar):
    """serve --tls-cert/--tls-key as a subprocess, a self-signed certificate; push --ca-cert trusts it."""
    pytest.importorskip("cryptography")
    import datetime
    import re
    import subprocess
    import sys

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from pcl_edge.bundle.signing import keygen, sign_bundle

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    signing, pub = keygen(tmp_path / "release")
    shutil.copytree(bundles / "v0", tmp_path / "v0")
    sign_bundle(tmp_path / "v0", signing)
    shutil.copy(v1_tar, tmp_path / "v1.tar")
    sign_bundle(tmp_path / "v1.tar", signing)
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "pcl_edge.cli", "serve", str(tmp_path / "v0"), "--backend", "ort",
                             "--port", "0", "--token-file", str(tmp_path / "token"), "--trusted-key", str(pub),
                             "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            m = re.search(r"on https://[\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "serve did not start over TLS"
        from pcl_edge.runtime.ota import push

        answer = push(tmp_path / "v1.tar", f"https://localhost:{port}", TOKEN, ca_cert=tmp_path / "cert.pem")
        assert answer["bundle_version"] == 2 and len(answer["tasks"]) == 5
    finally:
        proc.terminate()
        proc.wait(30)
