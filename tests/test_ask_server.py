"""`complm ask --server`: a run on a real `complm serve` (the 135M model in every role) reads as a local one."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from complm_cli import render
from complm_cli.serve import wire
from complm_cli.cli.app import app
from complm_cli.serve.client import ServerClient, base_url
from complm_cli.events import AnswerDone, NodeDone, NodeStarted, NodeToken, PlanReady, Stage
from tests.conftest import SERVE_KEY, Served

runner = CliRunner()
model = pytest.mark.model
QUESTION = "Who wrote Hamlet, and what is the capital of France?"


def root(served) -> str:
    return served.url[: -len("/v1")]


def kinds(events) -> list[str]:
    """Event kinds in order, a run of tokens counted once (their interleaving between nodes is the scheduler's)."""
    out: list[str] = []
    for e in events:
        name = type(e).__name__
        if not out or out[-1] != name or name not in ("NodeToken", "AnswerToken"):
            out.append(name)
    return out


@model
def test_a_run_on_the_server_gives_the_events_and_the_result_of_a_local_run(served):
    local_events: list = []
    local = served.session.ask(QUESTION, on_event=local_events.append)
    events: list = []
    remote = ServerClient(served.url, SERVE_KEY).ask(QUESTION, on_event=events.append)
    assert remote.answer == local.answer and remote.status == local.status == "ok"
    assert [(n.id, n.question, n.depends_on, n.expert, n.answer) for n in remote.nodes] == \
           [(n.id, n.question, n.depends_on, n.expert, n.answer) for n in local.nodes]
    assert remote.routes.keys() == local.routes.keys()
    assert all(remote.routes[k].expert == local.routes[k].expert for k in local.routes)
    # The same kinds of events; the plan as the live view draws it; the last event carries the result.
    assert {type(e) for e in events} == {type(e) for e in local_events}
    plan = next(e for e in events if isinstance(e, PlanReady)).plan
    local_plan = next(e for e in local_events if isinstance(e, PlanReady)).plan
    assert [(n.id, n.question, n.depends_on) for n in plan.nodes] == [(n.id, n.question, n.depends_on) for n in local_plan.nodes]
    assert isinstance(events[-1], AnswerDone) and events[-1].result is remote
    assert [e.name for e in events if isinstance(e, Stage)] == [e.name for e in local_events if isinstance(e, Stage)]
    assert kinds(events).count("NodeStarted") == len(remote.nodes) == kinds(events).count("NodeDone")
    tokens = {}
    for e in events:
        if isinstance(e, NodeToken):
            tokens[e.node_id] = tokens.get(e.node_id, "") + e.text
    done = {e.node_id: e for e in events if isinstance(e, NodeDone)}
    assert all(done[i].answer and tokens[i].strip().startswith(done[i].answer.strip()[:10]) for i in done)
    assert {e.node_id for e in events if isinstance(e, NodeStarted)} == set(done)
    # --json prints the server's record: the local record's fields, with the same plan and answers.
    record, mine = remote.to_dict(), local.to_dict()
    assert record.keys() == mine.keys() and record["nodes"][0].keys() == mine["nodes"][0].keys()
    assert [(n["question"], n["answer"], n["expert"]) for n in record["nodes"]] == [(n["question"], n["answer"], n["expert"]) for n in mine["nodes"]]
    assert render.summary_line(remote).startswith("parallel · 2 nodes")


@model
def test_the_cli_asks_the_server_in_each_output_form(served):
    piped = runner.invoke(app, ["ask", "--server", root(served), "--api-key", SERVE_KEY, "--mode", "monolithic", "Name a color."])
    assert piped.exit_code == 0, piped.output
    answer = piped.stdout.strip()
    assert answer
    as_json = runner.invoke(app, ["ask", "--json", "--mode", "monolithic", "Name a color."],
                            env={"COMPLM_SERVER": served.url, "COMPLM_SERVE_API_KEY": SERVE_KEY})
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.stdout)
    assert record["answer"] == answer and record["mode"] == "monolithic" and record["status"] == "ok"
    assert record["restored_parts"] == [] and record["memory_bytes"] > 0  # a direct answer's record had these swapped
    verbose = runner.invoke(app, ["ask", "--server", served.url, "--api-key", SERVE_KEY, "-v", "What is 2 plus 2, and who wrote Hamlet?"])
    assert verbose.exit_code == 0, verbose.output
    assert "[plan]" in verbose.stderr and "node 1" in verbose.stderr and verbose.stdout.strip()


