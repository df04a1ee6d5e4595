"""Over-the-air bundle updates: ``PUT /v2/admin/bundle`` streams a bundle ``.tar`` into the device's upload store
under a size cap, then the router verifies it (the signature too, when trusted keys are configured), self-tests
every task and activates it atomically. A disconnect mid-upload, a full disk, an oversized or bad tar: the serving
bundle stays, and no half-written file stays behind. ``GET /v2/admin/bundle`` answers whether the device takes a
bundle now, and up to what size; ``pcl-edge push`` is the client, and asks that first."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from .store import BundleStore, fsync_dir

log = logging.getLogger(__name__)
MAX_BUNDLE = 512 << 20
_open = open  # one seam for tests (a full disk)


class UploadTooLarge(Exception):
    pass


class UploadStalled(Exception):
    pass


def _sync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


async def receive_bundle(chunks: AsyncIterator[bytes], store: BundleStore, max_bytes: int = MAX_BUNDLE,
                         idle_timeout: float | None = None) -> Path:
    """Write the streamed body to ``STORE/.upload-*.part``, fsync it, then rename it to ``STORE/uploads/bundle-*.tar``
    (and fsync the directory); on any failure (too large, the client gone, the disk full) the partial file is
    removed and the error raised (``UploadStalled`` when nothing arrives for ``idle_timeout`` seconds). A kill -9
    meanwhile leaves a .part file or an unrecorded upload: the store removes both at the next start."""
    store.uploads.mkdir(parents=True, exist_ok=True)
    token = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    part = store.root / f".upload-{token}.part"
    size = 0
    try:
        with _open(part, "wb") as fh:  # writes and fsyncs run in worker threads: the event loop keeps answering
            it = chunks.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(it.__anext__(), idle_timeout)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise UploadStalled(size) from None
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(size)
                await asyncio.to_thread(fh.write, chunk)
            await asyncio.to_thread(_sync, fh)
        final = store.uploads / f"bundle-{token}.tar"
        os.rename(part, final)
        await asyncio.to_thread(fsync_dir, store.uploads)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    log.info("received a bundle of %d bytes into %s", size, final)
    return final


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_transport(url: str, insecure: bool = False) -> None:
    """The admin token travels only over https://, or plain http:// to this machine, unless told ``insecure``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s):// URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK and not insecure:
        raise ValueError(f"refusing to send the admin token to {parts.hostname} over plain http:// (anyone on the "
                         "path could read it): serve with --tls-cert/--tls-key and push to https://, or pass "
                         "--insecure")


class DeviceRefused(RuntimeError):
    """The device answered a request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _call(req, timeout: float, context) -> dict:
    """One request to the device; whatever goes wrong becomes one clear line."""
    import http.client
    import json
    import ssl
    import urllib.error
    import urllib.request

    # what a device that refused before reading an upload's body looks like to its client: the body is cut off
    cut = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError,
           http.client.RemoteDisconnected)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            detail = json.loads(body).get("error", body.decode(errors="replace"))
        except ValueError:
            detail = body.decode(errors="replace")
        raise DeviceRefused(exc.code, f"the device refused the bundle (HTTP {exc.code}): {detail}") from None
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, cut):
            raise RuntimeError(f"cannot reach {req.full_url}: {exc.reason}") from None
        closed = exc.reason
    except cut as exc:
        closed = exc
    except TimeoutError:
        raise RuntimeError(f"{req.full_url} did not answer within {timeout:g} s") from None
    raise RuntimeError(f"the device closed the connection ({type(closed).__name__}: {closed}); its log says why")


def push(bundle: str | os.PathLike, url: str, token: str, timeout: float = 600, insecure: bool = False,
         ca_cert: str | os.PathLike | None = None) -> dict:
    """Upload a bundle (a .tar, or a directory packed on the fly) to a device's ``PUT /v2/admin/bundle``. It asks
    ``GET /v2/admin/bundle`` first, so a wrong token, a device that takes no bundles or one over its cap is refused
    before a byte is sent (a device older than that question answers 405, and the upload goes ahead)."""
    import ssl
    import tempfile
    import urllib.request

    from ..bundle.archive import pack_bundle, verify_bundle

    check_transport(url, insecure)
    context = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
    endpoint = url.rstrip("/") + "/v2/admin/bundle"
    auth = {"authorization": f"Bearer {token}"}
    path = Path(bundle)
    verify_bundle(path)  # never send what the device would refuse for corruption anyway
    try:
        terms = _call(urllib.request.Request(endpoint, headers=auth), min(timeout, 30), context)
    except DeviceRefused as exc:
        if exc.status not in (404, 405):
            raise
        terms = {}
    with tempfile.TemporaryDirectory() as tmp:
        if path.is_dir():
            tar = Path(tmp) / "bundle.tar"
            pack_bundle(path, tar)
            path = tar
        size = path.stat().st_size
        cap = terms.get("max_bundle_bytes")
        if cap is not None and size > cap:
            raise RuntimeError(f"the bundle is {size} bytes, over the device's {cap}-byte cap (serve "
                               "--max-bundle-mb); nothing was sent")
        with open(path, "rb") as fh:
            req = urllib.request.Request(endpoint, data=fh, method="PUT", headers={
                **auth, "content-type": "application/x-tar", "content-length": str(size)})
            return _call(req, timeout, context)
