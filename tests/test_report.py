import base64
import json
import re

import pytest

from pcl_edge.evolve import evolve, preset_config
from pcl_edge.hw.roofline import estimated_profile

pytest.importorskip("matplotlib", reason="the report draws with matplotlib (the 'train' extra)")


def test_report_is_one_self_contained_page(tmp_path, capsys):
    from pcl_edge.cli import main

    target = tmp_path / "nano.yaml"
    estimated_profile("jetson-orin-nano-8gb").save(target)
    evolve(preset_config("tiny", "digits", tasks="2x2", target=str(target)), out=tmp_path / "run", progress=False)
    assert main(["-q", "report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    images = page.split("data:image/png;base64,")[1:]
    assert len(images) == 4  # accuracy matrix, search progress, one candidates plot per task
    for img in images:
        assert base64.b64decode(img.split("'")[0]).startswith(b"\x89PNG")
    assert "<td>task_" not in page and page.count("<tr><td>") == 2 and "predicted ms" in page
    assert re.search(r"<p>Executor, per session: local \(workers \d+\)</p>", page)
    assert "src='http" not in page and "<script" not in page  # nothing to fetch: opens offline
    assert sorted(p.name for p in (tmp_path / "run" / "report").glob("*.png")) == [
        "accuracy_matrix.png", "candidates_task_01.png", "candidates_task_02.png", "search_progress.png"]


def test_the_report_lists_each_session_s_executor(tmp_path):
    from pcl_edge.evolve import RunDir
    from pcl_edge.report import _sessions_line

    run = RunDir(tmp_path)
    assert _sessions_line(tmp_path) == ""  # a run from before sessions were recorded: no line
    run.event("session", executor="gpu", settings={"slots": 4, "device": "cuda", "graphs": False})
    run.event("session", executor="local", settings={"workers": 2})
    run.event("session", executor="mine")  # an executor registered without settings
    assert _sessions_line(tmp_path) == ("\n<p>Executor, per session: gpu (slots 4, device cuda, graphs False); "
                                        "local (workers 2); mine</p>")


def test_report_needs_a_finished_run(tmp_path, capsys):
    from pcl_edge.cli import main

    assert main(["-q", "report", str(tmp_path / "nope")]) == 2  # a path that is no run: what is missing, no --resume
    err = capsys.readouterr().err
    assert f"no run at {tmp_path / 'nope'}" in err and "--resume" not in err
    (tmp_path / "config.json").write_text(json.dumps(preset_config("tiny", "digits").to_dict()))
    assert main(["-q", "report", str(tmp_path)]) == 2  # an unfinished run: then --resume is the way on
    err = capsys.readouterr().err
    assert "not finished (no summary.json)" in err and f"--resume {tmp_path}" in err


def test_report_predicts_and_measures_expert_latency(tmp_path):
    """A run without a target: --profile predicts every candidate and expert, --measure times the experts here."""
    pytest.importorskip("onnxruntime", reason="--measure ort-cpu needs onnxruntime (the 'ort' extra)")
    from pcl_edge.cli import main

    profile = tmp_path / "nano.yaml"
    estimated_profile("jetson-orin-nano-8gb").save(profile)
    evolve(preset_config("tiny", "digits", tasks="2x2"), out=tmp_path / "run", progress=False)
    assert main(["-q", "report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--profile", str(profile),
                 "--measure", "ort-cpu"]) == 0
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "predicted ms" in page and "measured ms" in page and "jetson-orin-nano-8gb (estimated" in page
    assert (tmp_path / "rep" / "latency_predicted_vs_measured.png").read_bytes().startswith(b"\x89PNG")
    record = json.loads((tmp_path / "rep" / "latency.json").read_text())
    assert sorted(record["measured_ms"]) == sorted(record["predicted_ms"]) == ["1", "2"]
    assert all(v > 0 for v in record["measured_ms"].values())
    assert record["settings"]["tool"].startswith("onnxruntime") and record["settings"]["batch"] == 1
    assert page.count("data:image/png;base64,") == 5  # matrix, progress, 2 candidate plots, latency
    from pcl_edge.hw.profile import load_profile
    from pcl_edge.report import _caveat

    note = _caveat({}, load_profile(profile), record)  # written on the figure: an estimate vs a measurement here
    assert "ESTIMATE" in note and "not comparable" in note


def test_report_reads_candidates_from_the_event_log_without_pareto_csvs(tmp_path):
    import shutil

    from pcl_edge.report import task_candidates

    evolve(preset_config("tiny", "digits", tasks="2x2"), out=tmp_path / "run", progress=False)
    from_csv = task_candidates(tmp_path / "run", 1)
    shutil.rmtree(tmp_path / "run" / "pareto")
    from_events = task_candidates(tmp_path / "run", 1)
    assert sorted(r["genome"] for r in from_csv) == sorted(r["genome"] for r in from_events)
    assert len(from_events) > 4


def test_the_expert_is_circled_by_uid_not_by_genome():
    from pcl_edge.report import expert_row

    rows = [{"uid": "t2-g0-i0", "genome": "g", "val_acc": "1.0"},
            {"uid": "t2-g1-c3", "genome": "g", "val_acc": "0.977"}]
    assert expert_row({"genome": "g", "selected_from": "t2-g0-i0"}, rows)["val_acc"] == "1.0"
    assert expert_row({"genome": "g", "selected_from": "t2-g1-c3"}, rows)["val_acc"] == "0.977"
    assert expert_row({"genome": "g"}, rows)["uid"] == "t2-g0-i0"  # older runs: the first, not the last


def test_the_overlap_check_finds_texts_that_run_into_each_other():
    from pcl_edge.report import _plt, text_problems

    plt = _plt()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks([0, 0.01, 0.02])
    ax.set_xticklabels(["0.000001", "0.000002", "0.000003"])
    ax.annotate("task 1", (0.5, 0.5))
    ax.annotate("task 2", (0.5, 0.5))
    problems = text_problems(fig)
    plt.close(fig)
    assert "'0.000001' overlaps '0.000002'" in problems and "'task 1' overlaps 'task 2'" in problems


@pytest.mark.parametrize("lo,hi", [(0.3, 0.31), (0.0025, 0.004), (0.2, 0.9), (0.01, 0.5), (0.001, 30.0),
                                   (2e4, 3e4), (3e3, 3e5)])
def test_figures_read_well_over_any_range(tmp_path, lo, hi, caplog):
    """Ticks and labels of the report's figures never run into each other, whatever the data's range: narrow ranges
    (experts of nearly equal latency), several decades, and points on top of each other (equal experts)."""
    import numpy as np

    from pcl_edge.report import candidates_plot, latency_plot

    mid = (lo * hi) ** 0.5
    points = [(1, lo, lo), (2, hi, hi * 1.02), (3, mid, mid), (4, mid, mid), (5, mid * 1.01, mid)]
    latency_plot(points, tmp_path / "lat.png", "predicted (ms)", "measured (ms)", "profile measured on A;\nhere on B")
    rng = np.random.default_rng(0)
    for key in ("params", "latency_ms"):
        rows = [{"uid": f"u{i}", "genome": f"g{i}", "val_acc": float(rng.uniform(0.8, 1)),
                 key: float(lo * (hi / lo) ** rng.uniform())} for i in range(40)]
        candidates_plot({"id": 2, "class_names": ["airplane", "automobile"], "genome": "g3", "selected_from": "u3"},
                        rows, tmp_path / f"{key}.png", hi if key == "latency_ms" else None)
    # five experts measured within 4 % of each other, far off an estimate's prediction (a Jetson datasheet profile
    # against this CPU), with the caveat: labels stacked, the caveat under the axes, nothing on top of another
    cluster = [(k, 0.17, v) for k, v in zip(range(1, 6), (0.01709, 0.01676, 0.01647, 0.01667, 0.01658))]
    latency_plot(cluster, tmp_path / "cluster.png", "predicted (ms)", "measured (ms)", "an ESTIMATE;\nmeasured here")
    assert [r.getMessage() for r in caplog.records if r.name == "pcl_edge.report"] == []
