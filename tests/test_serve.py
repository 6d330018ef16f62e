"""`complm serve` answers the official openai client: the 135M model in every role, one shared Session."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

import openai
import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app
from tests.conftest import SERVE_KEY as KEY
from tests.conftest import TINY_CATALOG, Served

runner = CliRunner()
model = pytest.mark.model


@model
def test_models_are_the_modes(served):
    assert [m.id for m in served.client().models.list().data] == ["complm", "complm-sequential", "complm-monolithic"]


@model
def test_a_chat_completion_with_the_run_record(served):
    response = served.client().chat.completions.create(
        model="complm", messages=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "What is the capital of France, and what is 2 plus 2?"}])
    answer = response.choices[0].message.content
    assert answer.strip() and response.choices[0].finish_reason == "stop"
    assert response.object == "chat.completion" and response.model == "complm"
    record = response.model_extra["complm"]
    assert record["question"] == "What is the capital of France, and what is 2 plus 2?"  # the last user message
    assert record["answer"] == answer and record["mode"] == "parallel" and record["status"] in ("ok", "partial")
    assert record["nodes"] and {"wall_s", "plan_s", "execute_s"} <= set(record["timings"])
    for node in record["nodes"]:
        assert node["expert"] == "smollm2-135m" and node["route"] and "seconds" in node and "depends_on" in node


@model
@pytest.mark.parametrize("name", ["complm", "complm-monolithic"])
def test_a_streamed_chat_completion(served, name):
    stream = served.client().chat.completions.create(
        model=name, stream=True,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Who wrote Hamlet, and what is 3 times 3?"}]}])
    pieces, last = [], None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk" and chunk.model == name
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert last.choices[0].finish_reason == "stop"
    record = last.model_extra["complm"]
    assert record["question"] == "Who wrote Hamlet, and what is 3 times 3?"
    assert "".join(pieces) == record["answer"] and record["answer"].strip()
    # Token by token where a model writes the answer, not one block at the end (a composed answer may be
    # the steps' answers listed, which come whole).
    assert len(pieces) > 1 or (name == "complm" and not record["aggregated"])


@model
def test_two_requests_at_once_share_the_loaded_models(served):
    client, pool = served.client(), served.session.pool
    client.chat.completions.create(model="complm-monolithic", messages=[{"role": "user", "content": "Say hi."}])
    loads = pool.loads
    answers: dict[str, str] = {}

    def ask(name: str, question: str, stream: bool) -> None:
        if stream:
            chunks = list(client.chat.completions.create(model="complm-monolithic", stream=True,
                                                         messages=[{"role": "user", "content": question}]))
            answers[name] = chunks[-1].model_extra["complm"]["answer"]
        else:
            answers[name] = client.chat.completions.create(
                model="complm-monolithic", messages=[{"role": "user", "content": question}]).choices[0].message.content

    threads = [threading.Thread(target=ask, args=("a", "What is the capital of Italy?", True)),
               threading.Thread(target=ask, args=("b", "Name a primary color.", False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert answers.keys() == {"a", "b"} and all(a.strip() for a in answers.values())
    # The model loaded for the first request served both: at most one more copy, for the overlap.
    assert pool.loads - loads <= 1
    assert pool.resident().count("smollm2-135m") <= 2


@model
def test_a_wrong_or_missing_key_is_refused(served):
    with pytest.raises(openai.AuthenticationError) as info:
        served.client("wrong-key").chat.completions.create(model="complm", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 401 and "API key" in info.value.message
    status, body = served.post(b"", path="/models", key=None, method="GET")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


@model
@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b'{"model": "complm", "messages": []}', 400, "messages"),
    (b'{"model": "complm", "messages": [{"role": "system", "content": "x"}]}', 400, "messages"),
    (b'{"model": "complm", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', 400, "stream"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', 404, "model"),
    (b'{"model": "complm", "messages": [{"role": "user", "content": "' + b"x" * 30_000 + b'"}]}', 413, None),
])
def test_bad_requests_get_openai_style_errors(served, body, status, param):
    got, doc = served.post(body)
    assert got == status
    assert set(doc["error"]) == {"message", "type", "param", "code"} and doc["error"]["message"]
    assert doc["error"]["param"] == param


USER = b'"messages": [{"role": "user", "content": "hi"}]'
MODEL_NAMES = "complm, complm-sequential, complm-monolithic"


def at_root(served) -> Served:
    """The served app, its paths from the root: complm's own routes (/api/...) are beside /v1."""
    return Served(served.url[: -len("/v1")], served.session)


