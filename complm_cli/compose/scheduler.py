"""The Scheduler: ready-set scheduling of the nodes fed to it, on a pool of model workers.

Every node whose parents are done is ready; ready nodes run at the same time,
up to `workers`, each on a worker it holds while it runs. Nodes arrive
through a `NodeFeed`: all at once (`run_plan`), or one by one while the
planner still writes the plan (overlap.py), which then closes the feed.

The scheduler's state (the nodes fed, their results, what is pending,
running, retracted) belongs to the one thread that calls `run()`. Node
threads get an immutable `NodeTask` and report only through the feed's
queue ("started", "end"); the feed's own messages (a node, the close, a
retraction) come through the same queue. The thread sleeps on that queue:
a node ending, a node fed, or the run's cancel (`Cancel.subscribe`) wakes it.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from complm_cli.cache.catalog import Expert
from complm_cli.compose import prompts
from complm_cli.compose.aggregate import must_combine
from complm_cli.compose.cancel import AnyOf, Cancel, subscribe, wakes
from complm_cli.compose.dag import Node, Plan, readable, short_answer, substitute
from complm_cli.compose.node import NodeTask, Outcome, run_task
from complm_cli.compose.records import Execution, NodeResult, RunOptions
from complm_cli.events import Listener, NodeFailed, ignore

# How often a scheduler whose cancel is a plain threading.Event (which cannot wake it) looks at it.
POLL_S = 0.1
REMOTE_THREADS = 16  # remote nodes running at once, over all endpoints (each also bounded by its max_parallel)
_WHY = {"failed": "failed", "skipped": "was skipped", "cancelled": "was cancelled"}


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
        self._inbox: "queue.Queue[tuple]" = queue.Queue()  # the scheduler's one queue: node threads report here too
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

    def post(self, message: tuple) -> None:
        """A node thread's report, or a wake-up; taken even after the feed has ended."""
        self._inbox.put(message)

    def next(self, timeout: float | None = None, block: bool = True) -> tuple | None:
        try:
            return self._inbox.get(block, timeout)
        except queue.Empty:
            return None

    def end(self) -> list[tuple]:
        """The scheduler stops: later feeding raises; what was still queued is returned."""
        with self._lock:
            self._ended = True
            rest = []
            while (message := self.next(block=False)) is not None:
                rest.append(message)
            return rest


