"""`complm ask --server`: the run happens in a `complm serve` that already holds its models.

A new `complm ask` process loads every model and imports sentence-transformers
before it can plan (bench/oneshot.py); a server has done that once. The client
posts the question to the server's /api/ask and turns the JSON lines it
streams back into the pipeline's own events and Result (wire.py), so the live
view, the pipe output, --json and the exit codes are those of a local run.
It speaks HTTP with httpx2 (HTTPX's maintained continuation, which the openai
package brings too), so the client needs no extra.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse

import httpx2
from pydantic import ValidationError

from complm_cli.errors import ComplmError, ExitCode, UsageError
from complm_cli.events import AnswerDone, Listener, ignore
from complm_cli.serve.server import is_loopback

READ_TIMEOUT = 60.0  # seconds without a line; the server sends an empty one every 5 s while a run is quiet


class ServerError(ComplmError):
    code = ExitCode.SERVE


def base_url(url: str) -> str:
    """What `complm serve` prints (http://127.0.0.1:8000/v1), or a bare host:port, as the server's root."""
    given = url
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or not re.fullmatch(r"[A-Za-z0-9._~%:\[\]-]+", parts.netloc.rsplit("@", 1)[-1])):
        raise UsageError(f"The server address '{given}' is not a URL such as http://127.0.0.1:8000.")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class ServerClient:
    """Answers as a Session does (`ask`, `close`), by asking a complm server."""

    def __init__(self, url: str | None, api_key: str | None = None, timeout: float = READ_TIMEOUT,
                 corpora: list[str] | None = None, *, uds: str | None = None, keep_alive: float | None = None):
        """`uds`: the Unix socket of the user's background server (daemon/), instead of a URL."""
        self.uds = uds
        self.url = uds if uds else base_url(url)
        self.api_key, self.timeout, self.keep_alive = api_key, timeout, keep_alive
        self.corpora = list(corpora or [])  # corpora the server's runs look facts up in, beside its own
        # A server on this machine is never reached through HTTP_PROXY (Go's clients, Ollama's among them, agree);
        # trust_env=False is how httpx leaves the proxy variables alone.
        self._trust_env = not uds and not is_loopback(urllib.parse.urlsplit(self.url).hostname or "")

    def _http(self, timeout: float | None = None) -> httpx2.Client:
        """A client for one exchange: this process asks one question, so there is no connection to keep."""
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        # A Unix socket has no TLS: without verify=False the transport still loads the CA certificates (0.1 s).
        transport = httpx2.HTTPTransport(uds=self.uds, verify=False) if self.uds else None
        return httpx2.Client(base_url="http://complm" if self.uds else self.url, headers=auth, transport=transport,
                             timeout=timeout or self.timeout, trust_env=self._trust_env)

    def _body(self, **fields) -> dict:
        body = {**fields, "corpus": self.corpora}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    def _broke_off(self, exc: BaseException, when: str = "") -> ServerError:
        return ServerError(f"The connection to the complm server at {self.url} broke off{when} "
                           f"({type(exc).__name__}: {exc}); is it still running?")

    @contextlib.contextmanager
    def _post(self, path: str, body: dict):
        """The server's answer to a POST, its body still to read; an answer that is an error is raised as one."""
        with self._http() as http:
            try:
                response = http.send(http.build_request("POST", path, json=body), stream=True)
            except httpx2.TransportError as exc:  # nothing listens, or what does is not HTTP at all
                if self.uds:  # it answered a moment ago, when this ask looked for it
                    raise ServerError(f"The background complm server stopped answering at {self.url} ({_reason(exc)}); "
                                      "ask again to start a fresh one.") from None
                raise ServerError(f"No complm server answers at {self.url} ({_reason(exc)}); "
                                  "start one with `complm serve`, or leave out --server.") from None
            # Closing the connection, as Ctrl-C does on the way out, stops the run on the server.
            with contextlib.closing(response):
                if response.is_error:
                    raise self._refused(response, path)
                yield response

    def graph(self, question: str):
        """The plan and its routes, as `complm graph` shows them; nothing runs."""
        from complm_cli.serve import wire

        with self._post("/api/graph", self._body(question=question)) as response:
            try:
                data = json.loads(response.read())
            except (httpx2.HTTPError, ValueError) as exc:
                raise self._broke_off(exc) from None
        return self._read(lambda d: (wire.plan_from_record(d["plan"]), wire.routes_from_record(d["routes"])), data)

    def ask(self, question: str, *, mode: str = "parallel", on_event: Listener = ignore):
        from complm_cli.serve import wire

        done: AnswerDone | None = None
        with self._post("/api/ask", self._body(question=question, mode=mode)) as response:
            for line in self._lines(response):
                if "result" in line:
                    result = self._read(wire.result_from_record, line["result"])
                    if done is not None:
                        on_event(AnswerDone(done.answer, result))
                    return result
                if "error" in line:
                    raise self._failed(line["error"])
                event = self._read(wire.event_from_record, line)
                if isinstance(event, AnswerDone):
                    done = event  # passed on with the run's record, which the next line holds
                elif event is not None:
                    on_event(event)
        raise ServerError(f"The connection to the complm server at {self.url} ended before the run's answer; "
                          "is it still running?")

    def _lines(self, response: httpx2.Response):
        """The JSON objects the server sends; a broken connection or a line that is not one is one sentence."""
        lines = response.iter_lines()
        while True:
            try:
                raw = next(lines, None)
                if raw is None:
                    return
                if not raw.strip():
                    continue  # the server's sign that the run goes on
                line = json.loads(raw)
                if not isinstance(line, dict):
                    raise ValueError("a line is not a JSON object")
            except (httpx2.HTTPError, ValueError) as exc:  # RemoteProtocolError: cut mid-chunk; ReadTimeout: silent
                raise self._broke_off(exc, " mid-run") from None
            yield line

    def _read(self, convert, record):
        try:
            return convert(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ServerError(f"The complm server at {self.url} sent a record this client cannot read "
                              f"({_first_line(exc)}); are both the same complm version?") from None

    def _failed(self, error) -> ComplmError:
        """A run that failed on the server, with the exit code it would have had here."""
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            return ServerError(f"The complm server at {self.url} failed the run and did not say why; see its log.")
        # The background server is this machine's complm: its errors read as this process's own would.
        where = "" if self.uds else f"on the server at {self.url}: "
        return ComplmError(where + error["message"], _exit_code(error.get("exit_code")))

    def _refused(self, response: httpx2.Response, path: str) -> ComplmError:
        status = response.status_code
        try:
            error = json.loads(response.read())["error"]
            message, code = str(error["message"]), error.get("exit_code")
        except (ValueError, KeyError, TypeError, httpx2.HTTPError):
            error, message, code = None, "", None
        if status == 401:
            return ServerError(f"The complm server at {self.url} refused the API key; pass the one it was started with "
                               "as --api-key or COMPLM_SERVE_API_KEY.")
        if status == 404:
            return ServerError(f"{self.url} has no {path}: it is not a complm server, or one older than this client.")
        if status == 400 and message:
            return UsageError(message) if code is None else self._failed(error)
        if status == 413:
            return UsageError(f"The question is longer than the server at {self.url} takes; ask it without --server.")
        if code is not None and message:
            return self._failed(error)
        return ServerError(f"The complm server at {self.url} answered HTTP {status}: {message or response.reason_phrase}.")

    def probe(self) -> dict:
        """Whether a complm server answers at the address (what `complm doctor` shows); never raises."""
        try:
            with self._http(timeout=5) as http:
                response = http.get("/v1/models")
                if response.is_error:
                    why = "refused the API key (COMPLM_SERVE_API_KEY)" if response.status_code == 401 \
                        else f"answered HTTP {response.status_code}"
                    return {"url": self.url, "answers": False, "message": why}
                names = [m["id"] for m in response.json()["data"]]
            return {"url": self.url, "answers": True, "message": f"answers (models: {', '.join(names)})"}
        except (httpx2.HTTPError, ValueError, KeyError, TypeError) as exc:
            return {"url": self.url, "answers": False, "message": f"no answer ({_reason(exc)})"}

    def close(self) -> None:
        pass


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in the OS's words where it has them ("Connection refused"): httpx wraps the
    OSError that says it in an exception or two of its own."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return str(exc).strip().rstrip(".") or type(exc).__name__  # it stands in parentheses mid-sentence


def _first_line(exc: BaseException) -> str:
    """An exception in one line: pydantic's first error and where it was, not its report of every one."""
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where + ': ' if where else ''}{error['msg']}"
    return f"{type(exc).__name__}: {exc}"


def _exit_code(value) -> ExitCode:
    """The server's word for how the run failed; never success, whatever it sent."""
    try:
        code = ExitCode(int(value))
    except (TypeError, ValueError):
        return ExitCode.FAILURE
    return ExitCode.FAILURE if code == ExitCode.OK else code
