"""Query Executor: ready-set scheduling of a plan over a pool of model workers.

Every node whose parents are done is ready; ready nodes run at the same time,
up to `workers`, each on a worker it owns while it runs. Workers of one
model are handles on one batched engine (backends/engine.py), so nodes of
the same model decode together in one batch. The ModelPool keeps models
resident within a memory budget and unloads the least recently used idle
one when another must load.

Nodes reach the scheduler through a NodeFeed: `run_plan` feeds a whole plan
at once; the pipeline feeds steps while the planner is still writing them
(overlap.py), and closes the feed once the plan is final.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from complm_cli import prompts
from complm_cli.backends.base import Worker, WorkerFactory
from complm_cli.catalog import Expert
from complm_cli.config import format_size
from complm_cli.dag import Node, Plan, readable, short_answer, substitute
from complm_cli.errors import ModelError
from complm_cli.events import Listener, NodeDone, NodeFailed, NodeStarted, NodeToken, ignore
from complm_cli.facts import FactWatch
from complm_cli.generate import Cancelled, Params, generate

CONTEXT_CHARS = 600  # of each parent's answer shown to a child, so one long answer cannot crowd the prompt
POLL_S = 0.1  # the scheduler's longest wait: short, so that Ctrl-C and cancel are seen at once


class ModelPool:
    """Resident workers within a memory budget; idle ones are reused, then evicted LRU.

    A remote expert's worker holds no model (memory 0); what limits it is its
    endpoint, which takes at most `max_parallel` requests at once, whichever
    experts of the catalog send them."""

    def __init__(self, factory: WorkerFactory, path_of: Callable[[Expert], Path], budget: int):
        self.factory, self.path_of, self.budget = factory, path_of, budget
        self._paths: dict[str, Path] = {}
        self._idle: "OrderedDict[int, Worker]" = OrderedDict()  # oldest first
        self._busy: dict[int, Worker] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.loads = 0
        self.evictions = 0
        self.peak = 0

    @property
    def used(self) -> int:
        return self._memory([*self._idle.values(), *self._busy.values()])

    @staticmethod
    def _memory(workers) -> int:
        """Each worker's own bytes, plus each shared part (an engine, a model file) once while any holder is resident.

        Computed from who is resident now, so evicting the worker that first
        brought a shared part in never leaves the others under-counted."""
        shared = dict(w.shared for w in workers if getattr(w, "shared", None))
        return sum(w.memory for w in workers) + sum(shared.values())

    def has_idle(self, expert_name: str) -> bool:
        with self._cond:
            return any(w.expert.name == expert_name for w in self._idle.values())

    def _endpoint_full(self, expert: Expert) -> bool:
        remote = getattr(expert, "remote", None)
        if remote is None:
            return False
        busy = sum(1 for w in self._busy.values() if getattr(w.expert, "remote", None) is not None
                   and w.expert.remote.endpoint == remote.endpoint)
        return busy >= remote.max_parallel

    def acquire(self, expert: Expert, cancel: threading.Event | None = None) -> Worker:
        remote = getattr(expert, "remote", None) is not None
        if not remote and expert.name not in self._paths:  # path_of reads the store's manifest: once per expert is enough
            self._paths[expert.name] = self.path_of(expert)
        path = self._paths.get(expert.name)
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                if self._endpoint_full(expert):
                    self._cond.wait(0.1)  # the endpoint has no free slot: wait for a release
                    continue
                for key, w in self._idle.items():
                    if w.expert.name == expert.name:
                        del self._idle[key]
                        self._busy[key] = w
                        return w
                worker = self.factory(expert, path)
                alone = self._memory([worker])
                if alone > self.budget:
                    raise ModelError(f"The model '{expert.name}' needs about {format_size(alone)}, more than the memory "
                                     f"budget of {format_size(self.budget)}; raise --max-memory.")
                busy = list(self._busy.values())
                # Evict only when that makes room; otherwise wait for a busy worker instead.
                if self._memory([*busy, worker]) <= self.budget:
                    # An idle handle whose engine stays (a busy worker or the new one holds it) frees nothing:
                    # evicting it would only close an engine that must load again at once.
                    kept = {w.shared[0] for w in (*busy, worker) if getattr(w, "shared", None)}
                    for key, old in list(self._idle.items()):  # oldest first
                        if self._memory([*self._idle.values(), *busy, worker]) <= self.budget:
                            break
                        if getattr(old, "shared", None) and old.shared[0] in kept:
                            continue
                        del self._idle[key]
                        old.unload()
                        self.evictions += 1
                    key = id(worker)
                    self._busy[key] = worker
                    self.peak = max(self.peak, self.used)
                    break
                self._cond.wait(0.1)  # everything resident is busy: wait for a release
        try:
            worker.load()
            self.loads += 1
        except BaseException:
            with self._cond:
                self._busy.pop(id(worker), None)
                self._cond.notify_all()
            raise
        return worker

    def release(self, worker: Worker) -> None:
        with self._cond:
            key = id(worker)
            self._busy.pop(key, None)
            if self._closed:
                worker.unload()
            else:
                self._idle[key] = worker
            self._cond.notify_all()

    def resident(self) -> list[str]:
        with self._cond:
            return [w.expert.name for w in (*self._busy.values(), *self._idle.values())]

    def close(self) -> None:
        """Unload idle workers now; a worker still busy in a thread is unloaded when it is released."""
        with self._cond:
            self._closed = True
            for w in self._idle.values():
                w.unload()
            self._idle.clear()


@dataclass
class NodeResult:
    id: int
    question: str  # after substitution
    depends_on: tuple[int, ...]
    expert: str
    status: str = "pending"  # done | failed | skipped | cancelled
    answer: str | None = None
    reason: str | None = None
    started: float | None = None  # seconds since the run began
    seconds: float = 0.0
    tokens: int = 0
    threads: int = 0
    calculation: dict | None = None  # for a calculator node: formula, expression and result

    @property
    def shown(self) -> str | None:
        """The answer as a reader sees it: a calculation with its working ("8 + 4 = 12")."""
        if self.calculation and self.status == "done":
            return f"{self.calculation['expression']} = {self.calculation['result']}"
        return self.answer

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RunOptions:
    workers: int = 2
    threads: int = 2
    node_timeout: float = 180.0
    seed: int = 0
    max_tokens: int | None = None  # None: each expert's own cap
    temperature: float | None = None
    context_chars: int = CONTEXT_CHARS


@dataclass
class Execution:
    results: dict[int, NodeResult]
    seconds: float
    max_concurrency: int = 0
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (time, 'start'|'end', node)
    t0: float = 0.0  # time.perf_counter() when the run began: `started` counts from here
    discarded: list[NodeResult] = field(default_factory=list)  # retracted nodes (streamed steps the final plan dropped)


class NodeFeed:
    """Nodes handed to a running scheduler over time (the planner is still writing the plan), then closed.

    Thread-safe. A node's parents must have been fed before it. `retract`
    discards every node from an id on (a suffix, so no node that stays loses a
    parent): running ones are cancelled, and their ids may be fed again; those
    new nodes wait until the old ones have stopped. Feeding after `close`, or
    after the run has ended (it was cancelled), raises RuntimeError rather
    than leave a node that would never run."""

    def __init__(self, question: str = "") -> None:
        self.question = question  # the user's: whether its parts are combined decides which answers are intermediate
        self._inbox: "queue.Queue[tuple]" = queue.Queue()  # also the scheduler's: a node ending wakes it too
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._closed = False
        self._ended = False

    def _check(self, node: Node) -> None:
        if self._closed or self._ended:
            raise RuntimeError(f"step {node.id} came after the plan was closed")
        if node.id in self._ids:
            raise ValueError(f"step {node.id} was fed twice")
        if missing := [d for d in node.depends_on if d not in self._ids]:
            raise ValueError(f"step {node.id} depends on step {missing[0]}, which was not fed before it")

    def add(self, node: Node, expert: Expert) -> None:
        with self._lock:
            self._check(node)
            self._ids.append(node.id)
            self._inbox.put(("node", node, expert))

    def close(self, last: list[tuple[Node, Expert]] = ()) -> None:
        """The plan is final; `last`: its remaining nodes (in one message, so that none of them is taken for unfinished)."""
        with self._lock:
            for node, _ in last:
                self._check(node)
                self._ids.append(node.id)
            self._closed = True
            self._inbox.put(("close", list(last)))

    def retract(self, first_id: int) -> threading.Event:
        """Discard every fed node from `first_id` on; the event is set once none of them runs any more."""
        done = threading.Event()
        with self._lock:
            self._ids = [i for i in self._ids if i < first_id]
            if self._ended:
                done.set()
            else:
                self._inbox.put(("retract", first_id, done))
        return done

    def _post(self, message: tuple) -> None:
        self._inbox.put(message)

    def _next(self, timeout: float) -> tuple | None:
        try:
            return self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _end(self) -> list[tuple]:
        """The scheduler stops: later feeding raises; what was still queued is returned."""
        with self._lock:
            self._ended = True
            rest = []
            while (message := self._next(0)) is not None:
                rest.append(message)
            return rest


class AnyOf:
    """Set when any of its events is: a node stops for the run's cancel or for its own (a discarded step)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def run_plan(plan: Plan, experts: dict[int, Expert], pool: ModelPool, options: RunOptions,
             on_event: Listener = ignore, cancel: threading.Event | None = None) -> Execution:
    """Run every node of `plan` on its expert; `experts` maps node id to the routed expert."""
    feed = NodeFeed(plan.question)
    feed.close([(n, experts[n.id]) for n in plan.nodes])
    return run_feed(feed, pool, options, on_event, cancel)


