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
                                      ({"crossover_prob": 2.0}, "crossover_prob"), ({"val_fraction": 0.9}, "val_")])
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
