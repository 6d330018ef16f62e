"""One node's work, in a thread of its own: what it is given, what it reports back.

A node thread gets an immutable `NodeTask` built by the scheduler (its question
with the parents' answers filled in, the parents' facts, flags, its stop
events) and returns an `Outcome`; it never reads or writes the scheduler's
state. It does tell the listener about its own progress (started, tokens,
done, failed), so the live view sees tokens as they come.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from complm_cli.cache.catalog import Expert
from complm_cli.compose import prompts
from complm_cli.compose.cancel import AnyOf, Cancelled
from complm_cli.compose.facts import FactWatch
from complm_cli.compose.knowledge import read_answer
from complm_cli.compose.generate import Params, generate
from complm_cli.compose.lists import room
from complm_cli.events import Listener, NodeDone, NodeFailed, NodeSources, NodeStarted, NodeToken


@dataclass(frozen=True)
class NodeTask:
    id: int
    question: str  # the parents' answers substituted in (a calculation: the formula, as planned)
    expert: Expert
    context: tuple[tuple[str, str], ...]  # (a parent's question, its answer, shortened) for the expert's prompt
    parents: tuple[tuple[int, str, str], ...]  # (id, question, full answer): what a calculation reads its numbers from
    numeric: bool  # asked for a number: a calculation will use it
    threads: int
    # Set by the scheduler while the node's answer only feeds later steps or the aggregator: the node may
    # end once a sentence states a fact. It can change while the node runs (the planner writes a step that uses it).
    intermediate: threading.Event
    stop: AnyOf  # the run's cancel, or this node's own (a discarded step)
    t0: float  # when the run began: times are reported from it
    max_tokens: int | None = None  # None: the expert's own cap
    temperature: float | None = None
    seed: int = 0
    timeout: float | None = None
    knowledge: object = None  # compose.knowledge.Knowledge, for a knowledge step


@dataclass
class Outcome:
    status: str  # done | failed | cancelled
    answer: str | None = None
    reason: str | None = None
    question: str | None = None  # what was asked, where it differs from the task's (a calculation's expression)
    started: float | None = None  # perf_counter time; None: it never started
    ended: float | None = None
    seconds: float = 0.0
    tokens: int = 0
    calculation: dict | None = None
    cut: bool = False  # the answer stopped at its token limit
    sources: list = field(default_factory=list)  # a knowledge step's passages
    not_found: bool = False


def reason_of(exc: BaseException) -> str:
    return exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}"


def run_task(task: NodeTask, pool, on_event: Listener, on_start) -> Outcome:
    """Run one node to its end; `on_start(perf_counter time)` once it holds its worker. Never raises."""
    try:
        if task.expert.kind == "tool":
            return _calculate(task, on_event)
        if task.expert.kind == "corpus":
            return _look_up(task, pool, on_event, on_start)
        return _generate(task, pool, on_event, on_start)
    except BaseException as exc:  # never leave the scheduler waiting for a node that died
        return Outcome("failed", reason=f"{type(exc).__name__}: {exc}")


def _look_up(task: NodeTask, pool, on_event: Listener, on_start) -> Outcome:
    """A knowledge step: its passages, then the reader's answer from them (compose/knowledge.py)."""
    knowledge = task.knowledge
    if knowledge is None:
        return Outcome("failed", reason=f"the corpus '{task.expert.corpus}' was not opened for this run")
    start = time.perf_counter()
    hits = knowledge.retrieve(task.expert, task.question)
    on_event(NodeSources(task.id, hits))
    if not hits:  # nothing to read: a reader given no passages could only invent an answer
        on_event(NodeStarted(task.id, task.expert.name, task.question))
        end = time.perf_counter()
        on_event(NodeDone(task.id, prompts.NOT_IN_CORPUS, end - start, 0))
        return Outcome("done", answer=prompts.NOT_IN_CORPUS, started=start, seconds=end - start, not_found=True)
    messages = prompts.reader_messages(task.question, [(h.title, h.text) for h in hits], list(task.context))
    out = _generate(task, pool, on_event, on_start, messages=messages, model=knowledge.reader(task.expert))
    if out.status == "done":
        out.answer, out.sources, out.not_found = read_answer(out.answer or "", hits)
    return out


def _generate(task: NodeTask, pool, on_event: Listener, on_start, messages: list[dict] | None = None,
              model=None) -> Outcome:
    model = model or task.expert
    gen = model.generation
    params = Params(max_tokens=task.max_tokens or room(task.question, gen.max_tokens),
                    temperature=gen.temperature if task.temperature is None else task.temperature,
                    seed=task.seed, threads=task.threads, timeout=task.timeout,
                    prefix=1)  # the system prompt is the same for every node: evaluated once, then copied
    out = Outcome("pending")
    tokens = 0

    def started() -> None:
        out.started = time.perf_counter()
        on_start(out.started)
        on_event(NodeStarted(task.id, task.expert.name, task.question))

    def on_piece(piece: str) -> None:
        nonlocal tokens
        tokens += 1
        on_event(NodeToken(task.id, piece))

    stated: list[str] = []
    watch = FactWatch(task.question)

    def enough(text: str) -> bool:
        """An intermediate answer is complete once a sentence of it states a fact; the rest only costs time."""
        if not task.intermediate.is_set():
            return False
        end = watch.end(text)
        if end is not None:
            stated.append(text[:end])
        return end is not None

    try:
        messages = messages or prompts.expert_messages(task.question, list(task.context), numeric=task.numeric)
        result = generate(pool, model, messages, params, cancel=task.stop, on_piece=on_piece, on_start=started,
                          stop=enough)
        out.answer = prompts.strip_reasoning(stated[0]) if stated else result.text
        out.status, out.tokens, out.seconds, out.cut = "done", result.tokens, result.seconds, result.cut
        out.reason = result.why_cut
        on_event(NodeDone(task.id, out.answer, out.seconds, out.tokens))
    except Cancelled:
        out.status, out.reason, out.tokens = "cancelled", "cancelled" if out.started else "cancelled before it started", tokens
    except Exception as exc:
        out.seconds = time.perf_counter() - out.started if out.started else 0.0
        out.status, out.reason, out.tokens = "failed", reason_of(exc), tokens
        on_event(NodeFailed(task.id, out.reason))
    if out.started:
        out.ended = time.perf_counter()
    return out


def _calculate(task: NodeTask, on_event: Listener) -> Outcome:
    """A tool node (the calculator): no model, no worker; computed from the parents' answers. It holds no
    worker, so it has no interval in the run's start/end record (only its own start and seconds)."""
    from complm_cli.experts.plugins import tools

    start = time.perf_counter()
    on_event(NodeStarted(task.id, task.expert.name, task.question))
    try:
        tool = tools()[task.expert.tool]
        calc = tool.run(task.question, {d: (q, a) for d, q, a in task.parents})
    except Exception as exc:
        reason = reason_of(exc)
        on_event(NodeFailed(task.id, reason))
        end = time.perf_counter()
        return Outcome("failed", reason=reason, started=start, seconds=end - start)
    expression = calc.expression or calc.result
    end = time.perf_counter()
    out = Outcome("done", answer=calc.result, question=expression, started=start, seconds=end - start,
                  calculation={"formula": calc.formula or tool.claims(task.question) or task.question, "expression": expression, "result": calc.result})
    on_event(NodeDone(task.id, f"{expression} = {calc.result}", out.seconds, 0))
    return out
