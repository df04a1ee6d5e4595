"""Decode once, read memory-mapped: pools from file-based sources are cached as ``.npy`` files and read back with
``np.load(mmap_mode="r")``, so a second run loads in milliseconds and a source larger than RAM is paged in as it is
read instead of being held whole.

The cache lives outside the repository (``$PCL_EDGE_CACHE`` or ``~/.cache/pcl_edge``). Each entry is a directory
``<kind>-<signature>/`` (``x_train.npy``, ``y_train.npy``, ``classes.json``, and ``x_test.npy``/``y_test.npy`` when
the source has a test split, and ``complete.json`` written last), built in a temporary sibling and renamed into
place, so a crash never leaves half an entry. ``splits/`` holds one file per task selection a mapped stream used
(another seed or task plan adds its own): delete an entry's directory to reclaim the space; it is rebuilt when
needed. Its key hashes the source kind, the resolved path and the size/mtime signature of the files, so editing a
dataset invalidates it. Entries of the older single-file format (``<kind>-<signature>.npz``) are converted on first
read. Large task selections from a mapped pool are written under the entry's ``splits/`` (``take``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from .pool import Pool

log = logging.getLogger(__name__)
CHUNK_BYTES = 8 << 20  # copied per step when an array is written through a mapping


def cache_dir() -> Path:
    return Path(os.environ.get("PCL_EDGE_CACHE", Path.home() / ".cache" / "pcl_edge"))


def file_signature(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def entry_path(kind: str, signature: str) -> Path:
    return cache_dir() / f"{kind}-{signature}"


def cached(kind: str, signature: str) -> Pool | None:
    """The cached pool, memory-mapped, or None when there is none (or it is damaged: it is then rebuilt, never
    trusted)."""
    entry = entry_path(kind, signature)
    if entry.is_dir():
        try:
            return _open(entry)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache %s (%s)", entry, exc)
            return None
    legacy = entry.with_name(entry.name + ".npz")
    if legacy.is_file():
        try:
            with np.load(legacy, allow_pickle=False) as z:
                pool = _from_arrays(z)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache %s (%s)", legacy, exc)
            return None
        pool = store(kind, signature, pool)
        legacy.unlink(missing_ok=True)
        log.info("converted cache %s to memory-mappable files in %s", legacy.name, entry)
        return pool
    return None


def cached_pool(kind: str, signature: str, load: Callable[[], Pool]) -> Pool:
    """The cached pool, or ``load()`` written to the cache and returned memory-mapped."""
    pool = cached(kind, signature)
    return pool if pool is not None else store(kind, signature, load())


def store(kind: str, signature: str, pool: Pool) -> Pool:
    """Write an in-memory pool as a cache entry; the entry, memory-mapped."""
    with staging(kind, signature) as tmp:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            a = getattr(pool, name)
            if a is not None:
                np.save(tmp / f"{name}.npy", a)
        write_classes(tmp, pool.class_names)
    log.info("cached decoded %s data at %s", kind, entry_path(kind, signature))
    return _open(entry_path(kind, signature))


def write_classes(entry: Path, class_names: Iterable[str]) -> None:
    (entry / "classes.json").write_text(json.dumps(list(class_names)))


STALE_STAGING_S = 24 * 3600  # a staging directory untouched this long was left by a process that died


@contextlib.contextmanager
def staging(kind: str, signature: str) -> Iterator[Path]:
    """A temporary directory to fill with an entry's files. On a clean exit the files and the directory are synced,
    a ``complete.json`` naming every file is written last, and the directory is renamed into place. An entry
    another process completed meanwhile is kept (ours is dropped: same key, same content); a damaged one is moved
    aside and removed, never deleted from under a reader of a good one. Staging directories left by processes
    that died more than a day ago are swept."""
    final = entry_path(kind, signature)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        files = sorted(f.name for f in tmp.iterdir())
        (tmp / "complete.json").write_text(json.dumps({"files": files}))
        for name in [*files, "complete.json"]:
            _fsync(tmp / name)
        _fsync(tmp)
        if final.is_dir():
            try:
                _open(final)
                return  # another process finished the same entry first: keep it
            except (OSError, ValueError, KeyError):
                aside = final.with_name(f".{final.name}.damaged-{os.getpid()}")
                os.replace(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its entry in first
            if not final.is_dir():
                raise
        _fsync(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep(final: Path) -> None:
    import time

    for old in final.parent.glob(f".{final.name}.*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old) if old.is_dir() else old.unlink()


def write_array(path: Path, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]) -> None:
    """Create ``path`` as a ``.npy`` of ``shape`` and let ``fill`` write into its mapping (never all in RAM)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        fill(out)
        out.flush()
    finally:
        del out


