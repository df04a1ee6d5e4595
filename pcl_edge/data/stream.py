"""Cut sources into a task stream: task plan -> classes -> seeded stratified val/test splits."""

from __future__ import annotations

import hashlib

import numpy as np

from . import cache
from .cache import in_ram_budget, mapped, take
from .plan import TaskDef, extend_plan, parse_task_spec  # noqa: F401  (parse_task_spec: re-exported)
from .pool import Pool
from .sources import DataError, load_pool
from .task import InputSpec, Split, Task, TaskStream


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of every class held out, at least one sample per class each side."""
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.append(idx[:k])
        keep.append(idx[k:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def build_stream(source: str = "digits", tasks: str | None = None, seed: int = 0, *,
                 test_fraction: float = 0.2, val_fraction: float = 0.15) -> TaskStream:
    """A new stream: ``tasks`` (a spec, ``plan.parse_task_spec``) cut from one source."""
    pool = load_pool(source)
    return stream_from_pool(pool, source, tasks, seed, test_fraction=test_fraction, val_fraction=val_fraction)


def plan_stream(source: str, tasks: str | None = None) -> list[TaskDef]:
    """The task plan of a new stream (what a run records in tasks.json), without its data."""
    return extend_plan([], source, load_pool(source).class_names, tasks, default="5")


def stream_from_pool(pool: Pool, name: str, tasks: str | None = None, seed: int = 0, *,
                     test_fraction: float = 0.2, val_fraction: float = 0.15) -> TaskStream:
    plan = extend_plan([], name, pool.class_names, tasks, default="5")
    return stream_from_plan(plan, seed, test_fraction=test_fraction, val_fraction=val_fraction,
                            pools={plan[0].source: pool})


def stream_from_plan(plan: list[TaskDef], seed: int = 0, *, test_fraction: float = 0.2, val_fraction: float = 0.15,
                     size: tuple[int, int] | None = None, pools: dict[str, Pool] | None = None,
                     val_scheme: str = "identity", fingerprints: dict[str, str] | None = None) -> TaskStream:
    """Every task of ``plan`` (ids 1..T in order) with its splits. Each source's test split is carved once, from the
    whole pool (seed only), so no task spec moves an image between train and test; each task's validation split is
    carved from the task's own identity (seed, source kind, class names), so a task gets the same data whether it
    was planned with the run or added months later (``val_scheme="sequential"``: one RNG over the tasks in order, as
    runs made before plans were kept carved them). ``size`` (H, W) resizes sources of another size.
    ``fingerprints`` (source -> ``pool_digest``): a source that no longer matches is refused, since its test
    split, and so old tasks' accuracy rows, would move. The stream's summary holds every source's fingerprint."""
    pools = dict(pools or {})
    carved: dict[str, tuple] = {}
    seen: dict[str, str] = {}
    rng_sequential = np.random.default_rng([seed, 2])
    out = []
    for tid, td in enumerate(plan, start=1):
        if td.source not in carved:
            pool = pools.get(td.source) or load_pool(td.source, size=size)
            seen[td.source] = pool_digest(pool)
            want = (fingerprints or {}).get(td.source)
            if want is not None and want != seen[td.source]:
                raise DataError(f"{td.source} changed since task {tid} was planned (its images or classes differ): "
                                "the test splits of the tasks already learned would move; learn from the data as it "
                                "was, and give new images to new tasks as another source")
            carved[td.source] = (*_carve_test(pool, seed, test_fraction), pool.class_names, _to_disk(pool))
        x_tr, y_tr, i_tr, x_te, y_te, i_te, _, names, to_disk = carved[td.source]
        classes = td.classes
        if any(c >= len(names) for c in classes) or tuple(names[c] for c in classes) != td.class_names:
            raise DataError(f"task {tid}: {td.source} no longer has the classes {list(td.class_names)} at "
                            f"{list(classes)} (the data changed since the task was planned)")
        sel_tr, sel_te = i_tr[np.isin(y_tr[i_tr], classes)], i_te[np.isin(y_te[i_te], classes)]
        remap = np.full(len(names), -1, np.int64)
        remap[list(classes)] = np.arange(len(classes))
        yt = remap[y_tr[sel_tr]]
        if len(np.unique(yt)) < len(classes):
            raise DataError(f"task {tid} classes {list(td.class_names)} have no training images in {td.source}")
        rng_val = rng_sequential if val_scheme == "sequential" else np.random.default_rng(_task_seed(seed, "val", td))
        fit_idx, val_idx = stratified_split(yt, val_fraction, rng_val)
        x_fit = take(x_tr, sel_tr[fit_idx], to_disk=to_disk)
        out.append(Task(id=tid, classes=tuple(classes), class_names=td.class_names, source=td.source,
                        train=Split(x_fit, yt[fit_idx]),
                        val=Split(take(x_tr, sel_tr[val_idx], to_disk=to_disk), yt[val_idx]),
                        test=Split(take(x_te, sel_te, to_disk=to_disk), remap[y_te[sel_te]]),
                        spec=_input_spec(x_fit)))
    hows = {c[6] for c in carved.values()}
    how = hows.pop() if len(hows) == 1 else "; ".join(f"{s}: {c[6]}" for s, c in carved.items())
    sources = list(dict.fromkeys(td.source for td in plan))
    summary = {"sources": sources, "fingerprints": seen, "tasks": [td.to_dict() for td in plan],
               "val_fraction": val_fraction, "test_fraction": test_fraction, "val_scheme": val_scheme}
    return TaskStream(name=" + ".join(sources), tasks=tuple(out), test_split=how, summary=summary)