class Scheduler:
    """Runs the nodes of one feed; `run()` returns once the feed is closed and every node has ended."""

    def __init__(self, feed: NodeFeed, pool, options: RunOptions, on_event: Listener = ignore, cancel=None):
        self.feed, self.pool, self.options, self.on_event = feed, pool, options, on_event
        self.cancel = cancel if cancel is not None else Cancel()
        self.t0 = time.perf_counter()
        self.plan = Plan(question=feed.question, nodes=[])  # the nodes fed so far
        self.experts: dict[int, Expert] = {}
        self.results: dict[int, NodeResult] = {}
        self.execution = Execution(self.results, 0.0, t0=self.t0)
        self.pending: list[int] = []
        self.running: set[int] = set()
        self.stopping: set[int] = set()  # retracted, still running until they notice
        self.stop_node: dict[int, Cancel] = {}
        self.intermediate_flag: dict[int, threading.Event] = {}
        self.waiters: list[tuple[set[int], threading.Event]] = []  # retractions waiting for their nodes to stop
        self.held: list[tuple] = []  # fed while retracted nodes still run, maybe under the same ids
        self.closed = False
        # A calculation reads a number from each parent: those parents are asked for one. Before the plan is
        # final a node cannot know whether a calculation will follow it, so one that asks for a quantity is asked too.
        self.numeric: set[int] = set()
        # Nodes whose answers only feed later steps or the aggregator: they may end once a sentence states a fact.
        self.intermediate: frozenset[int] = frozenset()

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> Execution:
        # Remote nodes do not count against `workers` (their endpoints have capacities of their own), so the
        # threads are bounded by what `_start_ready` lets start, not here.
        executor = ThreadPoolExecutor(max_workers=max(1, self.options.workers) + REMOTE_THREADS,
                                      thread_name_prefix="complm-node")
        unsubscribe = subscribe(self.cancel, lambda: self.feed.post(("wake",)))
        wait = None if wakes(self.cancel) else POLL_S
        try:
            while True:
                while (message := self.feed.next(block=False)) is not None:
                    self.handle(message)
                self._skip_blocked()
                ready = self._start_ready(executor)
                if not self.running:
                    if self.cancel.is_set() or (self.closed and not self.pending):
                        break
                    if self.closed and not ready:
                        continue  # the skip pass resolves them
                if (message := self.feed.next(wait)) is not None:
                    self.handle(message)
        except KeyboardInterrupt:
            self.cancel.set()
            raise
        finally:
            unsubscribe()
            self._wind_down(executor)
        return self.execution

    def _skip_blocked(self) -> None:
        """Skip what can no longer run: a parent failed, was skipped or cancelled."""
        for node_id in list(self.pending):
            bad = [d for d in self.plan.node(node_id).depends_on
                   if d not in self.running and self.results[d].status in _WHY]
            if bad:
                self.pending.remove(node_id)
                res = self.results[node_id]
                res.status, res.reason = "skipped", f"depends on step {bad[0]}, which {_WHY[self.results[bad[0]].status]}"
                self.on_event(NodeFailed(node_id, res.reason, skipped=True))

    def _start_ready(self, executor: ThreadPoolExecutor) -> list[int]:
        # A parent counts once its thread has finished, worker released, not when its status says done:
        # else its child could start while the parent still holds the model and load a second copy.
        ready = [i for i in self.pending
                 if all(d not in self.running and self.results[d].status == "done" for d in self.plan.node(i).depends_on)]
        # Group by expert: a node whose model is already resident and idle goes first.
        ready.sort(key=lambda i: (not self.pool.has_idle(self.experts[i].name), self.experts[i].name, i))
        starting = [] if self.cancel.is_set() else self._to_start(ready)
        if starting:
            local = [i for i in [*self.running, *starting] if self.experts[i].remote is None]
            share = max(1, self.options.threads // max(1, len(local) + (not self.closed)))
            for node_id in starting:
                self.pending.remove(node_id)
                self.running.add(node_id)
                task = self._task(node_id, share)
                executor.submit(self._work, task)
            self.execution.max_concurrency = max(self.execution.max_concurrency, len(self.running))
        return ready

    def _to_start(self, ready: list[int]) -> list[int]:
        """Of the ready nodes, those that may start now: local ones (models here, tools) up to `workers` running at
        once; remote ones up to their endpoint's `max_parallel`, whatever runs here (`--workers` is this machine's)."""
        local_slots = self.options.workers - sum(self.experts[i].remote is None for i in self.running)
        busy: dict[tuple[str, str], int] = {}
        for i in self.running:
            if (spec := self.experts[i].remote) is not None:
                busy[spec.endpoint] = busy.get(spec.endpoint, 0) + 1
        starting = []
        for i in ready:
            spec = self.experts[i].remote
            if spec is None and local_slots > 0:
                local_slots -= 1
                starting.append(i)
            elif spec is not None and busy.get(spec.endpoint, 0) < min(spec.max_parallel, REMOTE_THREADS):
                busy[spec.endpoint] = busy.get(spec.endpoint, 0) + 1
                starting.append(i)
        return starting

    def _work(self, task: NodeTask) -> None:
        """A node thread: runs the task and reports; it touches nothing of the scheduler's."""
        outcome = Outcome("failed", reason="the node's thread ended without an outcome")
        try:
            outcome = run_task(task, self.pool, self.on_event, lambda t: self.feed.post(("started", task.id, t, task.threads)))
        finally:
            self.feed.post(("end", task.id, outcome))

    def _task(self, node_id: int, threads: int) -> NodeTask:
        node, res, opts = self.plan.node(node_id), self.results[node_id], self.options
        answers = {d: self.results[d].answer or "" for d in node.depends_on}
        if self.experts[node_id].kind != "tool":
            res.question = substitute(node.question, answers)
        context = tuple((substitute(self.plan.node(d).question, {k: self.results[k].answer or ""
                                                                 for k in self.plan.node(d).depends_on}),
                         short_answer(answers[d], opts.context_chars)) for d in node.depends_on)
        flag = self.intermediate_flag[node_id] = threading.Event()
        if node_id in self.intermediate:
            flag.set()
        return NodeTask(node_id, res.question if self.experts[node_id].kind != "tool" else node.question,
                        self.experts[node_id], context,
                        tuple((d, self.results[d].question, self.results[d].answer or "") for d in node.depends_on),
                        node_id in self.numeric, threads, flag, AnyOf(self.cancel, self.stop_node[node_id]), self.t0,
                        max_tokens=opts.max_tokens, temperature=opts.temperature, seed=opts.seed, timeout=opts.node_timeout,
                        knowledge=opts.knowledge)

    # --- messages ------------------------------------------------------------------------

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind in ("node", "close") and (self.stopping or self.held):
            self.held.append(message)
        elif kind == "node":
            self._take(message[1], message[2])
        elif kind == "close":
            self._close(message[1])
        elif kind == "retract":
            self._retract(message[1], message[2])
        elif kind == "started":
            self._started(*message[1:])
        elif kind == "end":
            self._ended(message[1], message[2])

    def _take(self, node: Node, expert: Expert) -> None:
        self.plan.nodes = [*self.plan.nodes, node]
        self.experts[node.id] = expert
        # As the user wrote it (their braces back), even for a step that never runs; one that runs gets its parents' answers in.
        self.results[node.id] = NodeResult(node.id, readable(node.question), node.depends_on, expert.name)
        self.stop_node[node.id] = Cancel()
        if expert.kind == "tool":
            self.numeric.update(node.depends_on)
        elif not self.closed and prompts.asks_for_number(node.question):
            self.numeric.add(node.id)
        self.pending.append(node.id)
        self._mark_intermediate()

    def _close(self, last: list[tuple[Node, Expert]]) -> None:
        self.closed = True
        for node, expert in last:
            self._take(node, expert)
        # The plan is known: a node yet to start is asked for a number only if a calculation uses it.
        exact = {d for n in self.plan.nodes if self.experts[n.id].kind == "tool" for d in n.depends_on}
        self.numeric.difference_update(set(self.pending) - exact)

    def _retract(self, first: int, done: threading.Event) -> None:
        self.held[:] = [m for m in self.held if m[0] != "node" or m[1].id < first]
        for node_id in [i for i in self.results if i >= first and i not in self.running]:  # waiting, or already ended
            if node_id in self.pending:
                self.pending.remove(node_id)
            self._forget(node_id)
        alive = {i for i in self.running if i >= first}
        for node_id in alive:
            self.stop_node[node_id].set()
        self.stopping.update(alive)
        if alive:
            self.waiters.append((set(alive), done))
        else:
            done.set()

    def _started(self, node_id: int, at: float, threads: int) -> None:
        res = self.results.get(node_id)
        if res is not None and node_id in self.running:
            res.started, res.threads = at - self.t0, threads
            self.execution.events.append((at - self.t0, "start", node_id))

    def _ended(self, node_id: int, outcome: Outcome) -> None:
        self.running.discard(node_id)
        self._record(node_id, outcome)
        if node_id not in self.stopping:
            return
        self.stopping.discard(node_id)
        self._forget(node_id)
        for ids, done in self.waiters:
            ids.discard(node_id)
            if not ids:
                done.set()
        if not self.stopping:
            later, self.held[:] = list(self.held), []
            for message in later:
                self.handle(message)

    def _record(self, node_id: int, outcome: Outcome) -> None:
        res = self.results[node_id]
        res.status, res.answer, res.reason = outcome.status, outcome.answer, outcome.reason
        res.seconds, res.tokens, res.calculation, res.cut = outcome.seconds, outcome.tokens, outcome.calculation, outcome.cut
        res.sources, res.not_found = outcome.sources, outcome.not_found
        if outcome.question is not None:
            res.question = outcome.question
        if outcome.started is not None and res.started is None:
            res.started = outcome.started - self.t0
        if outcome.ended is not None:
            self.execution.events.append((outcome.ended - self.t0, "end", node_id))

    def _forget(self, node_id: int) -> None:
        self.plan.nodes = [n for n in self.plan.nodes if n.id != node_id]
        self.execution.discarded.append(self.results.pop(node_id))
        self.experts.pop(node_id)
        self.stop_node.pop(node_id)
        self.intermediate_flag.pop(node_id, None)
        self.numeric.discard(node_id)
        self._mark_intermediate()
        self.execution.events[:] = [e for e in self.execution.events if e[2] != node_id]

    def _mark_intermediate(self) -> None:
        fed = {d for n in self.plan.nodes for d in n.depends_on}
        sinks = {n.id for n in self.plan.nodes if n.id not in fed}
        self.intermediate = frozenset(fed | (sinks if must_combine(self.plan) else set()))
        for node_id, flag in self.intermediate_flag.items():  # tell the running nodes
            if node_id in self.intermediate:
                flag.set()
            else:
                flag.clear()

    # --- the end -------------------------------------------------------------------------

    def _wind_down(self, executor: ThreadPoolExecutor) -> None:
        for message in self.held + self.feed.end():  # fed too late: the run was cancelled
            if message[0] == "retract":
                message[2].set()
            elif message[0] == "node":
                self._take(message[1], message[2])
            elif message[0] == "close":
                for node, expert in message[1]:
                    self._take(node, expert)
            elif message[0] in ("started", "end"):
                self.handle(message)
        for _, done in self.waiters:
            done.set()
        if self.cancel.is_set():
            for node_id in self.pending:
                self.results[node_id].status, self.results[node_id].reason = "cancelled", "cancelled"
        executor.shutdown(wait=True, cancel_futures=True)
        while (message := self.feed.next(block=False)) is not None:  # the reports of nodes that were still running
            if message[0] in ("started", "end"):
                self.handle(message)
        for res in self.results.values():  # a node submitted but never picked up by a thread (cancel_futures)
            if res.status == "pending":
                res.status, res.reason = "cancelled", "cancelled before it started"
        self.execution.events.sort(key=lambda e: e[0])
        self.execution.seconds = time.perf_counter() - self.t0
