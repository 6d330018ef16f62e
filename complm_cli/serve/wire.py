"""What goes over the wire between `complm serve` and `complm ask --server` (and `graph --server`).

The server streams a run as JSON lines: one per pipeline event, then one
with the run's record (`Result.to_dict`), or one with an error; a graph is
one JSON object, the plan and its routes. The client
turns each line back into the event the live view and the pipe printer
already take, so a run on a server looks as one in the process does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from complm_cli import events as ev
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.records import NodeResult
from complm_cli.compose.session import Result
from complm_cli.compose.route import Route

_KINDS = {"stage": ev.Stage, "step_planned": ev.StepPlanned, "plan_ready": ev.PlanReady, "node_started": ev.NodeStarted,
          "node_token": ev.NodeToken, "node_done": ev.NodeDone, "node_failed": ev.NodeFailed,
          "answer_token": ev.AnswerToken, "answer_done": ev.AnswerDone}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def _node(node: Node) -> dict:
    return {"id": node.id, "question": node.question, "depends_on": list(node.depends_on)}


def _node_from(data: dict) -> Node:
    return Node(data["id"], data["question"], tuple(data["depends_on"]))


def _route(route: Route) -> dict:
    return route.to_dict()


def _route_from(data: dict) -> Route:
    return Route(data["expert"], float(data["score"]), dict(data.get("scores") or {}), data.get("reason", "score"),
                 data.get("formula", ""))


def plan_record(plan: Plan) -> dict:
    return {"question": plan.question, "nodes": [_node(n) for n in plan.nodes], "fallback": plan.fallback,
            "repairs": plan.repairs, "seconds": plan.seconds, "tokens": plan.tokens}


def plan_from_record(data: dict) -> Plan:
    return Plan(data["question"], [_node_from(n) for n in data["nodes"]],
                fallback=data.get("fallback"), repairs=list(data.get("repairs") or []),
                seconds=float(data.get("seconds", 0.0)), tokens=int(data.get("tokens", 0)))


def routes_record(routes: dict[int, Route]) -> dict:
    return {str(k): _route(r) for k, r in routes.items()}


def routes_from_record(data: dict) -> dict[int, Route]:
    return {int(k): _route_from(r) for k, r in data.items()}


def event_record(event: ev.Event) -> dict | None:
    """An event as a JSON object; None for one the wire does not carry."""
    name = _NAMES.get(type(event))
    if name is None:
        return None
    if isinstance(event, ev.StepPlanned):
        return {"event": name, "node": _node(event.node), "route": _route(event.route)}
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
    if cls is ev.StepPlanned:
        return ev.StepPlanned(_node_from(data["node"]), _route_from(data["route"]))
    if cls is ev.PlanReady:
        return ev.PlanReady(plan_from_record(data["plan"]), routes_from_record(data["routes"]))
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass
class RemoteResult(Result):
    """A run made on a server: what the renderers read, rebuilt from its record; `to_dict` is the record itself."""

    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.record


def result_from_record(data: dict) -> RemoteResult:
    nodes = [NodeResult(id=n["id"], question=n["question"], depends_on=tuple(n["depends_on"]), expert=n["expert"],
                        status=n["status"], answer=n["answer"], reason=n["reason"], started=n["started_s"],
                        seconds=n["seconds"], tokens=n["tokens"], calculation=n["calculation"])
             for n in data["nodes"]]
    routes = {n["id"]: Route(n["expert"], n["score"], {}, n["route"], (n["calculation"] or {}).get("formula", ""))
              for n in data["nodes"] if n["score"] is not None}
    plan = Plan(data["question"], [_node_from(n) for n in data["nodes"]],
                fallback=data["plan_fallback"], repairs=list(data["plan_repairs"]))
    return RemoteResult(question=data["question"], mode=data["mode"], answer=data["answer"], status=data["status"],
                        plan=plan, routes=routes, nodes=nodes, timings=dict(data["timings"]), tokens=dict(data["tokens"]),
                        aggregated=data["aggregated"], experts=list(data["experts"]), restored=list(data["restored_parts"]),
                        memory=data["memory_bytes"], streamed=data["plan_stream"], record=data)
