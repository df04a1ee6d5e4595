"""The device's bundle store: what it serves, what it can roll back to, and where over-the-air uploads land. It
lives on disk so that a restart (crash, OOM kill, power cut) serves what was last activated, never silently the
bundle named on the command line again.

    STORE/store.json        {"format": "pcl-edge-store", "version": 1, "history": [ENTRY, ...]}: oldest first, the
                            last one is the active bundle; ENTRY = {path, digest, bundle_version, owned, since}
    STORE/uploads/          bundles received over the air (owned by the store: deleted once out of the history)
    STORE/unpacked/<id>/    .tar bundles unpacked once (a partial unpack never takes the final name)
    STORE/engines.json      the TensorRT engines this service built, with their plans' sha256 (``EngineLedger``)
    STORE/.upload-*.part    uploads in progress (removed at start)

Every change of ``store.json`` is atomic (write a temporary file, fsync it, rename it, fsync the directory), and is
made before the device answers the call that caused it: a ``kill -9`` at any point leaves the old or the new record,
and the record only names bundles that are complete on disk. Files the record does not name are removed at start
(what an interrupted upload or activation left). Bundles an operator supplied (the command-line bundle, a path given
to ``/v2/admin/activate``) are never deleted; only what the store received itself is.

Without a directory the store keeps its history in memory (a router used as a library): same rules, no
persistence."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .._io import atomic_open, read_json
from ..bundle.manifest import BundleError

log = logging.getLogger(__name__)
FORMAT = "pcl-edge-store"
STORE_FILE = "store.json"
LEDGER = "engines.json"  # the engines this service built (bundle.engine.EngineLedger): trusted because only it writes
# what a store may hold besides its directories (a store made before store.json existed included; a kill -9 may leave
# temporary files of the two records): such a directory is adopted, anything else is refused
_OURS = ("bundle-*.tar", ".upload-*.part", ".pcl-edge-unpacked", f".{STORE_FILE}.*.tmp", f".{LEDGER}.*.tmp",
         f"{LEDGER}.lock", ".lock")
_HELD: dict[Path, object] = {}  # store directory -> this process's open, locked .lock file


class StoreError(BundleError):
    """A directory that is not a bundle store, or a store record that cannot be read."""


@dataclass(frozen=True)
class Entry:
    path: str  # the bundle as given or received (a directory or a .tar)
    digest: str  # its manifest_sha256 (identity: two exports may share a version)
    bundle_version: int
    owned: bool  # received by the store (deleted when it leaves the history); False: an operator's file
    since: str = ""  # when it became active (UTC)

    @property
    def short(self) -> str:
        return self.digest[:12]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX: the directory entry lives in the directory)."""
    with contextlib.suppress(OSError):  # some filesystems cannot open directories; the rename still happened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BundleStore:
    def __init__(self, root: str | os.PathLike | None, keep: int = 3) -> None:
        self.root = Path(root) if root else None
        self.keep = max(1, keep)
        self._history: list[Entry] = []
        if self.root is not None:
            self._open()

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def uploads(self) -> Path:
        return self._dir("uploads")

    @property
    def unpacked(self) -> Path:
        return self._dir("unpacked")

    def _dir(self, name: str) -> Path:
        if self.root is None:
            raise StoreError("this router has no bundle store (no directory)")
        return self.root / name

    def owns(self, path: str | os.PathLike) -> bool:
        return self.root is not None and Path(path).resolve().parent == self.uploads.resolve()

    # -- the record ---------------------------------------------------------------------------------------------
    def _open(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise StoreError(f"bundle store {root} is a file, not a directory; point --bundle-store at a directory")
        record = root / STORE_FILE
        if record.is_file():
            try:
                raw = read_json(record)
                if not isinstance(raw, dict) or raw.get("format") != FORMAT:
                    raise ValueError(f"format is {raw.get('format') if isinstance(raw, dict) else raw!r}")
                self._history = [Entry(**e) for e in raw["history"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{record} is not a pcl-edge bundle store record ({exc}); restore it or point "
                                 "--bundle-store at a new directory") from None
        elif root.is_dir():
            foreign = [p.name for p in root.iterdir()
                       if not any(p.match(g) for g in _OURS) and p.name not in ("uploads", "unpacked", LEDGER)]
            if foreign:
                raise StoreError(f"{root} is not a pcl-edge bundle store (it holds {sorted(foreign)[:3]} and no "
                                 f"{STORE_FILE}); point --bundle-store at an empty or new directory")
        if not record.is_file():
            log.warning("bundle store %s is new: this device's bundle history starts here (a device that served "
                        "before from another store should keep using that one: anti-rollback knows only its store)",
                        root)
        root.mkdir(parents=True, exist_ok=True)
        self._hold(root)
        self.uploads.mkdir(exist_ok=True)
        self.unpacked.mkdir(exist_ok=True)

    @staticmethod
    def _hold(root: Path) -> None:
        """One service per store: an advisory lock on ``STORE/.lock`` for the life of this process (released by the
        kernel whatever ends it). A second service on the same store gets one clear error instead of sweeping the
        first one's uploads."""
        import fcntl

        key = root.resolve()
        if key in _HELD:  # this process already holds it (a router re-created in the same process)
            return
        fh = open(root / ".lock", "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "?"
            fh.close()
            raise StoreError(f"bundle store {root} is in use by another process (pid {who}): one service per "
                             "store") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        _HELD[key] = fh

    @property
    def history(self) -> list[Entry]:
        """Kept bundles, oldest first; the last one is the active bundle."""
        return list(self._history)

    @property
    def active(self) -> Entry | None:
        return self._history[-1] if self._history else None

    def _save(self, history: list[Entry]) -> None:
        """Make ``history`` the record: on disk first (when there is a disk), then in memory, so a failed write
        changes neither."""
        if self.root is not None:
            with atomic_open(self.root / STORE_FILE, "w") as fh:
                json.dump({"format": FORMAT, "version": 1, "history": [asdict(e) for e in history]}, fh, indent=1)
                fh.write("\n")
            fsync_dir(self.root)
        self._history = history

    def record_activation(self, entry: Entry) -> list[Entry]:
        """``entry`` is now active (persisted before this returns); returns the entries that left the history."""
        entry = replace(entry, since=_now())
        old = self._history
        kept = ([e for e in old if e.digest != entry.digest] + [entry])[-self.keep:]
        self._save(kept)
        return [e for e in old if e not in kept]

    def record_rollback(self) -> tuple[Entry, Entry]:
        """Forget the active bundle: the one before it is active again (persisted). Returns (now active, dropped)."""
        if len(self._history) < 2:
            raise StoreError("no earlier bundle is kept to roll back to")
        dropped = self._history[-1]
        self._save(self._history[:-2] + [replace(self._history[-2], since=_now())])
        return self._history[-1], dropped

    # -- files --------------------------------------------------------------------------------------------------
    def discard(self, entries: list[Entry]) -> None:
        """Delete what the store owns of entries that left the history: their uploads (never an operator's bundle)
        and their unpacked copies."""
        if self.root is None:
            return
        names, digests = {e.path for e in self._history}, {e.digest for e in self._history}
        for e in entries:
            if e.owned and e.path not in names:
                Path(e.path).unlink(missing_ok=True)
            if e.digest not in digests:
                shutil.rmtree(self.unpacked / e.digest[:16], ignore_errors=True)

    def sweep(self) -> list[str]:
        """At start: remove what no record names (partial uploads, uploads never activated, unpack directories of
        bundles no longer kept or half made): what a kill -9 in the middle of an upload or activation left."""
        if self.root is None:
            return []
        named = {Path(e.path).resolve() for e in self._history}
        keep = {e.digest[:16] for e in self._history if Path(e.path).is_file()}  # only .tar bundles have copies
        gone = []
        for p in [*self.root.glob(".upload-*.part"), *self.root.glob(f".{STORE_FILE}.*.tmp"),
                  *self.root.glob(f".{LEDGER}.*.tmp"), *self.uploads.iterdir()]:
            if p.resolve() not in named:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                gone.append(p.name)
        for p in self.unpacked.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
        if gone:
            log.info("bundle store %s: removed %d leftover(s) of an interrupted upload or activation: %s", self.root,
                     len(gone), ", ".join(sorted(gone)))
        return gone
