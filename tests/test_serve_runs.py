"""The runs a server has in flight: a client that leaves stops its run, and a shutdown answers every client.

Served over uvicorn on 127.0.0.1 with fake workers (tests/helpers.py), so that a run lasts as long as a test needs."""

from __future__ import annotations

import json
import threading
import time

import httpx2
import pytest

from complm_cli.serve.runs import SHUTTING_DOWN, Runs
from tests.helpers import WAIT, Fake, fake_session

QUESTION = "Tell me a long story."
BODY = {"model": "complm-monolithic", "messages": [{"role": "user", "content": QUESTION}]}


@pytest.fixture
def serving(tmp_path):
    """(url, fake, runs): the app over a fake session whose answer takes 30 s, token by token."""
    import uvicorn

    from complm_cli.serve.server import bind, build_app

    fake = Fake(tokens=3000, sleep=0.01)
    session = fake_session(tmp_path, fake)
    runs = Runs()
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(build_app(session, runs=runs), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", fake, runs
    runs.close()
    server.should_exit = True
    thread.join(WAIT)
    session.close()


def _the_run_ends(fake: Fake) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if fake.streams and fake.streams[0].end is not None:
            return
        time.sleep(0.05)
    raise AssertionError("the run went on")


def test_a_client_that_leaves_a_non_streamed_request_stops_its_run(serving):
    url, fake, _ = serving
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(url + "/v1/chat/completions", json=BODY, timeout=1.0)  # gives up and hangs up
    _the_run_ends(fake)
    assert fake.streams[0].yielded < 1000  # stopped, not run to its 3000 tokens for nobody


@pytest.mark.parametrize("stream", [False, True])
def test_a_shutdown_stops_the_runs_and_tells_each_client_why(serving, stream):
    url, fake, runs = serving
    threading.Timer(0.8, runs.close).start()  # what Ctrl-C on `complm serve` does first
    response = httpx2.post(url + "/v1/chat/completions", json={**BODY, "stream": stream}, timeout=WAIT)
    _the_run_ends(fake)
    if stream:
        events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "shutting_down"
    else:
        assert response.status_code == 503
        assert response.json()["error"] == {"message": SHUTTING_DOWN, "type": "server_error", "param": None,
                                             "code": "shutting_down"}


def test_a_request_that_comes_during_the_shutdown_is_refused_at_once(serving):
    url, fake, runs = serving
    runs.close()
    response = httpx2.post(url + "/api/ask", json={"question": QUESTION}, timeout=WAIT)
    last = json.loads(response.text.strip().splitlines()[-1])
    assert last["error"]["message"] == SHUTTING_DOWN and last["error"]["exit_code"] == 11
