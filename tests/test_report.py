import base64

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
    assert "src='http" not in page and "<script" not in page  # nothing to fetch: opens offline
    assert sorted(p.name for p in (tmp_path / "run" / "report").glob("*.png")) == [
        "accuracy_matrix.png", "candidates_task_01.png", "candidates_task_02.png", "search_progress.png"]


def test_report_needs_a_finished_run(tmp_path, capsys):
    from pcl_edge.cli import main

    (tmp_path / "config.json").write_text("{}")
    assert main(["-q", "report", str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().err
