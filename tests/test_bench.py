"""The bench scripts run (``--quick``) and record where their figures come from; their figures are checked in
BENCHMARKS.md, not here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"{script}.json"
    subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--quick", "--json", str(out), *args], check=True,
                   cwd=tmp_path, capture_output=True, timeout=600)
    return json.loads(out.read_text())


def test_cl_quality_quick_records_budget_metrics_and_provenance(tmp_path):
    pytest.importorskip("onnxruntime", reason="measured latency needs onnxruntime (the 'ort' extra)")
    # no generations: the search's own depth is not what this checks, and B (so both baselines' time) is shorter
    rec = run_bench("cl_quality", tmp_path, "--strategies", "pcl,fixed,finetune", "--out", str(tmp_path / "runs"),
                    "--generations", "0")
    prov, res = rec["provenance"], rec["result"]
    assert rec["quick"] is True and "cl_quality.py --quick" in prov["command"]
    assert prov["versions"]["torch"] and prov["machine"]["cpus_usable"] >= 1 and prov["date"].endswith("Z")
    assert set(res["strategies"]) == {"pcl", "fixed", "finetune"}
    pcl = res["strategies"]["pcl"]
    assert res["budget_s"] == pcl["wall_s"] and res["baseline_steps_per_task"] >= 1
    assert res["probe_steps"] == 10 and res["baseline_seconds_per_step"] > 0  # --quick probes 10 steps
    assert pcl["bwt"] == 0.0  # frozen experts
    for s in res["strategies"].values():
        assert len(s["experts_latency"]) == 5 and s["total_params"] > 0
        assert all(e["measured_ms"] > 0 and e["predicted_ms"] >= 0 for e in s["experts_latency"])
    for s in ("fixed", "finetune"):  # closed loop: the probe's steps on task 1, then the time left shared out
        cfg = json.loads((tmp_path / "runs" / s / "config.json").read_text())
        assert cfg["task_budget_s"] == pytest.approx(res["budget_s"] / 5)
        steps = [t["steps"] for t in res["strategies"][s]["tasks"]]
        assert steps[0] == res["baseline_steps_per_task"] and all(n >= 1 for n in steps)
    assert "then closed loop to" in rec["text"] and "| steps |" in rec["text"]
    ft = res["strategies"]["finetune"]
    one = next(t["params"] for t in ft["tasks"])
    assert one < ft["total_params"] < 5 * one  # one trunk, five heads
    assert "| finetune |" in rec["text"] and "| wall / B |" in rec["text"]
    assert rec["result"]["budget_missed"] == cl_quality_module().budget_deviations(res["strategies"], res["budget_s"])
    # --reuse reads the finished runs instead of training again
    again = run_bench("cl_quality", tmp_path, "--strategies", "pcl,fixed", "--out", str(tmp_path / "runs"), "--reuse",
                      "--generations", "0")
    assert again["result"]["strategies"]["pcl"]["acc"] == pcl["acc"]
    assert "reused" in again["result"]["strategies"]["fixed"]
    assert again["result"]["probe_steps"] is None  # steps read from the reused baseline, nothing probed
    # ... but a run that ran another configuration does not stand for this one: refused, naming what differs
    other = subprocess.run([sys.executable, str(BENCH / "cl_quality.py"), "--quick", "--json", str(tmp_path / "x.json"),
                            "--strategies", "pcl", "--out", str(tmp_path / "runs"), "--reuse", "--generations", "0",
                            "--children", "3"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "children: 0 stored, 3 asked" in other.stderr
    assert not (tmp_path / "x.json").exists()


def cl_quality_module():
    import importlib

    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("cl_quality")
    finally:
        sys.path.remove(str(BENCH))


def test_a_strategy_that_missed_equal_wall_clock_is_named():
    """The baselines' steps come from a short probe: `fixed` took 0.93-1.72x B over the stored Split CIFAR-10 runs.
    A miss of more than 5 % either way is said under the table."""
    dev = cl_quality_module().budget_deviations
    runs = {"pcl": {"wall_s": 1559.0}, "fixed": {"wall_s": 1817.2}, "finetune": {"wall_s": 1500.0},
            "joint": {"wall_s": 1400.0}}
    assert dev(runs, 1559.0) == ["fixed 1.166x B", "joint 0.898x B"]
    assert dev({"pcl": {"wall_s": 10.0}, "fixed": {"wall_s": 10.5}}, 10.0) == []


def test_without_pcl_a_budget_is_asked_for_before_anything_runs(tmp_path):
    """B is pcl's wall clock or --budget-s: `pcl-scratch` alone used to run its whole search, then crash writing the
    table (no B to print)."""
    out = subprocess.run([sys.executable, str(BENCH / "cl_quality.py"), "--quick", "--json", str(tmp_path / "x.json"),
                          "--strategies", "pcl-scratch", "--out", str(tmp_path / "runs")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "give --budget-s" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.json").exists()


def test_a_reused_baseline_is_judged_on_what_a_baseline_reads():
    import dataclasses

    from pcl_edge.evolve import preset_config

    cl_quality = cl_quality_module()
    stored = preset_config("tiny", "digits", strategy="fixed").validate()
    searched = dataclasses.replace(stored, children=4, generations=3)  # the preset's search changed since
    assert cl_quality.config_differences(searched, stored, cl_quality.BASELINE_KEYS) == []
    assert cl_quality.config_differences(searched, stored) == ["children: 0 stored, 4 asked",
                                                               "generations: 1 stored, 3 asked"]
    longer = dataclasses.replace(stored, final=dataclasses.replace(stored.final, steps=41))
    differ = cl_quality.config_differences(longer, stored, cl_quality.BASELINE_KEYS)
    assert differ == ["final.steps: 40 stored, 41 asked"]


def test_latency_predictor_quick_checks_first_and_excludes_what_the_profile_saw(tmp_path):
    pytest.importorskip("onnxruntime", reason="re-measuring needs onnxruntime (the 'ort' extra)")
    rec = run_bench("latency_predictor", tmp_path)
    res = rec["result"]
    assert res["check"]["ratio"] > 0 and res["check"]["n"] == 16
    for name in ("shipped", "rescaled"):
        acc = res["accuracy"][name]
        assert acc["n"] == 24 and 0 <= acc["within_10pct"] <= 1 and set(acc["by_sampler"]) == {"search", "random"}
    rows = res["networks"]["shipped"]
    assert {r["shape"] for r in rows} == {"1x8x8", "3x32x32"} and all(len(r["rounds_ms"]) == 2 for r in rows)
    report = json.loads((BENCH.parent / "hw_profiles" / "cpu-ort-epyc-2core.report.json").read_text())
    seen = {(h["shape"], h["genome"]) for h in report["holdout"] + report["calibration_networks"]}
    assert not seen & {(r["shape"], r["genome"]) for r in rows}


def test_perf_predictor_quick_replays_a_run_and_scores_every_model(bundles, tmp_path):
    """A finished run replayed: the session's stream (tiny preset, 3 tasks, then 2 more learned), which the bench
    only reads. Without --runs the bench first runs a tiny search of its own; that path is not run here (20 s)."""
    rec = run_bench("perf_predictor", tmp_path, "--runs", str(bundles / "run"))
    (run, scores), = rec["result"]["runs"].items()
    assert run == str(bundles / "run")
    assert set(scores) == {"pairwise", "ridge", "parent-acc", "random"}
    n = {name: len(per_gen) for name, per_gen in scores.items()}
    assert len(set(n.values())) == 1 and n["pairwise"] >= 1  # every model scored on the same generations
    for per_gen in scores.values():
        for g in per_gen:
            assert g["kendall_tau"] is None or -1 <= g["kendall_tau"] <= 1
            assert 0 <= g["top_k_precision"] <= 1
    assert "| pairwise |" in rec["text"]


def test_table_formats_markdown():
    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    text = _common.table(["a", "b"], [["x", 0.12345], [None, 12345.6]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x | 0.1235 |", "| n/a | 1.235e+04 |"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and at least 2 usable CPUs")
def test_provenance_records_the_cpus_the_bench_started_with_not_a_later_pin():
    """A bench that pins itself to measure latency at the end (cl_quality) trained on every CPU before: its record
    says how many it started with (it said 1 for runs that trained on 2)."""
    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    before = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, before[:1])
        machine = _common.provenance()["machine"]
    finally:
        os.sched_setaffinity(0, before)
    assert machine["cpus_usable"] == len(before)
    assert machine["cpus_at_write"] == 1


def test_lifecycle_quick_runs_the_readme_loop_end_to_end(tmp_path):
    """The README's stream block, literally, then kill -9 / restart / refused push / rollback / restart (tiny preset):
    the bench's own verdict and the figures the issue names."""
    pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
    pytest.importorskip("cryptography", reason="signed bundles need the 'serve' extra")
    rec = run_bench("lifecycle", tmp_path, "--keep", str(tmp_path / "work"))
    steps = {s["step"]: s for s in rec["result"]["steps"]}
    assert rec["result"]["passed"] is True
    push = next(s for name, s in steps.items() if name.startswith("push v2"))
    assert push["failed"] == 0 and push["requests"] > 0
    assert steps["push v1 again"]["exit"] == 2 and steps["push v1 again"]["refused"]
    kills = [s for s in rec["result"]["steps"] if s["step"].startswith("kill -9")]
    assert [(k["tasks"], k.get("serves_v2", k.get("serves_v1"))) for k in kills] == [(5, True), (3, True)]
    assert "pcl-edge learn runs/stream --tasks 2x2" in steps


