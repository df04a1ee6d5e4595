import hashlib

import pytest

from pcl_edge.cli import main


def snapshot(d):
    return {p.relative_to(d): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv):
    code = main(["-q", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, match):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcl-edge evolve: error:"), err
    assert match in lines[0], lines[0]


@pytest.mark.parametrize("argv,match", [
    (["--data", "foo"], "unknown dataset 'foo'"),
    (["--strategy", "pcll"], "Did you mean 'pcl'"),
    (["--data", "imagefolder:/nonexistent/dir"], "does not exist"),
    (["--data", "cifar10:/nonexistent/dir"], "not a cifar10 python directory"),
    (["--tasks", "0,11"], "class '11'"),
    (["--tasks", "0,1/1,2"], "two tasks"),
    (["--preset", "huge"], "unknown preset"),
    (["--population", "1"], "--population must be >= 2"),
    (["--genome", "d3_nonsense", "--strategy", "fixed"], "bad genome string"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(capsys, tmp_path, argv, match):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "evolve", *argv, "--out", str(out))
    assert_one_line_error(code, err, match)
    assert not out.exists()


def test_corrupt_image(capsys, tmp_path, cache_dir):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "ds" / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "train" / c / f"{i}.jpg")
    (tmp_path / "ds" / "train" / "b" / "bad.jpg").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "evolve", "--data", f"imagefolder:{tmp_path / 'ds'}", "--tasks", "1x2",
                           "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "corrupt image train/b/bad.jpg")


def test_out_that_is_not_empty_is_refused_untouched(capsys, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "evolve", "--preset", "tiny", "--out", str(tmp_path))
    assert_one_line_error(code, err, "not empty")
    assert snapshot(tmp_path) == before


def test_resume_on_a_non_run_directory(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "evolve", "--resume", str(tmp_path))
    assert_one_line_error(code, err, "not a pcl-edge run directory")
    assert snapshot(tmp_path) == before
    code, _, err = run_cli(capsys, "evolve", "--resume", str(tmp_path / "missing"))
    assert_one_line_error(code, err, "does not exist")


def test_full_run_then_resume_with_a_different_config_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "evolve", "--preset", "tiny", "--tasks", "2x2", "--out", str(out))
    assert code == 0
    assert "ACC" in stdout and "task" in stdout.splitlines()[0] and str(out) in stdout
    before = snapshot(out)
    code, _, err = run_cli(capsys, "evolve", "--resume", str(out), "--population", "9")
    assert_one_line_error(code, err, "drop --population")
    assert snapshot(out) == before
    code, _, err = run_cli(capsys, "evolve", "--preset", "tiny", "--out", str(out))
    assert_one_line_error(code, err, "pass --resume")
    assert snapshot(out) == before


def test_resume_with_a_tampered_config_is_refused(capsys, tmp_path):
    (tmp_path / "config.json").write_text('{"population": 3, "colour": "red"}')
    code, _, err = run_cli(capsys, "evolve", "--resume", str(tmp_path))
    assert_one_line_error(code, err, "unknown config keys")


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["evolve", "--help"])
    out = capsys.readouterr().out
    for opt in ("--data", "--tasks", "--strategy", "--population", "--generations", "--preset", "--seed", "--out",
                "--resume"):
        assert opt in out
    # the presets are spelled out, a children count only where it differs from the population
    from pcl_edge.evolve import preset_config

    images = preset_config("cpu", "imagefolder:x")
    assert f"generation of {images.num_children} children" in " ".join(out.split())
    assert images.num_children != images.population and "of 6 children" not in out


def test_every_option_of_every_sub_command_says_what_it_does_and_its_default():
    import argparse

    from pcl_edge.cli import build_parser

    def parsers(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from parsers(sub)

    bad, seen = [], 0
    for p in parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            seen += 1
            if not (a.help or "").strip() or (a.default not in (None, False) and "default" not in a.help):
                bad.append(f"{p.prog} {a.dest}")
    assert seen > 50 and bad == []
