"""The service core: what the device answers, decided in one place. HTTP (``runtime.http``), gRPC
(``runtime.grpc_server``) and serial (``runtime.serial_server``) only translate their wire format to these calls and
the answers (and ``RuntimeFailure`` errors, which carry their status) back, as Triton's core sits under its
endpoints. It knows the Open Inference Protocol's model (models are tasks, versions are bundle versions), the
extensions the device supports, the admin policy (token, signatures) and the metrics.

Supported request parameters: ``top_k`` (class names and probabilities in the answer's parameters). Supported
requested-output parameters: ``classification`` (Triton's classification extension: the top k classes as BYTES
strings ``"score:index:label"``) and, on HTTP, ``binary_data``. Anything else a client sends is a 400 that names
it, never silently ignored."""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from .errors import BadRequest, Forbidden, RuntimeFailure, ServiceUnavailable, Unauthorized, UnknownTask
from .metrics import Metrics
from .router import Router

log = logging.getLogger(__name__)
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "statistics"]
REQUEST_PARAMETERS = {"top_k"}  # what a request's own parameters may hold (transports add theirs)
OUTPUT_PARAMETERS = {"classification"}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # > 0: the top k classes as "score:index:label" strings


@dataclass
class InferAnswer:
    model: str
    version: str
    outputs: list[tuple[str, str, np.ndarray]]  # (name, datatype, array): FP32 logits or BYTES classes
    parameters: dict = field(default_factory=dict)
    id: str | None = None


