"""Experts served by OpenAI-compatible endpoints: llama.cpp's llama-server, vLLM, Ollama's /v1.

A RemoteWorker holds no model, so it costs the memory budget nothing; the
ModelPool caps the requests that run at once on one endpoint instead. The
official `openai` client does the HTTP and parses the server-sent events;
its own retries are off, because only some failures are worth a second try
and the node's reason must say which one ended it.

The API key is read from the environment at load time and never appears in
a message: every reason is built from our own words plus a scrubbed detail.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from typing import Iterator

from complm_cli.cache.catalog import Expert, RemoteSpec
from complm_cli.errors import ModelError
from complm_cli.experts.base import Worker
from complm_cli.experts.sequence import GenerationTimeout

ATTEMPTS = 3  # one request and two retries, for connection errors, 429 and 5xx only
BACKOFF = 0.5  # seconds before the first retry; doubled for each one after it
MAX_RETRY_AFTER = 10.0  # the most a server's Retry-After may make a node wait
CONNECT_TIMEOUT = 10.0  # a host that does not take the connection is down; no need to wait the whole timeout
NO_KEY = "sk-no-key-required"  # what llama.cpp's docs use; the client insists on some key
DETAIL_CHARS = 160
WATCH_S = 0.05  # how often a request's watchdog looks at its deadline and the cancel


class _Retry(Exception):
    """A failure that may pass: the connection, 429 or 5xx; `message` is the reason if it does not."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.message, self.wait = message, wait


def api_key(spec: RemoteSpec, name: str) -> str:
    if spec.api_key_name is None:
        return NO_KEY
    value = os.environ.get(spec.api_key_name, "")
    if not value:
        raise ModelError(f"The environment variable {spec.api_key_name}, which holds the API key of the remote "
                         f"expert '{name}', is not set.")
    return value


def make_client(spec: RemoteSpec, name: str, timeout: float | None = None):
    try:
        import openai
    except ImportError:
        raise ModelError(f"The remote expert '{name}' needs the openai package; install it with "
                         f"`pip install openai`.") from None
    seconds = timeout or spec.timeout
    return openai.OpenAI(base_url=spec.api_base, api_key=api_key(spec, name), max_retries=0,
                         timeout=openai.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT)))


