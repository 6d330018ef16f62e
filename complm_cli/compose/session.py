"""Session: the facade over the four stages, and `ask()`, the one-call library entry point.

    from complm_cli import ask
    print(ask("Who wrote 1984, and what is 17 times 3?").answer)

A Session holds what outlives one question (settings, catalog, the model
pool, the embedder), so `complm eval` and `complm serve` load each model
once. It wires the stages, each with one job: the Planner (planner.py),
Routing (routing.py), the Scheduler over the ModelPool (scheduler.py, pool.py), and the
Aggregator (aggregate.py); a direct answer (monolithic mode) is direct.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from complm_cli.cache.catalog import Catalog, Expert, catalog_for
from complm_cli.cache.config import Settings, load_settings
from complm_cli.cache.needs import models_needed, pull_missing
from complm_cli.cache.progress import PullReporter
from complm_cli.cache.store import Store
from complm_cli.compose import dag
from complm_cli.compose.aggregate import Aggregator, Final
from complm_cli.compose.cancel import Cancel, Cancelled
from complm_cli.compose.dag import Plan
from complm_cli.compose.direct import answer_directly
from complm_cli.compose.execute import run_plan
from complm_cli.compose.knowledge import Knowledge, with_corpora
from complm_cli.compose.modes import MODES, check_mode
from complm_cli.compose.overlap import Overlap, overlap_seconds
from complm_cli.compose.planner import Planner
from complm_cli.compose.pool import ModelPool
from complm_cli.compose.records import Execution, RunOptions
from complm_cli.compose.result import Result, judge
from complm_cli.compose.route import Embedder, Route, Router
from complm_cli.compose.routing import Routing
from complm_cli.errors import UsageError
from complm_cli.events import AnswerDone, Listener, PlanReady, Stage, ignore

__all__ = ["MODES", "Result", "Session", "ask", "check_mode", "check_question", "plan_and_route"]


def check_question(question: str | None) -> str:
    question = (question or "").strip()
    if not question:
        raise UsageError("The question is empty; pass it as an argument or on stdin.")
    return question


def _check_roles(catalog: Catalog, forced: Expert | None, expert: str | None, monolithic: str | None) -> None:
    if forced and forced.kind == "tool":
        raise UsageError(f"'{expert}' is a built-in tool, not a model; calculations go to it without --expert.")
    if forced and forced.kind == "corpus":
        raise UsageError(f"'{expert}' is a corpus, not a model; steps about its passages go to it without --expert.")
    if forced and forced.kind != "llm":
        raise UsageError(f"'{expert}' is an embedder, not an expert that can answer.")
    if monolithic and catalog.get(monolithic).kind != "llm":
        raise UsageError(f"'{monolithic}' is not a model that can answer; name an expert for the direct answer.")


class Session:
    """Everything needed to answer questions; reuse it for many (eval does).

    With `pull` (the default) the models it needs and lacks are pulled first, through
    `pull_missing`, which tells `pull_reporter` how that goes."""

    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None, *,
                 expert: str | None = None, pull: bool = True, pull_reporter: PullReporter | None = None, factory=None,
                 embedder: Embedder | None = None, modes: tuple[str, ...] = MODES, monolithic: str | None = None,
                 corpora: Sequence[str] = ()):
        from complm_cli.experts.waiting import settle

        settle()  # before any model loads: llama.cpp's threads wait for each other as the CPU's load allows
        self.settings = settings or load_settings()
        catalog = catalog or catalog_for(self.settings)
        corpora = [*self.settings.corpora, *corpora]
        self.catalog = with_corpora(catalog, corpora) if corpora else catalog
        # Corpora are opened first: an unknown name is said before any model is pulled or loaded.
        self.knowledge = Knowledge(self.settings.cache_dir, self.catalog, embedder)
        self.store = Store(self.settings)
        self.forced = self.catalog.get(expert) if expert else None
        _check_roles(self.catalog, self.forced, expert, monolithic)
        self.planner = self.catalog.for_role("planner")
        self.aggregator = self.catalog.for_role("aggregator")
        self.fallback = self.catalog.for_role("fallback")
        self.modes = modes
        # The model that answers in monolithic mode, when it is not --expert or the fallback.
        self.monolithic: Expert | None = self.catalog.get(monolithic) if monolithic else None
        if pull:
            pull_missing(self.store, self.needed(), pull_reporter)
        paths = {e.name: self.store.require(e) for e in self.needed() if e.kind == "llm" and e.remote is None}
        if factory is None:
            from complm_cli.experts import default_factory

            factory = default_factory(self.settings)
        self.pool = ModelPool(factory, lambda e: paths.get(e.name) or self.store.require(e), self.settings.memory_budget())
        emb = self.catalog.embedder
        self.embedder = embedder or Embedder(self.store.path(emb), emb.name, threads=1)
        if self.knowledge is not None:
            self.knowledge.embedder = self.embedder
        self.routing = Routing(self.catalog, self.settings, self.embedder, self.forced, self.knowledge or None)
        self._knowing: dict[tuple[str, ...], tuple[Knowledge, Routing]] = {}
        self._knowing_lock = threading.Lock()
        self.planning = Planner(self.planner, self.pool, self.settings, self.routing.claims, self.routing.tools)
        self.aggregation = Aggregator(self.aggregator, self.pool, self.settings)

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Eval and tests change seeds and timeouts between runs: every stage sees the new settings."""
        self._settings = settings
        for stage in (getattr(self, name, None) for name in ("planning", "routing", "aggregation")):
            if stage is not None:
                stage.settings = settings

    @property
    def routable(self) -> list[Expert]:
        return self.routing.routable

    def needed(self) -> list[Expert]:
        name = self.forced.name if self.forced else None
        monolithic = self.monolithic.name if self.monolithic else None
        models = [m for mode in self.modes for m in models_needed(self.catalog, name, mode, monolithic)]
        return list({m.name: m for m in models}.values())

    def warm_up(self) -> None:
        """Start loading the embedder in the background, to overlap with planning."""
        if not self.forced:
            self.embedder.start()

    def router(self) -> Router:
        return self.routing.router()

    def plan(self, question: str, cancel=None, on_text=None, on_event: Listener = ignore) -> Plan:
        return self.planning.plan(question, cancel, on_text, on_event)

    def route(self, plan: Plan) -> dict[int, Route]:
        return self.routing.route(plan)

    def plan_and_route(self, question: str, cancel=None) -> tuple[Plan, dict[int, Route]]:
        """What `complm graph` shows: the plan and where each step would go, nothing run."""
        self.warm_up()
        plan = self.plan(check_question(question), cancel)
        return plan, self.route(plan)

    # --- a run ----------------------------------------------------------------------------

    def knowing(self, corpora: Sequence[str] | None = None) -> tuple[Knowledge, Routing]:
        """The corpora and routing of a run: the session's own, or (a server's request names its corpora)
        the session's with `corpora` added, opened once and kept."""
        extra = tuple(dict.fromkeys(c for c in corpora or () if c not in self.settings.corpora))
        if not extra:
            return self.knowledge, self.routing
        with self._knowing_lock:
            if extra not in self._knowing:
                catalog = with_corpora(self.catalog, list(extra))
                knowledge = Knowledge(self.settings.cache_dir, catalog, self.embedder)
                self._knowing[extra] = (knowledge, Routing(catalog, self.settings, self.embedder, self.forced, knowledge))
            return self._knowing[extra]

    def ask(self, question: str, *, mode: str = "parallel", on_event: Listener = ignore,
            cancel=None, plan: Plan | None = None,
            routes: dict[int, Route] | None = None, workers: int | None = None,
            corpora: Sequence[str] | None = None) -> Result:
        question = check_question(question)
        check_mode(mode)
        cancel = cancel or Cancel()
        start = time.perf_counter()
        knowledge, routing = self.knowing(corpora)
        if mode == "monolithic":
            model = self.forced or self.monolithic or self.fallback
            return answer_directly(question, model, self.pool, self.settings, on_event, cancel, start,
                                   forced=self.forced is not None, knowledge=knowledge or None)
        self.warm_up()
        reused = plan is not None
        options = RunOptions(workers=1 if mode == "sequential" else (workers or self.settings.worker_count()),
                             threads=self.settings.threads, node_timeout=self.settings.node_timeout, seed=self.settings.seed,
                             knowledge=knowledge or None)
        plan, routes, experts, execution, timings, streamed = self._run(question, mode, plan, routes, options, on_event, cancel,
                                                                        routing)
        if cancel.is_set():
            raise Cancelled()
        t = time.perf_counter()
        final = self.aggregation.answer(plan, execution.results, on_event, cancel)
        timings["aggregate_s"] = time.perf_counter() - t
        # A reused plan (eval shares one between modes) still counts in the latency.
        timings["wall_s"] = time.perf_counter() - start + (plan.seconds if reused else 0.0)
        result = self._record(question, mode, plan, routes, experts, execution, timings, final, streamed)
        on_event(AnswerDone(final.answer, result))
        return result

    def _run(self, question: str, mode: str, plan: Plan | None, routes: dict[int, Route] | None, options: RunOptions,
             on_event: Listener, cancel, routing: Routing) -> tuple[Plan, dict[int, Route], dict[int, Expert], Execution, dict, dict | None]:
        """Plan (unless given), route and execute; steps run as the planner writes them (overlap.py), unless
        turned off or the plan is given. Sequential mode never overlaps: it is the baseline, one model call at a time."""
        timings: dict[str, float] = {}
        overlap = None
        try:
            if plan is None:
                on_event(Stage("plan", self.planner.name))
                if self.settings.stream_plan and routes is None and mode == "parallel":
                    overlap = Overlap(dag.escape_user(question), routing.route_step, self.pool, options, on_event, cancel)
                plan = self.plan(question, cancel, on_text=overlap.on_text if overlap else None, on_event=on_event)
            timings["plan_s"] = plan.seconds
            planned = t = time.perf_counter()
            kept = overlap.settle(plan) if overlap is not None else {}
            if routes is None:
                on_event(Stage("route", self.catalog.embedder.name))
                routes = {**kept, **routing.route(Plan(plan.question, [n for n in plan.nodes if n.id not in kept]))}
            timings["route_s"] = time.perf_counter() - t + (overlap.route_s if overlap is not None else 0.0)
            on_event(PlanReady(plan, routes))
            experts = {n.id: routing.catalog.get(routes[n.id].expert) for n in plan.nodes}
            on_event(Stage("execute", mode))
            if overlap is not None and overlap.started:
                execution = overlap.finish([(n, experts[n.id]) for n in plan.nodes if n.id not in kept])
            else:
                if overlap is not None:
                    overlap.abort()  # nothing was streamed: the plan runs as a whole
                execution = run_plan(plan, experts, self.pool, options, on_event, cancel)
        except BaseException:
            if overlap is not None:
                overlap.abort()
            raise
        streamed = overlap is not None and overlap.started
        # Every record has the key; a given plan (eval's shared one) overlaps nothing.
        timings["overlap_s"] = overlap_seconds(execution, planned) if streamed else 0.0
        timings["execute_s"] = execution.seconds
        timings["nodes_sum_s"] = sum(r.seconds for r in execution.results.values())
        return plan, routes, experts, execution, timings, overlap.report() if streamed else None

    def _record(self, question: str, mode: str, plan: Plan, routes: dict[int, Route], experts: dict[int, Expert],
                execution: Execution, timings: dict, final: Final, streamed: dict | None) -> Result:
        results = execution.results
        nodes = [results[n.id] for n in plan.nodes]
        status, reason = judge(final.answer, nodes, final.cut)
        node_tokens = sum(r.tokens for r in results.values())
        used = {self.planner.name, *(e.name for e in experts.values())} | ({self.aggregator.name} if final.aggregated else set())
        return Result(
            question=question, mode=mode, answer=final.answer, status=status, reason=reason, plan=plan, routes=routes,
            nodes=nodes, timings=timings,
            tokens={"plan": plan.tokens, "nodes": node_tokens, "aggregate": final.tokens,
                    "total": plan.tokens + node_tokens + final.tokens},
            aggregated=final.aggregated, experts=sorted(used), memory=self.pool.peak, restored=final.restored,
            streamed=streamed,
        )

    def close(self, wait: bool = True) -> None:
        """Unload every model, the embedder too (`wait=False`: without waiting for its load to finish)."""
        self.pool.close()
        for knowledge in [self.knowledge, *(k for k, _ in self._knowing.values())]:
            knowledge.close()
        if wait:
            self.embedder.close()  # an embedder a library caller gave may know no `wait`
        else:
            self.embedder.close(wait=False)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ask(question: str, *, mode: str = "parallel", expert: str | None = None, settings: Settings | None = None,
        on_event: Listener = ignore, **overrides: Any) -> Result:
    """Answer one question with the whole pipeline; missing models are pulled first."""
    settings = (settings or load_settings()).replace(**overrides)
    with Session(settings, expert=expert, modes=(mode,)) as session:
        return session.ask(question, mode=mode, on_event=on_event)


def plan_and_route(question: str, *, expert: str | None = None, settings: Settings | None = None) -> tuple[Plan, dict[int, Route]]:
    """Plan and route without executing (what `complm graph` shows)."""
    with Session(settings or load_settings(), expert=expert, modes=("plan",)) as session:
        return session.plan_and_route(question)
