"""``evolve()``: the Python entry point behind ``pcl-edge evolve``."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..data import (
    DataError,
    RunPlan,
    TaskDef,
    extend_plan,
    load_pool,
    normalize_source,
    plan_stream,
    stream_from_plan,
)
from .candidate import failed_candidate
from .config import ConfigError, EvolveConfig
from .executors import create_executor
from .pcl import check_feasible
from .rundir import RunDir, RunDirError
from .strategies import get_strategy

log = logging.getLogger(__name__)


def default_out(cfg: EvolveConfig) -> Path:
    kind = cfg.data.partition(":")[0]
    return Path("runs") / f"{cfg.strategy}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _link_latest(path: Path) -> None:
    """``runs/latest`` -> the newest run started without ``--out``, so documented commands can name it."""
    link = path.parent / "latest"
    tmp = path.parent / f".latest-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.name)
        os.replace(tmp, link)
    except OSError as exc:  # e.g. a filesystem without symlinks: the run itself is unaffected
        log.debug("could not point %s at %s: %s", link, path, exc)


def evolve(cfg: EvolveConfig | None = None, out: str | os.PathLike | None = None,
           resume: str | os.PathLike | None = None, executor: str = "local", progress: bool = True,
           on_task_end: Callable | None = None, executor_options: dict | None = None) -> dict:
    """Run (or resume) a continual-learning run; returns the summary that is also written to summary.json.

    With ``progress`` (the default) it shows what the CLI shows: progress bars, and INFO lines on stderr unless the
    application configured logging itself."""
    from .._progress import console_logging

    with console_logging(progress):
        return _evolve(cfg, out, resume, executor, progress, on_task_end, executor_options)


def learn(run_dir: str | os.PathLike, data: str | None = None, tasks: str | None = None, *, executor: str = "local",
          progress: bool = True, on_task_end: Callable | None = None, executor_options: dict | None = None,
          dry_run: bool = False) -> dict:
    """Add tasks to a finished or interrupted run and learn them, from the run's stored population (its weights, the
    performance predictor's history, objectives and latency target carry on); earlier experts are never touched.

    ``data``: the source of the new tasks (default: the run's own, for further classes); images of another size are
    resized to the run's input, another channel count is an error. ``tasks``: a task spec (``NxK`` counts classes
    not learned yet; default: one task of every class of ``data`` the run has not learned). ``dry_run``: check and
    describe the new tasks, learn nothing. Returns the run's summary (``dry_run``: the tasks it would add)."""
    from .._progress import console_logging

    with console_logging(progress):
        return _learn(run_dir, data, tasks, executor, progress, on_task_end, executor_options, dry_run)


def _evolve(cfg: EvolveConfig | None, out: str | os.PathLike | None, resume: str | os.PathLike | None,
            executor: str, progress: bool, on_task_end: Callable | None, executor_options: dict | None) -> dict:
    """The run itself (``evolve`` without the console).

    ``executor`` ("local", "gpu" or "ray") is not part of the run's configuration: it changes where candidates
    train, not what they compute, so a run may be resumed under another executor."""
    run_options = dict(executor=executor, progress=progress, on_task_end=on_task_end,
                       executor_options=executor_options)
    if resume is not None:
        run, stored = RunDir.open(resume)
        if cfg is not None and cfg != stored:
            raise RunDirError(f"{resume} was made with a different configuration; resume it without overrides")
        if run.finished():  # a finished run: check its archive, say so and change nothing (not even the lock file)
            return _finished(run)
        with run.lock():
            if run.finished():  # another process finished it meanwhile
                return _finished(run)
            cfg = stored.validate()
            run.clean_partial()
            plan = run_plan(run, cfg)
            stream = _stream(plan, cfg)
            run.write_plan(_recorded(plan, stream))  # a run from before plans were kept gets its plan written
            check_feasible(cfg, stream)
            return _run(cfg, stream, run, **run_options)
    cfg = (cfg or EvolveConfig()).validate()
    pool = load_pool(cfg.data, size=cfg.size())
    tasks = extend_plan([], cfg.data, pool.class_names, cfg.tasks, default="5")
    stream = stream_from_plan(tasks, cfg.seed, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                              size=cfg.size(), pools={tasks[0].source: pool})  # data errors surface before writing
    check_feasible(cfg, stream)
    run = RunDir.create(out or default_out(cfg), cfg)
    with run.lock():
        run.write_plan(RunPlan(tuple(tasks), tuple(stream.tasks[0].spec.shape), sources=stream.summary["fingerprints"]))
        if out is None:
            _link_latest(run.path)
        run.event("start", strategy=cfg.strategy, data=cfg.data, test_split=stream.test_split)
        return _run(cfg, stream, run, **run_options)


def _finished(run: RunDir) -> dict:
    for task_id in run.expert_ids():
        run.verify_expert(task_id)
    done = run.summary()
    log.info("%s is complete (%d tasks, ACC %.4f): nothing to resume (pcl-edge learn adds tasks)", run.path,
             len(done.get("tasks", [])), done.get("acc", float("nan")))
    return done


def run_plan(run: RunDir, cfg: EvolveConfig) -> RunPlan:
    """The run's task plan; a run made before plans were kept gets the one its config implies, with the validation
    splits its tasks were carved with (one RNG over the tasks in order) and no source fingerprint yet."""
    stored = run.read_plan()
    if stored is not None:
        return stored
    tasks = plan_stream(cfg.data, cfg.tasks)
    first = stream_from_plan(tasks[:1], cfg.seed, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                             val_scheme="sequential")
    return RunPlan(tuple(tasks), tuple(first.tasks[0].spec.shape), val_scheme="sequential")


