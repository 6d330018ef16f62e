"""An OpenAI-compatible HTTP API in front of the pipeline (what `complm serve` runs).

GET /v1/models lists the modes as models; POST /v1/chat/completions answers
the last user message, streamed as server-sent events or not, with the
plan, routes and per-node timings under an extra `complm` key. POST /api/ask
is complm's own: every pipeline event of the run as a JSON line, then the
run's record (wire.py), which is what `complm ask --server` reads; POST
/api/graph plans and routes without running (`complm graph --server`). Every request
shares one Session, so models load once, and the sequences of concurrent
requests decode together in each model's batched engine.
Request bodies are pydantic models; every route sits behind one API-key
check, and every failure is turned into an OpenAI-style error body by one
handler. Starlette and uvicorn are imported
only here, inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import os
import socket
import threading
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from complm_cli.compose.modes import MODES
from complm_cli.errors import ComplmError, ExitCode, NotFoundError, UsageError
from complm_cli.serve.runs import Runs

MODELS = {"complm": "parallel", "complm-sequential": "sequential", "complm-monolithic": "monolithic"}
MAX_BODY = 1_000_000  # bytes; a question with its chat history fits many times over
INSTALL = 'pip install "complm[serve]"'


class ServeError(ComplmError):
    code = ExitCode.SERVE


class _Reject(Exception):
    """A request answered with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, {"error": {"message": message, "type": type_, "param": param, "code": code}}


def require_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ServeError(f"complm serve needs Starlette and uvicorn; install them with `{INSTALL}`.") from None


def make_session(settings, catalog, pull_reporter=None):
    """One Session for every request, its embedder safe to call from several threads; missing models are pulled first."""
    from complm_cli.compose.session import Session
    from complm_cli.compose.route import Embedder
    from complm_cli.cache.store import Store

    class SerialEmbedder(Embedder):
        # A fast tokenizer is not safe to call from two threads at once ("Already borrowed").
        _encode_lock = threading.Lock()

        def encode(self, texts):
            with self._encode_lock:
                return super().encode(texts)

    emb = catalog.embedder
    embedder = SerialEmbedder(Store(settings).path(emb), emb.name, threads=1)
    return Session(settings, catalog, pull_reporter=pull_reporter, modes=MODES, embedder=embedder)


class _Body(BaseModel):
    # JSON's own types, as the OpenAI API takes them: "yes" is no boolean, 1 no model name.
    model_config = ConfigDict(strict=True)


class _Part(_Body):
    type: str
    text: str = ""  # an image part has none


class _Message(_Body):
    role: str
    content: str | list[_Part] | None = None  # an assistant's tool call has no content


class ChatRequest(_Body):
    """POST /v1/chat/completions. The other fields of OpenAI's (max_tokens, temperature, ...) are accepted and
    ignored: the server's settings decide them, as they do for every request sharing its Session."""

    model: Literal[tuple(MODELS)]  # type: ignore[valid-type]
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    corpus: list[str] = []  # complm's own (an OpenAI client's extra_body): corpora this run looks facts up in

    def question(self) -> str:
        """The last user message's text (a string, or the text parts of a list)."""
        last = next((m for m in reversed(self.messages) if m.role == "user"), None)
        if last is None:
            raise _Reject(400, "'messages' holds no user message.", param="messages")
        content = last.content
        if isinstance(content, list):
            content = "\n".join(p.text for p in content if p.type == "text")
        if not content or not content.strip():
            raise _Reject(400, "The last user message has no text.", param="messages")
        return content.strip()


class GraphRequest(_Body):
    """POST /api/graph, complm's own: plan and route a question."""

    question: str = Field(pattern=r"\S")  # not only blanks
    corpus: list[str] = []  # corpora this run looks facts up in, beside the server's own
    keep_alive: float | None = None  # a background server's: seconds an unused model stays loaded from now on


class AskRequest(GraphRequest):
    """POST /api/ask, complm's own: run a question in one of the modes."""

    mode: Literal[MODES] = "parallel"  # type: ignore[valid-type]


# What a field that fails validation is told ({input}: what was sent), in the words of the checks pydantic replaced.
_INVALID = {
    "model": "'model' must name one of: " + ", ".join(MODELS) + ".",
    "messages": "'messages' must be a non-empty list of messages.",
    "stream": "'stream' must be true or false.",
    "question": "'question' must be a question as a non-empty string.",
    "mode": "Unknown mode '{input}'; use one of " + ", ".join(MODES) + ".",
    "keep_alive": "'keep_alive' must be a number of seconds.",
}


