"""The Open Inference Protocol over gRPC (KServe v2's ``inference.GRPCInferenceService``, what Triton serves on port
8001): ``tritonclient.grpc``, ``perf_analyzer`` and C++ clients speak it. A thin adapter over the service core: the
protocol's own generated stubs (they ship with ``tritonclient[grpc]``) in, ``ServiceCore`` calls, its answers and
errors out (each ``RuntimeFailure`` status mapped to its gRPC code). Admin calls read the ``authorization`` metadata
(``Bearer TOKEN``), as the HTTP side reads the header. Shared memory, tracing and log settings are not offered: they
answer UNIMPLEMENTED, saying so."""

from __future__ import annotations

import json
import logging
from concurrent import futures

import numpy as np

from .errors import BadRequest, RuntimeFailure
from .oip import DTYPES, serialize_bytes
from .service import OUTPUT_PARAMETERS, RequestedOutput, ServiceCore

log = logging.getLogger(__name__)
MAX_MESSAGE = 16 << 20


def _stubs():
    try:
        import grpc
        from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise ImportError(f"the gRPC transport needs grpcio and tritonclient[grpc]: pip install 'pcl-edge[grpc]' "
                          f"({exc})") from None
    return grpc, service_pb2, service_pb2_grpc, model_config_pb2


_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          408: "DEADLINE_EXCEEDED", 409: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


def create_grpc_server(core: ServiceCore, host: str = "127.0.0.1", port: int = 8001, workers: int = 8,
                       max_message_bytes: int = MAX_MESSAGE, tls: tuple[str, str] | None = None):
    """A started ``grpc.Server`` (its port in ``server.pcl_port``); ``tls`` = (certificate, key) files."""
    grpc, pb, pb_grpc, mc = _stubs()
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"), options=options,
                         maximum_concurrent_rpcs=4 * workers)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_servicer(core, grpc, pb, pb_grpc, mc), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(k.read(), c.read())]))
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise RuntimeError(f"cannot listen on {address} (gRPC)")
    server.start()
    server.pcl_port = bound
    log.info("gRPC (KServe v2) on %s:%d", host, bound)
    return server


