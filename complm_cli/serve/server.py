"""An OpenAI-compatible HTTP API in front of the pipeline (what `complm serve` runs).

GET /v1/models lists the modes as models; POST /v1/chat/completions answers
the last user message, streamed as server-sent events or not, with the
plan, routes and per-node timings under an extra `complm` key. POST /api/ask
is complm's own: every pipeline event of the run as a JSON line, then the
run's record (wire.py), which is what `complm ask --server` reads; POST
/api/graph plans and routes without running (`complm graph --server`). Every request
shares one Session, so models load once, and the sequences of concurrent
requests decode together in each model's batched engine.
Starlette and uvicorn come with the `serve` extra and are imported only here.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import socket
import threading
import time
import uuid
from typing import Any

from complm_cli.errors import ComplmError, ExitCode, UsageError

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
    from complm_cli.compose.session import MODES, Session
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


def question_of(messages: Any) -> str:
    """The last user message's text (a string, or the text parts of a list)."""
    if not isinstance(messages, list) or not messages:
        raise _Reject(400, "'messages' must be a non-empty list of messages.", param="messages")
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise _Reject(400, "Each message must be an object with 'role' and 'content'.", param="messages")
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if isinstance(content, str) and content.strip():
            return content.strip()
        raise _Reject(400, "The last user message has no text.", param="messages")
    raise _Reject(400, "'messages' holds no user message.", param="messages")


def build_app(session, *, api_key: str | None = None, max_body: int = MAX_BODY):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    started = int(time.time())

    def error(exc: _Reject) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise _Reject(401, "Missing or incorrect API key; send it as 'Authorization: Bearer KEY'.",
                          code="invalid_api_key")

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise _Reject(413, f"The request is larger than {max_body} bytes.", code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise _Reject(413, f"The request is larger than {max_body} bytes.", code="request_too_large")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Reject(400, "The request body is not valid JSON.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise _Reject(400, "The request body must be a JSON object.", code="invalid_json")
        return data

    async def models(request: Request):
        try:
            check_key(request)
        except _Reject as exc:
            return error(exc)
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": started, "owned_by": "complm"} for name in MODELS]})

    async def chat(request: Request):
        try:
            check_key(request)
            data = await read_json(request)
            model = data.get("model")
            if not isinstance(model, str):
                raise _Reject(400, "'model' must name one of: " + ", ".join(MODELS) + ".", param="model")
            if model not in MODELS:
                raise _Reject(404, f"The model '{model}' does not exist; use one of: {', '.join(MODELS)}.",
                              param="model", code="model_not_found")
            question = question_of(data.get("messages"))
            stream = data.get("stream", False)
            if not isinstance(stream, bool):
                raise _Reject(400, "'stream' must be true or false.", param="stream")
        except _Reject as exc:
            return error(exc)
        call = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
        if stream:
            return StreamingResponse(_events(session, question, MODELS[model], call),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        cancel = threading.Event()
        try:
            result = await run_in_threadpool(session.ask, question, mode=MODELS[model], cancel=cancel)
            _check(result)
        except asyncio.CancelledError:
            cancel.set()  # the client went away: stop the run at its next token
            raise
        except Exception as exc:
            return error(_rejection(exc))
        return JSONResponse({**call, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result.answer}, "finish_reason": "stop"}],
            "complm": result.to_dict()})

    async def ask(request: Request):
        from complm_cli.compose.session import MODES

        try:
            check_key(request)
            data = await read_json(request)
            question, mode = _question(data), data.get("mode", "parallel")
            if mode not in MODES:
                raise _Reject(400, f"Unknown mode '{mode}'; use one of {', '.join(MODES)}.", param="mode")
        except _Reject as exc:
            return error(exc)
        return StreamingResponse(_lines(session, question, mode), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-cache"})

    async def graph(request: Request):
        from complm_cli.serve import wire

        cancel = threading.Event()
        try:
            check_key(request)
            question = _question(await read_json(request))

            def plan_and_route():
                plan = session.plan(question.strip(), cancel)
                return plan, session.route(plan)

            plan, routes = await run_in_threadpool(plan_and_route)
        except _Reject as exc:
            return error(exc)
        except asyncio.CancelledError:
            cancel.set()  # the client went away: stop planning at the next token
            raise
        except Exception as exc:
            rejected = _rejection(exc)
            rejected.body["error"]["exit_code"] = int(exc.code if isinstance(exc, ComplmError) else ExitCode.FAILURE)
            return error(rejected)
        return JSONResponse({"plan": wire.plan_record(plan), "routes": wire.routes_record(routes)})

    async def not_found(request: Request, exc: HTTPException):
        return error(_Reject(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}.",
                             code="not_found" if exc.status_code == 404 else "method_not_allowed"))

    routes = [Route("/v1/models", models, methods=["GET"]), Route("/v1/chat/completions", chat, methods=["POST"]),
              Route("/api/ask", ask, methods=["POST"]), Route("/api/graph", graph, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def _question(data: dict) -> str:
    """The `question` field of complm's own routes (/api/ask, /api/graph)."""
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _Reject(400, "'question' must be a question as a non-empty string.", param="question")
    return question


def _check(result) -> None:
    """A run with no answer is an error for the client; a partial answer is an answer."""
    if result.status == "failed":
        reasons = "; ".join(f"step {n.id}: {n.reason}" for n in result.nodes if n.reason)
        raise _Reject(500, f"No answer: {reasons or 'the model returned an empty answer'}.", "server_error",
                      code="no_answer")


def _rejection(exc: BaseException) -> _Reject:
    if isinstance(exc, _Reject):
        return exc
    if isinstance(exc, UsageError):
        return _Reject(400, exc.message)
    if isinstance(exc, ComplmError):
        return _Reject(500, exc.message, "server_error", code=exc.code.name.lower())
    return _Reject(500, f"Unexpected error: {type(exc).__name__}: {exc}", "server_error")


def _start(session, question: str, mode: str, translate) -> tuple[asyncio.Queue, threading.Event]:
    """Answer the question in a thread of its own. Each event that `translate` turns into an item, then
    ("done", result) or ("error", exception), lands on the queue returned; setting the event returned stops the run."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

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
            put(("done", session.ask(question, mode=mode, on_event=on_event, cancel=cancel)))
        except BaseException as exc:
            put(("error", exc))

    threading.Thread(target=work, name="complm-serve", daemon=True).start()
    return queue, cancel


async def _events(session, question: str, mode: str, call: dict):
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

    queue, cancel = _start(session, question, mode, translate)
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


async def _lines(session, question: str, mode: str):
    """JSON lines: each event of the run, then {"result": record}, or {"error": {...}} with the exit code it means."""
    from complm_cli.serve import wire

    def translate(event):
        record = wire.event_record(event)
        return ("event", record) if record is not None else None

    queue, cancel = _start(session, question, mode, translate)
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
                code = value.code if isinstance(value, ComplmError) else ExitCode.FAILURE
                message = _rejection(value).body["error"]["message"]
                yield json.dumps({"error": {"message": message, "exit_code": int(code)}}) + "\n"
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


def serve(session, sock: socket.socket, *, api_key: str | None = None, verbose: bool = False) -> None:
    """Answer requests on `sock` until interrupted."""
    import uvicorn

    config = uvicorn.Config(build_app(session, api_key=api_key), log_level="info" if verbose else "warning",
                            access_log=verbose, lifespan="off", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
