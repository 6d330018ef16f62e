"""What goes over the wire between `complm serve` and `complm ask --server` (and `graph --server`).

The server streams a run as JSON lines: one per pipeline event, then one
with the run's record (`Result.to_dict`), or one with an error; a graph is
one JSON object, the plan and its routes. The client
turns each line back into the event the live view and the pipe printer
already take, so a run on a server looks as one in the process does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from pydantic import TypeAdapter

from complm_cli import events as ev
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.records import NodeResult
from complm_cli.compose.result import Result
from complm_cli.compose.route import Route
from complm_cli.corpus.search import Hit

_KINDS = {"stage": ev.Stage, "step_planned": ev.StepPlanned, "plan_ready": ev.PlanReady, "node_started": ev.NodeStarted,
          "node_token": ev.NodeToken, "node_done": ev.NodeDone, "node_failed": ev.NodeFailed, "node_sources": ev.NodeSources,
          "answer_token": ev.AnswerToken, "answer_done": ev.AnswerDone}
_NAMES = {cls: name for name, cls in _KINDS.items()}


@functools.cache
def _adapter(kind) -> TypeAdapter:
    """Pydantic over the pipeline's own dataclasses: a record becomes one with its types checked (a list of ids
    becomes `depends_on`'s tuple, a route's "1" key node 1), defaults filled and unknown keys ignored; a record
    that does not fit raises ValidationError, a ValueError."""
    return TypeAdapter(kind)


def plan_record(plan: Plan) -> dict:
    return _adapter(Plan).dump_python(plan, mode="json", exclude={"raw"})  # the planner's raw text stays on the server


def plan_from_record(data: dict) -> Plan:
    return _adapter(Plan).validate_python(data)


def routes_record(routes: dict[int, Route]) -> dict:
    return {str(k): r.to_dict() for k, r in routes.items()}  # rounded scores, no empty formula: as --json shows them


def routes_from_record(data: dict) -> dict[int, Route]:
    return _adapter(dict[int, Route]).validate_python(data)


def event_record(event: ev.Event) -> dict | None:
    """An event as a JSON object; None for one the wire does not carry."""
    name = _NAMES.get(type(event))
    if name is None:
        return None
    if isinstance(event, ev.StepPlanned):
        return {"event": name, "node": _adapter(Node).dump_python(event.node, mode="json"), "route": event.route.to_dict()}
    if isinstance(event, ev.PlanReady):
        return {"event": name, "plan": plan_record(event.plan), "routes": routes_record(event.routes)}
    if isinstance(event, ev.AnswerDone):
        return {"event": name, "answer": event.answer}  # the run's record follows on a line of its own
    return {"event": name, **dataclasses.asdict(event)}


def event_from_record(data: dict) -> ev.Event | None:
    """The event a line holds; None for a kind this client does not know (a newer server)."""
    cls = _KINDS.get(data.get("event"))
    if cls is None:
        return None
    # The plan and routes these two carry are typed Any in events.py, so pydantic is told what they are.
    if cls is ev.StepPlanned:
        return ev.StepPlanned(_adapter(Node).validate_python(data["node"]), _adapter(Route).validate_python(data["route"]))
    if cls is ev.PlanReady:
        return ev.PlanReady(plan_from_record(data["plan"]), routes_from_record(data["routes"]))
    return _adapter(cls).validate_python(data)


@dataclasses.dataclass
class RemoteResult(Result):
    """A run made on a server: what the renderers read, rebuilt from its record; `to_dict` is the record itself."""

    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.record


def result_from_record(data: dict) -> RemoteResult:
    # A node's record holds its NodeResult's fields (and its Node's), but for `started_s`; the rest is ignored.
    nodes = [_adapter(NodeResult).validate_python({**n, "started": n["started_s"],
                                                   "sources": [Hit.from_source(s) for s in n.get("sources") or []]})
             for n in data["nodes"]]
    routes = {n["id"]: Route(n["expert"], n["score"], {}, n["route"], (n["calculation"] or {}).get("formula", ""))
              for n in data["nodes"] if n["score"] is not None}
    plan = _adapter(Plan).validate_python({"question": data["question"], "nodes": data["nodes"],
                                           "fallback": data["plan_fallback"], "repairs": data["plan_repairs"]})
    return RemoteResult(question=data["question"], mode=data["mode"], answer=data["answer"], status=data["status"],
                        plan=plan, routes=routes, nodes=nodes, timings=dict(data["timings"]), tokens=dict(data["tokens"]),
                        aggregated=data["aggregated"], experts=list(data["experts"]), restored=list(data["restored_parts"]),
                        memory=data["memory_bytes"], streamed=data["plan_stream"], reason=data.get("reason"), record=data)
