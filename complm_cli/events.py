"""Typed progress events of the pipeline. Renderers consume them; the core never prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from complm_cli.corpus.search import Hit


@dataclass
class Event:
    pass


@dataclass
class Stage(Event):
    """A pipeline stage starts: 'plan', 'vote' (more plans of a word problem), 'route', 'execute', 'aggregate'."""

    name: str
    detail: str = ""


@dataclass
class PlanReady(Event):
    plan: Any  # dag.Plan
    routes: dict[int, Any]  # node id -> route.Route


@dataclass
class StepPlanned(Event):
    """A step the planner has written, routed and handed to the scheduler while the planner writes on.

    PlanReady still follows with the final plan, which may drop this step."""

    node: Any  # dag.Node
    route: Any  # route.Route


@dataclass
class NodeStarted(Event):
    node_id: int
    expert: str
    question: str


@dataclass
class NodeToken(Event):
    node_id: int
    text: str


@dataclass
class NodeDone(Event):
    node_id: int
    answer: str
    seconds: float
    tokens: int


@dataclass
class NodeSources(Event):
    """A knowledge step's passages, retrieved before its reader starts (corpus.search.Hit each); a direct
    answer's one retrieval is node 1's, its only node."""

    node_id: int
    sources: list[Hit]


@dataclass
class NodeFailed(Event):
    node_id: int
    reason: str
    skipped: bool = False  # skipped because a parent failed


@dataclass
class AnswerToken(Event):
    text: str


@dataclass
class AnswerDone(Event):
    answer: str
    result: Any = field(default=None)  # pipeline.Result


Listener = Callable[[Event], None]


def ignore(_: Event) -> None:
    pass


def both(first: Listener, second: Listener) -> Listener:
    """One listener that tells two, in order."""
    if second is ignore:
        return first

    def listen(event: Event) -> None:
        first(event)
        second(event)

    return listen
