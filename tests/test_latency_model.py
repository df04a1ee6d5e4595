"""The latency model of issue 12: fusion rules detected on the backend, kernels timed in place, search-like
sampling, noise measured in interleaved rounds, staleness checks. Real onnxruntime where it runs here; TensorRT
through the fake module (its fusions emulated on the ONNX graph, independently of pcl_edge.hw.fusion)."""

import dataclasses
import time

import numpy as np
import pytest

from pcl_edge.hw.backends import Measurement
from pcl_edge.hw.fusion import (
    CANDIDATE_RULES,
    TENSORRT_RULES,
    assign_nodes,
    block_ops,
    detect_rules,
    lower,
    node_tags,
    parse_rules,
    rule_names,
)
from pcl_edge.hw.kernels import Kernel, genome_kernels
from pcl_edge.hw.predictor import LatencyPredictor
from pcl_edge.hw.profile import load_profile
from pcl_edge.hw.profiling import (
    check_profile,
    noise_report,
    random_genomes,
    rescaled,
    run_profile,
    search_genomes,
    statistic,
)
from pcl_edge.space.genome import Genome
from pcl_edge.space.search_space import SearchSpace
from tests.fake_tensorrt import FakeCuda, fuse_layers, make_fake_tensorrt

ORT_RULES = ["Conv+Relu", "Conv+Add", "Conv+Add+Relu"]


def test_lowering_groups_operators_along_single_consumer_chains():
    res = Kernel("res", 16, 32, 16, 2)  # projection shortcut: Add(conv2, shortcut), then Relu
    groups = [(fk.ops, members) for fk, members in lower(res, parse_rules(ORT_RULES))]
    assert groups == [(("Conv", "Relu"), (0, 1)), (("Conv", "Add", "Relu"), (2, 4, 5)), (("Conv",), (3,))]
    # without Conv+Add+Relu the sum fuses into the conv and the Relu runs alone; without any rule nothing fuses
    assert [fk.ops for fk, _ in lower(res, parse_rules(["Conv+Relu", "Conv+Add"]))][1:] == [
        ("Conv", "Add"), ("Conv",), ("Relu",)]
    assert len(lower(res, frozenset())) == len(block_ops(res)) == 6
    with pytest.raises(ValueError, match="unknown fusion rule"):
        parse_rules(["Conv+Sigmoid"])


def test_node_names_trace_back_to_the_operators_they_ran():
    assert node_tags("b3.1_nchwc") == [(3, 1)] and node_tags("b12.0 + b12.1") == [(12, 0), (12, 1)]
    assert node_tags("ReorderOutput") == [] and node_tags("b1.10") == [(1, 10)]
    ks = [Kernel("stem", 3, 16, 16), Kernel("dws", 16, 16, 16), Kernel("head", 16, 2, 16)]
    rules = parse_rules(ORT_RULES)
    good = ["b0.1_nchwc", "b1.1_nchwc", "b1.2_nchwc", "b2.0_nchwc", "ReorderOutput", "b2.1", "b2.2"]
    assigned, bad = assign_nodes(ks, rules, good)
    assert bad == 0 and sorted(assigned.values()) == list(range(6))
    assert assign_nodes(ks, rules, good[:-1])[1] == 1  # a predicted kernel nobody ran
    assert assign_nodes(ks, rules, [*good[:2], "b1.2 + b2.0", *good[4:]])[1] > 0  # a node spanning two kernels


@pytest.fixture(scope="module")
def ort_backend():
    pytest.importorskip("onnxruntime")
    from pcl_edge.hw.backends import create_backend

    return create_backend("ort-cpu", warmup=2, iterations=5)


def test_onnxruntime_fusion_is_detected_and_predicts_its_optimised_graphs(ort_backend):
    """The rules found on probe networks predict onnxruntime's optimised graph of networks the search visits."""
    from pcl_edge.hw.onnx_graphs import kernels_model
    from pcl_edge.hw.profiling import backend_rules

    rules, info = backend_rules(ort_backend)
    assert rule_names(rules) == ORT_RULES and info["source"].startswith("detected")
    rng = np.random.default_rng(4)
    for shape in ((1, 8, 8), (3, 32, 32)):
        for g in search_genomes(shape, 6, rng) + random_genomes(shape, 6, rng):
            ks = list(genome_kernels(g, shape))
            assert assign_nodes(ks, rules, ort_backend.optimized_nodes(kernels_model(ks)))[1] == 0, str(g)