@model
@pytest.mark.parametrize("path, body, message", [
    ("/v1/chat/completions", b"{not json", "The request body is not valid JSON."),
    ("/v1/chat/completions", b"\xff", "The request body is not valid JSON."),
    ("/v1/chat/completions", b"[1, 2]", "The request body must be a JSON object."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": []}', "'messages' must be a non-empty list of messages."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": "hi"}', "'messages' must be a non-empty list of messages."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": [5]}', "Each message must be an object with 'role' and 'content'."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": [{"role": "system", "content": "x"}]}',
     "'messages' holds no user message."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": [{"role": "user", "content": "  "}]}',
     "The last user message has no text."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
     "The last user message has no text."),
    ("/v1/chat/completions", b'{"model": "complm", ' + USER + b', "stream": "yes"}', "'stream' must be true or false."),
    ("/v1/chat/completions", b'{"model": "complm", ' + USER + b', "stream": null}', "'stream' must be true or false."),
    ("/v1/chat/completions", b"{" + USER + b"}", f"'model' must name one of: {MODEL_NAMES}."),
    ("/v1/chat/completions", b'{"model": 4, ' + USER + b"}", f"'model' must name one of: {MODEL_NAMES}."),
    ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": []}',  # an unknown model is named first, as before
     f"The model 'gpt-4o' does not exist; use one of: {MODEL_NAMES}."),
    ("/v1/chat/completions", b'{"model": "complm", "messages": [{"role": "user", "content": "' + b"x" * 30_000 + b'"}]}',
     "The request is larger than 20000 bytes."),
    ("/api/ask", b'{"question": "  "}', "'question' must be a question as a non-empty string."),
    ("/api/ask", b'{"question": 5}', "'question' must be a question as a non-empty string."),
    ("/api/ask", b'{"question": "Hi?", "mode": "fast"}', "Unknown mode 'fast'; use one of parallel, sequential, monolithic."),
    ("/api/graph", b"{}", "'question' must be a question as a non-empty string."),
])
def test_a_bad_body_is_told_what_is_wrong_in_one_sentence(served, path, body, message):
    status, doc = at_root(served).post(body, path=path)
    assert 400 <= status < 500 and doc["error"]["message"] == message and "exit_code" not in doc["error"]


@model
@pytest.mark.parametrize("path, method", [("/v1/models", "GET"), ("/v1/chat/completions", "POST"), ("/api/ask", "POST"),
                                          ("/api/graph", "POST")])
def test_every_route_asks_for_the_key(served, path, method):
    status, doc = at_root(served).post(b'{"question": "Hi?"}', path=path, key="wrong", method=method)
    assert status == 401 and doc["error"]["code"] == "invalid_api_key" and "exit_code" not in doc["error"]


@model
def test_the_openai_client_sees_4xx_as_its_own_errors(served):
    with pytest.raises(openai.BadRequestError):
        served.client().chat.completions.create(model="complm", messages=[])
    with pytest.raises(openai.NotFoundError):
        served.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    status, doc = served.post(b"", path="/chat/completions", method="GET")
    assert status == 405 and doc["error"]["code"] == "method_not_allowed"


@model
def test_the_serve_command(models):
    """`complm serve` in its own process: it says where it listens, answers, and stops on Ctrl-C."""
    env = {**os.environ, "COMPLM_CATALOG": str(TINY_CATALOG), "COMPLM_SERVE_API_KEY": KEY}
    # A test run started in the background inherits an ignored SIGINT; the server should see Ctrl-C as a user's would.
    proc = subprocess.Popen([sys.executable, "-m", "complm_cli", "serve", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        client = openai.OpenAI(base_url=match.group(1), api_key=KEY, max_retries=0, timeout=120)
        assert "complm" in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model="complm-monolithic", messages=[{"role": "user", "content": "Hi!"}])
        assert reply.choices[0].message.content.strip()
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=match.group(1), api_key="nope", max_retries=0).models.list()
        # The line says how to ask it from another process, and that works as written.
        hint = re.search(r"`complm ask --server (\S+)` asks it", line)
        assert hint, line
        asked = subprocess.run([sys.executable, "-m", "complm_cli", "ask", "--server", hint.group(1), "--mode", "monolithic", "Hi!"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert asked.returncode == 0 and asked.stdout.strip() and not asked.stderr, asked.stderr
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in rest and KEY not in line + rest


def test_serve_says_when_the_address_is_taken():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port), "--catalog", str(TINY_CATALOG)])
    assert result.exit_code == 11, result.output
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def test_serve_without_its_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what an install without the extra looks like
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 11
    assert result.stderr.strip() == ('complm: complm serve needs Starlette and uvicorn; install them with '
                                     '`pip install "complm[serve]"`.')