def _stream(plan: RunPlan, cfg: EvolveConfig, tasks: tuple[TaskDef, ...] | None = None, pools: dict | None = None):
    """The stream of ``plan``'s tasks (or ``tasks``: the plan's and new ones), each source checked against the
    fingerprint the plan recorded for it."""
    return stream_from_plan(list(tasks or plan.tasks), cfg.seed, test_fraction=cfg.test_fraction,
                            val_fraction=cfg.val_fraction, size=tuple(plan.input_shape[1:]), pools=pools,
                            val_scheme=plan.val_scheme, fingerprints=plan.sources)


def _recorded(plan: RunPlan, stream, tasks: tuple[TaskDef, ...] | None = None) -> RunPlan:
    """``plan`` with ``tasks`` and the fingerprint of every source the stream loaded (old ones kept as they were)."""
    return replace(plan, tasks=tuple(tasks or plan.tasks), sources={**stream.summary["fingerprints"], **plan.sources})


def _learn(run_dir: str | os.PathLike, data: str | None, tasks: str | None, executor: str, progress: bool,
           on_task_end: Callable | None, executor_options: dict | None, dry_run: bool) -> dict:
    run, cfg = RunDir.open(run_dir)
    if not get_strategy(cfg.strategy).sequential:
        raise RunDirError(f"{run.path} is a {cfg.strategy} run: it trains every task at once, so it cannot learn more "
                          "tasks; start a new run")
    cfg = cfg.validate()
    # a dry run only reads: no lock, so it changes nothing (not even the lock file)
    with contextlib.nullcontext() if dry_run else run.lock():
        plan = run_plan(run, cfg)
        shape = plan.input_shape
        state = run.load_state()
        learned = state["task"] if state else 0
        source = normalize_source(data) if data else plan.tasks[0].source
        pool = load_pool(source, size=tuple(shape[1:]))
        if pool.x_train.shape[3] != shape[0]:
            raise DataError(f"{source} has {pool.x_train.shape[3]}-channel images; this run's tasks take "
                            f"{shape[0]} channel(s) ({'x'.join(map(str, shape))}): convert the images")
        try:
            new = extend_plan(list(plan.tasks), source, pool.class_names, tasks, default="rest")
        except DataError as exc:
            pending = len(plan.tasks) - learned
            hint = (f" (tasks {learned + 1}-{len(plan.tasks)} are planned and not learned yet: pcl-edge evolve "
                    f"--resume {run.path} finishes them)") if pending > 0 else ""
            raise DataError(f"{exc}{hint}") from None
        full = (*plan.tasks, *new)
        stream = _stream(plan, cfg, full, pools={source: pool})
        check_feasible(cfg, stream)
        added = [{"id": t.id, "source": t.source, "classes": list(t.classes), "class_names": list(t.class_names),
                  "train": len(t.train), "val": len(t.val), "test": len(t.test)}
                 for t in stream.tasks[len(plan.tasks):]]
        if dry_run:
            return {"run_dir": str(run.path), "learned": learned, "planned": len(plan.tasks), "new_tasks": added}
        run.clean_partial()
        run.write_plan(_recorded(plan, stream, full))
        run.event("learn", tasks=added)
        log.info("%s: learning tasks %s (%s) after %d learned", run.path, [t["id"] for t in added], source, learned)
        real = run.path.resolve()
        if (real.parent / "latest").is_symlink():  # runs/latest follows the run written last
            _link_latest(real)
        return _run(cfg, stream, run, executor=executor, progress=progress, on_task_end=on_task_end,
                    executor_options=executor_options)


def _run(cfg: EvolveConfig, stream, run: RunDir, executor: str, progress: bool, on_task_end: Callable | None,
         executor_options: dict | None) -> dict:
    """Learn every planned task the state has not finished, then write the summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log.info("run directory %s; %d tasks from %s; test split: %s", run.path, len(stream), stream.name,
             stream.test_split)
    options = dict(executor_options or {})
    if executor in ("ray", "gpu"):
        options.setdefault("on_failure", failed_candidate)
    drift = _check_target(cfg)  # before the executor starts its workers: they would compete with the timing
    runner = create_executor(executor, progress=progress, **options)
    # the executor is not part of the configuration (a run may resume under another): each session records the one
    # it ran under, as it resolved its options (an executor registered without ``settings`` records none)
    run.event("session", executor=executor, settings=getattr(runner, "settings", dict)())
    learner = get_strategy(cfg.strategy)(cfg, stream, run, runner, on_task_end=on_task_end)
    learner.drift_at_start = drift
    try:
        summary = learner.run_all()
    finally:
        learner.executor.close()
    summary["run_dir"] = str(run.path)
    run.write_summary(summary)
    run.event("done", acc=summary["acc"], bwt=summary["bwt"], wall_s=summary["wall_s"])
    return summary


def _check_target(cfg: EvolveConfig) -> dict | None:
    """``check_target``: re-time the target profile here and warn when this machine drifted from it. A warning, never
    a reason to stop: whatever goes wrong is logged and the search goes on."""
    if not (cfg.target and cfg.check_target):
        return None
    from ..hw.drift import check_at_start

    try:
        return check_at_start(cfg.target)
    except Exception as exc:  # noqa: BLE001 - a check that fails must not stop the run it checks for
        log.warning("could not re-time target profile %s at start (%s: %s); the search goes on", cfg.target,
                    type(exc).__name__, exc)
        return None


__all__ = ["ConfigError", "RunDirError", "evolve", "learn"]