def test_kernels_timed_in_place_come_back_per_node(ort_backend):
    from pcl_edge.hw.onnx_graphs import genome_model

    g = Genome.parse("d3_w8_p1_x-_s0:res-k3_s1:dws-k3")
    times = ort_backend.measure_nodes(genome_model(g, (3, 16, 16)))
    assert all(len(v) == ort_backend.iterations and (v >= 0).all() for v in times.values())
    rules = parse_rules(ORT_RULES)
    assigned, bad = assign_nodes(list(genome_kernels(g, (3, 16, 16))), rules, times)
    assert bad == 0 and len(assigned) == len(LatencyPredictor(_profile_with(ORT_RULES), (3, 16, 16)).fused(g))


def _profile_with(rules):
    from pcl_edge.hw.roofline import estimated_profile

    p = estimated_profile("jetson-orin-nano-8gb")
    return dataclasses.replace(p, fusion={"rules": rules, "source": "test"})


def test_tensorrt_fusion_is_detected_through_the_engine_inspector():
    """With the fake TensorRT (its fusions emulated on ONNX nodes, reformat layers included), detection finds its
    rules; the lowering predicts its layers on networks the search visits."""
    from pcl_edge.hw.backends.tensorrt import TensorRTBackend
    from pcl_edge.hw.onnx_graphs import kernels_model
    from pcl_edge.hw.profiling import backend_rules

    backend = TensorRTBackend(trt=make_fake_tensorrt(), cuda=FakeCuda())
    rules, info = backend_rules(backend)
    assert rule_names(rules) == ORT_RULES  # the fake fuses Add+Relu too, but no probe needs it: smallest set wins
    for g in search_genomes((3, 32, 32), 5, np.random.default_rng(1)):
        ks = list(genome_kernels(g, (3, 32, 32)))
        names = backend.optimized_nodes(kernels_model(ks))
        assert not any(n.startswith("Reformatting") for n in names)
        assert assign_nodes(ks, rules, names)[1] == 0
        assert len(names) == len(fuse_layers(kernels_model(ks)))


class _NoisyCuda(FakeCuda):
    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)

    def elapsed_ms(self, start, end):
        return float(self.rng.uniform(0.2, 0.3))


def test_a_measured_tensorrt_profile_drops_in_with_the_estimate_keys(tmp_path):
    """A profile measured with the TensorRT backend (fake here: kernels timed alone) is keyed by fused kernels the
    same way the Jetson estimates are looked up, loads, and predicts without code changes."""
    from pcl_edge.hw.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(trt=make_fake_tensorrt(), cuda=_NoisyCuda(), warmup=1, iterations=3)
    profile, report = run_profile(backend, "fake-orin", [(3, 16, 16)], n_kernel_genomes=4, n_calibration=6,
                                  n_holdout=3, rounds=2)
    assert profile.fusion["rules"] == ORT_RULES and "alone" in profile.measurement["kernels"]
    profile.save(tmp_path / "orin.yaml")
    loaded = load_profile(tmp_path / "orin.yaml")
    g = Genome.parse("d3_w8_p1_x-_s0:res-k3_s1:dws-k3")
    measured, estimated = LatencyPredictor(loaded, (3, 16, 16)), LatencyPredictor(_profile_with(ORT_RULES), (3, 16, 16))
    assert [k.key for k in measured.fused(g)] == [k.key for k in estimated.fused(g)]
    assert set(loaded.kernels) <= {k.key for ks in [genome_kernels(x, (3, 16, 16)) for x in _sets(loaded)]
                                   for k0 in ks for k, _ in lower(k0, TENSORRT_RULES)} | set(loaded.kernels)
    assert measured.predict(g) >= loaded.overhead_ms and report["accuracy"]["n"] == 6


def _sets(profile):
    from pcl_edge.hw.profiling import draw_sets

    prov = profile.provenance
    sets = draw_sets([(3, 16, 16)], np.random.default_rng(prov["seed"]), *prov["sets"])
    return sets[(3, 16, 16)]["kernels"]


def test_search_like_sampling_reaches_beyond_the_initial_depth_and_stays_admissible():
    shape = (3, 32, 32)
    space = SearchSpace(3, 32, max_depth=8, max_params=300_000)
    gs = search_genomes(shape, 60, np.random.default_rng(0))
    assert len(set(gs)) == 60 and all(space.is_valid(g) for g in gs)
    assert max(g.depth for g in gs) > 4  # mutations grow networks past the initial populations' depth 4
    rand = random_genomes(shape, 30, np.random.default_rng(0), exclude=set(gs))
    assert not set(rand) & set(gs) and max(g.depth for g in rand) > 4


