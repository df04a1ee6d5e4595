import numpy as np
import pytest
import yaml

from pcl_edge.hw.kernels import Kernel, genome_kernels, kernel_key
from pcl_edge.hw.predictor import LatencyPredictor, accuracy_report, fit_calibration, fit_fallback
from pcl_edge.hw.profile import KernelStats, Profile, ProfileError, load_profile, profile_from_dict
from pcl_edge.hw.roofline import JETSONS, estimated_profile
from pcl_edge.space import Genome, count_params

G = Genome.parse("d4_w8_p2_x2_s0:res-k3_s1:mbconv-k5-e3")


def test_kernel_key_is_canonical_and_stable():
    # profiles on disk depend on this exact spelling: changing it is a schema change
    assert kernel_key(Kernel("mbconv", 16, 32, 32, 2, 5, 3)) == "mbconv-k5-e3-s2:16x32x32->32"
    keys = [k.key for k in genome_kernels(G, (1, 8, 8))]
    assert keys == ["stem-k3-e1-s1:1x8x8->8", "res-k3-e1-s1:8x8x8->8", "res-k3-e1-s1:8x8x8->8",
                    "mbconv-k5-e3-s2:8x8x8->16", "mbconv-k5-e3-s1:16x4x4->16", "head-k1-e1-s1:16x4x4->2"]


@pytest.mark.parametrize("text", ["d6_w16_p2.4_x2.4_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3", str(G),
                                  "d3_w12_p1_x0_s0:dws-k5_s1:mbconv-k3-e1"])
def test_kernel_parameters_match_the_network(text):
    from pcl_edge.space.cost import genome_params

    g = Genome.parse(text)
    assert genome_params(g, 3, 2) == count_params(g, 3, 2)
    assert genome_params(g, 1, 10) == count_params(g, 1, 10)


def test_every_registered_block_has_a_cost_model():
    from pcl_edge.space import BLOCKS
    from pcl_edge.space.cost import COST_OPS

    assert set(BLOCKS.names()) == set(COST_OPS) - {"stem", "head"}


def _table_profile(**kw) -> Profile:
    ms = {"stem-k3-e1-s1:1x8x8->8": 1.0, "res-k3-e1-s1:8x8x8->8": 2.0, "mbconv-k5-e3-s2:8x8x8->16": 4.0,
          "mbconv-k5-e3-s1:16x4x4->16": 5.0, "head-k1-e1-s1:16x4x4->2": 6.0}
    kernels = {k: KernelStats(median=v, p90=v + 0.5, p99=v + 1, std=0.1, count=100) for k, v in ms.items()}
    base = dict(name="hand", source="measured", device={"name": "test"}, software={"onnxruntime": "x"},
                measurement={"tool": "hand", "batch": 1}, kernels=kernels,
                fallback={"kind": "linear", "coefficients": {"*": [0.0, 0.0, 7.0]}}, overhead_ms=0.5,
                provenance={"command": "hand", "code_version": "0", "date": "2026-11-21", "host": "here"})
    return Profile(**(base | kw))


def test_predictor_on_a_hand_built_table_equals_the_hand_sum():
    pred = LatencyPredictor(_table_profile(), (1, 8, 8))
    assert pred.predict(G) == pytest.approx(1 + 2 + 2 + 4 + 5 + 6 + 0.5)  # the two res layers share a key
    cal = LatencyPredictor(_table_profile(calibration={"scale": 2.0, "offset": -1.0}), (1, 8, 8))
    assert cal.predict(G) == pytest.approx(2 * 20.5 - 1)
    other = Genome.parse("d4_w8_p2_x2_s0:res-k3_s1:mbconv-k5-e6")  # two kernels the table lacks -> fallback 7 each
    assert pred.predict(other) == pytest.approx(1 + 2 + 2 + 7 + 7 + 6 + 0.5) and pred.misses == 2
    assert LatencyPredictor(_table_profile(), (1, 8, 8)).kernel_ms(Kernel("dws", 8, 8, 8)) == 7.0


