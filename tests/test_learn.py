"""A stream that stays open (issue 20): tasks added to a finished or interrupted run, from its stored population;
learning in several calls gives the experts of one call; earlier experts are never touched; bad input changes
nothing."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pcl_edge.data import DataError, build_stream, parse_task_spec
from pcl_edge.evolve import Run, RunDir, RunDirError, evolve, learn, preset_config
from tests.test_learner import StopAfterTask, stop_after_task


def expert_ids_and_shas(run_dir):
    rd = RunDir(run_dir)
    return {i: (rd.verify_expert(i)["genome"], rd.verify_expert(i)["model_sha256"]) for i in rd.expert_ids()}


@pytest.fixture(scope="module")
def one_call(tmp_path_factory):
    """Tasks 1-5 learned in one call, with the recipe and seed of the ``bundles`` run (tasks 1-3, then 4-5)."""
    out = tmp_path_factory.mktemp("one") / "run"
    evolve(preset_config("tiny", "digits", tasks="5x2"), out=out, progress=False)
    return out


def snapshot(run_dir):
    """Every file of a run with its bytes' digest: what "changes nothing" compares."""
    import hashlib

    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_learning_in_two_calls_gives_the_experts_of_one_call(bundles, one_call):
    assert expert_ids_and_shas(bundles / "run") == expert_ids_and_shas(one_call)  # genome and weights, bit for bit
    a = json.loads((bundles / "run" / "summary.json").read_text())
    b = json.loads((one_call / "summary.json").read_text())
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["random_init_acc"] == b["random_init_acc"]


