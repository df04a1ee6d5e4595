"""Task id -> session: lazy loading, least-recently-used eviction under a memory budget (sizes measured when a
session opens), strict input validation, optional preprocessing from the manifest, and bundle updates without
downtime (the new version is verified and self-tested, then swapped in atomically; requests already running
finish on the version they started with). What is active, and what rollback returns to, is recorded in the
bundle store (``runtime.store``) before an activation answers; only newer versions are accepted."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle.archive import claimed_identity, tar_digest, unpack_bundle, verify_bundle
from ..bundle.engine import EngineSpec, engine_dir
from ..bundle.manifest import BundleError
from ..preprocess import normalize
from .backends import Session, open_session
from .errors import BadRequest, RuntimeFailure, ServiceUnavailable, UnknownTask, VersionConflict
from .store import BundleStore, Entry

log = logging.getLogger(__name__)


@dataclass
class TaskStats:
    requests: int = 0
    items: int = 0
    errors: int = 0
    total_ns: int = 0
    loads: int = 0
    evictions: int = 0
    last_ns: int = 0


@dataclass
class _Version:
    root: Path
    manifest: dict
    by_key: dict[str, dict]  # "3", "task_03" -> task entry
    options: dict = field(default_factory=dict)  # backend options its sessions open with
    unloaded: set = field(default_factory=set)  # task ids an operator unloaded (``Router.state``)
    source: Path | None = None  # the bundle as given (directory or .tar)
    unpacked: Path | None = None  # where a .tar was unpacked for it
    sessions: OrderedDict[int, Session] = field(default_factory=OrderedDict)  # LRU: oldest first

    @property
    def bundle_version(self) -> int:
        return self.manifest["bundle_version"]

    @property
    def digest(self) -> str:
        """A bundle's identity (two exports can both be version 1): its manifest digest, short form."""
        return self.manifest["manifest_sha256"][:12]


@dataclass(frozen=True)
class InferResult:
    task: dict
    logits: np.ndarray
    top_k: list[list[tuple[str, float]]]
    backend: str
    bundle_version: int
    bundle_digest: str = ""


def _index(manifest: dict) -> dict[str, dict]:
    out = {}
    for t in manifest["tasks"]:
        out[str(t["id"])] = out[t["name"]] = t
    return out


MAX_REQUEST_BATCH = 1024  # a request's batch limit; sessions take up to their engine's max, the router splits