def test_yaml_round_trip(tmp_path):
    p = _table_profile()
    p.save(tmp_path / "p.yaml")
    assert load_profile(tmp_path / "p.yaml") == p
    for name in JETSONS:
        e = estimated_profile(name)
        e.save(tmp_path / f"{name}.yaml")
        assert load_profile(tmp_path / f"{name}.yaml") == e


def test_shipped_profiles_load_and_say_where_their_numbers_come_from():
    from pathlib import Path

    shipped = sorted(Path(__file__).resolve().parents[1].glob("hw_profiles/*.yaml"))
    assert len(shipped) >= 3
    for path in shipped:
        prof = load_profile(path)
        assert prof.source in ("measured", "estimated")
        if prof.source == "estimated":
            assert prof.estimate["sources"] and prof.estimate["assumptions"]
        else:
            assert prof.provenance and prof.accuracy


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.pop("kernels"), r"missing field\(s\) \['kernels'\]"),
    (lambda d: d.update(schema_version=7), "unknown schema_version 7"),
    (lambda d: d.pop("provenance"), "needs provenance"),
    (lambda d: d.update(source="guessed"), "source must be"),
    (lambda d: d.update(colour="red"), "unknown field"),
    (lambda d: d.update(fallback={"kind": "magic"}), "fallback.kind"),
])
def test_bad_profiles(edit, match):
    d = _table_profile().to_dict()
    edit(d)
    with pytest.raises(ProfileError, match=match):
        profile_from_dict(d)


def test_profiles_are_read_with_safe_yaml_only(tmp_path):
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(tmp_path / "evil.yaml")


def test_calibration_fit_recovers_its_parameters():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.1, 5, 200)
    measured = 1.7 * raw + 0.3 + rng.normal(0, 1e-3, 200)
    cal = fit_calibration(list(raw), list(measured))
    assert cal["scale"] == pytest.approx(1.7, abs=1e-3) and cal["offset"] == pytest.approx(0.3, abs=1e-3)


def test_fallback_fit_recovers_a_linear_cost_model():
    rng = np.random.default_rng(1)
    ks = [Kernel("res", int(c), int(c) * d, int(s), 1 + int(st)) for c, d, s, st in
          zip(rng.choice([8, 16, 32], 40), rng.choice([1, 2], 40), rng.choice([8, 16, 32], 40), rng.integers(0, 2, 40))]
    ms = [0.02 * k.features()[0] + 0.5 * k.features()[1] + 0.01 for k in ks]
    fb = fit_fallback(ks, ms)
    assert fb["kind"] == "linear"
    np.testing.assert_allclose(fb["coefficients"]["res"], [0.02, 0.5, 0.01], atol=1e-6)


def test_accuracy_report():
    rep = accuracy_report([1.0, 2.1, 3.5, 4.0], [1.0, 2.0, 3.0, 4.2])
    assert rep["n"] == 4 and rep["within_10pct"] == 0.75 and rep["spearman"] == 1.0


def test_roofline_estimate_uses_its_stated_figures():
    p = estimated_profile("jetson-orin-nano-8gb")
    assert p.source == "estimated" and p.fallback["peak_gflops"] == 2000 * 8 * 625 / 1000
    k = Kernel("res", 64, 64, 32)
    mflops, mbytes, _ = k.features()
    fb = p.fallback
    want = 1e3 * max(mflops * 1e6 / (fb["peak_gflops"] * 1e9 * fb["compute_efficiency"]),
                     mbytes * 1e6 / (fb["bandwidth_gbs"] * 1e9 * fb["memory_efficiency"])) + fb["layer_overhead_ms"]
    assert LatencyPredictor(p, (64, 32, 32)).kernel_ms(k) == pytest.approx(want)