def gather(dst: np.ndarray, src: np.ndarray, idx: np.ndarray) -> None:
    """``dst[:] = src[idx]``, ``CHUNK_BYTES`` at a time."""
    step = max(1, CHUNK_BYTES // max(1, src[:1].nbytes))
    for i in range(0, len(idx), step):
        dst[i: i + step] = src[idx[i: i + step]]


def in_ram_budget() -> int:
    """Bytes of images a stream may copy into RAM (``$PCL_EDGE_IN_RAM_MB``; default a quarter of physical memory).
    Selections from a mapped pool larger than this are mapped too."""
    env = os.environ.get("PCL_EDGE_IN_RAM_MB")
    if env is not None:
        return int(float(env) * 2**20)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 2**31


def mapped(pool: Pool) -> bool:
    return isinstance(pool.x_train, np.memmap) and getattr(pool.x_train, "filename", None) is not None


def take(x: np.ndarray, idx: np.ndarray, *, to_disk: bool) -> np.ndarray:
    """``x[idx]``. With ``to_disk`` (``x`` mapped from a cache entry), the selection is written once under the
    entry's ``splits/`` and returned mapped, so the images of a stream's tasks are never all in RAM at once."""
    idx = np.asarray(idx, np.int64)
    if not to_disk or not isinstance(x, np.memmap) or getattr(x, "filename", None) is None:
        return np.asarray(x[idx])
    src = Path(x.filename)
    key = hashlib.sha256(f"{src.name}|{x.shape}|".encode() + idx.tobytes()).hexdigest()[:24]
    path = src.parent / "splits" / f"{src.stem}-{key}.npy"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
    os.close(fd)
    try:
        write_array(Path(tmp), (len(idx), *x.shape[1:]), x.dtype, lambda out: gather(out, x, idx))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return np.load(path, mmap_mode="r")


def _open(entry: Path) -> Pool:
    """An entry as written by ``staging``: ``complete.json`` present and every file it names there (an entry made
    before it, which has none, must hold x and y of each split in pairs)."""
    complete = entry / "complete.json"
    if complete.is_file():
        missing = [f for f in json.loads(complete.read_text())["files"] if not (entry / f).is_file()]
        if missing:
            raise ValueError(f"incomplete cache entry: {missing} missing")
    for split in ("train", "test"):
        if (entry / f"x_{split}.npy").is_file() != (entry / f"y_{split}.npy").is_file():
            raise ValueError(f"incomplete cache entry: x_{split} and y_{split} not both present")
    names = json.loads((entry / "classes.json").read_text())
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("classes.json is not a list of class names")
    arrays = {n: np.load(entry / f"{n}.npy", mmap_mode="r", allow_pickle=False)
              for n in ("x_train", "y_train", "x_test", "y_test") if (entry / f"{n}.npy").is_file()}
    return Pool(x_train=arrays["x_train"], y_train=np.array(arrays["y_train"]), class_names=tuple(names),
                x_test=arrays.get("x_test"), y_test=None if "y_test" not in arrays else np.array(arrays["y_test"]))


def _from_arrays(z) -> Pool:
    has_test = "x_test" in z.files
    return Pool(x_train=z["x_train"], y_train=z["y_train"], class_names=tuple(str(c) for c in z["class_names"]),
                x_test=z["x_test"] if has_test else None, y_test=z["y_test"] if has_test else None)
