"""The run log (complm_cli/runlog.py, `complm logs`): every ask kept, listed, searched, shown; off, on, path;
a log that cannot be written costs a warning, never the answer. The log lives in this test's COMPLM_DATA_DIR."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complm_cli import runlog
from complm_cli.cache.config import load_settings
from complm_cli.cli.app import app
from complm_cli.errors import StorageError
from tests.conftest import SERVE_KEY, TINY_CATALOG

runner = CliRunner()
CAT = ["--catalog", str(TINY_CATALOG)]
model = pytest.mark.model


@dataclass
class Finished:
    """What the log reads of a run (compose.result.Result has these, and much more)."""

    question: str = "What is 2 plus 3?"
    mode: str = "parallel"
    status: str = "ok"
    answer: str = "5"
    timings: dict = field(default_factory=lambda: {"wall_s": 1.5})
    experts: list = field(default_factory=lambda: ["calculator"])

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.answer, "nodes": [
            {"id": 1, "question": "2 + 3", "depends_on": [], "expert": "calculator", "score": 1.0, "route": "calculation",
             "answer": "5", "status": "done"}]}


def logged() -> list[dict]:
    return json.loads(runner.invoke(app, ["logs", "--json", "-n", "100"]).stdout)


def test_runs_are_listed_newest_first_searched_and_shown_whole():
    settings = load_settings()
    first = runlog.record(settings, Finished())
    second = runlog.record(settings, Finished(question="Who wrote 1984?", answer="George Orwell", experts=[]))
    assert second == first + 1
    rows = logged()
    assert [r["id"] for r in rows] == [second, first]
    assert rows[1]["models"] == [{"name": "calculator"}] and rows[1]["started"].endswith("Z") and "record" not in rows[1]
    assert [r["id"] for r in json.loads(runner.invoke(app, ["logs", "--json", "-q", "orwell"]).stdout)] == [second]
    assert [r["id"] for r in json.loads(runner.invoke(app, ["logs", "--json", "-q", "50%_"]).stdout)] == []  # no wildcards
    assert len(json.loads(runner.invoke(app, ["logs", "--json", "-n", "1"]).stdout)) == 1
    piped = runner.invoke(app, ["logs"]).stdout.splitlines()
    assert piped[0].split("\t")[0] == str(second) and piped[0].split("\t")[-1] == "George Orwell"

    shown = runner.invoke(app, ["logs", "--id", str(first)])
    assert shown.exit_code == 0
    assert "1. 2 + 3" in shown.stdout and "calculator" in shown.stdout and shown.stdout.rstrip().endswith("5")
    whole = json.loads(runner.invoke(app, ["logs", "--id", str(first), "--json"]).stdout)
    assert whole["record"]["nodes"][0]["route"] == "calculation"
    missing = runner.invoke(app, ["logs", "--id", "99"])
    assert missing.exit_code == 4 and "No run 99" in missing.stderr


def test_logs_off_on_and_path(isolated):
    assert runner.invoke(app, ["logs", "path"]).stdout.strip() == str(Path(os.environ["COMPLM_DATA_DIR"]) / "logs.db")
    assert runner.invoke(app, ["logs", "off"]).exit_code == 0
    assert not runlog.is_on(load_settings()) and (isolated["config"] / "logs-off").exists()
    assert runner.invoke(app, ["logs", "on"]).exit_code == 0 and runlog.is_on(load_settings())
    empty = runner.invoke(app, ["logs"])
    assert empty.exit_code == 0 and empty.stdout == "" and "No runs logged yet." in empty.stderr


def test_a_damaged_log_is_one_sentence():
    settings = load_settings()
    runlog.path(settings).parent.mkdir(parents=True)
    runlog.path(settings).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="The run was not logged: .* cannot be written"):
        runlog.record(settings, Finished())
    result = runner.invoke(app, ["logs"])
    assert result.exit_code == 10 and result.stderr.count("\n") == 1 and "cannot be read" in result.stderr
    assert runlog.path(settings).read_bytes().startswith(b"this is not a database")  # not replaced


def test_a_url_in_the_log_holds_no_password():
    assert runlog.public("http://user:secret@host:8080/v1") == "http://host:8080/v1"
    assert runlog.public("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"


@model
def test_every_ask_is_logged_unless_told_not_to(models):
    q = "What is the capital of France?"
    result = runner.invoke(app, ["ask", q, "--seed", "1", *CAT])
    assert result.exit_code == 0, result.output
    [row] = logged()
    assert row["question"] == q and row["answer"] == result.stdout.strip() and row["status"] == "ok"
    assert {"name": "smollm2-135m", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}.items() <= row["models"][0].items()
    assert len(row["models"][0]["sha256"]) == 64
    assert runner.invoke(app, ["ask", q, "--seed", "1", "--no-log", *CAT]).exit_code == 0
    runner.invoke(app, ["logs", "off"])
    assert runner.invoke(app, ["ask", q, "--seed", "1", *CAT]).exit_code == 0
    assert len(logged()) == 1


@model
def test_a_log_that_cannot_be_written_does_not_cost_the_answer(models):
    settings = load_settings()
    runlog.path(settings).parent.mkdir(parents=True)
    runlog.path(settings).write_bytes(b"garbage" * 1000)
    result = runner.invoke(app, ["ask", "What is the capital of France?", "--seed", "1", *CAT])
    assert result.exit_code == 0 and "Paris" in result.stdout
    assert result.stderr.count("\n") == 1 and "The run was not logged" in result.stderr


@model
def test_a_run_through_a_server_is_logged_without_its_key(served):
    root = served.url[: -len("/v1")]
    result = runner.invoke(app, ["ask", "What is the capital of France?", "--server", root, "--api-key", SERVE_KEY])
    assert result.exit_code in (0, 3), result.output
    [row] = logged()
    assert row["server"] == root and row["answer"] == result.stdout.strip()
    assert SERVE_KEY not in runlog.path(load_settings()).read_bytes().decode("utf-8", "replace")
