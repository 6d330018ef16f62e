"""Planning and execution at the same time: steps run while the planner writes the rest.

The planner's text goes to a StepRelease (plan_stream.py) after each token.
A step it releases is routed in a thread of its own, so that the planner
never waits for the embedder, and fed to a scheduler that runs in another
thread (execute.run_feed), started by the first step. Once make_plan has
returned (the one-node fallback included), `settle` compares: released
steps that are the first steps of the final plan (same id, text and
dependencies) are kept; from the first that differs on, every released step
is discarded, cancelled if it runs. The caller routes the rest and hands it
over with `finish`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

from complm_cli.cache.catalog import Expert
from complm_cli.compose.dag import Node, Plan
from complm_cli.events import Listener, StepPlanned
from complm_cli.compose.cancel import AnyOf, Cancel, Cancelled
from complm_cli.compose.execute import run_feed
from complm_cli.compose.pool import ModelPool
from complm_cli.compose.records import Execution, RunOptions
from complm_cli.compose.scheduler import NodeFeed
from complm_cli.compose.plan_stream import StepRelease
from complm_cli.compose.route import Route


class Overlap:
    def __init__(self, question: str, route: Callable[[Node], tuple[Route, Expert]], pool: ModelPool,
                 options: RunOptions, on_event: Listener, cancel: threading.Event):
        self.release = StepRelease(question)
        self.feed = NodeFeed(question)
        self.route, self.pool, self.options, self.on_event = route, pool, options, on_event
        self.stop = Cancel()  # ours: a failed plan stops the streamed steps without setting the caller's cancel
        self.cancel = AnyOf(cancel, self.stop)
        self.routes: dict[int, Route] = {}
        self.fed: list[Node] = []
        self.kept = 0
        self.discarded: list[int] = []
        self.route_s = 0.0
        self._todo: "queue.Queue[Node | None]" = queue.Queue()
        self._routing_failed = False
        self._runner: threading.Thread | None = None
        self._execution: Execution | None = None
        self._error: BaseException | None = None
        self._router = threading.Thread(target=self._route_released, name="complm-route", daemon=True)
        self._router.start()

    @property
    def started(self) -> bool:
        return self._runner is not None

    def on_text(self, partial: str) -> None:
        """The planner's reply so far; called by the planner's thread after each token."""
        for node in self.release.feed(partial):
            self._todo.put(node)

    def _route_released(self) -> None:
        while (node := self._todo.get()) is not None:
            if self._routing_failed or self.cancel.is_set():
                continue
            t = time.perf_counter()
            try:
                route, expert = self.route(node)
            except Exception:  # the rest is routed with the final plan, where the error is reported
                self._routing_failed = True
                continue
            finally:
                self.route_s += time.perf_counter() - t
            self.routes[node.id] = route
            self.on_event(StepPlanned(node, route))
            self._start()
            try:
                self.feed.add(node, expert)
            except (RuntimeError, ValueError):  # the run has ended (cancelled), or a parent was not fed
                continue
            self.fed.append(node)

    def _start(self) -> None:
        if self._runner is None:
            self._runner = threading.Thread(target=self._run, name="complm-schedule", daemon=True)
            self._runner.start()

    def _run(self) -> None:
        try:
            self._execution = run_feed(self.feed, self.pool, self.options, self.on_event, self.cancel)
        except BaseException as exc:  # re-raised by finish() in the caller's thread
            self._error = exc

    def settle(self, plan: Plan) -> dict[int, Route]:
        """Take the final plan: keep the released steps it begins with, discard the others.

        Returns the kept steps' routes; returns once no discarded step runs any more."""
        self._todo.put(None)
        self._router.join()
        self.kept = 0
        for mine, final in zip(self.fed, plan.nodes):
            if mine != final:
                break
            self.kept += 1
        dropped = self.fed[self.kept:]
        if dropped:
            self.discarded = [n.id for n in dropped]
            done = self.feed.retract(dropped[0].id)
            while not done.wait(0.1) and self._runner is not None and self._runner.is_alive():
                pass
        return {n.id: self.routes[n.id] for n in self.fed[: self.kept]}

    def finish(self, rest: list[tuple[Node, Expert]]) -> Execution:
        """The final plan's remaining steps (after `settle`); waits for the whole run."""
        self._start()
        try:
            self.feed.close(rest)
        except RuntimeError:  # the run already ended (cancelled, or it failed): that is the error to report
            self._runner.join()
            if self._error is not None:
                raise self._error from None
            raise Cancelled() from None
        while self._runner.is_alive():
            self._runner.join(0.1)  # short joins keep Ctrl-C responsive
        if self._error is not None:
            raise self._error
        return self._execution

    def abort(self) -> None:
        """Stop what was streamed (the planner failed, or Ctrl-C) and wait for it to stop."""
        self.stop.set()
        self._todo.put(None)
        self._router.join(5.0)  # routing a step may wait for the embedder; it is a daemon
        if self._runner is not None:
            self._runner.join()

    def report(self) -> dict:
        return {"released": len(self.release.released), "kept": self.kept, "discarded": self.discarded,
                "stopped": self.release.stopped}


def overlap_seconds(execution: Execution, plan_end: float) -> float:
    """How long nodes of the final plan ran while the planner was still planning (their intervals' union)."""
    spans = sorted((execution.t0 + r.started, min(plan_end, execution.t0 + r.started + r.seconds))
                   for r in execution.results.values() if r.started is not None)
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total