class ServiceCore:
    def __init__(self, router: Router, token: str | None = None, allow_unsigned: bool = False) -> None:
        self.router, self.token, self.allow_unsigned = router, token, allow_unsigned
        self.metrics = Metrics(router)
        self.started = time.time()

    # -- health and metadata ------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        _ = self.router.version  # ServiceUnavailable when no bundle is active
        return True

    def server_metadata(self) -> dict:
        return {"name": "pcl-edge", "version": __version__, "extensions": list(EXTENSIONS)}

    def task(self, model: str | int, version: str | None = None) -> dict:
        """The task a request names, in the active bundle; ``version`` (the URL's or the request's) must be the
        bundle version that serves: the one the metadata lists."""
        task = self.router.resolve(model)
        served = str(self.router.version.bundle_version)
        if version not in (None, "", served):
            raise UnknownTask(f"{task['name']} version {version!r} is not served; this device serves version {served}")
        return task

    def model_metadata(self, model: str, version: str | None = None) -> dict:
        task = self.task(model, version)
        c, h, w = task["input"]["shape"]
        return {"name": task["name"], "versions": [str(self.router.version.bundle_version)], "platform": "onnx",
                "bundle_digest": self.router.version.digest,
                "inputs": [{"name": task["input"]["name"], "datatype": "FP32", "shape": [-1, c, h, w]}],
                "outputs": [{"name": task["output"]["name"], "datatype": "FP32",
                             "shape": [-1, *task["output"]["shape"]]}],
                "parameters": {"task_id": task["id"], "class_names": task["class_names"],
                               "preprocess": {"datatype": "UINT8", "layout": "NHWC", "shape": [-1, h, w, c],
                                              "mean": task["input"]["mean"], "std": task["input"]["std"]}}}

    def model_config(self, model: str, version: str | None = None) -> dict:
        """The model configuration as Triton answers ``GET /v2/models/{name}/config`` (its JSON form)."""
        task = self.task(model, version)
        c, h, w = task["input"]["shape"]
        return {
            "name": task["name"], "platform": "onnxruntime_onnx", "backend": "onnxruntime",
            "max_batch_size": self.router.max_batch,
            "input": [{"name": task["input"]["name"], "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                       "dims": [c, h, w]}],
            "output": [{"name": task["output"]["name"], "data_type": "TYPE_FP32",
                        "dims": list(task["output"]["shape"]), "label_filename": "labels.txt"}],
            "parameters": {"class_names": {"string_value": json.dumps(task["class_names"])},
                           "input_mean": {"string_value": json.dumps(task["input"]["mean"])},
                           "input_std": {"string_value": json.dumps(task["input"]["std"])},
                           "bundle_digest": {"string_value": self.router.version.digest}}}

    def model_ready(self, model: str, version: str | None = None) -> tuple[bool, str, str]:
        task = self.task(model, version)
        state, reason = self.router.state(task["name"])
        return state == "READY", state, reason

    # -- inference ----------------------------------------------------------------------------------------------
    def infer(self, model: str, inputs: list[tuple[str, np.ndarray]], outputs: list[RequestedOutput] | None = None,
              parameters: dict | None = None, version: str | None = None, request_id: str | None = None
              ) -> InferAnswer:
        """One inference request, whatever the transport; every outcome is counted in the metrics."""
        start = time.perf_counter_ns()
        label = self.metrics.label(model)
        try:
            answer = self._infer(model, inputs, outputs or [], parameters or {}, version, request_id)
        except RuntimeFailure as exc:
            self.metrics.failure(label, exc.status, time.perf_counter_ns() - start)
            raise
        except Exception:
            self.metrics.failure(label, 500, time.perf_counter_ns() - start)
            raise
        self.metrics.success(answer.model, answer.version, sum(len(a) for _, _, a in answer.outputs[:1]),
                             time.perf_counter_ns() - start)
        return answer

    def _infer(self, model, inputs, outputs, parameters, version, request_id) -> InferAnswer:
        task = self.task(model, version)
        unknown = sorted(set(parameters) - REQUEST_PARAMETERS)
        if unknown:
            raise BadRequest(f"request parameter(s) {unknown} not supported; this server reads "
                             f"{sorted(REQUEST_PARAMETERS)}")
        top_k = parameters.get("top_k", 0)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise BadRequest("parameters.top_k must be a non-negative integer")
        if len(inputs) != 1:
            raise BadRequest(f"{task['name']} takes one input, got {len(inputs)}")
        name, x = inputs[0]
        if name != task["input"]["name"]:
            raise BadRequest(f"unknown input {name!r}; {task['name']} has one input, {task['input']['name']!r}")
        out_name = task["output"]["name"]
        for o in outputs:
            if o.name != out_name:
                raise BadRequest(f"unknown requested output(s) [{o.name!r}]; {task['name']} has [{out_name!r}]")
            if o.classification < 0:
                raise BadRequest("classification must be a positive class count")
        result = self.router.infer(task["name"], x, preprocess=x.dtype == np.uint8, top_k=top_k)
        task = result.task  # resolved once, in the version that answered: the answer names that version
        k = next((o.classification for o in outputs if o.classification), 0)
        if k:
            tensor = ("BYTES", classify(result.logits, task["class_names"], k))
        else:
            tensor = ("FP32", result.logits.astype(np.float32))
        extra = {"task_id": task["id"], "bundle_version": result.bundle_version,
                 "bundle_digest": result.bundle_digest, "backend": result.backend}
        if top_k:
            extra["top_k"] = [[{"class": c, "p": round(p, 6)} for c, p in row] for row in result.top_k]
        return InferAnswer(task["name"], str(result.bundle_version), [(out_name, *tensor)], extra, request_id)

    # -- repository, statistics ---------------------------------------------------------------------------------
    def repository_index(self) -> list[dict]:
        out = []
        for t in self.router.tasks():
            state, reason = self.router.state(t["name"])
            out.append({"name": t["name"], "version": str(self.router.version.bundle_version), "state": state,
                        "reason": reason})
        return out

    def load(self, model: str) -> None:
        self.router.load(model)

    def unload(self, model: str) -> None:
        self.router.unload(model)

    def statistics(self, model: str | None = None, version: str | None = None) -> list[dict]:
        tasks = [self.task(model, version)] if model else self.router.tasks()
        out = []
        for task in tasks:
            s = self.router.stats[task["id"]]
            out.append({"name": task["name"], "version": str(self.router.version.bundle_version),
                        "inference_count": s.items, "execution_count": s.requests, "error_count": s.errors,
                        "load_count": s.loads, "eviction_count": s.evictions, "last_inference": s.last_ns // 1_000_000,
                        "inference_stats": {"success": {"count": s.requests, "ns": s.total_ns}}})
        return out

    # -- admin --------------------------------------------------------------------------------------------------
    def authorize(self, authorization: str | None, what: str, peer: str = "?") -> None:
        """An admin call's ``Authorization`` value (``Bearer TOKEN``; the scheme is case-insensitive, RFC 7235; the
        credential compared in constant time)."""
        if self.token is None:
            raise Forbidden("admin API disabled: start the server with --token-file")
        scheme, _, credential = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self.token.encode()):
            log.warning("refused admin call %s from %s: missing or wrong bearer token", what, peer)
            raise Unauthorized("missing or wrong bearer token")

    def check_new_bundles_allowed(self, warn: bool = True) -> None:
        """Without trusted keys, a new bundle is refused unless the operator allowed unsigned ones (then warned, when
        one is on its way): the token alone must not decide what code runs on the device."""
        if self.router.trusted_keys is not None:
            return
        if not self.allow_unsigned:
            raise Forbidden("this device has no trusted keys: over-the-air bundles and activations need serve "
                            "--trusted-key KEY.pub (or --allow-unsigned)")
        if warn:
            log.warning("activating a bundle without a signature check (--allow-unsigned)")

    def activate(self, bundle: str) -> dict:
        self.check_new_bundles_allowed()
        return bundle_answer(self.router.activate(bundle))

    def rollback(self) -> dict:
        return bundle_answer(self.router.rollback())

    def upload_store(self, warn: bool = True):
        """Where an upload may land (the check comes before any byte is read)."""
        self.check_new_bundles_allowed(warn)
        if self.router.store.root is None:
            raise Forbidden("over-the-air updates are off: start the server with a bundle store")
        return self.router.store

    def upload_terms(self, max_bundle_bytes: int) -> dict:
        """What a client asks before it sends a bundle: 403 if this device takes none now, else its size cap and
        whether the bundle must be signed. A refusal that comes after an upload began may reach the client only as a
        connection reset (its body unread), so clients ask first."""
        self.upload_store(warn=False)
        return {"max_bundle_bytes": max_bundle_bytes, "signature_required": self.router.trusted_keys is not None}

    def activate_upload(self, path) -> dict:
        """Activate a bundle the store received; refused (or already active), the upload goes."""
        try:
            return bundle_answer(self.router.activate(path))
        finally:
            if str(path.resolve()) not in {e.path for e in self.router.store.history}:
                path.unlink(missing_ok=True)

    def metrics_text(self) -> tuple[bytes, str]:
        return self.metrics.exposition(self.started)


def bundle_answer(manifest: dict) -> dict:
    return {"bundle_version": manifest["bundle_version"], "bundle_digest": manifest["manifest_sha256"][:12],
            "tasks": [t["name"] for t in manifest["tasks"]]}


def classify(logits: np.ndarray, names: list[str], k: int) -> np.ndarray:
    """Triton's classification extension: per item the top ``k`` classes as ``"score:index:label"`` (the score is
    the logit, as Triton reports the output value; label from the class names), an object array of bytes [N, k]."""
    k = min(k, logits.shape[1])
    idx = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    out = np.empty((len(logits), k), dtype=object)
    for i, row in enumerate(idx):
        for j, c in enumerate(row):
            out[i, j] = f"{logits[i, c]:.6f}:{c}:{names[c]}".encode()
    return out


__all__ = ["EXTENSIONS", "InferAnswer", "RequestedOutput", "ServiceCore", "ServiceUnavailable", "classify"]
