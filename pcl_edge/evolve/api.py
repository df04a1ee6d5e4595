"""``evolve()``: the Python entry point behind ``pcl-edge evolve``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import build_stream
from .candidate import failed_candidate
from .config import ConfigError, EvolveConfig
from .executors import create_executor
from .pcl import check_latency_budget
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


def _evolve(cfg: EvolveConfig | None, out: str | os.PathLike | None, resume: str | os.PathLike | None,
            executor: str, progress: bool, on_task_end: Callable | None, executor_options: dict | None) -> dict:
    """The run itself (``evolve`` without the console).

    ``executor`` ("local" or "ray") is not part of the run's configuration: it changes where candidates train, not
    what they compute, so a run may be resumed under another executor."""
    if resume is not None:
        run, stored = RunDir.open(resume)
        if cfg is not None and cfg != stored:
            raise RunDirError(f"{resume} was made with a different configuration; resume it without overrides")
        done = run.summary()
        if done is not None:  # a finished run: check its archive, say so and change nothing
            for task_id in run.expert_ids():
                run.verify_expert(task_id)
            log.info("%s is complete (%d tasks, ACC %.4f): nothing to resume", run.path, len(done.get("tasks", [])),
                     done.get("acc", float("nan")))
            return done
        cfg = stored
        run.clean_partial()
    cfg = (cfg or EvolveConfig()).validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    stream = build_stream(cfg.data, cfg.tasks, cfg.seed, test_fraction=cfg.test_fraction,
                          val_fraction=cfg.val_fraction)  # data errors surface before anything is written
    check_latency_budget(cfg, stream)
    if resume is None:
        run = RunDir.create(out or default_out(cfg), cfg)
        if out is None:
            _link_latest(run.path)
        run.event("start", strategy=cfg.strategy, data=cfg.data, test_split=stream.test_split)
    log.info("run directory %s; %d tasks from %s; test split: %s", run.path, len(stream), stream.name,
             stream.test_split)
    options = dict(executor_options or {})
    if executor == "ray":
        options.setdefault("on_failure", failed_candidate)
    learner = get_strategy(cfg.strategy)(cfg, stream, run, create_executor(executor, progress=progress, **options),
                                         on_task_end=on_task_end)
    try:
        summary = learner.run_all()
    finally:
        learner.executor.close()
    summary["run_dir"] = str(run.path)
    run.write_summary(summary)
    run.event("done", acc=summary["acc"], bwt=summary["bwt"], wall_s=summary["wall_s"])
    return summary


__all__ = ["ConfigError", "RunDirError", "evolve"]
