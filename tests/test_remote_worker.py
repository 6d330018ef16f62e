"""RemoteWorker against servers that misbehave: each failure ends in one reason, retried only where it may pass."""

from __future__ import annotations


import pytest

from complm_cli.experts import remote
from complm_cli.experts.remote import RemoteWorker
from complm_cli.cache.catalog import Expert, RemoteSpec
from complm_cli.errors import ModelError
from tests.remote_servers import FakeServer, KeepAliveServer, SilentServer, free_port, sse

SSE = "text/event-stream"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)


def worker(url: str, *, key_name: str | None = None, timeout: float = 10, name: str = "far") -> RemoteWorker:
    return RemoteWorker(Expert(name=name, description=name, file="", sources=(), roles=("expert",),
                               remote=RemoteSpec(url, "smollm2", api_key_name=key_name, timeout=timeout)))


def reply(w: RemoteWorker, **kwargs) -> list[str]:
    args = dict(max_tokens=16, temperature=0.0, seed=3, threads=1)
    return list(w.stream(MESSAGES, **{**args, **kwargs}))


def test_streams_the_pieces_and_sends_the_request_the_catalog_describes():
    server = FakeServer(body=sse("Hel", "lo", "!"), content_type=SSE)
    try:
        assert reply(worker(server.url)) == ["Hel", "lo", "!"]
        body = server.requests[0]["body"]
        assert server.requests[0]["path"] == "/v1/chat/completions"
        assert body["model"] == "smollm2" and body["messages"] == MESSAGES and body["stream"] is True
        assert body["max_tokens"] == 16 and body["temperature"] == 0.0 and body["seed"] == 3
        assert "response_format" not in body
    finally:
        server.close()


@pytest.mark.parametrize("content_type, body", [
    ("text/html", "<html><body>It works!</body></html>"),
    (SSE, "data: {this is not json\n\n"),
    (SSE, 'data: {"hello": "world"}\n\n'),
    (SSE, 'data: {"choices": [{"index": 0, "text": "a legacy completion"}]}\n\n'),
])
def test_garbage_fails_the_node_without_a_retry(content_type, body):
    server = FakeServer(body=body, content_type=content_type)
    try:
        with pytest.raises(ModelError) as info:
            reply(worker(server.url))
        assert "returned something that is not a chat completion" in info.value.message
        assert server.url in info.value.message and "'far'" in info.value.message
        assert len(server.requests) == 1
    finally:
        server.close()


@pytest.mark.parametrize("status, retried", [(500, True), (503, True), (429, True), (404, False), (401, False)])
def test_http_errors_are_retried_only_for_429_and_5xx(status, retried):
    server = FakeServer(status=status, body='{"error": {"message": "nope"}}', content_type="application/json",
                        headers={"Retry-After": "0"})
    try:
        with pytest.raises(ModelError) as info:
            reply(worker(server.url))
        assert f"answered HTTP {status}" in info.value.message
        assert len(server.requests) == (remote.ATTEMPTS if retried else 1)
        assert ("after 3 attempts" in info.value.message) == retried
    finally:
        server.close()


def test_a_server_that_recovers_on_a_retry_answers():
    server = FakeServer(body=sse("ok"), content_type=SSE, script=[(502, "text/plain", "bad gateway")])
    try:
        assert reply(worker(server.url)) == ["ok"]
        assert len(server.requests) == 2
    finally:
        server.close()


def test_an_endpoint_that_never_answers_times_out_once():
    silent = SilentServer()
    try:
        with pytest.raises(ModelError) as info:
            reply(worker(silent.url, timeout=1))
        assert info.value.message == f"The endpoint {silent.url} of 'far' did not answer within 1 s."
        assert silent.accepted == 1  # the request may be running there: no second one
    finally:
        silent.close()


def test_nothing_listening_is_retried_then_named():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelError) as info:
        reply(worker(url))
    assert info.value.message.startswith(f"The endpoint {url} of 'far' could not be reached")
    assert info.value.message.endswith("after 3 attempts.")


def test_the_key_is_sent_but_never_written_into_a_reason(monkeypatch):
    monkeypatch.setenv("FAR_KEY", "sk-very-secret")
    echo = FakeServer(status=500, body='{"error": {"message": "you sent {auth}"}}', content_type="application/json")
    try:
        with pytest.raises(ModelError) as info:
            reply(worker(echo.url, key_name="FAR_KEY"))
        assert echo.requests[0]["headers"]["authorization"] == "Bearer sk-very-secret"
        assert "sk-very-secret" not in info.value.message and "***" in info.value.message
    finally:
        echo.close()
    monkeypatch.delenv("FAR_KEY")
    with pytest.raises(ModelError, match="The environment variable FAR_KEY, which holds the API key of the remote expert 'far', is not set"):
        reply(worker(echo.url, key_name="FAR_KEY"))


def test_without_a_key_name_no_other_key_is_sent(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-users-openai-key")
    server = FakeServer(body=sse("hi"), content_type=SSE)
    try:
        reply(worker(server.url))
        assert "sk-the-users-openai-key" not in server.requests[0]["headers"]["authorization"]
    finally:
        server.close()


def test_keep_alive_comments_do_not_hold_a_request_past_the_endpoints_timeout():
    import time

    server = KeepAliveServer(every=0.2)
    try:
        start = time.monotonic()
        with pytest.raises(ModelError) as info:
            reply(worker(server.url, timeout=1))
        assert info.value.message == f"The endpoint {server.url} of 'far' did not finish within 1 s."
        assert time.monotonic() - start < 8  # bounded: before, it never ended
    finally:
        server.close()


def test_the_nodes_timeout_bounds_a_remote_request_too():
    from complm_cli.experts.sequence import GenerationTimeout

    server, silent = KeepAliveServer(every=0.2), SilentServer()
    try:
        for url in (server.url, silent.url):  # comments that never end, and not a byte
            with pytest.raises(GenerationTimeout, match="'far' timed out after 1 s"):
                reply(worker(url, timeout=60), timeout=1.0, cancel=None)
    finally:
        server.close()
        silent.close()


def test_a_cancel_ends_a_request_to_a_silent_endpoint_at_once():
    import threading
    import time

    silent = SilentServer()
    cancel = threading.Event()
    try:
        threading.Timer(0.3, cancel.set).start()
        start = time.monotonic()
        assert reply(worker(silent.url, timeout=60), timeout=None, cancel=cancel) == []
        assert time.monotonic() - start < 5  # not the endpoint's 60 s
    finally:
        silent.close()


def test_the_servers_finish_reason_says_when_the_reply_was_cut():
    def stream_with(finish: str) -> str:
        return sse("Hel", "lo").replace('"finish_reason": "stop"', f'"finish_reason": "{finish}"')

    for finish in ("length", "stop"):
        server = FakeServer(body=stream_with(finish), content_type=SSE)
        try:
            stream = worker(server.url).stream(MESSAGES, max_tokens=2, temperature=0.0, seed=3, threads=1)
            assert list(stream) == ["Hel", "lo"] and stream.finish == finish
        finally:
            server.close()
