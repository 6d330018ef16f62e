"""`complm ask --server`: the run happens in a `complm serve` that already holds its models.

A new `complm ask` process loads every model and imports sentence-transformers
before it can plan (bench/oneshot.py); a server has done that once. The client
posts the question to the server's /api/ask and turns the JSON lines it
streams back into the pipeline's own events and Result (wire.py), so the live
view, the pipe output, --json and the exit codes are those of a local run.
Only the standard library is used: the client needs no extra.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from complm_cli.errors import ComplmError, ExitCode, UsageError
from complm_cli.events import AnswerDone, Listener, ignore

READ_TIMEOUT = 60.0  # seconds without a line; the server sends an empty one every 5 s while a run is quiet


class ServerError(ComplmError):
    code = ExitCode.SERVE


def base_url(url: str) -> str:
    """What `complm serve` prints (http://127.0.0.1:8000/v1), or a bare host:port, as the server's root."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"The server address '{url}' is not an http:// or https:// URL.")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class ServerClient:
    """Answers as a Session does (`ask`, `close`), by asking a complm server."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = READ_TIMEOUT):
        self.url, self.api_key, self.timeout = base_url(url), api_key, timeout

    def ask(self, question: str, *, mode: str = "parallel", on_event: Listener = ignore):
        from complm_cli import wire

        body = json.dumps({"question": question, "mode": mode}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}
        request = urllib.request.Request(self.url + "/api/ask", data=body, headers=headers, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - the user's own server URL
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"No complm server answers at {self.url} ({getattr(reason, 'strerror', None) or reason}); "
                              "start one with `complm serve`, or leave out --server.") from None
        done: AnswerDone | None = None
        # Closing the connection, as Ctrl-C does on the way out, stops the run on the server.
        with response:
            for line in self._lines(response):
                if "result" in line:
                    result = self._read(wire.result_from_record, line["result"])
                    if done is not None:
                        on_event(AnswerDone(done.answer, result))
                    return result
                if "error" in line:
                    error = line["error"]
                    raise ComplmError(str(error.get("message") or "the server failed the run."), _exit_code(error.get("exit_code")))
                event = self._read(wire.event_from_record, line)
                if isinstance(event, AnswerDone):
                    done = event  # passed on with the run's record, which the next line holds
                elif event is not None:
                    on_event(event)
        raise ServerError(f"The complm server at {self.url} ended the run without an answer; see its log.")

    def _lines(self, response):
        """The JSON objects the server sends; a broken connection or a line that is not one is one sentence."""
        while True:
            try:
                raw = response.readline()
                if not raw:
                    return
                if not raw.strip():
                    continue  # the server's sign that the run goes on
                line = json.loads(raw)
                if not isinstance(line, dict):
                    raise ValueError("a line is not a JSON object")
            except (OSError, ValueError) as exc:
                raise ServerError(f"The connection to the complm server at {self.url} broke off mid-run "
                                  f"({type(exc).__name__}: {exc}); is it still running?") from None
            yield line

    def _read(self, convert, record):
        try:
            return convert(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"The complm server at {self.url} sent a record this client cannot read "
                              f"({type(exc).__name__}: {exc}); are both the same complm version?") from None

    def _refused(self, exc: urllib.error.HTTPError) -> ComplmError:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError, OSError):
            message = ""
        if exc.code == 401:
            return ServerError(f"The complm server at {self.url} refused the API key; pass the one it was started with "
                               "as --api-key or COMPLM_SERVE_API_KEY.")
        if exc.code == 404:
            return ServerError(f"{self.url} has no /api/ask: it is not a complm server, or one older than this client.")
        if exc.code == 400 and message:
            return UsageError(message)
        return ServerError(f"The complm server at {self.url} answered HTTP {exc.code}: {message or exc.reason}.")

    def close(self) -> None:
        pass


def _exit_code(value) -> ExitCode:
    try:
        return ExitCode(int(value))
    except (TypeError, ValueError):
        return ExitCode.FAILURE
