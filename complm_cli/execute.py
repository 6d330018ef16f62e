"""Query Executor: ready-set scheduling of a plan over a pool of model workers.

Every node whose parents are done is ready; ready nodes run at the same time,
up to `workers`, each on a worker it owns while it runs. Workers of one
model are handles on one batched engine (backends/engine.py), so nodes of
the same model decode together in one batch. The ModelPool keeps models
resident within a memory budget and unloads the least recently used idle
one when another must load.
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
from complm_cli.dag import Plan, short_answer, substitute
from complm_cli.errors import ModelError
from complm_cli.events import Listener, NodeDone, NodeFailed, NodeStarted, NodeToken, ignore
from complm_cli.generate import Cancelled, Params, generate

CONTEXT_CHARS = 600  # of each parent's answer shown to a child, so one long answer cannot crowd the prompt


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
                    while self._memory([*self._idle.values(), *busy, worker]) > self.budget and self._idle:
                        _, old = self._idle.popitem(last=False)
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


def run_plan(plan: Plan, experts: dict[int, Expert], pool: ModelPool, options: RunOptions,
             on_event: Listener = ignore, cancel: threading.Event | None = None) -> Execution:
    """Run every node of `plan` on its expert; `experts` maps node id to the routed expert."""
    cancel = cancel or threading.Event()
    t0 = time.perf_counter()
    results = {n.id: NodeResult(n.id, n.question, n.depends_on, experts[n.id].name) for n in plan.nodes}
    pending = [n.id for n in plan.nodes]
    running: set[int] = set()
    finished: "queue.Queue[int]" = queue.Queue()
    lock = threading.Lock()
    execution = Execution(results, 0.0)
    # A calculation reads a number from each parent: those parents are asked for one.
    numeric = {d for n in plan.nodes if experts[n.id].kind == "tool" for d in n.depends_on}

    def run_node(node_id: int, threads: int) -> None:
        try:
            _run_node(node_id, threads)
        except BaseException as exc:  # never leave a node pending, nor the scheduler waiting for it
            res = results[node_id]
            if res.status == "pending":
                res.status, res.reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            finished.put(node_id)

    def _run_node(node_id: int, threads: int) -> None:
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
                        seed=options.seed, threads=threads, timeout=options.node_timeout)
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

        try:
            out = generate(pool, experts[node_id], prompts.expert_messages(res.question, context, numeric=node_id in numeric),
                           params, cancel=cancel, on_piece=on_piece, on_start=on_start)
            res.answer, res.status, res.seconds = out.text, "done", out.seconds
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
        while pending or running:
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
                share = max(1, options.threads // max(1, len(running) + len(starting)))
                for node_id in starting:
                    pending.remove(node_id)
                    running.add(node_id)
                    executor.submit(run_node, node_id, share)
                execution.max_concurrency = max(execution.max_concurrency, len(running))
            if not running:
                if pending and not ready:
                    continue  # the skip pass above resolves them
                break
            try:
                done_id = finished.get(timeout=0.1)  # short waits keep Ctrl-C responsive
            except queue.Empty:
                continue
            running.discard(done_id)
            while True:
                try:
                    running.discard(finished.get_nowait())
                except queue.Empty:
                    break
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        if cancel.is_set():
            for node_id in pending:
                results[node_id].status, results[node_id].reason = "cancelled", "cancelled"
        executor.shutdown(wait=True, cancel_futures=True)
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
