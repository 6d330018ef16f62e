"""`complm eval`: a short real run on the 135M model in all three modes, and resuming."""

import json

import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app
from tests.conftest import TINY_CATALOG

pytestmark = pytest.mark.model
runner = CliRunner()


def test_eval_limit_2_all_modes_then_resume(models, tmp_path):
    out = tmp_path / "run.jsonl"
    args = ["eval", "--sample", "--limit", "2", "--out", str(out), "--json", "--catalog", str(TINY_CATALOG),
            "--monolithic-expert", "smollm2-135m"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["modes"]) == {"parallel", "sequential", "monolithic"}
    assert summary["questions"] == 2 and summary["monolithic_expert"] == "smollm2-135m"
    for mode, stats in summary["modes"].items():
        assert stats["count"] == 2
        assert 0.0 <= stats["em"] <= 1.0 and 0.0 <= stats["f1"] <= 1.0
        assert stats["mean_wall_s"] > 0 and stats["median_wall_s"] > 0
        assert stats["model_bytes"] > 0

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert {(r["id"], r["mode"]) for r in rows} == {(i, m) for i in ("s01", "s02") for m in ("parallel", "sequential", "monolithic")}
    for r in rows:
        assert {"id", "mode", "prediction", "gold", "scores", "timings", "routes", "plan"} <= set(r)
    by = {(r["id"], r["mode"]): r for r in rows}
    # parallel and sequential share one plan, so they differ only in scheduling
    for qid in ("s01", "s02"):
        assert by[(qid, "parallel")]["plan"] == by[(qid, "sequential")]["plan"]
        assert by[(qid, "monolithic")]["plan"] is None

    # a rerun with the same --out skips what is done and reports the same summary
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(out.read_text().splitlines()) == 6
    assert json.loads(again.stdout)["modes"]["parallel"]["count"] == 2


def test_eval_own_dataset_with_field_names(models, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"query": "What is 2 plus 2?", "target": ["4", "four"]}) + "\n")
    result = runner.invoke(app, ["eval", str(data), "--mode", "monolithic", "--json", "--catalog", str(TINY_CATALOG)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["modes"]["monolithic"]["count"] == 1


def test_eval_own_plans_runs_each_mode_as_ask_does(models, tmp_path):
    out = tmp_path / "own.jsonl"
    result = runner.invoke(app, ["eval", "--sample", "--limit", "1", "--mode", "parallel,sequential", "--own-plans",
                                 "--out", str(out), "--json", "--catalog", str(TINY_CATALOG)])
    assert result.exit_code == 0, result.output
    rows = {r["mode"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"parallel", "sequential"}
    for row in rows.values():
        # a mode that planned for itself times its own planning, and says how long steps ran during it
        assert row["shared_plan"] is False and "overlap_s" in row["timings"] and row["timings"]["plan_s"] > 0
    assert rows["sequential"]["timings"]["overlap_s"] == 0.0
