"""`--jsonl` on `ask` and `graph`: one JSON object a line, as the run happens, in the process and through a server,
on the real 135M model."""

import json

import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app
from tests.conftest import SERVE_KEY, TINY_CATALOG

pytestmark = pytest.mark.model

runner = CliRunner()
Q = "What is the capital of France, and what is 2 plus 2?"
CAT = ["--catalog", str(TINY_CATALOG)]


def lines_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line is one object: none may fail to parse


def check_run(lines: list[dict]) -> None:
    events = [line["event"] for line in lines[:-1]]
    assert all("event" in line for line in lines[:-1]) and set(lines[-1]) == {"result"}
    assert events[0] == "stage" and lines[0]["name"] == "plan"
    assert "plan_ready" in events and events[-1] == "answer_done"
    record = lines[-1]["result"]
    assert lines[-2]["answer"] == record["answer"] and record["question"] == Q
    for node in record["nodes"]:  # each node started before it finished, and its tokens came between
        mine = [i for i, line in enumerate(lines) if line.get("node_id") == node["id"]]
        kinds = [lines[i]["event"] for i in mine]
        assert kinds[0] == "node_started" and kinds[-1] in ("node_done", "node_failed"), kinds
        assert set(kinds[1:-1]) <= {"node_token", "node_sources"}
        if node["expert"] != "calculator" and node["status"] == "done":
            assert "".join(lines[i]["text"] for i in mine if lines[i]["event"] == "node_token").strip() == node["answer"]


def test_ask_jsonl_streams_the_events_then_the_record(models):
    result = runner.invoke(app, ["ask", Q, "--jsonl", "--seed", "1", *CAT])
    assert result.exit_code in (0, 3), result.output
    check_run(lines_of(result.stdout))


def test_graph_jsonl_is_the_plan_as_lines(models):
    result = runner.invoke(app, ["graph", Q, "--jsonl", *CAT])
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    assert [line.get("event") for line in lines] == ["stage", "plan_ready", None]
    assert lines[1]["plan"]["question"] == Q and lines[2]["graph"]["nodes"]
    assert runner.invoke(app, ["graph", Q, "--jsonl", "--format", "dot", *CAT]).exit_code == 2


def test_jsonl_and_json_together_is_a_usage_error(models):
    result = runner.invoke(app, ["ask", Q, "--jsonl", "--json", *CAT])
    assert result.exit_code == 2 and "choose one" in result.stderr
    assert lines_of(result.stdout) == [{"error": {"message": result.stderr.strip()[len("complm: "):], "exit_code": 2}}]


def test_a_run_that_fails_ends_with_an_error_line(models):
    result = runner.invoke(app, ["ask", Q, "--jsonl", "--corpus", "nope", *CAT])
    assert result.exit_code == 4
    [line] = lines_of(result.stdout)
    assert line["error"]["exit_code"] == 4 and "No corpus named 'nope'" in line["error"]["message"]


def test_ask_jsonl_through_a_server_reads_as_a_local_run(served):
    result = runner.invoke(app, ["ask", Q, "--jsonl", "--server", served.url[: -len("/v1")], "--api-key", SERVE_KEY])
    assert result.exit_code in (0, 3), result.output
    check_run(lines_of(result.stdout))