def test_bigger_networks_are_predicted_slower():
    pred = LatencyPredictor(estimated_profile("jetson-agx-orin-64gb"), (3, 32, 32))
    small = pred.predict(Genome.parse("d2_w8_p1_x-_s0:dws-k3_s1:dws-k3"))
    big = pred.predict(Genome.parse("d8_w64_p2.4_x2.4_s0:res-k5_s1:res-k5_s2:res-k5"))
    assert big > small > 0


def test_latency_aware_search_respects_the_budget(tmp_path):
    from pcl_edge.evolve import evolve, preset_config

    target = tmp_path / "nano.yaml"
    estimated_profile("jetson-orin-nano-8gb").save(target)
    cfg = preset_config("tiny", "digits", tasks="2x2", target=str(target), latency_budget_ms=0.13)
    s = evolve(cfg, out=tmp_path / "run", progress=False)
    assert s["target"]["name"] == "jetson-orin-nano-8gb" and s["target"]["source"] == "estimated"
    for t in s["tasks"]:
        assert t["latency_ms"] <= 0.13 * 0.9
    csv = (tmp_path / "run" / "pareto" / "task_01.csv").read_text().splitlines()
    assert csv[0] == "uid,genome,op,val_acc,params,latency_ms,rank,feasible" and len(csv) > 4


