"""``pcl-edge serve``: the Open Inference Protocol (KServe v2, what Triton speaks) over HTTP, model = task (by id
"3" or name "task_03"). Starlette + uvicorn: small, well kept, pure Python wheels that install on JetPack 6's
Python 3.10 (aarch64) without a compiler; inference runs in the thread pool so slow requests never block health
checks. Admin calls (repository load/unload, bundle activation) need a bearer token; the server binds to
127.0.0.1 unless told otherwise; request bodies are capped."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections import Counter

import numpy as np

from .. import __version__
from .errors import BadRequest, RuntimeFailure, ServiceUnavailable
from .oip import HEADER, decode_request, encode_response
from .router import Router

log = logging.getLogger(__name__)
MAX_BODY = 16 << 20
BODY_TIMEOUT_S = 30.0  # a request body must arrive within this
MAX_CONNECTIONS = 64  # uvicorn's limit_concurrency: beyond it, new requests get 503 instead of a file descriptor


def create_app(router: Router, token: str | None = None, max_body_bytes: int = MAX_BODY,
               max_bundle_bytes: int | None = None, allow_unsigned: bool = False,
               body_timeout_s: float = BODY_TIMEOUT_S, decode_workers: int = 1):
    """``allow_unsigned``: over-the-air uploads and activations accept bundles without a trusted signature (a device
    without ``trusted_keys`` otherwise refuses them: the token alone must not be enough to run new code).
    ``decode_workers``: processes that parse large JSON bodies (0: threads only, see ``Decoder``)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    started = time.time()
    decoder = Decoder(decode_workers)
    outcomes: Counter = Counter()  # (task label, outcome) of every inference request, whatever became of it

    def error(exc: Exception | str, status: int | None = None, request: Request | None = None,
              headers: dict | None = None) -> JSONResponse:
        status = status or getattr(exc, "status", 500)
        if request is not None and status < 500:  # 4xx are logged (never bodies or tokens); 5xx log their trace
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    def guarded(handler):
        """Every failure becomes an answer: protocol errors their status, anything else a 500 with its message;
        the server goes on serving."""
        async def wrapped(request: Request):
            try:
                return await handler(request)
            except RuntimeFailure as exc:
                return error(exc, request=request)
            except ValueError as exc:  # e.g. a bundle that fails verification on activation
                return error(exc, 400, request=request)
            except Exception as exc:  # noqa: BLE001 - a backend's own failure must not take the service down
                log.exception("%s %s failed", request.method, request.url.path)
                return error(RuntimeFailure(f"internal error: {type(exc).__name__}: {exc}"), 500)
        return wrapped

    def admin(handler):
        async def wrapped(request: Request):
            scheme, _, credential = request.headers.get("authorization", "").strip().partition(" ")
            if token is None:
                return error(ServiceUnavailable("admin API disabled: start the server with --token-file"), 403)
            # the scheme is case-insensitive (RFC 7235); the credential compared in constant time
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
                log.warning("refused admin call %s %s from %s: missing or wrong bearer token", request.method,
                            request.url.path, request.client.host if request.client else "?")
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                    headers={"www-authenticate": "Bearer"})
            return await handler(request)
        return guarded(wrapped)

    def counted(handler):
        async def wrapped(request: Request):
            response = await handler(request)
            model = request.path_params.get("model", "")
            try:
                label = router.resolve(model)["name"]
            except RuntimeFailure:
                label = "unknown"  # never the raw path: no unbounded label values
            outcomes[(label, "ok" if response.status_code < 400 else
                      "client_error" if response.status_code < 500 else "server_error")] += 1
            return response
        return wrapped

    async def body_of(request: Request) -> bytes:
        """The body, within the size cap and the time limit: a client that trickles its body is cut off (408), so
        slow clients cannot hold the service's connections."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise _TooLarge(int(declared))
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise _TooLarge(size)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), body_timeout_s)
        except asyncio.TimeoutError:
            raise _TooSlow(size) from None
        return b"".join(chunks)

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        try:
            _ = router.version
        except ServiceUnavailable as exc:
            return error(exc)
        return JSONResponse({"ready": True})

    async def server_meta(request):
        return JSONResponse({"name": "pcl-edge", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_repository", "statistics"]})

    def task_meta(task: dict) -> dict:
        c, h, w = task["input"]["shape"]
        return {"name": task["name"], "versions": [str(router.version.bundle_version)], "platform": "onnx",
                "bundle_digest": router.version.digest,
                "inputs": [{"name": task["input"]["name"], "datatype": "FP32", "shape": [-1, c, h, w]}],
                "outputs": [{"name": task["output"]["name"], "datatype": "FP32",
                             "shape": [-1, *task["output"]["shape"]]}],
                "parameters": {"task_id": task["id"], "class_names": task["class_names"],
                               "preprocess": {"datatype": "UINT8", "layout": "NHWC", "shape": [-1, h, w, c],
                                              "mean": task["input"]["mean"], "std": task["input"]["std"]}}}

    async def model_meta(request):
        return JSONResponse(task_meta(router.resolve(request.path_params["model"])))

    async def model_config(request):
        """The model configuration as Triton answers ``GET /v2/models/{name}/config`` (its JSON form)."""
        task = router.resolve(request.path_params["model"])
        c, h, w = task["input"]["shape"]
        return JSONResponse({
            "name": task["name"], "platform": "onnxruntime_onnx", "backend": "onnxruntime",
            "max_batch_size": router.max_batch,
            "input": [{"name": task["input"]["name"], "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                       "dims": [c, h, w]}],
            "output": [{"name": task["output"]["name"], "data_type": "TYPE_FP32",
                        "dims": list(task["output"]["shape"]), "label_filename": ""}],
            "parameters": {"class_names": {"string_value": json.dumps(task["class_names"])},
                           "input_mean": {"string_value": json.dumps(task["input"]["mean"])},
                           "input_std": {"string_value": json.dumps(task["input"]["std"])},
                           "bundle_digest": {"string_value": router.version.digest}}})

    async def model_ready(request):
        state, reason = router.state(request.path_params["model"])
        return JSONResponse({"ready": state == "READY", "state": state, "reason": reason},
                            status_code=200 if state == "READY" else 400)

    async def infer(request):
        model = request.path_params["model"]
        expected = router.resolve(model)["input"]["name"]  # an unknown task is a 404 before its body is read
        try:
            body = await body_of(request)
        except _TooLarge as exc:
            return error(BadRequest(f"request body of {exc.args[0]} bytes exceeds {max_body_bytes}"), 413)
        except _TooSlow as exc:
            return error(BadRequest(f"request body not received within {body_timeout_s:g} s ({exc.args[0]} bytes "
                                    "came)"), 408, request, headers={"connection": "close"})
        # parsing up to max_body_bytes of JSON takes a while: never on the event loop, so health checks never wait
        req, arrays = await decoder.decode(body, request.headers.get(HEADER))
        if len(arrays) != 1:
            raise BadRequest(f"{model} takes one input, got {len(arrays)}")
        name = req["inputs"][0].get("name")
        if name != expected:
            raise BadRequest(f"unknown input {name!r}; {model} has one input, {expected!r}")
        x = arrays[0]
        params = req.get("parameters") or {}
        top_k = params.get("top_k", 0)
        if not isinstance(top_k, int) or top_k < 0:
            raise BadRequest("parameters.top_k must be a non-negative integer")
        result = await run_in_threadpool(router.infer, model, x, x.dtype == np.uint8, top_k)
        task = result.task  # resolved once, in the version that answered: the metadata names that version
        extra = {"task_id": task["id"], "bundle_version": result.bundle_version,
                 "bundle_digest": result.bundle_digest, "backend": result.backend}
        if top_k:
            extra["top_k"] = [[{"class": c, "p": round(p, 6)} for c, p in row] for row in result.top_k]
        body, headers = encode_response(task["name"], str(result.bundle_version), req,
                                        {task["output"]["name"]: result.logits.astype(np.float32)}, extra)
        return Response(body, headers=headers)

    def stats_of(task: dict) -> dict:
        s = router.stats[task["id"]]
        return {"name": task["name"], "version": str(router.version.bundle_version),
                "inference_count": s.items, "execution_count": s.requests, "error_count": s.errors,
                "load_count": s.loads, "eviction_count": s.evictions, "last_inference": s.last_ns // 1_000_000,
                "inference_stats": {"success": {"count": s.requests, "ns": s.total_ns}}}

    async def model_stats(request):
        name = request.path_params.get("model")
        tasks = [router.resolve(name)] if name else router.tasks()
        return JSONResponse({"model_stats": [stats_of(t) for t in tasks]})

    async def metrics(request):
        lines = ["# HELP pcl_edge_requests_total Inference requests per task and outcome (ok, client_error: 4xx "
                 "including unparseable bodies, server_error: 5xx).", "# TYPE pcl_edge_requests_total counter"]
        lines += [f'pcl_edge_requests_total{{task="{_label(t)}",outcome="{o}"}} {n}'
                  for (t, o), n in sorted(outcomes.items())]
        lines += ["# HELP pcl_edge_errors_total Failed inference requests per task (every 4xx and 5xx).",
                  "# TYPE pcl_edge_errors_total counter"]
        errors = Counter()
        for (t, o), n in outcomes.items():
            errors[t] += n if o != "ok" else 0
        lines += [f'pcl_edge_errors_total{{task="{_label(t)}"}} {n}' for t, n in sorted(errors.items())]
        lines += ["# HELP pcl_edge_inference_seconds_total Time spent in inference per task.",
                  "# TYPE pcl_edge_inference_seconds_total counter"]
        lines += [f'pcl_edge_inference_seconds_total{{task="{_label(t["name"])}"}} '
                  f'{router.stats[t["id"]].total_ns / 1e9}'
                  for t in router.tasks()]
        lines += ["# HELP pcl_edge_loaded_bytes Memory held by sessions (measured at load): the active version's, and "
                  "those of earlier versions or evicted ones that a request still uses.",
                  "# TYPE pcl_edge_loaded_bytes gauge", f"pcl_edge_loaded_bytes {router.resident_bytes()}",
                  "# TYPE pcl_edge_bundle_version gauge", f"pcl_edge_bundle_version {router.version.bundle_version}",
                  "# HELP pcl_edge_bundle_info The active bundle: its manifest digest identifies it.",
                  "# TYPE pcl_edge_bundle_info gauge",
                  f'pcl_edge_bundle_info{{digest="{router.version.digest}",'
                  f'version="{router.version.bundle_version}"}} 1',
                  "# TYPE pcl_edge_uptime_seconds gauge", f"pcl_edge_uptime_seconds {time.time() - started:.1f}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def repo_index(request):
        out = []
        for t in router.tasks():
            state, reason = router.state(t["name"])
            out.append({"name": t["name"], "version": str(router.version.bundle_version), "state": state,
                        "reason": reason})
        return JSONResponse(out)

    async def repo_load(request):
        await run_in_threadpool(router.load, request.path_params["model"])
        return JSONResponse({})

    async def repo_unload(request):
        router.unload(request.path_params["model"])
        return JSONResponse({})

    def unsigned_refusal() -> JSONResponse | None:
        """Without trusted keys, a new bundle is refused unless the operator allowed unsigned ones (then warned)."""
        if router.trusted_keys is not None:
            return None
        if not allow_unsigned:
            return error(ServiceUnavailable("this device has no trusted keys: over-the-air bundles and activations "
                                            "need serve --trusted-key KEY.pub (or --allow-unsigned)"), 403)
        log.warning("activating a bundle without a signature check (--allow-unsigned)")
        return None

    async def upload(request):
        from starlette.requests import ClientDisconnect

        from .ota import MAX_BUNDLE, UploadStalled, UploadTooLarge, receive_bundle

        refused = unsigned_refusal()
        if refused is not None:
            return refused
        if router.store.root is None:
            return error(ServiceUnavailable("over-the-air updates are off: start the server with a bundle store"), 403)
        cap = max_bundle_bytes or MAX_BUNDLE
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return error(BadRequest(f"bundle of {declared} bytes exceeds the {cap}-byte cap"), 413)
        try:
            path = await receive_bundle(request.stream(), router.store, cap, idle_timeout=body_timeout_s)
        except UploadStalled as exc:
            return error(BadRequest(f"bundle upload stalled: nothing came for {body_timeout_s:g} s ({exc.args[0]} "
                                    "bytes came)"), 408, request, headers={"connection": "close"})
        except UploadTooLarge as exc:
            return error(BadRequest(f"bundle of more than {exc.args[0]} bytes exceeds the {cap}-byte cap"), 413)
        except ClientDisconnect:
            log.warning("bundle upload interrupted: the client went away; nothing changed")
            return error(BadRequest("upload interrupted"), 400)
        except OSError as exc:  # e.g. the disk is full
            log.error("cannot store an uploaded bundle: %s", exc)
            return error(RuntimeFailure(f"cannot store the bundle on this device: {exc}"), 507)
        try:
            manifest = await run_in_threadpool(router.activate, path)
        finally:  # refused (or already active): the serving bundle stays, the upload goes
            if str(path.resolve()) not in {e.path for e in router.store.history}:
                path.unlink(missing_ok=True)
        return JSONResponse({"bundle_version": manifest["bundle_version"],
                             "bundle_digest": manifest["manifest_sha256"][:12],
                             "tasks": [t["name"] for t in manifest["tasks"]]})

    async def rollback(request):
        manifest = await run_in_threadpool(router.rollback)
        return JSONResponse({"bundle_version": manifest["bundle_version"],
                             "bundle_digest": manifest["manifest_sha256"][:12],
                             "tasks": [t["name"] for t in manifest["tasks"]]})

    async def activate(request):
        refused = unsigned_refusal()
        if refused is not None:
            return refused
        try:
            payload = (await request.json()) or {}
        except ValueError:
            raise BadRequest("activation body must be JSON: {\"bundle\": \"/path/to/bundle\"}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("bundle"), str):
            raise BadRequest("activation body must be JSON: {\"bundle\": \"/path/to/bundle\"}")
        manifest = await run_in_threadpool(router.activate, payload["bundle"])
        return JSONResponse({"bundle_version": manifest["bundle_version"],
                             "bundle_digest": manifest["manifest_sha256"][:12],
                             "tasks": [t["name"] for t in manifest["tasks"]]})

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_meta),
        Route("/v2/models/stats", guarded(model_stats)),
        Route("/v2/models/{model}", guarded(model_meta)), Route("/v2/models/{model}/ready", guarded(model_ready)),
        Route("/v2/models/{model}/config", guarded(model_config)),
        Route("/v2/models/{model}/infer", counted(guarded(infer)), methods=["POST"]),
        Route("/v2/models/{model}/stats", guarded(model_stats)), Route("/metrics", metrics),
        Route("/v2/repository/index", admin(repo_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", admin(repo_load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", admin(repo_unload), methods=["POST"]),
        Route("/v2/admin/activate", admin(activate), methods=["POST"]),
        Route("/v2/admin/bundle", admin(upload), methods=["PUT"]),
        Route("/v2/admin/rollback", admin(rollback), methods=["POST"]),
    ]
    async def http_error(request, exc):  # 404 / 405 and the like: the protocol's JSON body, never plain text
        return error(exc.detail if isinstance(exc.detail, str) else str(exc.detail), exc.status_code, request,
                     getattr(exc, "headers", None))

    import contextlib

    from starlette.exceptions import HTTPException

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            decoder.close()

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.decoder = decoder
    return app


class Decoder:
    """Where request bodies are parsed. Binary tensors and small JSON bodies: a worker thread (cheap, off the event
    loop). JSON bodies of more than ``INLINE_BYTES``: a worker process, because CPython's JSON parser holds the GIL
    for the whole parse (about 40 ms per MiB here), and a thread would still stall the event loop (health checks,
    every other request) for that long. The pool starts on first use; requests queue for ``workers`` processes."""

    INLINE_BYTES = 1 << 20

    def __init__(self, workers: int = 1) -> None:
        self.workers, self._pool, self._lock = workers, None, threading.Lock()
        self.in_process = 0  # bodies parsed by the pool (a figure for tests and benches)

    async def decode(self, body: bytes, header: str | None):
        from starlette.concurrency import run_in_threadpool

        if self.workers < 1 or header is not None or len(body) <= self.INLINE_BYTES:
            return await run_in_threadpool(decode_request, body, header)
        from concurrent.futures.process import BrokenProcessPool

        self.in_process += 1
        for _attempt in (1, 2):  # a worker that died (OOM-killed...) breaks the pool: start a new one, once
            pool = self._executor()
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, decode_request, body, header)
            except BrokenProcessPool:
                log.error("the request decoder process died; starting a new one")
                self._reset(pool)
        raise ServiceUnavailable("the request decoder keeps failing; try again")

    def _executor(self):
        with self._lock:
            if self._pool is None:
                import concurrent.futures
                import multiprocessing

                # spawn: a fresh interpreter that imports numpy and the codec only (no fork of a threaded server)
                self._pool = concurrent.futures.ProcessPoolExecutor(self.workers,
                                                                    mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def _reset(self, broken) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def _label(value: str) -> str:
    """A Prometheus label value, escaped as the text format requires (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def serve(router: Router, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_body_bytes: int = MAX_BODY, max_bundle_bytes: int | None = None, allow_unsigned: bool = False,
          tls: tuple[str, str] | None = None, max_connections: int = MAX_CONNECTIONS,
          body_timeout_s: float = BODY_TIMEOUT_S, decode_workers: int = 1) -> None:
    """Bind first (a port in use is one clear error, ``--port 0`` logs the port it got), then run uvicorn on
    that socket; ``tls`` = (certificate, key) files serves HTTPS. At most ``max_connections`` requests at once (more
    get 503), idle keep-alive connections close after 5 s, request bodies must arrive within ``body_timeout_s``."""
    import socket

    import uvicorn

    app = create_app(router, token, max_body_bytes, max_bundle_bytes, allow_unsigned, body_timeout_s, decode_workers)
    # a TCP socket handed to uvicorn as a socket (not a bare fd, which it would take for a Unix socket): asyncio then
    # sets TCP_NODELAY on every connection, without which keep-alive requests wait ~40 ms on delayed ACKs (Nagle)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    log.info("serving %d tasks of bundle version %s (%s) on %s://%s:%d", len(router.tasks()),
             router.version.bundle_version, router.version.digest, "https" if tls else "http", host,
             sock.getsockname()[1])
    ssl = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]} if tls else {}
    config = uvicorn.Config(app, log_level="warning", access_log=False, limit_concurrency=max_connections,
                            timeout_keep_alive=5, **ssl)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
