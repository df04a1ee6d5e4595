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
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle.archive import claimed_identity, tar_digest, unpack_bundle, verify_bundle
from ..bundle.engine import EngineLedger, EngineSpec, engine_dir
from ..bundle.manifest import BundleError
from ..preprocess import normalize
from .backends import Session, open_session
from .errors import BadRequest, RuntimeFailure, ServiceUnavailable, UnknownTask, VersionConflict
from .store import LEDGER, BundleStore, Entry

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
    retired: bool = False  # no longer active: its sessions close as soon as no request holds them
    inflight: int = 0  # requests answering from this version now
    on_idle: list = field(default_factory=list)  # what waits for its last request (deleting its files)

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
        self._load_lock = threading.Lock()  # one load at a time: what it costs is accounted before the next starts
        self._users: Counter[int] = Counter()  # id(session) -> requests using it now
        self._doomed: dict[int, Session] = {}  # out of service (evicted, unloaded, retired) but still in use
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
                try:
                    self.activate(bundle)
                    return
                except Exception as exc:  # noqa: BLE001 - the stored bundle still serves; the refusal is logged
                    log.error("the command-line bundle %s cannot serve (%s); serving the store's active bundle",
                              bundle, exc)
            else:
                log.warning("the command-line bundle %s is version %d, not newer than the store's active bundle "
                            "(version %d, %s, active since %s): serving that one (a restart never goes back; POST "
                            "/v2/admin/rollback does)", bundle, version, active.bundle_version, active.short,
                            active.since)
        with self._admin:
            for entry in reversed(history):
                try:
                    self._install(self._prepare(entry.path, fresh=False))
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
        ledger = EngineLedger(self.store.root / LEDGER) if self.store.root is not None else None
        return {"spec": self.engine_spec, "cache_dir": self.cache_dir, "ledger": ledger, **self.backend_options}

    def _prepare(self, bundle: str | Path, newer_than: Entry | None = None, serving: str | None = None,
                 fresh: bool = True) -> _Version:
        """Verify ``bundle`` (signature too, with trusted keys), refuse it unless newer than ``newer_than``, then
        self-test every task. A refused .tar leaves no unpacked copy behind."""
        options = self._options()
        path = Path(bundle)
        if not path.exists():
            raise BundleError(f"{bundle} does not exist")
        unpacked = manifest = None
        if path.is_file():  # a .tar: unpacked (verified) under a managed directory, one copy per manifest digest
            path = unpacked = self._unpacked(path, fresh)
        try:
            manifest = verify_bundle(path, self.trusted_keys)
            if unpacked is not None and manifest["manifest_sha256"][:16] != unpacked.name:
                raise BundleError(f"{unpacked} holds bundle {manifest['manifest_sha256'][:12]}, not the one its name "
                                  "says: the unpack cache was tampered with")
            same = manifest["manifest_sha256"] == serving  # what serves now: nothing to test again
            if newer_than is not None and not same and manifest["manifest_sha256"] != newer_than.digest and \
                    manifest["bundle_version"] <= newer_than.bundle_version:
                raise VersionConflict(
                    f"bundle version {manifest['bundle_version']} ({manifest['manifest_sha256'][:12]}) is not newer "
                    f"than the active bundle version {newer_than.bundle_version} ({newer_than.short}): refused "
                    "(anti-rollback); POST /v2/admin/rollback returns to a kept earlier bundle")
            version = _Version(path, manifest, _index(manifest), options, source=Path(bundle), unpacked=unpacked)
            for task in [] if same else manifest["tasks"]:  # every task must run before the version may serve
                session = open_session(self.backend, path, task, **options)
                self._sizes.setdefault(task["sha256"], session.nbytes)  # known before its first load: room is made
                session.close()
        except BaseException:
            if unpacked is not None and unpacked.name not in self._unpacked_in_use():
                shutil.rmtree(unpacked, ignore_errors=True)
            if manifest is not None:  # a refused bundle leaves no engines its self-test built either
                self._prune_engines({t["sha256"] for t in manifest["tasks"]})
            raise
        return version

    def _unpacked_in_use(self) -> set[str]:
        """Unpacked copies something needs: the serving version's, and those of kept .tar bundles."""
        used = {e.digest[:16] for e in self.store.history if Path(e.path).is_file()}
        if self._active is not None and self._active.unpacked is not None:
            used.add(self._active.unpacked.name)
        return used

    def _unpack_root(self, tar: Path) -> Path:
        if self.store.root is not None:
            return self.store.unpacked
        return self.workdir or tar.parent / ".pcl-edge-unpacked"

    def _unpacked(self, tar: Path, fresh: bool = True) -> Path:
        """``<unpack root>/<digest>``: the tar's files, unpacked and verified. ``fresh`` (every activation): this tar
        itself is unpacked and verified, signature and every file, even when a copy of its digest exists (a tar that
        only claims a known digest rides on nothing); then the one copy per digest serves. Not ``fresh`` (a start from
        the store's own record): the copy is reused, and verified again by the caller. The unpack root is the store's,
        else WORKDIR, else ``.pcl-edge-unpacked`` beside the tar. A partial unpack never takes the final name."""
        base = self._unpack_root(tar)
        target = base / tar_digest(tar)[:16]
        if target.is_dir() and not fresh:
            return target
        base.mkdir(parents=True, exist_ok=True)
        tmp = unpack_bundle(tar, base / f".{target.name}-{secrets.token_hex(4)}", self.trusted_keys)
        if target.is_dir():  # the same verified content is there already
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        try:
            os.rename(tmp, target)
        except OSError:  # another activation of the same tar got there first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():
                raise
        return target

    def _install(self, new: _Version) -> _Version | None:
        """Swap ``new`` in: requests already running finish on the version they started with, and the old version's
        sessions are closed as each is released (a rollback reopens what it needs: nothing stays resident for it)."""
        with self._lock:
            old, self._active = self._active, new
            for tid in [t["id"] for t in new.manifest["tasks"]]:
                self.stats.setdefault(tid, TaskStats())
            if old is not None:
                old.retired = True
                for session in old.sessions.values():
                    self._retire(session)
                old.sessions.clear()
        if old is not None:
            log.info("bundle version %s (%s) active (was %s, %s)", new.bundle_version, new.digest,
                     old.bundle_version, old.digest)
        return old

    def activate(self, bundle: str | Path) -> dict:
        """Verify + self-test ``bundle``, then make it the active version in one step and record it (on disk with a
        store) before returning. Refused, with the active version still serving: a bundle that fails verification
        or a self-test, or whose version is not newer than the active one (anti-rollback: ``rollback`` goes back).
        The bundle that is already active is a no-op. The last ``keep`` versions are kept for ``rollback``."""
        with self._admin:
            serving = self._active.manifest["manifest_sha256"] if self._active is not None else None
            new = self._prepare(bundle, newer_than=self.store.active, serving=serving)
            if new.manifest["manifest_sha256"] == serving:  # verified, and identical to what serves
                log.info("bundle %s (%s) is already active", bundle, new.digest)
                if new.unpacked is not None and new.unpacked.name not in self._unpacked_in_use():
                    shutil.rmtree(new.unpacked, ignore_errors=True)  # the copy made to verify it is not needed
                return self._active.manifest
            m = new.manifest  # recorded first: if the record cannot be written, nothing changed
            dropped = self.store.record_activation(Entry(str(Path(bundle).resolve()), m["manifest_sha256"],
                                                         m["bundle_version"], self.store.owns(bundle)))
            old = self._install(new)
            self._when_idle(old, lambda: self._discard(dropped))
        return m

    def rollback(self) -> dict:
        """Make the previous kept version active again (verified and self-tested anew) and record it; the current
        one is forgotten (and deleted, when the store received it)."""
        with self._admin:
            history = self.store.history
            if len(history) < 2:
                raise BadRequest("no earlier bundle is kept to roll back to")
            previous = self._prepare(history[-2].path, fresh=False)
            _, dropped = self.store.record_rollback()
            old = self._install(previous)
            self._when_idle(old, lambda: self._discard([dropped]))
            return previous.manifest

    def _admin_run(self, actions: list) -> None:
        with self._admin:
            for action in actions:
                action()

    def _when_idle(self, version: _Version | None, action) -> None:
        """Run ``action`` (deleting files a retired version may still read) once no request answers from it."""
        with self._lock:
            if version is not None and version.inflight > 0:
                version.on_idle.append(action)
                return
        action()

    def _discard(self, entries: list[Entry]) -> None:
        """Files of versions no longer kept: uploads the store received, unpacked copies, and engines of models no
        kept bundle has; bundles an operator supplied are never deleted."""
        gone = set()
        for e in entries:
            gone |= _model_shas(e.path) or set()
        self.store.discard(entries)
        kept = {e.digest for e in self.store.history}
        for e in entries:
            if e.digest not in kept and Path(e.path).is_file():  # a .tar (an operator's) may have an unpacked copy
                shutil.rmtree(self._unpack_root(Path(e.path)) / e.digest[:16], ignore_errors=True)
        self._prune_engines(gone)

    def _prune_engines(self, shas: set[str]) -> None:
        """Remove cached engines of these models unless a kept bundle (or the one serving) still uses them; when
        what a kept bundle uses cannot be read, nothing is removed."""
        if not shas or not self.cache_dir.is_dir():
            return
        used = set(t["sha256"] for t in self._active.manifest["tasks"]) if self._active else set()
        for e in self.store.history:
            models = _model_shas(e.path)
            if models is None:
                return
            used |= models
        for sha in shas - used:
            for f in self.cache_dir.glob(f"{sha[:16]}-*.engine"):
                f.unlink(missing_ok=True)

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
    # A session in service lives in its version's LRU; a request leases it (``_users``) for as long as it runs. One
    # taken out of service (evicted, unloaded, or of a retired version) is closed at once when nobody holds it, else
    # when its last request releases it: memory is given back, and GPU buffers and streams freed, every time.
    def loaded(self) -> dict[int, int]:
        """Task id -> bytes of the active version's sessions, least recently used first."""
        with self._lock:
            return {tid: s.nbytes for tid, s in self.version.sessions.items()}

    def resident_bytes(self) -> int:
        """Everything held now: the active version's sessions and those out of service that a request still uses."""
        with self._lock:
            return sum(s.nbytes for s in self.version.sessions.values()) + sum(s.nbytes for s in self._doomed.values())

    def _retire(self, session: Session) -> None:
        """Take ``session`` out of service (caller holds ``_lock``): closed now, or by its last user."""
        if self._users[id(session)] > 0:
            self._doomed[id(session)] = session
        else:
            self._users.pop(id(session), None)
            session.close()

    def _release(self, session: Session) -> None:
        with self._lock:
            self._users[id(session)] -= 1
            if self._users[id(session)] > 0:
                return
            del self._users[id(session)]
            doomed = self._doomed.pop(id(session), None)
        if doomed is not None:
            doomed.close()

    def _evict(self, version: _Version, room: int = 0, keep: Session | None = None) -> None:
        """Evict least recently used sessions of ``version`` until ``room`` more bytes fit the budget (caller holds
        ``_lock``). Sessions still in use by a request count until they are released."""
        if self.budget is None:
            return
        while version.sessions and self._held(version) + room > self.budget:
            victim_tid, victim = next(iter(version.sessions.items()))
            if victim is keep:
                break
            version.sessions.popitem(last=False)
            self.stats[victim_tid].evictions += 1
            self._retire(victim)
            log.info("evicted task %s to stay within %.1f MiB", victim_tid, self.budget / 2**20)

    def _held(self, version: _Version) -> int:
        return sum(s.nbytes for s in version.sessions.values()) + sum(s.nbytes for s in self._doomed.values())

    def _session(self, version: _Version, task: dict) -> Session:
        """A leased session of ``task`` (release it with ``_release``): the open one, or a new one. Loads happen one at
        a time, and each is accounted (room made first when its size is known, the budget enforced right after) in
        the same step, so concurrent loads never each pass the budget alone."""
        tid = task["id"]
        with self._lock:
            s = version.sessions.get(tid)
            if s is not None:
                version.sessions.move_to_end(tid)
                self._users[id(s)] += 1
                return s
        with self._load_lock:
            with self._lock:
                s = version.sessions.get(tid)
                if s is not None:
                    self._users[id(s)] += 1
                    return s
                known = self._sizes.get(task["sha256"])
                if known is not None:
                    self._evict(version, room=known)
            s = open_session(self.backend, version.root, task, **version.options)
            s.nbytes = self._sizes.setdefault(task["sha256"], s.nbytes)
            if self.budget is not None and s.nbytes > self.budget:
                s.close()
                raise ServiceUnavailable(f"task {tid} needs {s.nbytes / 2**20:.1f} MiB, more than the whole memory "
                                         f"budget ({self.budget / 2**20:.1f} MiB)")
            with self._lock:
                self._users[id(s)] += 1
                if version.retired or tid in version.unloaded:  # gone, or unloaded, while this loaded: serve this
                    self._doomed[id(s)] = s                       # request, then close it
                    return s
                version.sessions[tid] = s
                self.stats[tid].loads += 1
                self._evict(version, keep=s)
            return s

    def set_memory_budget(self, nbytes: int | None) -> None:
        """Change the budget; sessions over it are evicted least recently used first."""
        with self._lock:
            self.budget = nbytes
            self._evict(self.version)

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
        session = self._session(version, task)
        self._release(session)
        return session

    def unload(self, model: str | int) -> bool:
        """Close the task's session and keep it closed: it answers nothing until ``load``."""
        version = self.version
        task = self.resolve(model, version)
        with self._lock:
            version.unloaded.add(task["id"])
            session = version.sessions.pop(task["id"], None)
            if session is not None:
                self._retire(session)
            return session is not None

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
        with self._lock:  # this request finishes on the version it started with, whose files stay until it ends
            version = self.version
            version.inflight += 1
        try:
            return self._infer(version, model, x, preprocess, top_k)
        finally:
            with self._lock:
                version.inflight -= 1
                idle = version.on_idle if version.retired and version.inflight == 0 else []
                version.on_idle = [] if idle else version.on_idle
            if idle:  # under the admin lock (never beside an activation), and not on this request's time
                threading.Thread(target=self._admin_run, args=(idle,), name="retire", daemon=True).start()

    def _infer(self, version: _Version, model: str | int, x: np.ndarray, preprocess: bool, top_k: int
               ) -> InferResult:
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
            finally:
                self._release(session)
        except Exception:
            stats.errors += 1
            raise
        elapsed = time.perf_counter_ns() - start
        stats.requests, stats.items, stats.total_ns, stats.last_ns = (stats.requests + 1, stats.items + len(x),
                                                                      stats.total_ns + elapsed, time.time_ns())
        return InferResult(task, logits, _top_k(logits, task["class_names"], top_k) if top_k else [], session.name,
                           version.bundle_version, version.digest)


def _model_shas(bundle: str | Path) -> set[str] | None:
    """The model sha256s a bundle claims (directory or .tar), or None when it cannot be read."""
    try:
        path = Path(bundle)
        if path.is_dir():
            import json

            manifest = json.loads((path / "manifest.json").read_text())
        else:
            from ..bundle.archive import tar_manifest

            manifest = tar_manifest(path)
        return {t["sha256"] for t in manifest["tasks"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _top_k(logits: np.ndarray, names: list[str], k: int) -> list[list[tuple[str, float]]]:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    idx = np.argsort(-p, 1)[:, : min(k, len(names))]
    return [[(names[j], float(p[i, j])) for j in row] for i, row in enumerate(idx)]