def test_earlier_experts_are_untouched_and_everything_grows_row_by_row(bundles):
    rd, before = RunDir(bundles / "run"), (bundles / "expert_sha.txt").read_text().split()
    assert [rd.verify_expert(i)["model_sha256"] for i in (1, 2, 3)] == before
    old = json.loads((bundles / "run3" / "summary.json").read_text())
    new = json.loads((bundles / "run" / "summary.json").read_text())
    R = np.array([[np.nan if v is None else v for v in row] for row in new["accuracy_matrix"]])
    assert R.shape == (5, 5) and new["bwt"] == 0.0
    assert [row[:3] for row in new["accuracy_matrix"][:3]] == [row[:3] for row in old["accuracy_matrix"]]
    assert np.all(R[3:, :3] == R[2, :3])  # frozen experts: old tasks' values in new rows equal the old ones
    assert [t["id"] for t in new["tasks"]] == [1, 2, 3, 4, 5] and {t["source"] for t in new["tasks"]} == {"digits"}
    assert (bundles / "run" / "accuracy_matrix.csv").read_text().splitlines()[0].endswith("task_05")
    assert len((bundles / "run" / "accuracy_matrix.csv").read_text().splitlines()) == 6
    events = [json.loads(line) for line in (bundles / "run" / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("expert") == 5 and kinds.count("done") == 2 and kinds.count("learn") == 1
    added = next(e for e in events if e["event"] == "learn")["tasks"]
    assert [(t["id"], t["class_names"]) for t in added] == [(4, ["6", "7"]), (5, ["8", "9"])]
    plan = json.loads((bundles / "run" / "tasks.json").read_text())
    assert [t["class_names"] for t in plan["tasks"]] == [[str(2 * i), str(2 * i + 1)] for i in range(5)]


def test_an_added_task_interrupted_is_continued_by_resume(bundles, one_call, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bundles / "run3", run)

    with pytest.raises(StopAfterTask):
        learn(run, tasks="2x2", progress=False, on_task_end=stop_after_task(3))
    assert RunDir(run).expert_ids() == [1, 2, 3, 4] and not RunDir(run).finished()
    s = evolve(resume=run, progress=False)
    assert len(s["tasks"]) == 5 and expert_ids_and_shas(run) == expert_ids_and_shas(one_call)


def _image_folder(root, classes, sizes, mode="L"):
    """train/<class>/ images of several sizes and formats, drawn from the digits of each class (so a learned expert
    has something real to learn)."""
    from PIL import Image

    from pcl_edge.data import load_pool

    pool = load_pool("digits")
    for name, digit in classes.items():
        d = root / "train" / name
        d.mkdir(parents=True)
        for i, x in enumerate(pool.x_train[pool.y_train == digit][:60]):
            im = Image.fromarray(x[..., 0]).convert(mode).resize(sizes[i % len(sizes)])
            im.save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_a_new_source_of_any_size_is_resized_and_may_reuse_class_names(bundles, tmp_path):
    """Images of other sizes (PNG and JPEG, 12x12 and 20x16) come in at the run's 8x8; the new task's classes are
    named like task 1's ("0", "1"): another source, so a task of its own with its own head. runs/latest follows."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(bundles / "run3", runs / "a")
    shutil.copytree(bundles / "run3", runs / "b")
    (runs / "latest").symlink_to("b")
    site = _image_folder(tmp_path / "site_b", {"0": 0, "1": 1}, [(12, 12), (20, 16)])
    s = learn(runs / "a", f"imagefolder:{site}", progress=False)
    assert [t["class_names"] for t in s["tasks"]] == [["0", "1"], ["2", "3"], ["4", "5"], ["0", "1"]]
    assert s["tasks"][3]["source"] == f"imagefolder:{site.resolve()}" and s["tasks"][3]["test_acc"] > 0.8
    meta = RunDir(runs / "a").verify_expert(4)
    assert meta["input_spec"]["shape"] == [1, 8, 8] and os.readlink(runs / "latest") == "a"
    assert s["accuracy_matrix"][3][:3] == s["accuracy_matrix"][2][:3]


@pytest.fixture
def run3(bundles, tmp_path):
    shutil.copytree(bundles / "run3", tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("case,match", [
    ("color", "3-channel images; this run's tasks take 1 channel"),
    ("empty-class", "train/1/ .* holds no image"),
    ("same-task", "task 1, which the run already has"),
    ("overlap", r"classes the run already learned in task\(s\) 2"),
    ("too-many", "needs 6 classes .* 4 not yet learned"),
    ("locked", "being written by another process"),
    ("unknown-class", "names class 'cat', which the data lacks"),
])
def test_bad_input_is_one_clear_line_and_changes_nothing(run3, tmp_path, case, match, capsys):
    from pcl_edge.cli import main

    args = {"color": ["--data", "imagefolder:{rgb}"], "empty-class": ["--data", "imagefolder:{empty}"],
            "same-task": ["--tasks", "0,1"], "overlap": ["--tasks", "3,6"], "too-many": ["--tasks", "3x2"],
            "locked": ["--tasks", "2x2"], "unknown-class": ["--tasks", "cat,dog"]}[case]
    rgb = _image_folder(tmp_path / "rgb", {"a": 0, "b": 1}, [(8, 8)], mode="RGB")
    empty = _image_folder(tmp_path / "empty", {"0": 0}, [(8, 8)])
    (empty / "train" / "1").mkdir()
    args = [a.format(rgb=rgb, empty=empty) for a in args]
    before = snapshot(run3)
    holder = None
    if case == "locked":  # another process holds the run for writing
        holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pcl_edge.evolve import RunDir\n"
                                   f"with RunDir({str(run3)!r}).lock():\n    print('held', flush=True)\n"
                                   "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
    try:
        assert main(["-q", "learn", str(run3), *args]) == 2
    finally:
        if holder:
            holder.kill()
            holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pcl-edge learn: error: ")
    import re

    assert re.search(match, err[0]), err[0]
    assert snapshot(run3) == before


def test_a_joint_run_cannot_learn_more_tasks(tmp_path):
    evolve(preset_config("tiny", "digits", tasks="2x2", strategy="joint"), out=tmp_path / "j", progress=False)
    with pytest.raises(RunDirError, match="trains every task at once"):
        learn(tmp_path / "j", tasks="2x2", progress=False)


def test_dry_run_lists_the_new_tasks_and_learns_nothing(run3, capsys):
    from pcl_edge.cli import main

    before, lock = snapshot(run3), (run3 / ".lock").read_bytes()
    assert main(["-q", "learn", str(run3), "--tasks", "6,7/8,9", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 tasks learned, 3 planned; would add:" in out and "task 4: 6,7 from digits" in out
    assert "task 5: 8,9 from digits (train " in out and snapshot(run3) == before
    assert (run3 / ".lock").read_bytes() == lock  # a dry run only reads: it takes no lock


def test_the_run_object_lists_experts_and_predicts(bundles, tmp_path):
    run = Run.open(bundles / "run")
    assert [e.task_id for e in run.experts()] == [1, 2, 3, 4, 5] and all(t["learned"] for t in run.tasks)
    assert run.experts()[3].class_names == ("6", "7") and "5 experts" in repr(run)
    task4 = build_stream("digits", "5x2").tasks[3]
    p = run.predict(task4.test.x, task=4)  # uint8 NHWC, normalised with the expert's own spec
    assert p.probs.shape == (len(task4.test), 2) and (p.indices == task4.test.y).mean() > 0.9
    assert set(p.labels) <= {"6", "7"} and run.predict(task4.test.x, "task_04").labels == p.labels
    from PIL import Image

    Image.fromarray(np.kron(task4.test.x[0, ..., 0], np.ones((3, 3), np.uint8))).save(tmp_path / "x.png")  # 24x24
    assert run.predict(tmp_path / "x.png", 4).labels[0] in ("6", "7")
    with pytest.raises(RunDirError, match="unknown task 9"):
        run.predict(task4.test.x, 9)
    with pytest.raises(ValueError, match="float32"):
        run.predict(task4.test.x.astype(np.float64), 4)


def test_task_specs_count_classes_not_yet_learned():
    names = tuple(str(i) for i in range(10))
    taken = {0: 1, 1: 1, 2: 2, 3: 2}
    assert parse_task_spec("2x2", names, taken) == [(4, 5), (6, 7)]
    assert parse_task_spec(None, names, taken, default="rest") == [(4, 5, 6, 7, 8, 9)]
    assert parse_task_spec(None, names) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    with pytest.raises(DataError, match="already learned 10 of the 10"):
        parse_task_spec(None, names, {c: 1 for c in range(10)}, default="rest")


def test_a_source_that_changed_since_it_was_planned_is_refused(bundles, tmp_path):
    """Adding images to a source moves its test split under the experts already learned: refused, nothing changed."""
    shutil.copytree(bundles / "run3", tmp_path / "run")
    site = _image_folder(tmp_path / "site_b", {"a": 0, "b": 1}, [(8, 8)])
    learn(tmp_path / "run", f"imagefolder:{site}", progress=False)
    plan = json.loads((tmp_path / "run" / "tasks.json").read_text())
    assert set(plan["sources"]) == {"digits", f"imagefolder:{site.resolve()}"}
    shutil.copy(site / "train" / "a" / "0.jpg", site / "train" / "a" / "new.jpg")
    before = snapshot(tmp_path / "run")
    with pytest.raises(DataError, match="changed since task 4 was planned"):
        learn(tmp_path / "run", tasks="6,7", progress=False)
    assert snapshot(tmp_path / "run") == before


def test_a_run_made_before_plans_were_kept_keeps_its_validation_splits(bundles, tmp_path):
    """Such a run carved validation with one RNG over its tasks in order: resumed or grown, it still does (so its
    remaining tasks get the splits they would have had), and tasks.json says so."""
    from pcl_edge.data import load_pool, stream_from_plan
    from pcl_edge.data.plan import extend_plan
    from pcl_edge.data.stream import stratified_split

    pool = load_pool("digits")
    plan = extend_plan([], "digits", pool.class_names, "5x2", default="5")
    legacy = stream_from_plan(plan, 0, val_scheme="sequential")
    rng = np.random.default_rng([0, 2])  # the carving of those runs, spelled out
    keep, _ = stratified_split(pool.y_train, 0.2, np.random.default_rng([0, 1]))
    x, y = pool.x_train[keep], pool.y_train[keep]
    for task in legacy.tasks:
        sel = np.isin(y, task.classes)
        _, val = stratified_split(y[sel] - min(task.classes), 0.15, rng)  # consecutive classes: local labels
        assert np.array_equal(task.val.x, x[sel][val])
    shutil.copytree(bundles / "run3", tmp_path / "run")
    (tmp_path / "run" / "tasks.json").unlink()
    learn(tmp_path / "run", tasks="1x2", progress=False)
    assert json.loads((tmp_path / "run" / "tasks.json").read_text())["val_scheme"] == "sequential"


def test_an_image_folder_of_mixed_sizes_and_formats_runs_with_an_input_size(tmp_path, capsys):
    """issue 23 item 7: JPEG and PNG of three sizes, grayscale; without --input-size one clear line, with it a run."""
    from pcl_edge.cli import main

    site = _image_folder(tmp_path / "mixed", {"a": 0, "b": 1, "c": 2, "d": 3}, [(8, 8), (12, 10), (20, 16)])
    args = ["-q", "evolve", "--data", f"imagefolder:{site}", "--tasks", "2x2", "--preset", "tiny", "--generations",
            "0"]
    assert main([*args, "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ in size" in err[0] and "--input-size" in err[0]
    assert not (tmp_path / "no").exists()
    assert main([*args, "--input-size", "10x10", "--out", str(tmp_path / "run")]) == 0
    assert RunDir(tmp_path / "run").verify_expert(2)["input_spec"]["shape"] == [1, 10, 10]
