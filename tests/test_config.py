import dataclasses
import json

import pytest

from pcl_edge.evolve import PRESETS, ConfigError, EvolveConfig, preset_config


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("data", ["digits", "imagefolder:/x", "mnist:/x"])
def test_presets_validate_and_round_trip_through_json(preset, data):
    import json

    cfg = preset_config(preset, data).validate()
    again = EvolveConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_augmentation_follows_the_data():
    assert preset_config("cpu", "imagefolder:/x").proxy.augment == "shift-flip"
    assert preset_config("cpu", "digits").final.augment == "shift"  # a mirrored digit is another digit


def test_explicit_options_override_the_preset():
    cfg = preset_config("cpu", "digits", population=3, generations=0)
    assert (cfg.population, cfg.generations) == (3, 0)


@pytest.mark.parametrize("kw,match", [({"population": 1}, "population"), ({"strategy": "nope"}, "unknown strategy"),
                                      ({"crossover_prob": 2.0}, "crossover_prob"), ({"val_fraction": 0.9}, "val_"),
                                      ({"task_budget_s": 0.0}, "task_budget_s must be"),
                                      ({"task_budget_s": 60.0}, "task_budget_s applies to fixed and finetune"),
                                      ({"task_budget_s": 60.0, "strategy": "joint"}, "not to joint")])
def test_bad_configs(kw, match):
    with pytest.raises(ConfigError, match=match):
        preset_config("tiny", "digits", **kw).validate()


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown config keys"):
        EvolveConfig.from_dict({"populaton": 4})


def test_onnxruntime_and_onnxruntime_gpu_together_are_refused(monkeypatch):
    from pcl_edge import _deps

    monkeypatch.setattr(_deps, "installed", lambda dist: True)
    with pytest.raises(ImportError, match="never be installed together|overwrite each other"):
        _deps.import_onnxruntime()


def test_extras_keep_onnxruntime_flavours_apart():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for name, reqs in extras.items():
        flavours = {r.split(">")[0].split("=")[0] for r in reqs} & {"onnxruntime", "onnxruntime-gpu"}
        assert len(flavours) <= 1, name
    assert not any("torch" in r for r in extras["profile"])  # the device side profiles without torch


def test_a_config_file_sets_every_field_and_overrides_follow_hydras_convention(tmp_path):
    """issue 23 item 6: a YAML file, key=value overrides (dotted for the recipes, values read as YAML); what the file
    leaves out comes from its preset for its data."""
    from pcl_edge.evolve.config import load_config

    (tmp_path / "run.yaml").write_text("data: imagefolder:/data/cifar\npreset: cpu\npopulation: 5\n"
                                       "objectives: [val_acc, params, latency]\nproxy:\n  lr: 0.02\n  augment: shift\n")
    cfg = load_config(tmp_path / "run.yaml", ["proxy.steps=33", "rungs=[10, 30]", "target=null", "seed=4"])
    assert (cfg.population, cfg.proxy.lr, cfg.proxy.augment, cfg.proxy.steps, cfg.rungs, cfg.seed) == \
        (5, 0.02, "shift", 33, (10, 30), 4)
    assert cfg.objectives == ("val_acc", "params", "latency")
    assert cfg.final.batch_size == preset_config("cpu", "imagefolder:x").final.batch_size  # from the preset


def test_a_run_directorys_config_json_is_a_config(tmp_path):
    from pcl_edge.evolve.config import load_config

    cfg = preset_config("tiny", "digits", tasks="3x2", generations=0, screen=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert load_config(tmp_path / "config.json") == cfg


def test_every_mistake_of_a_config_file_is_one_line(tmp_path):
    from pcl_edge.evolve.config import load_config

    (tmp_path / "bad.yaml").write_text("populaton: 4\ngenerations: many\nproxy:\n  stepz: 3\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bad.yaml", ["noequals"])
    lines = str(err.value).splitlines()
    assert len(lines) == 5
    assert any("unknown key 'populaton' (did you mean 'population'?)" in ln for ln in lines)
    assert any("generations must be int (got str 'many')" in ln for ln in lines)
    assert any("unknown key 'proxy.stepz' (did you mean 'proxy.steps'?)" in ln for ln in lines)
    assert any("proxy.lr must be float" in ln for ln in lines) and any("noequals" in ln for ln in lines)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["population=1", "eta=1", "proxy.augment=rotate"])
    assert len(str(err.value).splitlines()) == 3  # what validate refuses: every mistake, not the first


def test_every_option_of_evolve_is_reachable_from_a_config_file():
    """Each option of `pcl-edge evolve` that configures the run names a field of the configuration (dotted for the
    recipes): the file can say whatever the command line can."""
    from pcl_edge.cli import build_parser
    from pcl_edge.evolve.config import load_config

    parser = build_parser()
    evolve = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "evolve")[1]
    where = {"proxy_steps": "proxy.steps", "final_steps": "final.steps", "latency_budget": "latency_budget_ms"}
    not_the_run = {"help", "out", "resume", "config", "overrides", "workers", "executor", "ray_address",
                   "cpus_per_trial", "gpus_per_trial", "slots", "cuda_graphs"}  # where and how, not what it computes
    fields = set(dataclasses.asdict(load_config(None)))
    for action in evolve._actions:
        if action.dest in not_the_run:
            continue
        key = where.get(action.dest, action.dest)
        assert key.split(".")[0] in fields, f"--{action.dest} has no configuration field"


def test_an_unknown_strategy_with_a_budget_is_one_line():
    """The budget's own check reads the strategy: an unknown one is said once, by the strategy's check."""
    problems = preset_config("tiny", "digits", strategy="nope", task_budget_s=5.0).problems()
    assert len(problems) == 1 and "unknown strategy" in problems[0], problems
