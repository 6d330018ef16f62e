"""Routing, the stage: each step of a plan to the expert that answers it.

In this order: a step a tool claims (a formula, a date difference) goes to
that tool, whatever the embeddings say; with --expert, every other step goes
to it; a step close enough to a corpus's passages goes to that knowledge
expert (knowledge.py); the rest go by embedding similarity to each expert's
profile, with the fallback expert below the threshold (route.py).
"""

from __future__ import annotations

from complm_cli.cache.catalog import Catalog, Expert
from complm_cli.cache.config import Settings
from complm_cli.compose import dag
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.route import Embedder, Route, Router, VectorCache


class Routing:
    def __init__(self, catalog: Catalog, settings: Settings, embedder: Embedder, forced: Expert | None, knowledge=None):
        from complm_cli.experts.plugins import tools

        self.catalog, self.settings, self.embedder, self.forced = catalog, settings, embedder, forced
        self.knowledge = knowledge
        self.fallback = catalog.for_role("fallback")
        self.routable = catalog.routable()
        registered = tools()
        self.tools = [(e, registered[e.tool]) for e in catalog.tools()]  # in catalog order: the calculator first
        self._router: Router | None = None

    def router(self) -> Router:
        if self._router is None:
            threshold = self.settings.route_threshold if self.settings.route_threshold is not None else self.catalog.route_threshold
            emb = self.catalog.embedder
            cache = VectorCache(self.settings.cache_dir / "embeddings", f"{emb.name}-{(emb.sha256 or '')[:12]}")
            self._router = Router(self.routable, self.fallback, self.embedder, cache, threshold)
        return self._router

    def claimed(self, node: Node) -> Route | None:
        for expert, tool in self.tools:
            formula = tool.claims(node.question)
            if formula:
                return Route(expert.name, 1.0, {}, "calculation", formula)
        return None

    def claims(self, question: str) -> bool:
        """Whether a tool computes this text as it stands."""
        return self.claimed(Node(1, question, ())) is not None

    def route(self, plan: Plan) -> dict[int, Route]:
        routes: dict[int, Route] = {}
        for n in plan.nodes:
            claimed = self.claimed(n)
            if claimed is not None:
                routes[n.id] = claimed
            elif self.forced:
                routes[n.id] = Route(self.forced.name, 1.0, {}, "forced")
        rest = [n for n in plan.nodes if n.id not in routes]
        if rest and self.knowledge:
            routes.update(self._looked_up(rest))
            rest = [n for n in rest if n.id not in routes]
        if rest:
            routes.update(zip((n.id for n in rest), self.router().route([dag.readable(n.question) for n in rest])))
        return routes

    def _looked_up(self, nodes: list[Node]) -> dict[int, Route]:
        """The steps a corpus takes: its closest passage at or above its threshold (the best such corpus)."""
        vectors = self.embedder.encode([dag.readable(n.question) for n in nodes])
        routes = {}
        for n, scores in zip(nodes, self.knowledge.scores(vectors)):
            taken = [e for e in self.knowledge.experts if scores[e.name] >= self.knowledge.threshold(e)]
            if taken:
                best = max(taken, key=lambda e: scores[e.name])
                routes[n.id] = Route(best.name, scores[best.name], scores, "passages")
        return routes

    def route_step(self, node: Node) -> tuple[Route, Expert]:
        route = self.route(Plan("", [node]))[node.id]
        return route, self.catalog.get(route.expert)
