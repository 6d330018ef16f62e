"""Remote experts end to end: llama-cpp-python's own server on the 135M model, beside local experts.

Where a test needs a given shape of plan (one node local, one remote) it
hands the Session that plan instead of asking the 135M planner for one.
"""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app
from complm_cli.compose.dag import Node, Plan
from complm_cli.events import NodeFailed, NodeToken
from complm_cli.compose.route import Route
from tests.remote_servers import ALIAS, FakeServer, LlamaServer, SilentServer, catalog_text, model_file

pytestmark = pytest.mark.model

runner = CliRunner()
LOCAL = "smollm2-135m"
Q = "What is the capital of France, and what is 2 plus 2?"
TWO_STEPS = ("What is the capital of France?", "Write a short story about a dragon who learns to fly.")


@pytest.fixture(scope="module")
def llama_server(pulled_models):
    server = LlamaServer(model_file(pulled_models))
    yield server
    server.stop()


def write_catalog(tmp_path, *, local_roles, remotes, **defaults) -> str:
    path = tmp_path / "catalog.toml"
    path.write_text(catalog_text(local_roles=local_roles, remotes=remotes, defaults=defaults))
    return str(path)


def remote_entry(url: str, roles=("expert", "fallback"), **remote) -> dict:
    return {"roles": list(roles), "domains": ["geography", "arithmetic", "stories"],
            "remote": {"api_base": url, "model_name": ALIAS, "timeout": 60, **remote}}


def session_for(catalog: str):
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session

    settings = load_settings().replace(seed=1, threads=2, workers=2)
    return Session(settings, load_catalog([catalog]), pull=False)


def two_node_plan(remote_name: str) -> tuple[Plan, dict[int, Route]]:
    plan = Plan(question=" ".join(TWO_STEPS), nodes=[Node(1, TWO_STEPS[0]), Node(2, TWO_STEPS[1])])
    return plan, {1: Route(LOCAL, 1.0, {}, "forced"), 2: Route(remote_name, 1.0, {}, "forced")}


def test_ask_with_a_remote_expert_beside_local_ones(models, tmp_path, llama_server):
    catalog = write_catalog(tmp_path, local_roles=["planner", "aggregator"],
                            remotes={"remote-smol": remote_entry(llama_server.url, max_parallel=2)},
                            planner=LOCAL, aggregator=LOCAL, fallback="remote-smol")
    result = runner.invoke(app, ["ask", Q, "--json", "--seed", "1", "--catalog", catalog])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["answer"].strip()
    # every node goes to the remote expert, except arithmetic, which the calculator does
    assert all(n["expert"] in ("remote-smol", "calculator") and n["status"] == "done" and n["answer"] for n in doc["nodes"])
    assert any(n["expert"] == "remote-smol" for n in doc["nodes"])
    assert LOCAL in doc["experts"] and "remote-smol" in doc["experts"]
    assert "memory_bytes" in doc and "sk-" not in result.stdout


def test_remote_tokens_stream_as_local_ones_do(models, tmp_path, llama_server):
    catalog = write_catalog(tmp_path, local_roles=["planner", "aggregator", "fallback", "expert"],
                            remotes={"remote-smol": remote_entry(llama_server.url, roles=["expert"])},
                            planner=LOCAL, aggregator=LOCAL, fallback=LOCAL)
    session = session_for(catalog)
    events = []
    try:
        plan, routes = two_node_plan("remote-smol")
        result = session.ask(plan.question, plan=plan, routes=routes, on_event=events.append)
    finally:
        session.close()
    assert [n.status for n in result.nodes] == ["done", "done"], [n.reason for n in result.nodes]
    tokens = {i: [e.text for e in events if isinstance(e, NodeToken) and e.node_id == i] for i in (1, 2)}
    assert len(tokens[2]) > 1 and "".join(tokens[2]).strip() == result.nodes[1].answer.strip()
    assert result.nodes[1].expert == "remote-smol" and result.nodes[1].tokens == len(tokens[2])
    assert result.memory > 0  # the local model counts; the remote one adds nothing


def test_a_remote_planner(models, tmp_path, llama_server):
    catalog = write_catalog(tmp_path, local_roles=["aggregator", "fallback", "expert"],
                            remotes={"remote-planner": remote_entry(llama_server.url, roles=["planner"])},
                            planner="remote-planner", aggregator=LOCAL, fallback=LOCAL)
    result = runner.invoke(app, ["ask", Q, "--json", "--seed", "1", "--catalog", catalog])
    assert result.exit_code in (0, 3), result.output
    doc = json.loads(result.stdout)
    assert "remote-planner" in doc["experts"] and doc["tokens"]["plan"] > 0
    assert all(n["expert"] == LOCAL for n in doc["nodes"])


def test_the_server_stopped_in_the_middle_of_a_run(models, tmp_path, pulled_models):
    server = LlamaServer(model_file(pulled_models))
    try:
        catalog = write_catalog(tmp_path, local_roles=["planner", "aggregator", "fallback", "expert"],
                                remotes={"doomed": remote_entry(server.url, roles=["expert"])},
                                planner=LOCAL, aggregator=LOCAL, fallback=LOCAL)
        session = session_for(catalog)
        killed = threading.Event()

        def on_event(event):
            # The first piece of the remote reply has arrived: the server dies mid-answer.
            if isinstance(event, NodeToken) and event.node_id == 2 and not killed.is_set():
                killed.set()
                server.stop()

        try:
            plan, routes = two_node_plan("doomed")
            result = session.ask(plan.question, plan=plan, routes=routes, on_event=on_event)
        finally:
            session.close()
    finally:
        server.stop()
    assert killed.is_set()
    local, remote = result.nodes
    assert local.status == "done" and remote.status == "failed"
    assert server.url in remote.reason and "doomed" in remote.reason
    assert result.status == "partial" and result.answer


@pytest.mark.parametrize("kind", ["silent", "garbage"])
def test_a_broken_endpoint_fails_its_node_and_the_answer_is_partial(models, tmp_path, monkeypatch, kind):
    """exit 3: the local node answers, the remote one fails with its reason."""
    from complm_cli.compose.session import Session

    fake = SilentServer() if kind == "silent" else FakeServer(body="<html>It works!</html>", content_type="text/html")
    try:
        catalog = write_catalog(tmp_path, local_roles=["planner", "aggregator", "fallback", "expert"],
                                remotes={"broken": remote_entry(fake.url, roles=["expert"], timeout=1)},
                                planner=LOCAL, aggregator=LOCAL, fallback=LOCAL)
        plan, routes = two_node_plan("broken")
        monkeypatch.setattr(Session, "plan", lambda self, question, cancel=None, on_text=None, on_event=None: Plan(question, plan.nodes))
        monkeypatch.setattr(Session, "route", lambda self, p: routes)
        events = []
        monkeypatch.setattr("complm_cli.cli.ask._plain_progress", lambda e: events.append)
        result = runner.invoke(app, ["ask", Q, "--verbose", "--catalog", catalog])
    finally:
        fake.close()
    assert result.exit_code == 3, result.output
    expected = "did not answer within 1 s" if kind == "silent" else "returned something that is not a chat completion"
    assert "the answer is partial" in result.stderr and expected in result.stderr
    failed = [e for e in events if isinstance(e, NodeFailed)]
    assert [e.node_id for e in failed] == [2] and expected in failed[0].reason
    assert result.stdout.strip()