def test_an_impossible_budget_stops_before_anything_is_written(tmp_path):
    from pcl_edge.evolve import evolve, preset_config
    from pcl_edge.evolve.pcl import LatencyBudgetError

    target = tmp_path / "nano.yaml"
    estimated_profile("jetson-orin-nano-8gb").save(target)
    cfg = preset_config("tiny", "digits", tasks="2x2", target=str(target), latency_budget_ms=0.01)
    with pytest.raises(LatencyBudgetError, match=r"use --latency-budget >= 0\.1"):
        evolve(cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_profile_yaml_is_plain_data():
    d = yaml.safe_load(yaml.safe_dump(_table_profile().to_dict()))
    assert d["kernels"]["stem-k3-e1-s1:1x8x8->8"]["median"] == 1.0


def test_calibration_with_a_per_node_term_recovers_it():
    rng = np.random.default_rng(2)
    raw, n = rng.uniform(0.01, 1, 100), rng.integers(4, 14, 100)
    measured = 0.8 * raw + 0.004 * n + 0.02
    cal = fit_calibration(list(raw), list(measured), list(n))
    assert cal["scale"] == pytest.approx(0.8, abs=1e-4) and cal["per_node"] == pytest.approx(0.004, abs=1e-5)
    assert cal["offset"] == pytest.approx(0.02, abs=1e-4)


def test_profile_command_end_to_end_on_onnxruntime_cpu(tmp_path, capsys):
    """A miniature real run: kernels, calibration and held-out networks timed with onnxruntime on this CPU."""
    pytest.importorskip("onnxruntime")
    from pcl_edge.cli import main

    out = tmp_path / "cpu.yaml"
    assert main(["-q", "profile", "--out", str(out), "--input-shapes", "1x8x8", "--kernel-genomes", "6",
                 "--calibration", "4", "--holdout", "5", "--warmup", "2", "--iterations", "5"]) == 0
    prof = load_profile(out)
    assert prof.source == "measured" and prof.provenance["host"] and prof.accuracy["n"] == 5
    assert prof.measurement["intra_op_threads"] == 1 and len(prof.kernels) > 5
    assert (tmp_path / "cpu.report.json").is_file()
    assert main(["-q", "profile", "--out", str(out)]) == 2  # never overwritten
    assert "never overwritten" in capsys.readouterr().err


def test_generated_onnx_graphs_are_valid_and_match_the_exported_structure():
    import onnx

    from pcl_edge.export.onnx_export import export_onnx
    from pcl_edge.hw.onnx_graphs import genome_model
    from pcl_edge.space import build_network

    g = Genome.parse("d5_w8_p2.4_x2_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3")
    ours = onnx.load_from_string(genome_model(g, (3, 16, 16)))
    onnx.checker.check_model(ours, full_check=True)
    exported = onnx.load_from_string(export_onnx(build_network(g, 3, 2).eval(), (3, 16, 16), None))
    count = lambda m: sorted(n.op_type for n in m.graph.node if n.op_type != "Identity")  # noqa: E731
    assert count(ours) == count(exported)


def test_prediction_imports_no_runtime():
    """nn-Meter's rule: predicting never touches the measuring side (no onnxruntime, tensorrt or torch)."""
    from pathlib import Path

    from tests._isolation import run_without

    root = Path(__file__).resolve().parents[1]
    res = run_without(("torch", "onnxruntime", "tensorrt", "onnx"),
                      "from pcl_edge.hw.predictor import LatencyPredictor\n"
                      "from pcl_edge.hw.profile import load_profile\n"
                      "from pcl_edge.space.genome import Genome\n"
                      f"p = LatencyPredictor(load_profile({str(root / 'hw_profiles/jetson-orin-nx-16gb.yaml')!r}), "
                      "(3, 32, 32))\nprint(p.predict(Genome.parse('d2_w8_p1_x-_s0:dws-k3_s1:dws-k3')) > 0)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"


def test_profiling_needs_no_torch():
    """`pcl-edge profile` runs on the target device, which has onnx and a runtime but no torch."""

    from tests._isolation import run_without

    res = run_without(("torch",), "import numpy as np\n"
                      "from pcl_edge.hw.profiling import sample_genomes\n"
                      "from pcl_edge.hw.onnx_graphs import genome_model\n"
                      "gs = sample_genomes((3, 32, 32), 5, np.random.default_rng(0))\n"
                      "print(len(gs), len(genome_model(gs[0], (3, 32, 32))) > 100)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["5", "True"]


@pytest.mark.parametrize("text", ["d6_w16_p2.4_x2.4_s0:res-k3_s1:mbconv-k5-e3_s2:dws-k3",
                                  "d5_w8_p1_x0.3_s0:mbconv-k3-e1_s1:mbconv-k5-e6", "d4_w12_p2_x-_s0:dws-k5_s1:res-k3"])
def test_operator_count_matches_the_generated_graphs(text):
    import onnx

    from pcl_edge.hw.kernels import graph_nodes
    from pcl_edge.hw.onnx_graphs import genome_model

    g = Genome.parse(text)
    model = onnx.load_from_string(genome_model(g, (3, 16, 16)))
    assert len(model.graph.node) == sum(graph_nodes(k) for k in genome_kernels(g, (3, 16, 16)))


def test_calibration_per_input_shape_is_used():
    prof = _table_profile(calibration={"1x8x8": {"scale": 2.0, "offset": 0.0}, "default": {"scale": 1.0,
                                                                                              "offset": 0.0}})
    assert LatencyPredictor(prof, (1, 8, 8)).predict(G) == pytest.approx(2 * 20.5)
    assert LatencyPredictor(prof, (1, 16, 16)).calibration == {"scale": 1.0, "offset": 0.0}


def test_prediction_never_below_the_empty_call():
    """A calibration with a large negative offset must not predict a network faster than the measured empty call."""
    import dataclasses
    from pathlib import Path

    shipped = load_profile(Path(__file__).resolve().parent.parent / "hw_profiles" / "cpu-ort-epyc-2core.yaml")
    cal = {"3x32x32": {"scale": 1.0, "offset": -10.0, "per_node": 0.0}}
    profile = dataclasses.replace(shipped, calibration=cal)
    ms = LatencyPredictor(profile, (3, 32, 32)).predict(Genome.parse("d2_w8_p-_x-_s0:mbconv-k3-e1"))
    assert ms == profile.overhead_ms > 0