@model
def test_graph_on_the_server_shows_the_plan_a_local_graph_shows(served):
    question = "Who painted the Mona Lisa, and in which country was that painter born?"
    plan = served.session.plan(question)
    local = render.graph_dict(plan, served.session.route(plan))
    got = runner.invoke(app, ["graph", "--format", "json", question], env={"COMPLM_SERVER": served.url, "COMPLM_SERVE_API_KEY": SERVE_KEY})
    assert got.exit_code == 0, got.output
    remote = json.loads(got.stdout)
    assert {k: v for k, v in remote.items() if k != "plan_seconds"} == {k: v for k, v in local.items() if k != "plan_seconds"}
    assert remote["plan_seconds"] > 0
    mermaid = runner.invoke(app, ["graph", "--format", "mermaid", "--server", served.url, "--api-key", SERVE_KEY, question])
    assert mermaid.exit_code == 0 and mermaid.stdout == render.mermaid(plan, served.session.route(plan)) + "\n"
    refused = runner.invoke(app, ["graph", "--server", served.url, "--expert", "smollm2-135m", question])
    assert refused.exit_code == 2 and "--expert applies where the models run" in refused.stderr


@model
def test_doctor_says_whether_the_server_of_complm_server_answers(served):
    def doctor(url: str, key: str | None = SERVE_KEY) -> dict:
        env = {"COMPLM_SERVER": url, **({"COMPLM_SERVE_API_KEY": key} if key else {})}
        result = runner.invoke(app, ["doctor", "--json"], env=env)
        assert result.exit_code == 0, result.output  # doctor reports; it does not fail
        return json.loads(result.stdout)["server"]

    up = doctor(served.url)
    assert up["answers"] is True and "complm-monolithic" in up["message"] and up["url"] == root(served)
    assert doctor(served.url, key="wrong") == {"url": root(served), "answers": False,
                                              "message": "refused the API key (COMPLM_SERVE_API_KEY)"}
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    down = doctor(f"127.0.0.1:{port}")
    assert down["answers"] is False and down["message"].startswith("no answer")
    plain = runner.invoke(app, ["doctor"], env={"COMPLM_SERVER": served.url, "COMPLM_SERVE_API_KEY": SERVE_KEY})
    assert "COMPLM_SERVER" in plain.stdout and "answers" in plain.stdout


