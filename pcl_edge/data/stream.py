"""Cut a source's pool into a task stream: task spec -> classes -> seeded stratified val/test splits."""

from __future__ import annotations

import re

import numpy as np

from .pool import Pool
from .sources import DataError, load_pool
from .task import InputSpec, Split, Task, TaskStream


def parse_task_spec(spec: str | None, class_names: tuple[str, ...]) -> list[tuple[int, ...]]:
    """``None``: 5 tasks of consecutive classes; ``NxK``: N tasks of K consecutive classes;
    ``a,b/c,d/...``: explicit class lists (indices or class names), one task per ``/``."""
    n = len(class_names)
    spec = (spec or "").strip()
    if not spec:
        if n % 5:
            raise DataError(f"{n} classes do not split into 5 equal tasks; pass --tasks NxK or explicit lists")
        spec = f"5x{n // 5}"
    m = re.fullmatch(r"(\d+)x(\d+)", spec)
    if m:
        num, per = int(m[1]), int(m[2])
        if num < 1 or per < 2 or num * per > n:
            raise DataError(f"task spec {spec!r} needs {num * per} classes (>= 2 per task); the data has {n}")
        return [tuple(range(t * per, (t + 1) * per)) for t in range(num)]
    index = {name: i for i, name in enumerate(class_names)}
    tasks: list[tuple[int, ...]] = []
    for group in spec.split("/"):
        classes = []
        for tok in filter(None, (t.strip() for t in group.split(","))):
            if tok in index:
                classes.append(index[tok])
            elif tok.isdigit() and int(tok) < n:
                classes.append(int(tok))
            else:
                raise DataError(f"task spec names class {tok!r}, which the data lacks; classes are "
                                f"0..{n - 1} or {list(class_names)[:12]}")
        if len(set(classes)) < 2 or len(set(classes)) != len(classes):
            raise DataError(f"task {group!r} in spec {spec!r} needs >= 2 distinct classes")
        tasks.append(tuple(classes))
    seen = [c for t in tasks for c in t]
    if len(seen) != len(set(seen)):
        raise DataError(f"task spec {spec!r} puts a class in two tasks; tasks must be disjoint")
    return tasks


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
    pool = load_pool(source)
    return stream_from_pool(pool, source, tasks, seed, test_fraction=test_fraction, val_fraction=val_fraction)


def stream_from_pool(pool: Pool, name: str, tasks: str | None = None, seed: int = 0, *,
                     test_fraction: float = 0.2, val_fraction: float = 0.15) -> TaskStream:
    groups = parse_task_spec(tasks, pool.class_names)
    # Test and validation are carved with their own seeded streams so that changing the task spec never
    # moves an image between train and test.
    rng_test = np.random.default_rng([seed, 1])
    rng_val = np.random.default_rng([seed, 2])
    if pool.has_test:
        x_tr, y_tr, x_te, y_te = pool.x_train, pool.y_train, pool.x_test, pool.y_test
        how = "the source's own test split"
    else:
        keep, held = stratified_split(pool.y_train, test_fraction, rng_test)
        x_tr, y_tr, x_te, y_te = pool.x_train[keep], pool.y_train[keep], pool.x_train[held], pool.y_train[held]
        how = (f"carved from the source's training data: {test_fraction:.0%} of every class, stratified, "
               f"seed {seed} (the source has no test split)")
    out = []
    for tid, classes in enumerate(groups, start=1):
        sel_tr, sel_te = np.isin(y_tr, classes), np.isin(y_te, classes)
        remap = np.full(max(len(pool.class_names), 1), -1, np.int64)
        remap[list(classes)] = np.arange(len(classes))
        xt, yt = x_tr[sel_tr], remap[y_tr[sel_tr]]
        if len(np.unique(yt)) < len(classes):
            raise DataError(f"task {tid} classes {classes} have no training images in {name}")
        fit_idx, val_idx = stratified_split(yt, val_fraction, rng_val)
        spec = _input_spec(xt[fit_idx])
        out.append(Task(id=tid, classes=tuple(classes), class_names=tuple(pool.class_names[c] for c in classes),
                        train=Split(xt[fit_idx], yt[fit_idx]), val=Split(xt[val_idx], yt[val_idx]),
                        test=Split(x_te[sel_te], remap[y_te[sel_te]]), spec=spec))
    summary = {"source": name, "num_classes": len(pool.class_names), "tasks": [list(g) for g in groups],
               "val_fraction": val_fraction, "test_fraction": None if pool.has_test else test_fraction}
    return TaskStream(name=name, tasks=tuple(out), test_split=how, summary=summary)


def _input_spec(x: np.ndarray) -> InputSpec:
    """Per-task channel mean/std from the task's own training images (no test or validation pixels)."""
    xf = x.astype(np.float64) / 255.0
    mean = xf.mean(axis=(0, 1, 2))
    std = np.maximum(xf.std(axis=(0, 1, 2)), 1e-3)
    return InputSpec(shape=(x.shape[3], x.shape[1], x.shape[2]), mean=tuple(round(float(m), 6) for m in mean),
                     std=tuple(round(float(s), 6) for s in std))