def _detail(exc: BaseException, secret: str | None) -> str:
    """A short, one-line description of what went wrong, with the key scrubbed out."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text and text in ("Connection error.", "Request timed out."):
        text = str(cause)
    text = " ".join(text.split())
    if secret and secret != NO_KEY:
        text = text.replace(secret, "***")
    return text[:DETAIL_CHARS] + ("…" if len(text) > DETAIL_CHARS else "")


def _is_timeout(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"APITimeoutError", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutError"}) \
        and "ConnectTimeout" not in names


def _is_transport(exc: BaseException) -> bool:
    """A failure of the connection itself (refused, reset, closed early), not of what came over it."""
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TransportError", "RemoteProtocolError", "NetworkError", "ConnectionError"})


class RemoteWorker(Worker):
    """Nothing resident here (memory 0): the pool counts the endpoint's capacity instead."""

    deadlines = True  # the node's timeout and cancel bound each request, however the endpoint behaves

    def __init__(self, expert: Expert):
        if expert.remote is None:
            raise ValueError(f"'{expert.name}' has no remote endpoint")
        super().__init__(expert)
        self.spec = expert.remote
        self._client = None
        self._key: str | None = None

    def load(self) -> None:
        if self._client is None:
            self._key = api_key(self.spec, self.expert.name)
            self._client = make_client(self.spec, self.expert.name)

    def unload(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None

    def _where(self) -> str:
        return f"The endpoint {self.spec.api_base} of '{self.expert.name}'"

    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int,
               threads: int, prefix: int = 0, timeout: float | None = None, cancel=None) -> _Reply:
        """The reply as the server streams it; `threads` and `prefix` are the server's business.

        `timeout` (the node's) and the endpoint's own bound the whole request, not the time between bytes: an
        endpoint that only sends keep-alive comments is cut off at either. A cancel cuts it off at once."""
        self.load()
        reply = _Reply()
        deadline = time.monotonic() + timeout if timeout else None
        reply.pieces = self._attempts(messages, max_tokens, temperature, seed, (deadline, timeout), cancel, reply)
        return reply

    def _attempts(self, messages, max_tokens, temperature, seed, deadline, cancel, reply) -> Iterator[str]:
        attempt = 0
        while True:
            pieces = 0
            try:
                for piece in self._once(messages, max_tokens, temperature, seed, deadline, cancel, reply):
                    pieces += 1
                    yield piece
                return
            except _Retry as exc:
                # Once text has reached the user, a second request would repeat it.
                attempt += 1
                if pieces or attempt >= ATTEMPTS:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise ModelError(f"{exc.message}{tries}.") from None
                if cancel is not None and cancel.is_set():
                    return
                wait = BACKOFF * 2 ** (attempt - 1) * (1 + 0.2 * random.random())
                time.sleep(max(wait, min(exc.wait or 0.0, MAX_RETRY_AFTER)))

    def _once(self, messages, max_tokens, temperature, seed, limit, cancel, reply: _Reply) -> Iterator[str]:
        """One request; `limit` is the node's (deadline, timeout), (None, None) without one."""
        import openai

        deadline, timeout = limit
        kwargs = dict(model=self.spec.model_name, messages=messages, max_tokens=max_tokens,
                      temperature=temperature, seed=seed, stream=True)
        start = time.monotonic()
        end = start + self.spec.timeout if deadline is None else min(start + self.spec.timeout, deadline)
        client = self._client
        if end < start + self.spec.timeout:  # the node's deadline comes first: the wait for headers ends there too
            wait = max(0.05, end - start)
            client = client.with_options(timeout=openai.Timeout(wait, connect=min(wait, CONNECT_TIMEOUT)))
        try:
            chunks = _create(client, kwargs, cancel)
            if chunks is None:
                return  # cancelled while waiting for the endpoint's first byte: the caller sees its cancel
        except openai.APIStatusError as exc:
            status = exc.status_code
            why = f"{self._where()} answered HTTP {status} ({_detail(exc, self._key)})"
            if status == 429 or status >= 500:
                raise _Retry(why, _retry_after(exc)) from None
            raise ModelError(f"{why}.") from None
        except Exception as exc:
            if deadline is not None and time.monotonic() >= deadline - 0.05:
                raise self._node_timeout(timeout) from None
            raise self._failure(exc, 0) from None
        valid, pieces = False, 0
        watch = _Watchdog(chunks, end, cancel)
        try:
            for chunk in chunks:
                choices = getattr(chunk, "choices", None)
                if not isinstance(choices, list):
                    raise _NotCompletion("a chunk without choices")
                valid = True
                text = _content(choices)
                if choices and getattr(choices[0], "finish_reason", None):
                    reply.finish = choices[0].finish_reason
                if text:
                    pieces += 1
                    yield text
                if time.monotonic() > end:
                    watch.fired = watch.fired or "time"
                    break
        except (ModelError, _Retry, GeneratorExit):
            raise
        except _NotCompletion as exc:
            raise ModelError(f"{self._where()} returned something that is not a chat completion ({exc}).") from None
        except Exception as exc:
            if not watch.fired:  # else: the watchdog cut the connection, and says why below
                raise self._failure(exc, pieces) from None
        finally:
            watch.stop()
            try:
                chunks.close()
            except Exception:
                pass
        if watch.fired == "cancel":
            return  # the caller sees its own cancel and ends the node
        if watch.fired == "time":
            if deadline is not None and end == deadline:
                raise self._node_timeout(timeout)
            raise ModelError(f"{self._where()} did not finish within {self.spec.timeout:g} s.")
        if not valid:
            raise ModelError(f"{self._where()} returned something that is not a chat completion stream "
                             f"(no chunk came back).")

    def _node_timeout(self, seconds: float) -> GenerationTimeout:
        return GenerationTimeout(f"'{self.expert.name}' timed out after {seconds:g} s (raise --timeout to give it longer)")

    def _failure(self, exc: BaseException, pieces: int) -> Exception:
        import openai

        if _is_timeout(exc):
            return ModelError(f"{self._where()} did not answer within {self.spec.timeout:g} s.")
        if _is_transport(exc):
            if pieces:
                return ModelError(f"The connection to {self.spec.api_base} of '{self.expert.name}' broke after "
                                  f"{pieces} pieces of the reply ({_detail(exc, self._key)}).")
            return _Retry(f"{self._where()} could not be reached ({_detail(exc, self._key)})")
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            return ModelError(f"{self._where()} reported an error ({_detail(exc, self._key)}).")
        return ModelError(f"{self._where()} returned something that is not a chat completion "
                          f"({type(exc).__name__}: {_detail(exc, self._key)}).")