def test_the_server_address_may_be_what_serve_prints_or_a_bare_host():
    assert base_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    assert base_url("127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert base_url("https://box.lan:9000") == "https://box.lan:9000"
    for bad in ("127.0.0.1:abc", "http://[::1", "ftp://box:21", "http://:8000", "not a url", "http://box lan:80"):
        result = runner.invoke(app, ["ask", "--server", bad, "Hi?"])
        assert result.exit_code == 2 and "is not a URL such as" in result.stderr, bad


def test_a_record_comes_back_as_the_result_the_renderers_read():
    """Without models: a partial run with a fallback plan and a calculation, through JSON and back."""
    from complm_cli.compose.dag import Node, Plan
    from complm_cli.compose.records import NodeResult
    from complm_cli.compose.session import Result
    from complm_cli.compose.route import Route

    plan = Plan("How old?", [Node(1, "When was X born?"), Node(2, "2024 - {1}", (1,))], fallback="the planner failed",
                repairs=["step 2: added dependencies [1]"])
    nodes = [NodeResult(1, "When was X born?", (), "m", "done", "In 1950.", None, 0.1, 1.25, 7, 2),
             NodeResult(2, "2024 - 1950", (1,), "calculator", "failed", None, "boom", 1.4, 0.0, 0,
                        calculation={"formula": "2024 - {1}", "expression": "2024 - 1950", "result": "74"})]
    routes = {1: Route("m", 0.61, {"m": 0.61}, "score"), 2: Route("calculator", 1.0, {}, "calculation", "2024 - {1}")}
    timings = {"plan_s": 0.5, "route_s": 0.01, "execute_s": 1.5, "nodes_sum_s": 1.6, "aggregate_s": 0.2, "wall_s": 2.3,
               "overlap_s": 0.3}
    local = Result("How old?", "parallel", "74 years.", "partial", plan, routes, nodes, timings,
                   {"plan": 9, "nodes": 7, "aggregate": 4, "total": 20}, True, ["m"], restored=[1], memory=123,
                   streamed={"released": 1, "kept": 1, "discarded": [], "stopped": None})
    back = wire.result_from_record(json.loads(json.dumps(local.to_dict())))
    assert back.to_dict() == local.to_dict()
    assert render.summary_line(back) == render.summary_line(local)
    for field in ("question", "mode", "answer", "status", "aggregated", "experts", "restored", "memory", "streamed"):
        assert getattr(back, field) == getattr(local, field), field
    assert [(n.id, n.status, n.reason, n.shown, n.depends_on) for n in back.nodes] == \
           [(n.id, n.status, n.reason, n.shown, n.depends_on) for n in local.nodes]
    assert back.plan.fallback == plan.fallback and back.routes[2].label() == routes[2].label()


def _one_reply_server(reply: bytes, status: int = 200):
    """An HTTP server on 127.0.0.1 that answers every POST with `reply`."""

    class Reply(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Reply)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.mark.parametrize("line, code, words", [
    (b'{"error": {"message": "the model broke", "exit_code": 8}}\n', 8, "on the server at"),
    (b'{"error": {"message": "says all is well", "exit_code": 0}}\n', 1, "says all is well"),  # never success
    (b'{"error": "nope"}\n', 11, "did not say why"),
    (b'not json\n', 11, "broke off"),
    (b'{"event": "stage", "name": "plan", "detail": ""}\n', 11, "ended before the run's answer"),
    (b'{"event": "plan_ready", "plan": "x", "routes": []}\n', 11, "cannot read"),
])
def test_what_a_server_sends_wrong_is_one_sentence_and_an_exit_code(line, code, words):
    httpd = _one_reply_server(line)
    try:
        result = runner.invoke(app, ["ask", "--server", f"127.0.0.1:{httpd.server_address[1]}", "Hi?"])
    finally:
        httpd.shutdown()
    assert result.exit_code == code and words in result.stderr and result.stderr.count("\n") == 1, result.stderr


def _ask_a_listener_that_sends(reply: bytes):
    """`complm ask --server` against a socket on 127.0.0.1 that answers the request with `reply` and hangs up."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer():
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

        threading.Thread(target=answer, daemon=True).start()
        return runner.invoke(app, ["ask", "--server", f"127.0.0.1:{listener.getsockname()[1]}", "Hi?"])


def test_a_listener_that_does_not_speak_http_is_exit_11():
    result = _ask_a_listener_that_sends(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert result.exit_code == 11 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith("complm: No complm server answers at") and result.stderr.count("\n") == 1


def test_a_run_that_breaks_off_while_the_answer_is_written_leaves_stdout_empty():
    lines = b'{"event": "answer_token", "text": "Par"}\n'
    result = _ask_a_listener_that_sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        + b"%x\r\n%s\r\n" % (len(lines), lines) + b'40\r\n{"event": "no')
    assert result.exit_code == 11 and result.stdout == "", result.stdout


def test_a_run_cut_off_mid_chunk_is_one_sentence_and_exit_11():
    line = b'{"event": "stage", "name": "plan", "detail": ""}\n'
    result = _ask_a_listener_that_sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        + b"%x\r\n%s\r\n" % (len(line), line) + b'40\r\n{"event": "no')
    assert result.exit_code == 11 and "broke off mid-run" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_no_server_at_the_address_is_one_sentence_and_exit_11():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    result = runner.invoke(app, ["ask", "--server", f"127.0.0.1:{port}", "Hi?"])
    assert result.exit_code == 11
    assert result.stderr.startswith(f"complm: No complm server answers at http://127.0.0.1:{port}")
    assert "complm serve" in result.stderr and "Traceback" not in result.output and result.stderr.count("\n") == 1
    as_json = runner.invoke(app, ["ask", "--json", "--server", f"127.0.0.1:{port}", "Hi?"])
    assert json.loads(as_json.stdout)["error"]["exit_code"] == 11
    graph = runner.invoke(app, ["graph", "--server", f"127.0.0.1:{port}", "Hi?"])
    assert graph.exit_code == 11 and "No complm server answers" in graph.stderr


@pytest.mark.parametrize("flag", [["--threads", "2"], ["--expert", "smollm2-135m"], ["--offline"], ["--seed", "3"]])
def test_flags_that_shape_the_models_are_refused_with_server(flag):
    result = runner.invoke(app, ["ask", "--server", "127.0.0.1:9", *flag, "Hi?"])
    assert result.exit_code == 2
    assert f"{flag[0]} applies where the models run" in result.stderr


GRAPH = json.dumps({"plan": {"question": "Q?", "nodes": [{"id": 1, "question": "Q?", "depends_on": []}]},
                    "routes": {"1": {"expert": "m", "score": 0.5, "reason": "score", "scores": {}}}}).encode()


def test_a_server_on_this_machine_is_reached_past_an_http_proxy(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy that is not there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    httpd = _one_reply_server(GRAPH)
    try:
        plan, routes = ServerClient(f"127.0.0.1:{httpd.server_address[1]}").graph("Q?")
    finally:
        httpd.shutdown()
    assert [n.question for n in plan.nodes] == ["Q?"] and routes[1].expert == "m"


def test_a_server_elsewhere_is_reached_through_the_http_proxy(monkeypatch):
    proxy = _one_reply_server(GRAPH)  # the proxy answers for the server, whose name resolves nowhere
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_address[1]}")
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        plan, routes = ServerClient("http://complm-server.invalid:8000").graph("Q?")
    finally:
        proxy.shutdown()
    assert [n.question for n in plan.nodes] == ["Q?"] and routes[1].expert == "m"


def test_a_server_that_is_not_complm_is_named_so():
    httpd = _one_reply_server(b"", status=404)
    try:
        result = runner.invoke(app, ["ask", "--server", f"127.0.0.1:{httpd.server_address[1]}", "Hi?"])
        graph = runner.invoke(app, ["graph", "--server", f"127.0.0.1:{httpd.server_address[1]}", "Hi?"])
    finally:
        httpd.shutdown()
    assert result.exit_code == 11 and "has no /api/ask: it is not a complm server" in result.stderr
    assert graph.exit_code == 11 and "has no /api/graph" in graph.stderr


@model
def test_a_wrong_key_and_bad_requests(served):
    result = runner.invoke(app, ["ask", "--server", served.url, "--api-key", "nope", "Hi?"])
    assert result.exit_code == 11 and "refused the API key" in result.stderr and "nope" not in result.stderr
    too_long = runner.invoke(app, ["ask", "--server", served.url, "--api-key", SERVE_KEY, "x" * 30_000 + "?"])
    assert too_long.exit_code == 2 and "longer than the server" in too_long.stderr  # this server takes 20,000 bytes
    for body, param in ((b'{"question": "  "}', "question"), (b'{"question": "Hi?", "mode": "fast"}', "mode")):
        request = urllib.request.Request(root(served) + "/api/ask", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {SERVE_KEY}"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=60)
        status, doc = info.value.code, json.loads(info.value.read())
        assert status == 400 and doc["error"]["param"] == param


@model
def test_a_run_that_fails_on_the_server_exits_as_it_would_here(served, monkeypatch):
    from complm_cli.errors import ModelError

    def broken(*args, **kwargs):
        raise ModelError("The model 'x' could not be loaded.")

    monkeypatch.setattr(served.session, "ask", broken)
    monkeypatch.setattr(served.session, "plan", broken)
    # An OpenAI client gets a server error; OpenAI's other fields are accepted (the server's settings decide them).
    status, doc = served.post(b'{"model": "complm", "messages": [{"role": "user", "content": "Hi?"}], "max_tokens": 5, '
                              b'"temperature": 0.2, "user": "u"}')
    assert status == 500 and doc == {"error": {"message": "The model 'x' could not be loaded.", "type": "server_error",
                                               "param": None, "code": "model"}}
    # complm's own routes also say the exit code, and `--server` exits with it.
    status, doc = Served(root(served), served.session).post(b'{"question": "Hi?"}', path="/api/graph")
    assert status == 500 and doc["error"]["exit_code"] == 8
    for command in ("ask", "graph"):
        result = runner.invoke(app, [command, "--server", served.url, "--api-key", SERVE_KEY, "Hi?"])
        assert result.exit_code == 8, (command, result.output)
        assert result.stderr == f"complm: on the server at {root(served)}: The model 'x' could not be loaded.\n"


@model
def test_a_client_that_goes_away_stops_its_run_and_the_server_answers_the_next(served, monkeypatch):
    from complm_cli.experts.engine import Engine

    ends: list[str] = []
    end = Engine._end
    monkeypatch.setattr(Engine, "_end", staticmethod(lambda seq, error, reason: (ends.append(reason), end(seq, error, reason))[1]))
    request = urllib.request.Request(root(served) + "/api/ask", method="POST",
                                     data=json.dumps({"question": "Write a long story about a dragon.", "mode": "monolithic"}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {SERVE_KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        for raw in response:
            if raw.strip() and json.loads(raw).get("event") == "answer_token":
                break  # hang up mid-answer, as Ctrl-C does
    deadline = time.monotonic() + 60
    while not ends and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ends == ["cancelled"]  # stopped at its next token, not written to its end
    after = ServerClient(served.url, SERVE_KEY).ask("Name a fruit.", mode="monolithic")
    assert after.status == "ok" and after.answer.strip()


@model
def test_empty_lines_that_keep_a_quiet_run_alive_are_skipped(served, monkeypatch):
    from complm_cli.serve import server as serve

    monkeypatch.setattr(serve, "KEEP_ALIVE", 0.001)  # one between almost every two events
    request = urllib.request.Request(root(served) + "/api/ask", method="POST",
                                     data=json.dumps({"question": "Name a fruit.", "mode": "monolithic"}).encode(),
                                     headers={"Authorization": f"Bearer {SERVE_KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        lines = response.read().decode().split("\n")
    assert "" in lines[:-1] and "result" in json.loads([x for x in lines if x.strip()][-1])
    result = ServerClient(served.url, SERVE_KEY).ask("Name a fruit.", mode="monolithic")
    assert result.status == "ok" and result.answer.strip()


def test_records_survive_the_wire():
    """Each event kind the live view takes comes back as itself."""
    from complm_cli.compose.dag import Node, Plan
    from complm_cli.events import AnswerToken, NodeFailed, StepPlanned
    from complm_cli.compose.route import Route

    route = Route("smollm2-135m", 0.42, {"smollm2-135m": 0.42}, "fallback")
    plan = Plan("Q?", [Node(1, "A?"), Node(2, "B {1}?", (1,))], fallback=None, repairs=["x"])
    for event in (Stage("plan", "m"), StepPlanned(Node(1, "A?"), route), PlanReady(plan, {1: route, 2: route}),
                  NodeStarted(1, "m", "A?"), NodeToken(1, "x"), NodeDone(1, "a", 0.5, 3), NodeFailed(2, "boom", True),
                  AnswerToken("y")):
        back = wire.event_from_record(json.loads(json.dumps(wire.event_record(event))))
        assert back == event
    assert wire.event_from_record({"event": "from_the_future", "x": 1}) is None