def test_noise_report_and_the_least_round_statistic():
    quiet = np.array([[1.0, 2.0, 3.0], [1.02, 2.01, 3.05], [0.99, 2.03, 2.98]])
    rep = noise_report(quiet)
    assert rep["noise_floor_within_10pct"] == 1.0 and rep["spread_median"] < 0.05
    noisy = quiet.copy()
    noisy[1] *= 1.5  # one slow spell for every network in round 2
    rep = noise_report(noisy)
    assert rep["noise_floor_within_10pct"] == pytest.approx(2 / 3, abs=1e-3) and rep["spread_median"] > 0.4
    np.testing.assert_allclose(statistic(noisy), [0.99, 2.0, 2.98])


class _ScaledBackend:
    """Times a model as a fixed function of its size, times a drift factor: a device that got slower."""

    def __init__(self, factor=1.0):
        self.factor = factor

    def measure(self, model: bytes) -> Measurement:
        ms = self.factor * len(model) / 1e5
        return Measurement(ms, ms, ms, 0.0, 1)


def _checkable_profile():
    from pcl_edge.hw.onnx_graphs import genome_model

    base = _profile_with(ORT_RULES)
    nets = [("3x16x16", g) for g in random_genomes((3, 16, 16), 5, np.random.default_rng(2))]
    ref = [{"shape": s, "genome": str(g), "ms": len(genome_model(g, (3, 16, 16))) / 1e5} for s, g in nets]
    return dataclasses.replace(base, source="measured", reference={"networks": ref, "rounds": 2},
                               provenance={"command": "t", "code_version": "0", "host": "h",
                                           "date": "2026-01-01T00:00:00Z"})


def test_check_measures_the_drift_and_rescale_folds_it_in():
    profile = _checkable_profile()
    check = check_profile(profile, _ScaledBackend(1.25), rounds=2)
    assert check["ratio"] == pytest.approx(1.25) and check["n"] == 5
    new = rescaled(profile, check)
    assert new.scale == pytest.approx(1.25) and new.provenance["rescaled"][0]["ratio"] == pytest.approx(1.25)
    g = Genome.parse("d3_w8_p1_x-_s0:res-k3_s1:dws-k3")
    assert LatencyPredictor(new, (3, 16, 16)).predict(g) == pytest.approx(
        1.25 * LatencyPredictor(profile, (3, 16, 16)).predict(g))
    assert check_profile(new, _ScaledBackend(1.25), rounds=2)["ratio"] == pytest.approx(1.0)  # checked again: no drift
    with pytest.raises(ValueError, match="no reference networks"):
        check_profile(_profile_with(ORT_RULES), _ScaledBackend(), rounds=1)


def test_staleness_warns_on_age_and_on_the_stale_mark():
    profile = _checkable_profile()
    at = time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, 0))
    assert profile.staleness(30, now=at + 10 * 86400) is None
    assert "days ago" in profile.staleness(30, now=at + 45 * 86400)
    assert "marked stale" in dataclasses.replace(profile, stale=True).staleness()
    checked = rescaled(profile, check_profile(profile, _ScaledBackend(), rounds=1))
    assert checked.staleness(30) is None  # a check renews the date
    assert _profile_with(ORT_RULES).staleness(0) is None  # estimates have no measurement to go stale


def test_the_search_warns_when_its_profile_is_stale(tmp_path, caplog):
    from pcl_edge.evolve import evolve, preset_config

    target = tmp_path / "old.yaml"
    dataclasses.replace(_checkable_profile(), stale=True).save(target)
    cfg = preset_config("tiny", "digits", tasks="2x2", target=str(target))
    with caplog.at_level("WARNING", logger="pcl_edge"):
        evolve(cfg, out=tmp_path / "run", progress=False)
    assert any("marked stale" in r.getMessage() for r in caplog.records)


def test_candidate_rules_are_all_known_chains():
    assert set(TENSORRT_RULES) == set(CANDIDATE_RULES)
    rules, _ = detect_rules(lambda ks: fuse_layers(__import__("pcl_edge.hw.onnx_graphs", fromlist=["x"])
                                                   .kernels_model(ks)))
    assert rule_names(rules) == ORT_RULES