def _create(client, kwargs: dict, cancel):
    """`client.chat.completions.create(**kwargs)`, or None as soon as `cancel` is set while it waits for the
    response's headers (the request is left to end by its own timeout on a thread of its own)."""
    if cancel is None:
        return client.chat.completions.create(**kwargs)
    box: dict = {}
    done, lock = threading.Event(), threading.Lock()

    def call() -> None:
        try:
            chunks = client.chat.completions.create(**kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
            chunks = None
        with lock:
            box["chunks"] = chunks
            done.set()
            if box.get("abandoned") and chunks is not None:
                chunks.close()  # the caller left: nobody else will

    threading.Thread(target=call, daemon=True, name="complm-remote-request").start()
    while not done.wait(WATCH_S):
        if cancel.is_set():
            with lock:
                if not done.is_set():
                    box["abandoned"] = True
                    return None
            break
    if "error" in box:
        raise box["error"]
    return box["chunks"]


class _Reply:
    """The pieces of one reply as they come; `finish` is why it ended, as the server said ('length': cut)."""

    def __init__(self):
        self.pieces: Iterator[str] = iter(())
        self.finish: str | None = None

    def __iter__(self) -> Iterator[str]:
        return self.pieces

    def close(self) -> None:
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()


class _Watchdog:
    """Cuts a streamed request off at its deadline or on a cancel, even while it waits for a byte.

    The HTTP client's timeouts bound the time between bytes, so an endpoint that sends a keep-alive comment
    every second would hold the request forever; and closing a response does not wake a thread blocked in
    recv(). Shutting the socket down does, at once."""

    def __init__(self, chunks, end: float, cancel):
        self.chunks, self.end, self.cancel = chunks, end, cancel
        self.fired: str | None = None
        self._done = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="complm-remote-watchdog").start()

    def _watch(self) -> None:
        while not self._done.wait(WATCH_S):
            if self.cancel is not None and self.cancel.is_set():
                self.fired = "cancel"
            elif time.monotonic() >= self.end:
                self.fired = "time"
            else:
                continue
            self._cut()
            return

    def _cut(self) -> None:
        response = getattr(self.chunks, "response", None)
        stream = response.extensions.get("network_stream") if response is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            if response is not None:
                response.close()
        except (OSError, RuntimeError):
            pass  # already closed: the reader has ended anyway

    def stop(self) -> None:
        self._done.set()


class _NotCompletion(Exception):
    pass


def _content(choices: list) -> str | None:
    if not choices:
        return None  # a last chunk may carry only usage
    delta = getattr(choices[0], "delta", None)
    if delta is None:
        raise _NotCompletion("a choice without a delta")
    text = getattr(delta, "content", None)
    if text is not None and not isinstance(text, str):
        raise _NotCompletion("content that is not text")
    return text


def _retry_after(exc) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (AttributeError, TypeError, ValueError):
        return None


def probe(expert: Expert, timeout: float = 5.0) -> dict:
    """What `complm doctor` says of an endpoint: reachable, and is the model among those it lists."""
    spec = expert.remote
    report = {"name": expert.name, "api_base": spec.api_base, "model_name": spec.model_name,
              "api_key_name": spec.api_key_name, "reachable": False, "served": None, "message": ""}
    key = None
    try:
        key = api_key(spec, expert.name)
        client = make_client(spec, expert.name, timeout=min(timeout, spec.timeout))
    except ModelError as exc:
        report["message"] = exc.message
        return report
    try:
        ids = [m.id for m in client.models.list().data]
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        if status is not None:
            report["reachable"] = True
            report["message"] = f"answered GET /models with HTTP {status} ({_detail(exc, key)})"
        elif _is_timeout(exc):
            report["message"] = f"did not answer within {min(timeout, spec.timeout):g} s"
        else:
            report["message"] = f"not reachable ({_detail(exc, key)})"
        return report
    finally:
        client.close()
    report["reachable"] = True
    report["served"] = spec.model_name in ids
    if report["served"]:
        report["message"] = f"serves {spec.model_name}"
    else:
        listed = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "") or "nothing"
        # llama.cpp's servers answer every request with their one model, whatever its name.
        report["message"] = f"reachable, but lists {listed}, not {spec.model_name}"
    return report