class Router:
    """``store``: a directory (the device's ``BundleStore``: the active bundle and the rollback history survive
    restarts, and the command-line ``bundle`` only seeds the first start) or None (history in memory only)."""

    def __init__(self, bundle: str | Path, backend: str = "auto", memory_budget_bytes: int | None = None,
                 max_batch: int = MAX_REQUEST_BATCH, backend_options: dict | None = None,
                 workdir: str | Path | None = None, engine_spec: EngineSpec | None = None,
                 cache_dir: str | Path | None = None, trusted_keys: dict | None = None,
                 store: str | Path | None = None, keep: int = 3) -> None:
        self.backend, self.budget, self.max_batch = backend, memory_budget_bytes, max_batch
        self.trusted_keys = trusted_keys  # with keys: only bundles signed by one of them, at start and activation
        self.store = BundleStore(store, keep)  # the active bundle and what rollback can return to
        self.engine_spec = engine_spec or EngineSpec()
        # one engine cache for every version: engines are keyed by the model's sha256 (and the spec), so a task whose
        # model did not change between two bundles reuses its engine instead of rebuilding it
        self.cache_dir = Path(cache_dir) if cache_dir else engine_dir(bundle)
        self.backend_options = backend_options or {}
        self.workdir = Path(workdir) if workdir else None
        self._lock = threading.RLock()  # the active version and its sessions (held briefly, by requests too)
        self._admin = threading.Lock()  # activation, rollback and start: one at a time, from verify to record
        self._load_locks: dict[int, threading.Lock] = {}
        self._sizes: dict[str, int] = {}  # model sha256 -> bytes measured at its first load (RSS is noisy later)
        self.stats: dict[int, TaskStats] = {}
        self._active: _Version | None = None
        self._start(bundle)

    # -- versions -----------------------------------------------------------------------------------------------
    def _start(self, bundle: str | Path) -> None:
        """Serve the store's active bundle (the command-line ``bundle`` seeds an empty store, or replaces the
        active one when it is newer); a stored bundle that no longer verifies is logged as an error and the next
        older one serves, never silently."""
        self.store.sweep()
        history = self.store.history
        if not history:
            self.activate(bundle)
            return
        active = history[-1]
        try:
            digest, version = claimed_identity(bundle)
        except BundleError as exc:
            digest, version = "", -1
            log.warning("the command-line bundle %s is unreadable (%s); serving the store's", bundle, exc)
        if digest and digest not in {e.digest for e in history}:
            if version > active.bundle_version:
                log.info("the command-line bundle %s (version %d) is newer than the store's active bundle (version "
                         "%d): activating it", bundle, version, active.bundle_version)
                self.activate(bundle)
                return
            log.warning("the command-line bundle %s is version %d, not newer than the store's active bundle (version "
                        "%d, %s, active since %s): serving that one (a restart never goes back; POST "
                        "/v2/admin/rollback does)", bundle, version, active.bundle_version, active.short, active.since)
        with self._admin:
            for entry in reversed(history):
                try:
                    self._install(self._prepare(entry.path))
                except Exception as exc:  # noqa: BLE001 - the next kept bundle may serve; each failure is logged
                    log.error("stored bundle version %d (%s, %s) cannot serve: %s", entry.bundle_version,
                              entry.short, entry.path, exc)
                    continue
                if entry is not active:
                    log.error("serving the older stored bundle version %d (%s): the active one (version %d) failed "
                              "(see above)", entry.bundle_version, entry.short, active.bundle_version)
                log.info("bundle version %d (%s) from the store %s", entry.bundle_version, entry.short,
                         self.store.root)
                return
        log.error("no bundle kept in %s can serve; falling back to the command-line bundle %s", self.store.root,
                  bundle)
        with self._admin:
            self._install(self._prepare(bundle))

    def _options(self) -> dict:
        """Backend options of a version: the one engine spec and the one engine cache (engines never live in a
        per-start unpack directory, so they survive restarts)."""
        return {"spec": self.engine_spec, "cache_dir": self.cache_dir, **self.backend_options}

    def _prepare(self, bundle: str | Path, newer_than: Entry | None = None) -> _Version:
        """Verify ``bundle`` (signature too, with trusted keys), refuse it unless newer than ``newer_than``, then
        self-test every task. A refused .tar leaves no unpacked copy behind."""
        options = self._options()
        path = Path(bundle)
        if not path.exists():
            raise BundleError(f"{bundle} does not exist")
        unpacked = None
        if path.is_file():  # a .tar: unpacked once per manifest digest under a managed directory, then reused
            path = unpacked = self._unpacked(path)
        try:
            manifest = verify_bundle(path, self.trusted_keys)
            if unpacked is not None and manifest["manifest_sha256"][:16] != unpacked.name:
                raise BundleError(f"{unpacked} holds bundle {manifest['manifest_sha256'][:12]}, not the one its name "
                                  "says: the unpack cache was tampered with")
            same = newer_than is not None and manifest["manifest_sha256"] == newer_than.digest
            if newer_than is not None and not same and manifest["bundle_version"] <= newer_than.bundle_version:
                raise VersionConflict(
                    f"bundle version {manifest['bundle_version']} ({manifest['manifest_sha256'][:12]}) is not newer "
                    f"than the active bundle version {newer_than.bundle_version} ({newer_than.short}): refused "
                    "(anti-rollback); POST /v2/admin/rollback returns to a kept earlier bundle")
            version = _Version(path, manifest, _index(manifest), options, source=Path(bundle), unpacked=unpacked)
            for task in [] if same else manifest["tasks"]:  # every task must run before the version may serve
                open_session(self.backend, path, task, **options).close()
        except BaseException:
            kept = {e.digest[:16] for e in self.store.history}
            if unpacked is not None and unpacked.name not in kept and \
                    (self._active is None or self._active.unpacked != unpacked):
                shutil.rmtree(unpacked, ignore_errors=True)
            raise
        return version

    def _unpack_root(self, tar: Path) -> Path:
        if self.store.root is not None:
            return self.store.unpacked
        return self.workdir or tar.parent / ".pcl-edge-unpacked"

    def _unpacked(self, tar: Path) -> Path:
        """``<unpack root>/<digest>``: the tar's files, unpacked (safely) the first time, reused after (and verified
        every time). The unpack root is the store's, else WORKDIR, else ``.pcl-edge-unpacked`` beside the tar. A
        partial unpack never takes the final name."""
        base = self._unpack_root(tar)
        target = base / tar_digest(tar)[:16]
        if target.is_dir():
            return target
        base.mkdir(parents=True, exist_ok=True)
        tmp = unpack_bundle(tar, base / f".{target.name}-{secrets.token_hex(4)}")
        try:
            os.rename(tmp, target)
        except OSError:  # another activation of the same tar got there first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():
                raise
        return target

    def _install(self, new: _Version) -> None:
        """Swap ``new`` in: requests already running finish on the version they started with."""
        with self._lock:
            old, self._active = self._active, new
            for tid in [t["id"] for t in new.manifest["tasks"]]:
                self.stats.setdefault(tid, TaskStats())
        if old is not None:
            log.info("bundle version %s (%s) active (was %s, %s)", new.bundle_version, new.digest,
                     old.bundle_version, old.digest)

    def activate(self, bundle: str | Path) -> dict:
        """Verify + self-test ``bundle``, then make it the active version in one step and record it (on disk with a
        store) before returning. Refused, with the active version still serving: a bundle that fails verification
        or a self-test, or whose version is not newer than the active one (anti-rollback: ``rollback`` goes back).
        The bundle that is already active is a no-op. The last ``keep`` versions are kept for ``rollback``."""
        with self._admin:
            current = self.store.active
            new = self._prepare(bundle, newer_than=current)
            if current is not None and new.manifest["manifest_sha256"] == current.digest:  # verified, and identical
                log.info("bundle %s (%s) is already active", bundle, current.short)
                return self._active.manifest
            self._install(new)
            m = new.manifest
            dropped = self.store.record_activation(Entry(str(Path(bundle).resolve()), m["manifest_sha256"],
                                                         m["bundle_version"], self.store.owns(bundle)))
            self._discard(dropped)
        return m

    def rollback(self) -> dict:
        """Make the previous kept version active again (verified and self-tested anew) and record it; the current
        one is forgotten (and deleted, when the store received it)."""
        with self._admin:
            history = self.store.history
            if len(history) < 2:
                raise BadRequest("no earlier bundle is kept to roll back to")
            self._install(self._prepare(history[-2].path))
            _, dropped = self.store.record_rollback()
            self._discard([dropped])
            return self._active.manifest

    def _discard(self, entries: list[Entry]) -> None:
        """Files of versions no longer kept: uploads the store received and unpacked copies; bundles an operator
        supplied are never deleted."""
        self.store.discard(entries)
        kept = {e.digest for e in self.store.history}
        for e in entries:
            if e.digest not in kept and Path(e.path).is_file():  # a .tar (an operator's) may have an unpacked copy
                shutil.rmtree(self._unpack_root(Path(e.path)) / e.digest[:16], ignore_errors=True)

    @property
    def version(self) -> _Version:
        v = self._active
        if v is None:
            raise ServiceUnavailable("no bundle is active")
        return v

    def tasks(self) -> list[dict]:
        return list(self.version.manifest["tasks"])

    def resolve(self, model: str | int, version: _Version | None = None) -> dict:
        """A task by id (3), its string ("3") or its name ("task_03"), in ``version`` (default: the active one)."""
        version = version or self.version
        task = version.by_key.get(str(model))
        if task is None:
            known = ", ".join(t["name"] for t in version.manifest["tasks"])
            raise UnknownTask(f"unknown task {model!r}; this bundle serves {known}")
        return task

    # -- sessions -----------------------------------------------------------------------------------------------
    def loaded(self) -> dict[int, int]:
        """Task id -> bytes of the sessions held now, least recently used first."""
        with self._lock:
            return {tid: s.nbytes for tid, s in self.version.sessions.items()}

    def _session(self, version: _Version, task: dict) -> Session:
        tid = task["id"]
        with self._lock:
            s = version.sessions.get(tid)
            if s is not None:
                version.sessions.move_to_end(tid)
                return s
            load_lock = self._load_locks.setdefault(tid, threading.Lock())
        with load_lock:  # one load per task at a time; other tasks keep serving meanwhile
            with self._lock:
                s = version.sessions.get(tid)
                if s is not None:
                    return s
            s = open_session(self.backend, version.root, task, **version.options)
            s.nbytes = self._sizes.setdefault(task["sha256"], s.nbytes)
            if self.budget is not None and s.nbytes > self.budget:
                s.close()
                raise ServiceUnavailable(f"task {tid} needs {s.nbytes / 2**20:.1f} MiB, more than the whole memory "
                                         f"budget ({self.budget / 2**20:.1f} MiB)")
            with self._lock:
                version.sessions[tid] = s
                self.stats[tid].loads += 1
                while self.budget is not None and sum(x.nbytes for x in version.sessions.values()) > self.budget:
                    victim, _ = version.sessions.popitem(last=False)  # in-flight users keep their reference
                    self.stats[victim].evictions += 1
                    log.info("evicted task %s to stay within %.1f MiB", victim, self.budget / 2**20)
            return s

    def set_memory_budget(self, nbytes: int | None) -> None:
        """Change the budget; sessions over it are evicted least recently used first."""
        with self._lock:
            self.budget = nbytes
            sessions = self.version.sessions
            while nbytes is not None and len(sessions) > 0 and sum(s.nbytes for s in sessions.values()) > nbytes:
                victim, _ = sessions.popitem(last=False)
                self.stats[victim].evictions += 1

    # -- states: the one definition every endpoint answers from ---------------------------------------------
    # READY: the task answers (its session is open, or opens on the first request: "loads on first request");
    # UNAVAILABLE: an operator unloaded it; it answers nothing until loaded again.
    def state(self, model: str | int) -> tuple[str, str]:
        """(state, reason) of a task of the active version."""
        version = self.version
        tid = self.resolve(model, version)["id"]
        if tid in version.unloaded:
            return "UNAVAILABLE", "unloaded"
        return "READY", "loaded" if tid in version.sessions else "loads on first request"

    def load(self, model: str | int) -> Session:
        version = self.version
        task = self.resolve(model, version)
        version.unloaded.discard(task["id"])
        return self._session(version, task)

    def unload(self, model: str | int) -> bool:
        """Close the task's session and keep it closed: it answers nothing until ``load``."""
        version = self.version
        task = self.resolve(model, version)
        with self._lock:
            version.unloaded.add(task["id"])
            return version.sessions.pop(task["id"], None) is not None

    # -- inference ----------------------------------------------------------------------------------------------
    def validate(self, task: dict, x: np.ndarray, preprocess: bool) -> np.ndarray:
        c, h, w = task["input"]["shape"]
        if preprocess:
            if x.dtype != np.uint8:
                raise BadRequest(f"preprocessing takes uint8 images, got {x.dtype}")
            if x.ndim == 3:
                x = x[None]
            if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, c):
                raise BadRequest(f"{task['name']} takes uint8 images of shape [N, {h}, {w}, {c}] (NHWC), got "
                                 f"{list(x.shape)}")
            x = normalize(x, task["input"]["mean"], task["input"]["std"])
        else:
            if x.dtype != np.float32:
                raise BadRequest(f"{task['name']} takes FP32 tensors, got {x.dtype} (or send uint8 images with "
                                 "preprocessing)")
            if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
                raise BadRequest(f"{task['name']} takes shape [N, {c}, {h}, {w}], got {list(x.shape)}")
        if not 1 <= x.shape[0] <= self.max_batch:
            raise BadRequest(f"batch size {x.shape[0]} outside 1..{self.max_batch}")
        if not np.all(np.isfinite(x)):
            raise BadRequest("input holds NaN or infinity")
        return np.ascontiguousarray(x, np.float32)

    def infer(self, model: str | int, x: np.ndarray, preprocess: bool = False, top_k: int = 0) -> InferResult:
        version = self.version  # this request finishes on the version it started with
        task = self.resolve(model, version)
        if task["id"] in version.unloaded:
            raise ServiceUnavailable(f"{task['name']} is unloaded; POST /v2/repository/models/{task['name']}/load "
                                     "to serve it again")
        stats = self.stats[task["id"]]
        start = time.perf_counter_ns()
        try:
            x = self.validate(task, np.asarray(x), preprocess)
            session = self._session(version, task)
            limit = getattr(session, "max_batch", None) or len(x)  # an engine's profile limit: split, answer whole
            try:
                logits = np.concatenate([session.run(x[i:i + limit]) for i in range(0, len(x), limit)])
            except RuntimeFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - the backend's own failure: a 500 / serial code 1, not a crash
                log.exception("task %s: backend %s failed", task["id"], session.name)
                raise RuntimeFailure(f"task {task['name']}: backend {session.name} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
        except Exception:
            stats.errors += 1
            raise
        elapsed = time.perf_counter_ns() - start
        stats.requests, stats.items, stats.total_ns, stats.last_ns = (stats.requests + 1, stats.items + len(x),
                                                                      stats.total_ns + elapsed, time.time_ns())
        return InferResult(task, logits, _top_k(logits, task["class_names"], top_k) if top_k else [], session.name,
                           version.bundle_version, version.digest)


def _top_k(logits: np.ndarray, names: list[str], k: int) -> list[list[tuple[str, float]]]:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    idx = np.argsort(-p, 1)[:, : min(k, len(names))]
    return [[(names[j], float(p[i, j])) for j in row] for i, row in enumerate(idx)]
