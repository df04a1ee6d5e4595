"""A run's task plan: which classes of which source each task holds, in order. It is what makes the stream open:
``pcl-edge learn`` appends to it, and a task's data (its splits included) follows from its own entry alone, never
from the tasks before or after it.

A task is identified by its source and its classes. Two rules keep a plan sound (task-incremental learning: every
task has its own head and its own expert):

- tasks of the same source are disjoint: a class of a source is learned once (repeating it would be the same
  images again, not a new task);
- a task of another source may reuse class names ("same classes, new conditions": new camera, new site).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .sources import DataError

PATHLESS = frozenset({"digits"})  # sources named without a path


@dataclass(frozen=True)
class TaskDef:
    source: str  # "digits", "imagefolder:/abs/path", ... (paths made absolute: a run is learned from anywhere)
    classes: tuple[int, ...]  # indices into that source's class list
    class_names: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"source": self.source, "classes": list(self.classes), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: dict) -> TaskDef:
        try:
            return cls(str(d["source"]), tuple(int(c) for c in d["classes"]), tuple(str(n) for n in d["class_names"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed task entry {d!r}: {exc}") from None


@dataclass(frozen=True)
class RunPlan:
    """What a run records in tasks.json: its tasks, their input shape, how validation splits are carved, and a
    fingerprint of each source as it was when its first task was planned (so a source that changed later is noticed
    before its old tasks' test splits move under frozen experts)."""

    tasks: tuple[TaskDef, ...]
    input_shape: tuple[int, int, int]
    val_scheme: str = "identity"  # "sequential": a run made before plans were kept (one RNG over tasks in order)
    sources: dict[str, str] = field(default_factory=dict)  # source -> fingerprint of its pool

    def to_dict(self) -> dict:
        return {"version": 1, "input_shape": list(self.input_shape), "val_scheme": self.val_scheme,
                "sources": dict(self.sources),
                "tasks": [{"id": i + 1, **t.to_dict()} for i, t in enumerate(self.tasks)]}

    @classmethod
    def from_dict(cls, d: dict) -> RunPlan:
        try:
            scheme = d.get("val_scheme", "identity")
            if scheme not in ("identity", "sequential"):
                raise ValueError(f"val_scheme {scheme!r}")
            return cls(tuple(TaskDef.from_dict(t) for t in d["tasks"]), tuple(int(v) for v in d["input_shape"]),
                       scheme, {str(k): str(v) for k, v in (d.get("sources") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"malformed task plan: {exc}") from None


def normalize_source(source: str) -> str:
    """``KIND:PATH`` with PATH absolute, so a plan names the same data whatever the working directory."""
    kind, sep, path = source.strip().partition(":")
    if not sep or not path or kind in PATHLESS:
        return source.strip()
    return f"{kind}:{Path(os.path.expanduser(path)).resolve()}"


def parse_task_spec(spec: str | None, class_names: tuple[str, ...], taken: dict[int, int] | None = None,
                    default: str = "5") -> list[tuple[int, ...]]:
    """Class groups of new tasks.

    ``NxK``: N tasks of K consecutive classes among those not ``taken`` yet; ``a,b/c,d/...``: explicit class lists
    (indices or class names), one task per ``/``. ``taken`` maps a class index of this source to the task id that
    already has it. Without a spec, ``default`` decides: ``"5"`` five equal tasks of every class (a new run),
    ``"rest"`` one task of every class not taken (a task added to a run)."""
    taken = taken or {}
    free = [c for c in range(len(class_names)) if c not in taken]
    spec = (spec or "").strip()
    if not spec:
        if default == "rest":
            if len(free) < 2:
                raise DataError(f"the run already learned {len(taken)} of the {len(class_names)} classes of this "
                                "source; pass --tasks with other classes, or another --data")
            spec = f"1x{len(free)}"
        else:
            if len(free) % 5:
                raise DataError(f"{len(free)} classes do not split into 5 equal tasks; pass --tasks NxK or explicit "
                                "lists")
            spec = f"5x{len(free) // 5}"
    m = re.fullmatch(r"(\d+)x(\d+)", spec)
    if m:
        num, per = int(m[1]), int(m[2])
        if num < 1 or per < 2 or num * per > len(free):
            have = f"{len(free)} not yet learned" if taken else f"{len(free)}"
            raise DataError(f"task spec {spec!r} needs {num * per} classes (>= 2 per task); the data has {have}")
        return [tuple(free[t * per:(t + 1) * per]) for t in range(num)]
    index = {name: i for i, name in enumerate(class_names)}
    tasks: list[tuple[int, ...]] = []
    for group in spec.split("/"):
        classes = []
        for tok in filter(None, (t.strip() for t in group.split(","))):
            if tok in index:
                classes.append(index[tok])
            elif tok.isdigit() and int(tok) < len(class_names):
                classes.append(int(tok))
            else:
                raise DataError(f"task spec names class {tok!r}, which the data lacks; classes are "
                                f"0..{len(class_names) - 1} or {list(class_names)[:12]}")
        if len(set(classes)) < 2 or len(set(classes)) != len(classes):
            raise DataError(f"task {group!r} in spec {spec!r} needs >= 2 distinct classes")
        tasks.append(tuple(classes))
    seen = [c for t in tasks for c in t]
    if len(seen) != len(set(seen)):
        raise DataError(f"task spec {spec!r} puts a class in two tasks; tasks must be disjoint")
    for group in tasks:
        owners = sorted({taken[c] for c in group if c in taken})
        if not owners:
            continue
        names = ",".join(class_names[c] for c in group)
        what = (f"task {owners[0]}, which the run already has" if len(owners) == 1 and
                {c for c, t in taken.items() if t == owners[0]} == set(group) else
                f"classes the run already learned in task(s) {', '.join(map(str, owners))}")
        raise DataError(f"task spec {spec!r}: {names} is {what} (same source); a source's classes are learned "
                        "once: the same classes under new conditions come from another --data")
    return tasks


def taken_classes(plan: list[TaskDef], source: str) -> dict[int, int]:
    """Class index -> the (1-based) task of ``plan`` that holds it, for tasks of ``source``."""
    return {c: i + 1 for i, t in enumerate(plan) if t.source == source for c in t.classes}


def extend_plan(plan: list[TaskDef], source: str, class_names: tuple[str, ...], spec: str | None,
                default: str = "rest") -> list[TaskDef]:
    """The new tasks that ``spec`` names in ``source`` (whose classes are ``class_names``), checked against
    ``plan``."""
    source = normalize_source(source)
    groups = parse_task_spec(spec, class_names, taken_classes(plan, source), default)
    return [TaskDef(source, g, tuple(class_names[c] for c in g)) for g in groups]