def _invalid(exc: ValidationError) -> _Reject:
    """The first thing wrong with a request body, as one sentence and the field it names."""
    error = exc.errors(include_url=False)[0]
    loc, given = error["loc"], error.get("input")
    if not loc:  # the body as a whole
        if error["type"] == "json_invalid":
            return _Reject(400, "The request body is not valid JSON.", code="invalid_json")
        return _Reject(400, "The request body must be a JSON object.", code="invalid_json")
    field = str(loc[0])
    if field == "model" and isinstance(given, str):
        return _Reject(404, f"The model '{given}' does not exist; use one of: {', '.join(MODELS)}.",
                       param="model", code="model_not_found")
    if field == "messages" and len(loc) > 1:
        return _Reject(400, "Each message must be an object with 'role' and 'content'.", param="messages")
    return _Reject(400, _INVALID[field].format(input=given), param=field)


def _exit_code(exc: BaseException) -> int:
    """The exit code a failure on the server means for `complm ask --server` or `graph --server`."""
    return int(exc.code if isinstance(exc, ComplmError) else ExitCode.FAILURE)


def _rejection(exc: BaseException) -> _Reject:
    """Any failure as the OpenAI-style error it is answered with."""
    if isinstance(exc, _Reject):
        return exc
    if isinstance(exc, ValidationError):
        return _invalid(exc)
    if isinstance(exc, UsageError):
        return _Reject(400, exc.message)
    if isinstance(exc, NotFoundError):  # a corpus the request names that is not here
        return _Reject(400, exc.message, param="corpus", code="corpus_not_found")
    if isinstance(exc, ServeError):  # the server is stopping: the client may try again once it runs
        return _Reject(503, exc.message, "server_error", code="shutting_down")
    if isinstance(exc, ComplmError):
        return _Reject(500, exc.message, "server_error", code=exc.code.name.lower())
    return _Reject(500, f"Unexpected error: {type(exc).__name__}: {exc}", "server_error")


def _error_response(request, exc: Exception):
    """The one error handler: every failure of every route, and a path or method with no route, as an OpenAI-style
    error body. On complm's own routes (/api/...) a failed run also says the exit code it means."""
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    if isinstance(exc, HTTPException):
        rejected = _Reject(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}.",
                           code="not_found" if exc.status_code == 404 else "method_not_allowed")
    else:
        rejected = _rejection(exc)
        if request.url.path.startswith("/api/") and not isinstance(exc, (_Reject, ValidationError)):
            rejected.body["error"]["exit_code"] = _exit_code(exc)
    headers = {"WWW-Authenticate": "Bearer"} if rejected.status == 401 else None
    return JSONResponse(rejected.body, status_code=rejected.status, headers=headers)


def _check_key(request, api_key: str | None) -> None:
    """The one key check, in front of every route: 'Authorization: Bearer KEY', compared in constant time."""
    if api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise _Reject(401, "Missing or incorrect API key; send it as 'Authorization: Bearer KEY'.", code="invalid_api_key")


