"""ask(): plan -> route -> execute -> aggregate, in each mode.

`Session` holds what outlives one question (settings, catalog, the model
pool, the embedder), so `complm eval` loads each model once; `ask()` is the
one-call library entry point:

    from complm_cli import ask
    print(ask("Who wrote 1984, and what is 17 times 3?").answer)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from complm_cli.compose import prompts
from complm_cli.experts import calculator
from complm_cli.compose import dag
from complm_cli.compose.aggregate import aggregation_messages, direct_answer, repair
from complm_cli.cache.catalog import Catalog, Expert, catalog_for
from complm_cli.cache.config import Settings, load_settings
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.drafts import PlanDraft
from complm_cli.errors import UsageError
from complm_cli.events import AnswerDone, AnswerToken, Listener, PlanReady, Stage, ignore
from complm_cli.compose.cancel import Cancel, Cancelled
from complm_cli.compose.execute import run_plan
from complm_cli.compose.generate import Params, generate
from complm_cli.compose.pool import ModelPool
from complm_cli.compose.records import NodeResult, RunOptions
from complm_cli.compose.overlap import Overlap, overlap_seconds
from complm_cli.compose.plan import MAX_PLAN_TOKENS, copies_question, make_plan, plan_finished, single_node
from complm_cli.cache.progress import PullReporter
from complm_cli.compose.route import Embedder, Route, Router, VectorCache
from complm_cli.cache.store import Installed, Store

MODES = ("parallel", "sequential", "monolithic")  # what `ask` runs; models_needed also knows "plan"


@dataclass
class Result:
    question: str
    mode: str
    answer: str
    status: str  # ok | partial | failed
    plan: Plan | None
    routes: dict[int, Route]
    nodes: list[NodeResult]
    timings: dict[str, float]
    tokens: dict[str, int]
    aggregated: bool
    experts: list[str] = field(default_factory=list)  # models used
    restored: list[int] = field(default_factory=list)  # final nodes the aggregator left out, put back
    memory: int = 0  # peak resident model bytes (estimated)
    streamed: dict | None = None  # steps run while the planner wrote: released, kept, discarded (None: not streamed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "mode": self.mode,
            "answer": self.answer,
            "status": self.status,
            "aggregated": self.aggregated,
            "restored_parts": self.restored,
            "plan_fallback": self.plan.fallback if self.plan else None,
            "plan_repairs": self.plan.repairs if self.plan else [],
            "plan_stream": self.streamed,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "tokens": self.tokens,
            "experts": self.experts,
            "memory_bytes": self.memory,
            "nodes": [
                {
                    "id": n.id,
                    "question": n.question,
                    "depends_on": list(n.depends_on),
                    "expert": n.expert,
                    "score": round(self.routes[n.id].score, 4) if n.id in self.routes else None,
                    "route": self.routes[n.id].reason if n.id in self.routes else None,
                    "calculation": n.calculation,
                    "answer": n.answer,
                    "status": n.status,
                    "reason": n.reason,
                    "started_s": round(n.started, 3) if n.started is not None else None,
                    "seconds": round(n.seconds, 3),
                    "tokens": n.tokens,
                    "tokens_per_s": round(n.tokens_per_second, 2),
                }
                for n in self.nodes
            ],
        }


def models_needed(catalog: Catalog, expert: str | None = None, mode: str = "parallel",
                  monolithic: str | None = None) -> list[Expert]:
    """Every model a run may use, the embedder included (what `ask` pulls on first use)."""
    if mode == "monolithic":
        return [catalog.get(expert or monolithic) if (expert or monolithic) else catalog.for_role("fallback")]
    if mode == "plan":  # `complm graph`: plan and route, run nothing
        return [catalog.for_role("planner"), catalog.embedder]
    models = [catalog.for_role(r) for r in ("planner", "aggregator", "fallback")]
    models += catalog.routable() if not expert else [catalog.get(expert)]
    models.append(catalog.embedder)
    return list({m.name: m for m in models}.values())


def pull_missing(store: Store, models: list[Expert], reporter: PullReporter | None = None) -> list[Installed]:
    """Pull those of `models` that are not in the cache yet; return what was pulled.

    The one place a run fetches what it lacks: `Session(pull=True)`, hence `ask()`,
    `plan_and_route()` and the CLI's `ask`, `graph`, `eval` and `serve` (which pass a
    reporter that draws bars). Only local model files count: a remote expert or a
    tool has nothing to pull. Offline, nothing is pulled and nothing is asked of the
    network; the run then stops at the first model that is not there (exit 4).
    """
    if store.settings.offline:
        return []
    missing = [m for m in {m.name: m for m in models}.values() if m.pullable and not store.is_pulled(m)]
    if not missing:
        return []
    reporter = reporter or PullReporter()
    reporter.missing(missing)
    pulled = []
    for model in missing:
        progress = reporter.progress(model)
        try:
            installed = store.pull(model, progress=progress)
        finally:
            progress.close()
        reporter.pulled(installed)
        pulled.append(installed)
    return pulled


class Session:
    """Everything needed to answer questions; reuse it for many (eval does).

    With `pull` (the default) the models it needs and lacks are pulled first, through
    `pull_missing`, which tells `pull_reporter` how that goes."""

    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None, *,
                 expert: str | None = None, pull: bool = True, pull_reporter: PullReporter | None = None, factory=None,
                 embedder: Embedder | None = None, modes: tuple[str, ...] = MODES, monolithic: str | None = None):
        self.settings = settings or load_settings()
        self.catalog = catalog or catalog_for(self.settings)
        self.store = Store(self.settings)
        self.forced = self.catalog.get(expert) if expert else None
        self.planner = self.catalog.for_role("planner")
        self.aggregator = self.catalog.for_role("aggregator")
        self.fallback = self.catalog.for_role("fallback")
        self.routable = self.catalog.routable()
        self.calculator = next((t for t in self.catalog.tools() if t.tool == "calculator"), None)
        if self.forced and self.forced.kind == "tool":
            raise UsageError(f"'{expert}' is a built-in tool, not a model; calculations go to it without --expert.")
        if self.forced and self.forced.kind != "llm":
            raise UsageError(f"'{expert}' is an embedder, not an expert that can answer.")
        if monolithic and self.catalog.get(monolithic).kind != "llm":
            raise UsageError(f"'{monolithic}' is not a model that can answer; name an expert for the direct answer.")
        self.modes = modes
        self._monolithic_name = monolithic
        if pull:
            pull_missing(self.store, self.needed(), pull_reporter)
        self._paths = {e.name: self.store.require(e) for e in self.needed() if e.kind == "llm" and e.remote is None}
        if factory is None:
            from complm_cli.experts import default_factory

            factory = default_factory(self.settings)
        self.pool = ModelPool(factory, lambda e: self._paths.get(e.name) or self.store.require(e), self.settings.memory_budget())
        emb = self.catalog.embedder
        self.embedder = embedder or Embedder(self.store.path(emb), emb.name, threads=1)
        self._router: Router | None = None
        # The model that answers in monolithic mode, when it is not --expert or the fallback.
        self.monolithic: Expert | None = self.catalog.get(monolithic) if monolithic else None

    def needed(self) -> list[Expert]:
        name = self.forced.name if self.forced else None
        models = [m for mode in self.modes for m in models_needed(self.catalog, name, mode, self._monolithic_name)]
        return list({m.name: m for m in models}.values())

    def warm_up(self) -> None:
        """Start loading the embedder in the background, to overlap with planning."""
        if not self.forced:
            self.embedder.start()

    def router(self) -> Router:
        if self._router is None:
            threshold = self.settings.route_threshold if self.settings.route_threshold is not None else self.catalog.route_threshold
            cache = VectorCache(self.settings.cache_dir / "embeddings", f"{self.catalog.embedder.name}-{(self.catalog.embedder.sha256 or '')[:12]}")
            self._router = Router(self.routable, self.fallback, self.embedder, cache, threshold)
        return self._router

    def _generate(self, expert: Expert, messages: list[dict], *, max_tokens: int,
                  temperature: float, on_token=None, cancel: threading.Event | None = None, prefix: int = 0,
                  stop=None, draft=None, on_start=None) -> tuple[str, int]:
        """The planner's, the aggregator's and monolithic generation: the same path as a node's (generate.py)."""
        params = Params(max_tokens=max_tokens, temperature=temperature, seed=self.settings.seed,
                        threads=self.settings.threads, prefix=prefix, timeout=self.settings.node_timeout,
                        draft=draft)
        out = generate(self.pool, expert, messages, params, cancel=cancel, on_piece=on_token, stop=stop, on_start=on_start)
        return out.text, out.tokens

    # --- the four parts -----------------------------------------------------------

    def plan(self, question: str, cancel: threading.Event | None = None, on_text=None) -> Plan:
        """`on_text(reply so far)` sees the planner's reply grow, token by token."""

        def generate(messages: list[dict], question: str) -> tuple[str, int]:
            def stop(partial: str) -> bool:
                if on_text is not None:
                    on_text(partial)
                return copies_question(partial, question) or plan_finished(partial)

            text, tokens = self._generate(self.planner, messages, max_tokens=MAX_PLAN_TOKENS, temperature=0.0,
                                          cancel=cancel, prefix=prompts.planner_prefix_length(), stop=stop,
                                          draft=PlanDraft(question) if self.settings.draft else None)
            if copies_question(text, question):
                text = json.dumps({"steps": [{"q": question, "deps": []}]})
            return text, tokens

        # The planner sees the user's own braces and #N escaped (see dag.escape_user); the
        # plan's steps keep them escaped until they are sent to an expert or shown.
        escaped = dag.escape_user(question)
        plan = make_plan(escaped, lambda messages: generate(messages, escaped))
        plan.question = question
        return plan

    def route(self, plan: Plan) -> dict[int, Route]:
        """Calculations go to the calculator; the rest to --expert, or by embedding similarity."""
        routes: dict[int, Route] = {}
        for n in plan.nodes:
            formula = calculator.to_formula(n.question) if self.calculator else None
            if formula:
                routes[n.id] = Route(self.calculator.name, 1.0, {}, "calculation", formula)
            elif self.forced:
                routes[n.id] = Route(self.forced.name, 1.0, {}, "forced")
        rest = [n for n in plan.nodes if n.id not in routes]
        if rest:
            routes.update(zip((n.id for n in rest), self.router().route([dag.readable(n.question) for n in rest])))
        return routes

    def _route_step(self, node: Node) -> tuple[Route, Expert]:
        route = self.route(Plan("", [node]))[node.id]
        return route, self.catalog.get(route.expert)

    def ask(self, question: str, *, mode: str = "parallel", on_event: Listener = ignore,
            cancel: threading.Event | None = None, plan: Plan | None = None,
            routes: dict[int, Route] | None = None, workers: int | None = None) -> Result:
        question = (question or "").strip()
        if not question:
            raise UsageError("The question is empty; pass it as an argument or on stdin.")
        if mode not in MODES:
            raise UsageError(f"Unknown mode '{mode}'; use one of {', '.join(MODES)}.")
        cancel = cancel or Cancel()
        start = time.perf_counter()
        if mode == "monolithic":
            return self._monolithic(question, on_event, cancel, start)
        self.warm_up()
        timings: dict[str, float] = {}
        reused = plan is not None
        options = RunOptions(workers=1 if mode == "sequential" else (workers or self.settings.worker_count()),
                             threads=self.settings.threads, node_timeout=self.settings.node_timeout, seed=self.settings.seed)
        # Steps run as the planner writes them (plan_stream.py), unless turned off or the plan is given.
        # Sequential mode never overlaps: it is the baseline, one model call at a time.
        overlap = None
        try:
            if plan is None:
                on_event(Stage("plan", self.planner.name))
                if self.settings.stream_plan and routes is None and mode == "parallel":
                    overlap = Overlap(dag.escape_user(question), self._route_step, self.pool, options, on_event, cancel)
                plan = self.plan(question, cancel, on_text=overlap.on_text if overlap else None)
            timings["plan_s"] = plan.seconds
            planned = t = time.perf_counter()
            kept = overlap.settle(plan) if overlap is not None else {}
            if routes is None:
                on_event(Stage("route", self.catalog.embedder.name))
                routes = {**kept, **self.route(Plan(plan.question, [n for n in plan.nodes if n.id not in kept]))}
            timings["route_s"] = time.perf_counter() - t + (overlap.route_s if overlap is not None else 0.0)
            on_event(PlanReady(plan, routes))
            experts = {n.id: self.catalog.get(routes[n.id].expert) for n in plan.nodes}
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
        # Every record has the key; a given plan (eval's shared one) overlaps nothing.
        timings["overlap_s"] = overlap_seconds(execution, planned) if overlap is not None and overlap.started else 0.0
        if cancel.is_set():
            raise Cancelled()
        results = execution.results
        timings["execute_s"] = execution.seconds
        timings["nodes_sum_s"] = sum(r.seconds for r in results.values())
        t = time.perf_counter()
        done = [r for r in results.values() if r.status == "done"]
        agg_tokens = 0
        restored: list[int] = []
        direct = direct_answer(plan, results)
        aggregated = direct is None and bool(done)
        if direct is not None:
            answer = direct
        elif not done:
            answer = ""
        else:
            on_event(Stage("aggregate", self.aggregator.name))
            answer, agg_tokens = self._aggregate(plan, results, on_event, cancel)
            if answer.strip():  # an empty answer stays a failure: there is nothing to repair
                answer, restored = repair(answer, plan, results)
        timings["aggregate_s"] = time.perf_counter() - t
        # A reused plan (eval shares one between modes) still counts in the latency.
        timings["wall_s"] = time.perf_counter() - start + (plan.seconds if reused else 0.0)
        if not answer:
            status = "failed"
        else:
            status = "ok" if len(done) == len(results) else "partial"
        result = Result(
            question=question, mode=mode, answer=answer, status=status, plan=plan, routes=routes,
            nodes=[results[n.id] for n in plan.nodes], timings=timings,
            tokens={"plan": plan.tokens, "nodes": sum(r.tokens for r in results.values()), "aggregate": agg_tokens,
                    "total": plan.tokens + sum(r.tokens for r in results.values()) + agg_tokens},
            aggregated=aggregated,
            experts=sorted({self.planner.name, *(e.name for e in experts.values())} | ({self.aggregator.name} if aggregated else set())),
            memory=self.pool.peak, restored=restored,
            streamed=overlap.report() if overlap is not None and overlap.started else None,
        )
        on_event(AnswerDone(answer, result))
        return result

    def _aggregate(self, plan: Plan, results: dict[int, NodeResult], on_event: Listener, cancel: threading.Event) -> tuple[str, int]:
        gen = self.aggregator.generation
        return self._generate(self.aggregator, aggregation_messages(plan, results), max_tokens=gen.max_tokens,
                              temperature=gen.temperature, on_token=lambda p: on_event(AnswerToken(p)), cancel=cancel,
                              prefix=1)

    def _monolithic(self, question: str, on_event: Listener, cancel: threading.Event, start: float) -> Result:
        model = self.forced or self.monolithic or self.fallback
        on_event(Stage("execute", "monolithic"))
        gen = model.generation
        t = time.perf_counter()
        began: list[float] = []  # once the model is loaded: a node's seconds and tokens/s leave its load out
        answer, tokens = self._generate(model, prompts.monolithic_messages(question), max_tokens=gen.max_tokens,
                                        temperature=gen.temperature, on_token=lambda p: on_event(AnswerToken(p)), cancel=cancel,
                                        prefix=1, on_start=lambda: began.append(time.perf_counter()))
        end = time.perf_counter()
        seconds = end - t  # the phase, its load included, as a composed run's execute_s includes its nodes' loads
        # Empty (whitespace, or only a reasoning block) is no answer, as in the composed modes: exit 8, not 0.
        empty = not answer.strip()
        node = NodeResult(1, question, (), model.name, "failed" if empty else "done", answer,
                          "the model returned an empty answer" if empty else None, began[0] - start, end - began[0], tokens,
                          self.settings.threads)
        plan = single_node(question)
        routes = {1: Route(model.name, 1.0, {}, "forced" if self.forced else "monolithic")}
        wall = time.perf_counter() - start
        result = Result(question, "monolithic", answer, "failed" if empty else "ok", plan, routes, [node],
                        {"plan_s": 0.0, "route_s": 0.0, "execute_s": seconds, "nodes_sum_s": node.seconds, "aggregate_s": 0.0,
                         "overlap_s": 0.0, "wall_s": wall},
                        {"plan": 0, "nodes": tokens, "aggregate": 0, "total": tokens}, False, [model.name], memory=self.pool.peak)
        on_event(AnswerDone(answer, result))
        return result

    def close(self) -> None:
        """Unload every model, the embedder too."""
        self.pool.close()
        close_embedder = getattr(self.embedder, "close", None)
        if close_embedder is not None:
            close_embedder()

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
    settings = settings or load_settings()
    session = Session(settings, expert=expert, modes=("plan",))
    try:
        session.warm_up()
        plan = session.plan(question.strip())
        return plan, session.route(plan)
    finally:
        session.close()