def test_gpu_check_dry_run_then_export_here(tmp_path):
    """Issue 24: the device check, prepared here: every part at toy sizes on the CPU, then what it brings back is
    exported with the parity check, as after a device call."""
    pytest.importorskip("onnxruntime", reason="the export's parity check needs onnxruntime (the 'ort' extra)")
    out = tmp_path / "device-out"
    rec = run_bench("gpu_check", tmp_path, "--out", str(out))
    res = json.loads((out / "gpu_check.json").read_text())  # what a device call brings back
    assert rec["result"]["throughput"] == res["throughput"] and res["device"] == "cpu" and res["dry_run"]
    rows = res["throughput"]["rows"]
    assert [r["variant"] for r in rows] == ["today (host batches, one at a time)", "device-resident (one at a time)",
                                            "gpu executor, K=1", "gpu executor, K=2", "gpu executor, K=4"]
    assert all(r["candidates"] >= 1 and r["candidates_per_min"] > 0 for r in rows)
    assert res["throughput"]["identical_across_k"] and res["throughput"]["max_val_acc_diff_host_vs_resident"] == 0
    assert [r["peak_in_flight"] for r in rows[2:]] == [1, 2, 4]
    assert res["evolve"]["rc"] == 0 and res["evolve"]["summary"]["bwt"] == 0.0 and len(res["evolve"]["experts"]) == 2
    assert res["run_parts"] and not (out / "run").exists()
    after = tmp_path / "after.json"
    subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--after", str(out), "--json", str(after)],
                   check=True, cwd=tmp_path, capture_output=True, timeout=600)
    back = json.loads(after.read_text())["result"]
    assert back["export_here"]["tasks"] == [1, 2] and back["export_here"]["max_abs_diff"] < 1e-4
