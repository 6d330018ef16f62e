"""`complm ask` and `complm graph` end to end on the real 135M model (every role)."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app
from tests.conftest import TINY_CATALOG

pytestmark = pytest.mark.model

runner = CliRunner()
Q = "What is the capital of France, and what is 2 plus 2?"


def invoke(*args, input=None):
    return runner.invoke(app, [*args, "--catalog", str(TINY_CATALOG), "--seed", "1"] if args[0] in ("ask",) else
                         [*args, "--catalog", str(TINY_CATALOG)], input=input)


def test_ask_plain_answer_when_piped(models):
    result = invoke("ask", Q)
    assert result.exit_code in (0, 3), result.output
    assert result.stdout.strip()
    assert "Traceback" not in result.output


def test_ask_json_document(models):
    result = invoke("ask", Q, "--json")
    assert result.exit_code in (0, 3), result.output
    doc = json.loads(result.stdout)
    assert doc["question"] == Q and doc["mode"] == "parallel"
    assert isinstance(doc["answer"], str) and doc["status"] in ("ok", "partial")
    assert {"wall_s", "plan_s", "execute_s", "aggregate_s"} <= set(doc["timings"])
    assert doc["tokens"]["total"] > 0
    assert doc["nodes"]
    for node in doc["nodes"]:
        assert {"id", "question", "depends_on", "expert", "score", "answer", "status", "seconds", "tokens"} <= set(node)
        assert node["expert"] in ("smollm2-135m", "calculator")  # "2 plus 2" may be planned as a formula
        assert "{" not in node["question"] or node["status"] != "done"  # references were substituted
    ids = [n["id"] for n in doc["nodes"]]
    assert all(d < n["id"] for n in doc["nodes"] for d in n["depends_on"]) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("mode", ["sequential", "monolithic"])
def test_ask_modes(models, mode):
    result = invoke("ask", Q, "--json", "--mode", mode)
    assert result.exit_code in (0, 3), result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == mode
    if mode == "monolithic":
        assert len(doc["nodes"]) == 1 and doc["tokens"]["plan"] == 0


def test_ask_reads_stdin(models):
    result = invoke("ask", "--json", input="What is the capital of Italy?\n")
    assert result.exit_code in (0, 3), result.output
    assert json.loads(result.stdout)["question"] == "What is the capital of Italy?"
    dash = invoke("ask", "-", "--json", input="Name a color.")
    assert json.loads(dash.stdout)["question"] == "Name a color."


def test_ask_in_a_real_pipe(models):
    """`echo ... | complm ask | wc -w`: only the answer on stdout, nothing on stderr."""
    env = {**os.environ, "COMPLM_CATALOG": str(TINY_CATALOG)}
    proc = subprocess.run([sys.executable, "-m", "complm_cli", "ask"], input="What is 2 plus 2?", capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode in (0, 3), proc.stderr
    assert len(proc.stdout.split()) > 0
    assert proc.stderr == "" or proc.returncode == 3


@pytest.mark.parametrize("fmt", ["json", "mermaid", "dot"])
def test_graph_formats(models, fmt):
    result = invoke("graph", Q, "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "json":
        doc = json.loads(result.stdout)
        assert doc["question"] == Q and doc["nodes"]
        for node in doc["nodes"]:
            assert node["expert"] in ("smollm2-135m", "calculator")  # "2 plus 2" may be planned as a formula and "score" in node and "scores" in node
        assert sum(len(level) for level in doc["levels"]) == len(doc["nodes"])
    elif fmt == "mermaid":
        assert result.stdout.startswith("flowchart TD") and "N1" in result.stdout
    else:
        assert result.stdout.startswith("digraph complm {") and result.stdout.rstrip().endswith("}")


def test_graph_with_forced_expert(models):
    result = invoke("graph", Q, "--format", "json", "--expert", "smollm2-135m")
    doc = json.loads(result.stdout)
    assert all(n["reason"] == "forced" for n in doc["nodes"])


def test_an_answer_cut_at_its_token_limit_is_partial_exit_3_with_the_reason(models, tmp_path):
    # The same model with room for 4 tokens: it cannot finish, and the run must say so instead of exit 0.
    catalog = tmp_path / "short.toml"
    catalog.write_text(TINY_CATALOG.read_text() + '\n[experts."smollm2-135m".generation]\nmax_tokens = 4\n')
    for mode in ("monolithic", "parallel"):
        result = runner.invoke(app, ["ask", "--catalog", str(catalog), "--seed", "1", "--mode", mode,
                                     "Tell me the whole history of the Roman Empire."])
        assert result.exit_code == 3, (mode, result.output)
        assert result.stdout.strip() and "stopped at its token limit" in result.stderr, (mode, result.stderr)
        doc = json.loads(runner.invoke(app, ["ask", "--catalog", str(catalog), "--seed", "1", "--mode", mode, "--json",
                                             "Tell me the whole history of the Roman Empire."]).stdout)
        assert doc["status"] == "partial" and "token limit" in doc["reason"], (mode, doc)
        assert any(n["cut"] for n in doc["nodes"]) or "the answer stopped" in doc["reason"]