def _servicer(core: ServiceCore, grpc, pb, pb_grpc, mc):
    def guarded(method):
        def wrapped(self, request, context):
            try:
                return method(self, request, context)
            except RuntimeFailure as exc:
                if exc.status < 500:
                    log.warning("gRPC %s -> %d: %s", method.__name__, exc.status, exc)
                context.abort(getattr(grpc.StatusCode, _CODES.get(exc.status, "INTERNAL")), str(exc))
            except ValueError as exc:  # e.g. a bundle that fails verification on activation
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Exception as exc:  # noqa: BLE001 - a backend's own failure must not take the service down
                log.exception("gRPC %s failed", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        wrapped.__name__ = method.__name__
        return wrapped

    def admin(method):
        def wrapped(self, request, context):
            peer = context.peer() if hasattr(context, "peer") else "?"
            core.authorize(dict(context.invocation_metadata()).get("authorization"), method.__name__, peer)
            return method(self, request, context)
        wrapped.__name__ = method.__name__
        return guarded(wrapped)

    def version(request) -> str | None:
        field = "model_version" if hasattr(request, "model_version") else "version"
        return getattr(request, field) or None

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        @guarded
        def ServerLive(self, request, context):
            return pb.ServerLiveResponse(live=core.live())

        @guarded
        def ServerReady(self, request, context):
            return pb.ServerReadyResponse(ready=core.ready())

        @guarded
        def ServerMetadata(self, request, context):
            m = core.server_metadata()
            return pb.ServerMetadataResponse(name=m["name"], version=m["version"], extensions=m["extensions"])

        @guarded
        def ModelReady(self, request, context):
            return pb.ModelReadyResponse(ready=core.model_ready(request.name, version(request))[0])

        @guarded
        def ModelMetadata(self, request, context):
            m = core.model_metadata(request.name, version(request))
            tensors = lambda ts: [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"],  # noqa: E731
                                                                          shape=t["shape"]) for t in ts]
            return pb.ModelMetadataResponse(name=m["name"], versions=m["versions"], platform=m["platform"],
                                            inputs=tensors(m["inputs"]), outputs=tensors(m["outputs"]))

        @guarded
        def ModelConfig(self, request, context):
            c = core.model_config(request.name, version(request))
            inp, out = c["input"][0], c["output"][0]
            config = mc.ModelConfig(
                name=c["name"], platform=c["platform"], backend=c["backend"], max_batch_size=c["max_batch_size"],
                input=[mc.ModelInput(name=inp["name"], data_type=mc.TYPE_FP32, format=mc.ModelInput.FORMAT_NCHW,
                                     dims=inp["dims"])],
                output=[mc.ModelOutput(name=out["name"], data_type=mc.TYPE_FP32, dims=out["dims"],
                                       label_filename=out["label_filename"])],
                parameters={k: mc.ModelParameter(string_value=v["string_value"]) for k, v in c["parameters"].items()})
            return pb.ModelConfigResponse(config=config)

        @guarded
        def ModelInfer(self, request, context):
            params = {k: _param(v) for k, v in request.parameters.items()}
            inputs = [(t.name, _tensor(t, request, i)) for i, t in enumerate(request.inputs)]
            outputs = []
            for o in request.outputs:
                unknown = sorted(set(o.parameters) - OUTPUT_PARAMETERS - {"binary_data"})
                if unknown:
                    raise BadRequest(f"output parameter(s) {unknown} not supported; this server reads "
                                     f"{sorted(OUTPUT_PARAMETERS)}")
                k = _param(o.parameters["classification"]) if "classification" in o.parameters else 0
                if not isinstance(k, int) or k < 0:
                    raise BadRequest("the classification output parameter must be a non-negative integer")
                outputs.append(RequestedOutput(o.name, k))
            answer = core.infer(request.model_name, inputs, outputs, params, version(request), request.id or None)
            reply = pb.ModelInferResponse(model_name=answer.model, model_version=answer.version, id=request.id)
            for name, datatype, arr in answer.outputs:
                reply.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
                reply.raw_output_contents.append(serialize_bytes(arr) if datatype == "BYTES"
                                                 else np.ascontiguousarray(arr).tobytes())
            for key, value in answer.parameters.items():
                p = reply.parameters[key]
                if isinstance(value, bool):
                    p.bool_param = value
                elif isinstance(value, int):
                    p.int64_param = value
                elif isinstance(value, str):
                    p.string_param = value
                else:
                    p.string_param = json.dumps(value)
            return reply

        @guarded
        def ModelStatistics(self, request, context):
            out = pb.ModelStatisticsResponse()
            for s in core.statistics(request.name or None, version(request)):
                ok = s["inference_stats"]["success"]
                out.model_stats.add(name=s["name"], version=s["version"], last_inference=s["last_inference"],
                                    inference_count=s["inference_count"], execution_count=s["execution_count"],
                                    inference_stats=pb.InferStatistics(success=pb.StatisticDuration(
                                        count=ok["count"], ns=ok["ns"])))
            return out

        @admin
        def RepositoryIndex(self, request, context):
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m)
                                                      for m in core.repository_index()])

        @admin
        def RepositoryModelLoad(self, request, context):
            core.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        @admin
        def RepositoryModelUnload(self, request, context):
            core.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

    def unimplemented(name):
        def method(self, request, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not offered by pcl-edge (no shared memory, "
                                                         "tracing or log settings over gRPC)")
        return method

    for name in ("ModelStreamInfer", "SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
                 "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
                 "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings"):
        setattr(Servicer, name, unimplemented(name))
    return Servicer()


def _param(p):
    """An InferParameter's value."""
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "UINT8": "uint_contents", "INT8": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "FP16": None}


def _tensor(t, request, i: int) -> np.ndarray:
    """An input's array, from ``raw_input_contents`` (what tritonclient sends) or the typed ``contents``."""
    if t.datatype not in DTYPES:
        raise BadRequest(f"inputs[{i}].datatype {t.datatype!r} is not one of {sorted(DTYPES)}")
    dtype = np.dtype(DTYPES[t.datatype])
    shape = list(t.shape)
    if len(shape) > 8 or any(d < 0 or d > 2**31 - 1 for d in shape):
        raise BadRequest(f"inputs[{i}].shape must be at most 8 non-negative integers")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if request.raw_input_contents:
        if i >= len(request.raw_input_contents):
            raise BadRequest(f"inputs[{i}] has no raw contents")
        raw = request.raw_input_contents[i]
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"inputs[{i}]: {len(raw)} bytes do not match shape {shape} x {t.datatype}")
        return np.frombuffer(raw, dtype).reshape(shape)
    field = _CONTENTS.get(t.datatype)
    values = getattr(t.contents, field) if field else []
    if len(values) != count:
        raise BadRequest(f"inputs[{i}]: {len(values)} values do not match shape {shape} x {t.datatype}")
    return np.asarray(values, dtype).reshape(shape)
