import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pcl_edge.evolve import RunDir, evolve, preset_config
from pcl_edge.evolve.executors.local import LocalExecutor


def tiny(**kw):
    return preset_config("tiny", "digits", **({"tasks": "3x2"} | kw))


def expert_states(run_dir):
    rd = RunDir(run_dir)
    out = {}
    for d in sorted((rd.path / "experts").iterdir()):
        blob = rd.load_expert(int(d.name.split("_")[1]))
        out[d.name] = (blob["genome"], blob["state_dict"])
    return out


def assert_same_experts(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == b[k][0], k
        for name, t in a[k][1].items():
            assert torch.equal(t, b[k][1][name]), (k, name)


class StopAfterTask(Exception):
    """Raised by ``stop_after_task(t)``: a run interrupted between tasks."""


def stop_after_task(index: int):
    """An ``on_task_end`` callback that interrupts the run once task ``index`` (0-based) has its expert."""
    def on_task_end(t, learner):
        if t == index:
            raise StopAfterTask
    return on_task_end


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    probes = {}

    def on_task_end(t, learner):
        x = learner.tasks[0].test.x
        probes[t] = learner.model_for(0)(x).detach().clone()

    summary = evolve(tiny(), out=out, progress=False, on_task_end=on_task_end)
    return out, summary, probes


def test_pcl_run_writes_a_complete_run_directory(reference):
    out, s, _ = reference
    for name in ("config.json", "events.jsonl", "state.pt", "accuracy_matrix.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "experts").iterdir()) == ["task_01", "task_02", "task_03"]
    for key in ("strategy", "acc", "bwt", "fwt", "forgetting", "wall_s", "test_split", "tasks"):
        assert key in s
    assert set(s["tasks"][0]) >= {"id", "classes", "genome", "params", "val_acc", "test_acc"}
    assert s["strategy"] == "pcl" and s["acc"] > 0.9
    assert json.loads((out / "summary.json").read_text())["acc"] == s["acc"]
    lines = (out / "accuracy_matrix.csv").read_text().splitlines()
    assert lines[0] == "after_task,task_01,task_02,task_03" and len(lines) == 4
    events = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert events.count("generation") == 3 and events.count("expert") == 3 and events[-1] == "done"


def test_bwt_is_exactly_zero_and_expert_one_is_bit_identical(reference):
    out, s, probes = reference
    assert s["bwt"] == 0.0 and s["forgetting"] == 0.0
    R = np.array([[np.nan if v is None else v for v in row] for row in s["accuracy_matrix"]])
    assert np.all(R[1:, 0] == R[0, 0])
    assert torch.equal(probes[0], probes[2])  # expert 1 after task 1 vs after tasks 2..3
    rd = RunDir(out)
    blob = rd.load_expert(1)
    from pcl_edge.space import Genome, build_network

    net = build_network(Genome.parse(blob["genome"]), blob["in_channels"], blob["num_classes"]).eval()
    net.load_state_dict(blob["state_dict"])
    from pcl_edge.data import build_stream
    from pcl_edge.evolve.trainer import TensorTask

    x = TensorTask.from_task(build_stream("digits", "3x2").tasks[0]).test.x
    assert torch.equal(net(x), probes[0])


def test_fitness_only_ever_sees_validation_data(tmp_path, monkeypatch):
    import pcl_edge.evolve.candidate as candidate

    seen = []
    real = candidate.evaluate

    def spy(net, data, *a, **kw):
        seen.append(data)
        return real(net, data, *a, **kw)

    monkeypatch.setattr(candidate, "evaluate", spy)
    probes = []
    evolve(tiny(tasks="2x2"), out=tmp_path / "r", progress=False,
           on_task_end=lambda t, lr: probes.append([(task.val, task.test, task.train) for task in lr.tasks]))
    vals = {id(v) for v, _, _ in probes[0]}
    others = {id(x) for _, te, tr in probes[0] for x in (te, tr)}
    assert seen and all(id(d) in vals for d in seen) and not any(id(d) in others for d in seen)


def test_test_tensors_never_reach_search_work(tmp_path, monkeypatch):
    """issue 21 item 6: what is shipped to an executor has no test split at all (by construction, not discipline)."""
    from pcl_edge.evolve.executors import local
    from pcl_edge.evolve.trainer import SearchTask

    shipped, real = [], local.LocalExecutor.map

    def spy(self, fn, items, desc="", shared=None):
        shipped.append(dict(shared or {}))
        return real(self, fn, items, desc=desc, shared=shared)

    monkeypatch.setattr(local.LocalExecutor, "map", spy)
    tests = []
    evolve(tiny(tasks="2x2"), out=tmp_path / "r", progress=False,
           on_task_end=lambda t, lr: tests.extend(task.test.x for task in lr.tasks))
    assert shipped and all(type(s["task"]) is SearchTask and not hasattr(s["task"], "test") for s in shipped)
    assert not any(x is s["task"].train.x or x is s["task"].val.x for s in shipped for x in tests)
    by_id = {}
    for s in shipped:  # one object per task: an executor that ships per object (Ray) ships a task's data once
        assert by_id.setdefault(s["task"].id, s["task"]) is s["task"]
    from pcl_edge.data import build_stream
    from pcl_edge.evolve.candidate import Candidate, train_candidate
    from pcl_edge.evolve.trainer import TensorTask
    from pcl_edge.space import Genome

    full = TensorTask.from_task(build_stream("digits", "1x2").tasks[0])
    with pytest.raises(TypeError, match="SearchTask"):
        train_candidate(Candidate("u", Genome.parse("d2_w8_p-_x-_s0:res-k3"), "init", 0), full, tiny().proxy)


class _Crash(Exception):
    pass


def test_interrupted_then_resumed_gives_the_same_experts(reference, tmp_path, monkeypatch):
    ref_out, ref_summary, _ = reference
    calls = {"n": 0}
    real_map = LocalExecutor.map

    def crashing_map(self, fn, items, desc="", shared=None):
        calls["n"] += 1
        if calls["n"] == 5:  # mid task 2: after its adaptation, before/while a generation
            raise _Crash
        return real_map(self, fn, items, desc, shared)

    monkeypatch.setattr(LocalExecutor, "map", crashing_map)
    with pytest.raises(_Crash):
        evolve(tiny(), out=tmp_path / "r", progress=False)
    monkeypatch.setattr(LocalExecutor, "map", real_map)
    assert not (tmp_path / "r" / "summary.json").exists()
    s = evolve(resume=tmp_path / "r", progress=False)
    assert_same_experts(expert_states(ref_out), expert_states(tmp_path / "r"))
    assert s["acc"] == ref_summary["acc"] and s["accuracy_matrix"] == ref_summary["accuracy_matrix"]


@pytest.mark.parametrize("kill_after", ["generation", "expert"])
def test_kill_9_then_resume_gives_the_same_experts(reference, tmp_path, kill_after):
    ref_out, _, _ = reference
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "pcl_edge.cli", "-q", "evolve", "--preset", "tiny", "--tasks", "3x2",
           "--out", str(out)]
    kill_9_then_resume(cmd, out, kill_after, 2)
    assert_same_experts(expert_states(ref_out), expert_states(out))
    for d in sorted((ref_out / "experts").glob("task_*")):  # byte-identical files, not only equal weights
        assert (d / "model.pt").read_bytes() == (out / "experts" / d.name / "model.pt").read_bytes()


def kill_9_then_resume(cmd: list[str], out, event: str, count: int) -> None:
    """Start ``cmd`` (a run into ``out``), SIGKILL it once ``count`` ``event`` lines are in its log, then resume
    it to the end with the CLI."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            ev = out / "events.jsonl"
            if ev.exists() and sum(f'"event": "{event}"' in line for line in ev.read_text().splitlines()) >= count:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "summary.json").exists()
    done = subprocess.run([sys.executable, "-m", "pcl_edge.cli", "-q", "evolve", "--resume", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_resume_of_a_finished_run_changes_nothing(reference, caplog):
    out, s, _ = reference
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*") if p.is_file()}
    with caplog.at_level("INFO", logger="pcl_edge"):
        again = evolve(resume=out, progress=False)
    assert again["accuracy_matrix"] == s["accuracy_matrix"]
    assert any("is complete" in r.getMessage() and "nothing to resume" in r.getMessage() for r in caplog.records)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*") if p.is_file()} == before


def test_run_directory_mistakes_get_one_clear_line(tmp_path, monkeypatch, capsys):
    from pcl_edge.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["-q", "evolve", "--preset", "tiny", "--tasks", "2x2", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["-q", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no run at" in err and "--resume" not in err
    monkeypatch.chdir(tmp_path)  # a run without --out: runs/latest names it
    evolve(tiny(tasks="2x2", generations=0), progress=False)
    assert (tmp_path / "runs" / "latest" / "summary.json").is_file()


@pytest.mark.parametrize("strategy", ["fixed", "finetune", "joint", "pcl-scratch"])
def test_baselines_share_the_loop_and_metrics(tmp_path, strategy):
    cfg = tiny(strategy=strategy, tasks="2x2", genome="d3_w8_p1_x1_s0:res-k3_s1:res-k3")
    s = evolve(cfg, out=tmp_path / strategy, progress=False)
    assert s["strategy"] == strategy and 0 <= s["acc"] <= 1 and len(s["tasks"]) == 2
    if strategy == "joint":
        assert s["bwt"] is None and s["accuracy_matrix"][0] == [None, None]
    else:
        assert s["bwt"] is not None and s["accuracy_matrix"][1][0] is not None
    if strategy in ("fixed", "pcl-scratch"):
        assert s["bwt"] == 0.0 and (tmp_path / strategy / "experts" / "task_02").is_dir()
    if strategy == "fixed":
        assert all(t["genome"] == "d3_w8_p1_x1_s0:res-k3_s1:res-k3" for t in s["tasks"])


def test_finetune_forgets(tmp_path):
    """The reason the product exists: a shared trunk trained task after task moves its old heads' inputs."""
    cfg = preset_config("tiny", "digits", strategy="finetune", tasks="5x2", genome="d3_w8_p1_x1_s0:res-k3_s1:res-k3")
    s = evolve(cfg, out=tmp_path / "ft", progress=False)
    R = s["accuracy_matrix"]
    assert any(R[-1][j] != R[j][j] for j in range(4))


def test_a_tampered_expert_is_detected_not_trusted(reference, tmp_path):
    import shutil

    from pcl_edge.evolve import RunDirError

    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    model = out / "experts" / "task_02" / "model.pt"
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    model.write_bytes(bytes(blob))
    with pytest.raises(RunDirError, match="does not match its recorded sha256"):
        RunDir(out).load_expert(2)
    with pytest.raises(RunDirError, match="task_02"):
        evolve(resume=out, progress=False)


def test_the_python_api_tells_the_same_story_as_the_cli(tmp_path):
    """INFO lines with an overall line per task (k/T, elapsed, estimate left) and a step bar for each expert's
    training, without any logging set up."""
    code = ("from pcl_edge.evolve import evolve, preset_config\n"
            f"evolve(preset_config('tiny', 'digits', tasks='2x2', generations=0, expert_tie_z=0), "  # z 0: a race
            f"out={str(tmp_path / 'r')!r})\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "task 1/2 done" in res.stderr and "task 2/2 done" in res.stderr and "left" in res.stderr
    # the expert's final training shows its optimizer steps, not 0/1 candidates for its whole duration
    steps = preset_config("tiny", "digits").final.steps
    assert "task 2 expert:" in res.stderr and f"/{steps} [" in res.stderr and "step/s" in res.stderr
    assert "task 1 expert race:" in res.stderr  # the search's choice and the hand-picked seed, side by side
    assert "0/1 [" not in res.stderr


def test_a_budget_is_shared_by_the_tasks_left():
    from pcl_edge.evolve.learner import budget_steps

    # 100 s left for 2 tasks, 5 s of each outside training, 0.1 s a step: (100 - 2 x 5) / (2 x 0.1)
    assert budget_steps(100.0, 2, 0.1, 5.0) == 450
    assert budget_steps(-3.0, 2, 0.1, 5.0) == 1  # over budget already: a task still trains (one step), no error


class FakeClock:
    """``time`` as the learner and the baselines read it: seconds pass only where the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.mark.parametrize("strategy", ["fixed", "finetune"])
def test_a_task_budget_holds_a_baseline_to_its_wall_clock(tmp_path, monkeypatch, strategy):
    """``task_budget_s``: the first task trains ``final.steps``, each later one what fits its share of the time
    left, at the step time of the task before it and the time outside training of all before it; the run ends on
    budget, though the first task (the process's warm-up) trains at a third of the later tasks' pace."""
    from pcl_edge.evolve import baselines, learner

    clock = FakeClock()
    real_train, real_evaluate = baselines.train, learner.evaluate

    def train(net, data, cfg, seed, *args, **kwargs):  # 30 ms a step, then 10
        clock.now += (0.03 if clock.now == 0 else 0.01) * cfg.steps
        return real_train(net, data, dataclasses.replace(cfg, steps=1), seed, *args, **kwargs)

    def evaluate(net, data):  # 50 ms an evaluation: the time a task spends outside training
        clock.now += 0.05
        return real_evaluate(net, data)

    for mod in (learner, baselines):
        monkeypatch.setattr(mod, "time", clock)
        monkeypatch.setattr(mod, "evaluate", evaluate)
    monkeypatch.setattr(baselines, "train", train)
    cfg = tiny(strategy=strategy, genome="d3_w8_p1_x1_s0:res-k3_s1:res-k3", task_budget_s=2.0)
    s = evolve(cfg, out=tmp_path / strategy, progress=False)
    steps = [t["steps"] for t in s["tasks"]]
    assert steps[0] == cfg.final.steps and steps[2] > 2 * steps[1] > 2 * steps[0]  # task 3 knows the pace
    assert abs(s["wall_s"] - 3 * 2.0) < 0.05 * 2.0  # within 5 % of one task's share

    monkeypatch.setattr(learner, "time", FakeClock())  # without a budget: final.steps every task
    s = evolve(tiny(strategy=strategy, genome=cfg.genome), out=tmp_path / "plain", progress=False)
    assert [t["steps"] for t in s["tasks"]] == [cfg.final.steps] * 3


def test_a_budgeted_run_resumed_after_an_archived_expert_keeps_its_pace(tmp_path, monkeypatch):
    """Killed after task 2's expert was archived but before the state was saved: the resumed run counts that task's
    training from its archived record, so task 3 is still planned on the budget (not on ``final.steps``, and not on a
    time outside training inflated by a task it did not count)."""
    from pcl_edge.evolve import baselines, learner

    clock = FakeClock()
    real_train, real_archive = baselines.train, baselines.FixedLearner.archive

    def train(net, data, cfg, seed, *args, **kwargs):  # 10 ms a step, nothing else takes time
        clock.now += 0.01 * cfg.steps
        return real_train(net, data, dataclasses.replace(cfg, steps=1), seed, *args, **kwargs)

    def archive(self, t, net, record):
        real_archive(self, t, net, record)
        if t == 1:
            raise StopAfterTask

    for mod in (learner, baselines):
        monkeypatch.setattr(mod, "time", clock)
    monkeypatch.setattr(baselines, "train", train)
    monkeypatch.setattr(baselines.FixedLearner, "archive", archive)
    cfg = tiny(strategy="fixed", genome="d3_w8_p1_x1_s0:res-k3_s1:res-k3", task_budget_s=2.0)
    with pytest.raises(StopAfterTask):
        evolve(cfg, out=tmp_path / "run", progress=False)
    monkeypatch.setattr(baselines.FixedLearner, "archive", real_archive)
    s = evolve(resume=tmp_path / "run", progress=False)
    steps = [t["steps"] for t in s["tasks"]]
    assert steps[0] == cfg.final.steps and abs(steps[2] - (600 - sum(steps[:2]))) <= 1  # the time left, at 10 ms
    assert s["wall_s"] == pytest.approx(6.0, abs=0.02)  # the archived task's training is counted, as it is kept