def build_app(session, *, api_key: str | None = None, max_body: int = MAX_BODY, runs: Runs | None = None, keeper=None):
    """The ASGI app: every route behind one key check, every failure answered by one error handler.
    `runs`: the runs in flight, which `Runs.close` stops (serve() calls it on Ctrl-C). With a `keeper`
    (daemon/keeper.py) it is a background server: /api/status tells what it holds, /api/stop stops it."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    api = _Api(session, max_body, runs or Runs(), keeper)

    def guarded(handler):
        async def endpoint(request):
            try:
                _check_key(request, api_key)
                return await handler(request)
            except Exception as exc:  # a client that went away is a CancelledError, which goes on up
                return _error_response(request, exc)

        return endpoint

    routes = [Route("/v1/models", guarded(api.models), methods=["GET"]),
              Route("/v1/chat/completions", guarded(api.chat), methods=["POST"]),
              Route("/api/ask", guarded(api.ask), methods=["POST"]), Route("/api/graph", guarded(api.graph), methods=["POST"])]
    if keeper is not None:
        routes += [Route("/api/status", guarded(api.status), methods=["GET"]),
                   Route("/api/stop", guarded(api.stop), methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: _error_response})


class _Api:
    """The routes, each a request in and a response out; errors are raised, for the one handler to answer."""

    def __init__(self, session, max_body: int, runs: Runs, keeper=None):
        self.session, self.max_body, self.runs, self.started = session, max_body, runs, int(time.time())
        self.keeper = keeper

    def _keep(self, body: GraphRequest) -> None:
        if self.keeper is not None and body.keep_alive is not None:
            self.keeper.keep_alive = body.keep_alive

    async def status(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse(self.keeper.status())

    async def stop(self, request):
        from starlette.background import BackgroundTask
        from starlette.responses import JSONResponse

        # After the answer is sent: the client reads that the server is stopping, then waits for it to be gone.
        return JSONResponse({"stopping": True, "pid": os.getpid()}, background=BackgroundTask(self.keeper.stop))

    async def body(self, request, kind: type[BaseModel]):
        """The JSON body as `kind`; one larger than the limit is refused before it is all read."""
        too_large = _Reject(413, f"The request is larger than {self.max_body} bytes.", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise too_large
        return kind.model_validate_json(body)

    async def models(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": self.started, "owned_by": "complm"} for name in MODELS]})

    async def chat(self, request):
        from starlette.responses import JSONResponse

        body = await self.body(request, ChatRequest)
        question, mode = body.question(), MODELS[body.model]
        call = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
        if body.stream:
            return _streaming(_events(self._asker(body.corpus), question, mode, call, self.runs), "text/event-stream")
        result = await _in_thread(lambda cancel: self.session.ask(question, mode=mode, cancel=cancel, corpora=body.corpus),
                                  self.runs, request)
        _check(result)
        return JSONResponse({**call, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result.answer}, "finish_reason": "stop"}],
            "complm": result.to_dict()})

    async def ask(self, request):
        body = await self.body(request, AskRequest)
        self._keep(body)
        return _streaming(_lines(self._asker(body.corpus), body.question, body.mode, self.runs), "application/x-ndjson")

    def _asker(self, corpora: list[str]):
        """The session's `ask` for a request that names corpora; an unknown one is refused before the stream starts."""
        self.session.knowing(corpora)
        return functools.partial(self.session.ask, corpora=corpora)

    async def graph(self, request):
        from starlette.responses import JSONResponse
        from complm_cli.serve import wire

        body = await self.body(request, GraphRequest)
        self._keep(body)
        question = body.question.strip()
        routing = self.session.knowing(body.corpus)[1]

        def plan_and_route(cancel):
            plan = self.session.plan(question, cancel)
            return plan, routing.route(plan)

        plan, routes = await _in_thread(plan_and_route, self.runs, request)
        return JSONResponse({"plan": wire.plan_record(plan), "routes": wire.routes_record(routes)})