def pool_digest(pool: Pool) -> str:
    """sha256 of a pool's images, labels and class names (its test split too): what a source was."""
    h = hashlib.sha256("\n".join(pool.class_names).encode())
    for a in (pool.x_train, pool.y_train, pool.x_test, pool.y_test):
        if a is not None:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _carve_test(pool: Pool, seed: int, test_fraction: float) -> tuple:
    """(x_train, y_train, train indices, x_test, y_test, test indices, how) of a source: its own test split, or one
    carved with (seed, 1). Indices, not copies: a task's images are gathered once, from the pool as it lies."""
    if pool.has_test:
        return (pool.x_train, pool.y_train, np.arange(len(pool.y_train)), pool.x_test, pool.y_test,
                np.arange(len(pool.y_test)), "the source's own test split")
    keep, held = stratified_split(pool.y_train, test_fraction, np.random.default_rng([seed, 1]))
    how = (f"carved from the source's training data: {test_fraction:.0%} of every class, stratified, seed {seed} "
           "(the source has no test split)")
    return pool.x_train, pool.y_train, keep, pool.x_train, pool.y_train, held, how


def _to_disk(pool: Pool) -> bool:
    """Whether the tasks of a memory-mapped pool keep their images mapped too: when the pool does not fit the
    stream's share of RAM (``cache.in_ram_budget``)."""
    size = pool.x_train.nbytes + (pool.x_test.nbytes if pool.has_test else 0)
    return mapped(pool) and size > in_ram_budget()


def _task_seed(seed: int, purpose: str, td: TaskDef) -> int:
    """A stable seed from a task's identity (its source's kind, not where the files lie, and its class names)."""
    kind = td.source.partition(":")[0]
    h = hashlib.sha256("/".join([str(seed), purpose, kind, *td.class_names]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _input_spec(x: np.ndarray) -> InputSpec:
    """Per-task channel mean/std from the task's own training images (no test or validation pixels), from exact
    integer sums read in chunks (a mapped split is never copied whole)."""
    n = len(x) * x.shape[1] * x.shape[2]
    s1 = np.zeros(x.shape[3], np.int64)
    s2 = np.zeros(x.shape[3], np.int64)
    step = max(1, cache.CHUNK_BYTES // (8 * max(1, x[:1].nbytes)))
    for i in range(0, len(x), step):
        c = np.asarray(x[i: i + step], np.int64)
        s1 += c.sum(axis=(0, 1, 2))
        s2 += (c * c).sum(axis=(0, 1, 2))
    mean = s1 / (255.0 * n)
    std = np.maximum(np.sqrt(np.maximum(s2 / (255.0**2 * n) - mean**2, 0.0)), 1e-3)
    return InputSpec(shape=(x.shape[3], x.shape[1], x.shape[2]), mean=tuple(round(float(m), 6) for m in mean),
                     std=tuple(round(float(s), 6) for s in std))
