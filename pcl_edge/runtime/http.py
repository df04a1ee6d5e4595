"""``pcl-edge serve``: the Open Inference Protocol (KServe v2, what Triton speaks) over HTTP, model = task (by id
"3" or name "task_03"). Starlette + uvicorn: small, well kept, pure Python wheels that install on JetPack 6's
Python 3.10 (aarch64) without a compiler; inference runs in the thread pool so slow requests never block health
checks. Admin calls (repository load/unload, bundle activation) need a bearer token; the server binds to
127.0.0.1 unless told otherwise; request bodies are capped."""

from __future__ import annotations

import asyncio
import logging
import threading

from .errors import BadRequest, RuntimeFailure, ServiceUnavailable
from .oip import HEADER, HTTP_REQUEST_PARAMETERS, decode_request, encode_response, requested_outputs
from .router import Router
from .service import OUTPUT_PARAMETERS, RequestedOutput, ServiceCore

log = logging.getLogger(__name__)
MAX_BODY = 16 << 20
BODY_TIMEOUT_S = 30.0  # a request body must arrive within this
MAX_CONNECTIONS = 64  # uvicorn's limit_concurrency: beyond it, new requests get 503 instead of a file descriptor


def create_app(router: Router, token: str | None = None, max_body_bytes: int = MAX_BODY,
               max_bundle_bytes: int | None = None, allow_unsigned: bool = False,
               body_timeout_s: float = BODY_TIMEOUT_S, decode_workers: int = 1, core: ServiceCore | None = None):
    """The HTTP transport over the service core (``runtime.service``: it decides every answer; this translates).
    ``allow_unsigned``: over-the-air uploads and activations accept bundles without a trusted signature.
    ``decode_workers``: processes that parse large JSON bodies (0: threads only, see ``Decoder``). ``core``: share
    one core with other transports (gRPC); by default one is made here."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    core = core or ServiceCore(router, token, allow_unsigned)
    decoder = Decoder(decode_workers)

    def error(exc: Exception | str, status: int | None = None, request: Request | None = None,
              headers: dict | None = None) -> JSONResponse:
        status = status or getattr(exc, "status", 500)
        if request is not None and status < 500:  # 4xx are logged (never bodies or tokens); 5xx log their trace
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        if status == 401:
            headers = {**(headers or {}), "www-authenticate": "Bearer"}
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
            core.authorize(request.headers.get("authorization"), f"{request.method} {request.url.path}",
                           request.client.host if request.client else "?")
            return await handler(request)
        return guarded(wrapped)

    def version_of(request: Request) -> str | None:
        return request.path_params.get("version")

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
        return JSONResponse({"live": core.live()})

    async def ready(request):
        return JSONResponse({"ready": core.ready()})

    async def server_meta(request):
        return JSONResponse(core.server_metadata())

    async def model_meta(request):
        return JSONResponse(core.model_metadata(request.path_params["model"], version_of(request)))

    async def model_config(request):
        return JSONResponse(core.model_config(request.path_params["model"], version_of(request)))

    async def model_ready(request):
        is_ready, state, reason = core.model_ready(request.path_params["model"], version_of(request))
        return JSONResponse({"ready": is_ready, "state": state, "reason": reason},
                            status_code=200 if is_ready else 400)

    async def infer(request):
        model = request.path_params["model"]
        try:  # what the transport refuses before the core sees the request is counted too
            core.task(model, version_of(request))  # an unknown task (or version) is a 404 before its body is read
            try:
                body = await body_of(request)
            except _TooLarge as exc:
                raise _Refused(BadRequest(f"request body of {exc.args[0]} bytes exceeds {max_body_bytes}"), 413,
                               None) from None
            except _TooSlow as exc:
                raise _Refused(BadRequest(f"request body not received within {body_timeout_s:g} s ({exc.args[0]} "
                                          "bytes came)"), 408, {"connection": "close"}) from None
            # parsing up to max_body_bytes of JSON takes a while: never on the event loop
            req, arrays = await decoder.decode(body, request.headers.get(HEADER))
            outputs = [RequestedOutput(name, _class_count(p)) for name, p in requested_outputs(req, OUTPUT_PARAMETERS)]
            params = req.get("parameters") or {}
            if not isinstance(params, dict):
                raise BadRequest("request parameters must be an object")
            params = {k: v for k, v in params.items() if k not in HTTP_REQUEST_PARAMETERS}
        except _Refused as exc:
            core.metrics.count_unparsed(model, exc.status)
            return error(exc.error, exc.status, request, headers=exc.headers)
        except RuntimeFailure as exc:
            core.metrics.count_unparsed(model, exc.status)
            raise
        inputs = [(spec.get("name"), x) for spec, x in zip(req["inputs"], arrays)]
        answer = await run_in_threadpool(core.infer, model, inputs, outputs, params, version_of(request),
                                         req.get("id"))
        body, headers = encode_response(answer.model, answer.version, req, answer.outputs, answer.parameters)
        return Response(body, headers=headers)

    async def model_stats(request):
        name = request.path_params.get("model")
        return JSONResponse({"model_stats": core.statistics(name, version_of(request))})

    async def metrics(request):
        text, content_type = core.metrics_text()
        return Response(text, media_type=content_type)

    async def repo_index(request):
        return JSONResponse(core.repository_index())

    async def repo_load(request):
        await run_in_threadpool(core.load, request.path_params["model"])
        return JSONResponse({})

    async def repo_unload(request):
        core.unload(request.path_params["model"])
        return JSONResponse({})

    async def upload(request):
        from starlette.requests import ClientDisconnect

        from .ota import MAX_BUNDLE, UploadStalled, UploadTooLarge, receive_bundle

        cap = max_bundle_bytes or MAX_BUNDLE
        if request.method != "PUT":  # GET: the terms a client asks for before it sends a bundle
            return JSONResponse(core.upload_terms(cap))
        store = core.upload_store()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return error(BadRequest(f"bundle of {declared} bytes exceeds the {cap}-byte cap"), 413)
        try:
            path = await receive_bundle(request.stream(), store, cap, idle_timeout=body_timeout_s)
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
        return JSONResponse(await run_in_threadpool(core.activate_upload, path))

    async def rollback(request):
        return JSONResponse(await run_in_threadpool(core.rollback))

    async def activate(request):
        core.check_new_bundles_allowed()
        try:
            payload = (await request.json()) or {}
        except ValueError:
            raise BadRequest("activation body must be JSON: {\"bundle\": \"/path/to/bundle\"}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("bundle"), str):
            raise BadRequest("activation body must be JSON: {\"bundle\": \"/path/to/bundle\"}")
        return JSONResponse(await run_in_threadpool(core.activate, payload["bundle"]))

    model_routes = []
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        model_routes += [Route(prefix, guarded(model_meta)), Route(f"{prefix}/ready", guarded(model_ready)),
                         Route(f"{prefix}/config", guarded(model_config)),
                         Route(f"{prefix}/infer", guarded(infer), methods=["POST"]),
                         Route(f"{prefix}/stats", guarded(model_stats))]
    routes = [
        Route("/v2/health/live", guarded(live)), Route("/v2/health/ready", guarded(ready)),
        Route("/v2", guarded(server_meta)), Route("/v2/models/stats", guarded(model_stats)), *model_routes,
        Route("/metrics", metrics),
        Route("/v2/repository/index", admin(repo_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", admin(repo_load), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", admin(repo_unload), methods=["POST"]),
        Route("/v2/admin/activate", admin(activate), methods=["POST"]),
        Route("/v2/admin/bundle", admin(upload), methods=["GET", "PUT"]),
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
    app.state.decoder, app.state.core = decoder, core
    return app


def _class_count(params: dict) -> int:
    k = params.get("classification", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise BadRequest("the classification output parameter must be a non-negative integer (classes to return)")
    return k


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


class _Refused(Exception):
    """A request the transport refuses before parsing it: its error, status and extra headers."""

    def __init__(self, error: Exception, status: int, headers: dict | None) -> None:
        super().__init__(str(error))
        self.error, self.status, self.headers = error, status, headers


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def serve(router: Router, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_body_bytes: int = MAX_BODY, max_bundle_bytes: int | None = None, allow_unsigned: bool = False,
          tls: tuple[str, str] | None = None, max_connections: int = MAX_CONNECTIONS,
          body_timeout_s: float = BODY_TIMEOUT_S, decode_workers: int = 1, core: ServiceCore | None = None) -> None:
    """Bind first (a port in use is one clear error, ``--port 0`` logs the port it got), then run uvicorn on
    that socket; ``tls`` = (certificate, key) files serves HTTPS. At most ``max_connections`` requests at once (more
    get 503), idle keep-alive connections close after 5 s, request bodies must arrive within ``body_timeout_s``."""
    import socket

    import uvicorn

    app = create_app(router, token, max_body_bytes, max_bundle_bytes, allow_unsigned, body_timeout_s, decode_workers,
                     core)
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