def run_feed(feed: NodeFeed, pool: ModelPool, options: RunOptions, on_event: Listener = ignore,
             cancel: threading.Event | None = None) -> Execution:
    """Run nodes as they are fed, each once its parents are done, until the feed is closed and every node has ended."""
    cancel = cancel or threading.Event()
    t0 = time.perf_counter()
    # The nodes fed so far. Node threads read it: it is rebound, never changed in place.
    plan = Plan(question=feed.question, nodes=[])
    experts: dict[int, Expert] = {}
    results: dict[int, NodeResult] = {}
    pending: list[int] = []
    running: set[int] = set()
    stopping: set[int] = set()  # retracted, still running until they notice
    stop_node: dict[int, threading.Event] = {}
    waiters: list[tuple[set[int], threading.Event]] = []  # retractions waiting for their nodes to stop
    held: list[tuple] = []  # fed while retracted nodes still run, maybe under the same ids
    closed = False
    lock = threading.Lock()
    execution = Execution(results, 0.0, t0=t0)
    # A calculation reads a number from each parent: those parents are asked for one. Before the plan is
    # final a node cannot know whether a calculation will follow it, so one that asks for a quantity is asked too.
    numeric: set[int] = set()
    # Nodes whose answers only feed later steps or the aggregator: they end once a sentence states a fact.
    # Node threads read it while the scheduler rebinds it as the plan grows (a running step can become
    # intermediate when the planner writes a step that uses it).
    intermediate: frozenset[int] = frozenset()

    def mark_intermediate() -> None:
        nonlocal intermediate
        fed = {d for n in plan.nodes for d in n.depends_on}
        sinks = [n.id for n in plan.nodes if n.id not in fed]
        # Two or more final steps are combined by the aggregator, unless they are a fan-out that is only listed.
        # Steps added later never undo that: a final step either stays one of two or more, or gains a dependent.
        combined = len(sinks) >= 2 and (bool(fed) or prompts.combines_parts(plan.question))
        intermediate = frozenset(fed | (set(sinks) if combined else set()))

    def take(node: Node, expert: Expert) -> None:
        plan.nodes = [*plan.nodes, node]
        experts[node.id] = expert
        # As the user wrote it (their braces back), even for a step that never runs; one that runs gets its parents' answers in.
        results[node.id] = NodeResult(node.id, readable(node.question), node.depends_on, expert.name)
        stop_node[node.id] = threading.Event()
        if expert.kind == "tool":
            numeric.update(node.depends_on)
        elif not closed and prompts.asks_for_number(node.question):
            numeric.add(node.id)
        pending.append(node.id)
        mark_intermediate()

    def forget(node_id: int) -> None:
        plan.nodes = [n for n in plan.nodes if n.id != node_id]
        execution.discarded.append(results.pop(node_id))
        experts.pop(node_id)
        stop_node.pop(node_id)
        numeric.discard(node_id)
        mark_intermediate()
        with lock:
            execution.events[:] = [e for e in execution.events if e[2] != node_id]

    def handle(message: tuple) -> None:
        nonlocal closed
        kind = message[0]
        if kind in ("node", "close") and (stopping or held):
            held.append(message)
        elif kind == "node":
            take(message[1], message[2])
        elif kind == "close":
            closed = True
            for node, expert in message[1]:
                take(node, expert)
            # The plan is known: a node yet to start is asked for a number only if a calculation uses it.
            exact = {d for n in plan.nodes if experts[n.id].kind == "tool" for d in n.depends_on}
            numeric.difference_update(set(pending) - exact)
        elif kind == "retract":
            first, done = message[1], message[2]
            held[:] = [m for m in held if m[0] != "node" or m[1].id < first]
            for node_id in [i for i in results if i >= first and i not in running]:  # waiting, or already ended
                if node_id in pending:
                    pending.remove(node_id)
                forget(node_id)
            alive = {i for i in running if i >= first}
            for node_id in alive:
                stop_node[node_id].set()
            stopping.update(alive)
            if alive:
                waiters.append((set(alive), done))
            else:
                done.set()
        elif kind == "end":
            node_id = message[1]
            running.discard(node_id)
            if node_id in stopping:
                stopping.discard(node_id)
                forget(node_id)
                for ids, done in waiters:
                    ids.discard(node_id)
                    if not ids:
                        done.set()
                if not stopping:
                    later, held[:] = list(held), []
                    for m in later:
                        handle(m)

    def run_node(node_id: int, threads: int, stop: AnyOf) -> None:
        try:
            _run_node(node_id, threads, stop)
        except BaseException as exc:  # never leave a node pending, nor the scheduler waiting for it
            res = results[node_id]
            if res.status == "pending":
                res.status, res.reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            feed._post(("end", node_id))

    def _run_node(node_id: int, threads: int, cancel: AnyOf) -> None:  # this node's cancel: the run's, or its own
        node, res = plan.node(node_id), results[node_id]
        if experts[node_id].kind == "tool":
            _calculate(node, res, results, t0, on_event)
            return
        answers = {d: results[d].answer or "" for d in node.depends_on}
        res.question = substitute(node.question, answers)
        context = [(substitute(plan.node(d).question, {k: results[k].answer or "" for k in plan.node(d).depends_on}),
                    short_answer(answers[d], options.context_chars)) for d in node.depends_on]
        gen = experts[node_id].generation
        params = Params(max_tokens=options.max_tokens or gen.max_tokens,
                        temperature=gen.temperature if options.temperature is None else options.temperature,
                        seed=options.seed, threads=threads, timeout=options.node_timeout,
                        prefix=1)  # the system prompt is the same for every node: evaluated once, then copied
        started: list[float] = []

        def on_start() -> None:
            started.append(time.perf_counter())
            res.started, res.threads = started[0] - t0, threads
            with lock:
                execution.events.append((started[0] - t0, "start", node_id))
            on_event(NodeStarted(node_id, res.expert, res.question))

        def on_piece(piece: str) -> None:
            res.tokens += 1
            on_event(NodeToken(node_id, piece))

        stated: list[str] = []
        watch = FactWatch(res.question)

        def enough(text: str) -> bool:
            """An intermediate answer is complete once a sentence of it states a fact; the rest only costs time."""
            if node_id not in intermediate:
                return False
            end = watch.end(text)
            if end is not None:
                stated.append(text[:end])
            return end is not None

        try:
            out = generate(pool, experts[node_id], prompts.expert_messages(res.question, context, numeric=node_id in numeric),
                           params, cancel=cancel, on_piece=on_piece, on_start=on_start, stop=enough)
            res.answer = prompts.strip_reasoning(stated[0]) if stated else out.text
            res.tokens, res.status, res.seconds = out.tokens, "done", out.seconds
            on_event(NodeDone(node_id, res.answer, res.seconds, res.tokens))
        except Cancelled:
            res.status, res.reason = "cancelled", "cancelled" if started else "cancelled before it started"
        except Exception as exc:
            res.seconds = time.perf_counter() - started[0] if started else 0.0
            _fail(res, exc, on_event)
        finally:
            if started:
                with lock:
                    execution.events.append((time.perf_counter() - t0, "end", node_id))

    executor = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="complm-node")
    try:
        while True:
            while (message := feed._next(0)) is not None:
                handle(message)
            # Skip what can no longer run: a parent failed, was skipped or cancelled.
            for node_id in list(pending):
                bad = [d for d in plan.node(node_id).depends_on
                       if d not in running and results[d].status in ("failed", "skipped", "cancelled")]
                if bad:
                    pending.remove(node_id)
                    res = results[node_id]
                    why = {"failed": "failed", "skipped": "was skipped", "cancelled": "was cancelled"}[results[bad[0]].status]
                    res.status, res.reason = "skipped", f"depends on step {bad[0]}, which {why}"
                    on_event(NodeFailed(node_id, res.reason, skipped=True))
            # A parent counts once its thread has finished, worker released, not when its status says done:
            # else its child could start while the parent still holds the model and load a second copy.
            ready = [i for i in pending if all(d not in running and results[d].status == "done" for d in plan.node(i).depends_on)]
            # Group by expert: a node whose model is already resident and idle goes first.
            ready.sort(key=lambda i: (not pool.has_idle(experts[i].name), experts[i].name, i))
            slots = max(0, options.workers - len(running))
            if ready and slots and not cancel.is_set():
                starting = ready[:slots]
                share = max(1, options.threads // max(1, len(running) + len(starting) + (not closed)))
                for node_id in starting:
                    pending.remove(node_id)
                    running.add(node_id)
                    executor.submit(run_node, node_id, share, AnyOf(cancel, stop_node[node_id]))
                execution.max_concurrency = max(execution.max_concurrency, len(running))
            if not running:
                if cancel.is_set() or (closed and not pending):
                    break
                if closed and not ready:
                    continue  # the skip pass above resolves them
            # A node that ends or is fed wakes the loop at once; the timeout only keeps Ctrl-C responsive.
            if (message := feed._next(POLL_S)) is not None:
                handle(message)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        for message in held + feed._end():  # fed too late: the run was cancelled
            if message[0] == "retract":
                message[2].set()
            elif message[0] in ("node", "close"):
                for node, expert in ([message[1:]] if message[0] == "node" else message[1]):
                    take(node, expert)
        for _, done in waiters:
            done.set()
        if cancel.is_set():
            for node_id in pending:
                results[node_id].status, results[node_id].reason = "cancelled", "cancelled"
        executor.shutdown(wait=True, cancel_futures=True)
        for res in results.values():  # a node submitted but never picked up by a thread (cancel_futures)
            if res.status == "pending":
                res.status, res.reason = "cancelled", "cancelled before it started"
        execution.seconds = time.perf_counter() - t0
    return execution


def _calculate(node, res: NodeResult, results: dict[int, NodeResult], t0: float, on_event: Listener) -> None:
    """A calculator node: no model, no worker; exact arithmetic over the parents' numbers."""
    from complm_cli.calculator import calculate

    start = time.perf_counter()
    res.started = start - t0
    on_event(NodeStarted(node.id, res.expert, node.question))
    parents = {d: (results[d].question, results[d].answer or "") for d in node.depends_on}
    try:
        calc = calculate(node.question, parents)
    except Exception as exc:
        res.seconds = time.perf_counter() - start
        _fail(res, exc, on_event)
        return
    res.question = calc.expression
    res.answer = calc.result
    res.calculation = {"formula": calc.formula, "expression": calc.expression, "result": calc.result}
    res.status = "done"
    res.seconds = time.perf_counter() - start
    on_event(NodeDone(node.id, res.shown or "", res.seconds, 0))


def _fail(res: NodeResult, exc: BaseException, on_event: Callable) -> None:
    reason = exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}"
    res.status, res.reason = "failed", reason
    on_event(NodeFailed(res.id, reason))