def _streaming(body, media_type: str):
    from starlette.responses import StreamingResponse

    return StreamingResponse(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


DISCONNECT_POLL_S = 0.25  # how often a non-streamed request looks whether its client is still there


async def _in_thread(work, runs: Runs, request):
    """`work(cancel)` in a worker thread. A client that goes away sets `cancel`, which stops the run at its next
    token: nothing is written to it until the end, so whether it is still there is asked while the run goes."""
    from starlette.concurrency import run_in_threadpool

    cancel = runs.start()
    task = asyncio.ensure_future(run_in_threadpool(work, cancel))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and not cancel.is_set() and await request.is_disconnected():
                cancel.set()
        try:
            return task.result()
        except Exception as exc:
            raise runs.why(exc) from None
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        runs.end(cancel)


def _check(result) -> None:
    """A run with no answer is an error for the client; a partial answer is an answer."""
    if result.status == "failed":
        reasons = "; ".join(f"step {n.id}: {n.reason}" for n in result.nodes if n.reason)
        raise _Reject(500, f"No answer: {reasons or 'the model returned an empty answer'}.", "server_error",
                      code="no_answer")


def _start(ask, question: str, mode: str, translate, runs: Runs) -> tuple[asyncio.Queue, threading.Event]:
    """Answer the question in a thread of its own. Each event that `translate` turns into an item, then
    ("done", result) or ("error", exception), lands on the queue returned; setting the event returned stops the run."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = runs.start()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: the client is gone
            cancel.set()

    def on_event(event) -> None:
        item = translate(event)
        if item is not None:
            put(item)

    def work() -> None:
        try:
            put(("done", ask(question, mode=mode, on_event=on_event, cancel=cancel)))
        except BaseException as exc:
            put(("error", runs.why(exc)))
        finally:
            runs.end(cancel)

    threading.Thread(target=work, name="complm-serve", daemon=True).start()
    return queue, cancel


async def _events(ask, question: str, mode: str, call: dict, runs: Runs):
    """Server-sent events: the answer's tokens as they come, then a last chunk with the run's record.

    The answer streams from the aggregator, or from the single node of a plan
    that needs none; a progress line per stage goes out as an SSE comment,
    which clients skip and proxies see as life."""
    from complm_cli.events import AnswerToken, NodeToken, PlanReady, Stage

    single: list[int] = []  # the node whose tokens are the answer, in a one-node plan

    def translate(event):
        if isinstance(event, AnswerToken):
            return ("token", event.text)
        if isinstance(event, NodeToken) and single and event.node_id == single[0]:
            return ("token", event.text)
        if isinstance(event, PlanReady):
            if len(event.plan.nodes) == 1:
                single.append(event.plan.nodes[0].id)
            return ("note", f"plan: {len(event.plan.nodes)} step(s)")
        if isinstance(event, Stage):
            return ("note", f"{event.name} {event.detail}".strip())
        return None

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {**call, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    queue, cancel = _start(ask, question, mode, translate, runs)
    sent: list[str] = []
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await queue.get()
            if kind == "note":
                yield f": {value}\n\n"
            elif kind == "token":
                sent.append(value)
                yield chunk({"content": value})
            elif kind == "error":
                yield f"data: {json.dumps(_rejection(value).body)}\n\n"
                break
            else:
                try:
                    _check(value)
                except _Reject as exc:
                    yield f"data: {json.dumps(exc.body)}\n\n"
                    break
                streamed = "".join(sent)
                # The answer as the pipeline settled it: send what the tokens did not say.
                if value.answer.startswith(streamed) and len(value.answer) > len(streamed):
                    yield chunk({"content": value.answer[len(streamed):]})
                yield chunk({}, "stop", complm=value.to_dict())
                break
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # a client that went away stops the run at its next token


KEEP_ALIVE = 5.0  # seconds without an event before an empty line tells the client the run goes on


async def _lines(ask, question: str, mode: str, runs: Runs):
    """JSON lines: each event of the run, then {"result": record}, or {"error": {...}} with the exit code it means."""
    from complm_cli.serve import wire

    def translate(event):
        record = wire.event_record(event)
        return ("event", record) if record is not None else None

    queue, cancel = _start(ask, question, mode, translate, runs)
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), KEEP_ALIVE)
            except asyncio.TimeoutError:
                yield "\n"  # a long prompt, or a node waiting for memory: the connection is alive
                continue
            if kind == "event":
                yield json.dumps(value) + "\n"
            elif kind == "done":
                yield json.dumps({"result": value.to_dict()}) + "\n"
                break
            else:
                message = _rejection(value).body["error"]["message"]
                yield json.dumps({"error": {"message": message, "exit_code": _exit_code(value)}}) + "\n"
                break
    finally:
        cancel.set()  # a client that went away (Ctrl-C) stops the run at its next token


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: no key needed to serve it, no proxy to reach it."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ServeError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --host or --port.") from None


def serve(session, sock: socket.socket, *, api_key: str | None = None, verbose: bool = False, keeper=None) -> None:
    """Answer requests on `sock` until interrupted (or, for a background server, until its keeper stops it)."""
    import uvicorn

    runs = Runs()

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            runs.close()  # every run in flight stops at its next token, and its client is told why
            super().handle_exit(sig, frame)

    config = uvicorn.Config(build_app(session, api_key=api_key, runs=runs, keeper=keeper),
                            log_level="info" if verbose else "warning", access_log=verbose, lifespan="off",
                            timeout_graceful_shutdown=5)
    server = Server(config)
    if keeper is not None:
        def shutdown() -> None:
            runs.close()
            server.should_exit = True  # uvicorn's main loop looks at it ten times a second

        keeper.attach(runs, shutdown)
    server.run(sockets=[sock])
