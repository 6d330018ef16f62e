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
import time
from typing import Iterator

from complm_cli.cache.catalog import Expert, RemoteSpec
from complm_cli.errors import ModelError
from complm_cli.experts.base import Worker

ATTEMPTS = 3  # one request and two retries, for connection errors, 429 and 5xx only
BACKOFF = 0.5  # seconds before the first retry; doubled for each one after it
MAX_RETRY_AFTER = 10.0  # the most a server's Retry-After may make a node wait
CONNECT_TIMEOUT = 10.0  # a host that does not take the connection is down; no need to wait the whole timeout
NO_KEY = "sk-no-key-required"  # what llama.cpp's docs use; the client insists on some key
DETAIL_CHARS = 160


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
               threads: int, prefix: int = 0) -> Iterator[str]:
        """Yield the reply as the server streams it; `threads` and `prefix` are the server's business."""
        self.load()
        attempt = 0
        while True:
            pieces = 0
            try:
                for piece in self._once(messages, max_tokens, temperature, seed):
                    pieces += 1
                    yield piece
                return
            except _Retry as exc:
                # Once text has reached the user, a second request would repeat it.
                attempt += 1
                if pieces or attempt >= ATTEMPTS:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise ModelError(f"{exc.message}{tries}.") from None
                wait = BACKOFF * 2 ** (attempt - 1) * (1 + 0.2 * random.random())
                time.sleep(max(wait, min(exc.wait or 0.0, MAX_RETRY_AFTER)))

    def _once(self, messages, max_tokens, temperature, seed) -> Iterator[str]:
        import openai

        kwargs = dict(model=self.spec.model_name, messages=messages, max_tokens=max_tokens,
                      temperature=temperature, seed=seed, stream=True)
        start = time.monotonic()
        try:
            chunks = self._client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            status = exc.status_code
            why = f"{self._where()} answered HTTP {status} ({_detail(exc, self._key)})"
            if status == 429 or status >= 500:
                raise _Retry(why, _retry_after(exc)) from None
            raise ModelError(f"{why}.") from None
        except Exception as exc:
            raise self._failure(exc, 0) from None
        valid, pieces = False, 0
        try:
            for chunk in chunks:
                choices = getattr(chunk, "choices", None)
                if not isinstance(choices, list):
                    raise _NotCompletion("a chunk without choices")
                valid = True
                text = _content(choices)
                if text:
                    pieces += 1
                    yield text
                if time.monotonic() - start > self.spec.timeout:
                    raise ModelError(f"{self._where()} did not finish within {self.spec.timeout:g} s.")
        except (ModelError, _Retry, GeneratorExit):
            raise
        except _NotCompletion as exc:
            raise ModelError(f"{self._where()} returned something that is not a chat completion ({exc}).") from None
        except Exception as exc:
            raise self._failure(exc, pieces) from None
        finally:
            try:
                chunks.close()
            except Exception:
                pass
        if not valid:
            raise ModelError(f"{self._where()} returned something that is not a chat completion stream "
                             f"(no chunk came back).")

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
