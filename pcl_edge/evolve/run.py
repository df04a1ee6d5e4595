"""``Run``: a run directory as an object, the way Avalanche users call ``strategy.train(experience)`` and
Ultralytics users call ``model.train()`` / ``model.predict()``.

    run = Run.start(preset_config("cpu", "digits", tasks="3x2"), out="runs/stream")   # or Run.open("runs/latest")
    run.learn(tasks="2x2")                                  # two more tasks, from the stored population
    run.learn("imagefolder:site_b", tasks="cat,dog")        # a task from another source
    [e.task_id for e in run.experts()]
    run.predict(images, task=4).labels                      # uint8 NHWC images, image files, or FP32 NCHW tensors

Every method is one call of the Python API (``evolve``, ``learn``, ``export_bundle``, ``build_report``), so the CLI
and this object always agree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .api import evolve, learn, run_plan
from .config import EvolveConfig
from .rundir import RunDir, RunDirError


@dataclass(frozen=True)
class Expert:
    """One archived expert: what answers for a task, frozen."""

    task_id: int
    source: str | None
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    genome: str
    params: int | None
    val_acc: float | None
    test_acc: float | None
    model_sha256: str
    path: Path

    @property
    def name(self) -> str:
        return f"task_{self.task_id:02d}"


@dataclass(frozen=True)
class Prediction:
    task_id: int
    logits: np.ndarray  # (N, classes) float32
    probs: np.ndarray  # softmax of the logits
    indices: np.ndarray  # (N,) the most probable class, local to the task (0..classes-1)
    labels: list[str]  # its class name


class Run:
    def __init__(self, path: str | os.PathLike) -> None:
        self.dir, self.config = RunDir.open(path)
        self._models: dict[int, object] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        return cls(path)

    @classmethod
    def start(cls, cfg: EvolveConfig | None = None, out: str | os.PathLike | None = None, **options) -> Run:
        """A new run, learned to its end (``evolve``); ``options`` as ``evolve`` takes them (executor, progress)."""
        return cls(evolve(cfg, out=out, **options)["run_dir"])

    @property
    def path(self) -> Path:
        return self.dir.path

    # -- learning -----------------------------------------------------------------------------------------------
    def learn(self, data: str | None = None, tasks: str | None = None, **options) -> dict:
        """Add tasks (``learn``) and learn them; returns the grown summary."""
        return learn(self.path, data, tasks, **options)

    def resume(self, **options) -> dict:
        """Finish whatever an interruption left (nothing, on a finished run)."""
        return evolve(resume=self.path, **options)

    # -- what it holds ------------------------------------------------------------------------------------------
    @property
    def summary(self) -> dict | None:
        return self.dir.summary()

    @property
    def tasks(self) -> list[dict]:
        """The task plan: id, source, classes, class names, and whether its expert (if any) is archived."""
        plan = run_plan(self.dir, self.config)
        done = set(self.dir.expert_ids())
        return [{"id": i + 1, **t.to_dict(), "learned": i + 1 in done} for i, t in enumerate(plan.tasks)]

    def experts(self) -> list[Expert]:
        """Every archived expert, its weights checked against their sha256."""
        out = []
        for task_id in self.dir.expert_ids():
            m = self.dir.verify_expert(task_id)
            out.append(Expert(task_id, m.get("source"), tuple(m.get("classes") or ()), tuple(m["class_names"]),
                              m["genome"], m.get("params"), m.get("val_acc"), m.get("test_acc"), m["model_sha256"],
                              self.dir.expert_dir(task_id)))
        return out

    def model(self, task: int | str):
        """The frozen expert of ``task`` (3 or "task_03") as an eval-mode torch module."""
        task_id = self._task_id(task)
        if task_id not in self._models:
            from .learner import frozen_copy

            net, blob = self.dir.load_expert_net(task_id)
            self._models[task_id] = (frozen_copy(net), blob)
        return self._models[task_id][0]

    # -- inference ----------------------------------------------------------------------------------------------
    def predict(self, x, task: int | str, batch_size: int = 256) -> Prediction:
        """Classify with one task's expert. ``x``: uint8 images (N, H, W, C) or one (H, W, C), resized to the
        expert's input when their size differs and normalised as in training; image files (a path or a list); or
        FP32 tensors (N, C, H, W) already normalised."""
        import torch

        net = self.model(task)
        blob = self._models[self._task_id(task)][1]
        spec = blob["input_spec"]
        batch = self._tensor(x, spec)
        with torch.no_grad():
            logits = torch.cat([net(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)]).numpy()
        z = logits - logits.max(1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        idx = probs.argmax(1)
        return Prediction(self._task_id(task), logits, probs, idx, [blob["class_names"][i] for i in idx])

    def _tensor(self, x, spec: dict):
        import torch

        from ..data.pool import resize_image
        from ..preprocess import normalize

        c, h, w = spec["shape"]
        if isinstance(x, (str, os.PathLike)):
            x = [x]
        if isinstance(x, list) and x and isinstance(x[0], (str, os.PathLike)):
            x = np.stack([resize_image(_read_image(p, c), (h, w)) for p in x])
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x)
        if x.dtype == np.uint8:
            x = x[None] if x.ndim == 3 else x
            if x.ndim != 4 or x.shape[3] != c:
                raise ValueError(f"images must be uint8 (N, H, W, {c}); got {x.dtype} {list(x.shape)}")
            x = np.stack([resize_image(a, (h, w)) for a in x])
            return torch.from_numpy(normalize(x, spec["mean"], spec["std"]))
        if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"tensors must be float32 (N, {c}, {h}, {w}), normalised; got {x.dtype} {list(x.shape)} "
                             "(or pass uint8 images)")
        return torch.from_numpy(np.ascontiguousarray(x))

    def _task_id(self, task: int | str) -> int:
        key = str(task).removeprefix("task_")
        ids = self.dir.expert_ids()
        if not key.isdigit() or int(key) not in ids:
            raise RunDirError(f"unknown task {task!r}; {self.path} has experts for tasks {ids}")
        return int(key)

    # -- what comes after ---------------------------------------------------------------------------------------
    def export(self, out: str | os.PathLike, base: str | os.PathLike | None = None, **options) -> dict:
        """A bundle of every expert (``export_bundle``); with ``base``, the device's bundle: its tasks stay
        byte-identical and the version goes up."""
        from ..export import export_bundle

        return export_bundle(self.path, out, base=base, **options)

    def report(self, out: str | os.PathLike | None = None, **options) -> Path:
        from ..report import build_report

        return Path(build_report(self.path, out, **options))

    def __repr__(self) -> str:
        s = self.summary
        acc = f", ACC {s['acc']:.4f}" if s and s.get("acc") is not None else ""
        return f"Run({str(self.path)!r}: {self.config.strategy}, {len(self.dir.expert_ids())} experts{acc})"


def _read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if arr.ndim == 2 else arr
