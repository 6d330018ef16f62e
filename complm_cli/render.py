"""Everything users see of a run: the live DAG view, the tree, the answer,
plain text, JSON, mermaid and dot. The core emits events; this draws them.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from complm_cli.compose.dag import Plan, readable
from complm_cli.events import (AnswerDone, AnswerToken, Event, NodeDone, NodeFailed, NodeSources, NodeStarted, NodeToken, PlanReady, Stage,
                               StepPlanned)
from complm_cli.compose.route import Route

STATUS_STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "red", "skipped": "dim red", "cancelled": "dim red"}


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _entry(node) -> dict[str, Any]:
    return {"status": "waiting", "question": readable(node.question), "step": (node.question, node.depends_on), "tokens": 0,
            "start": None, "end": None, "reason": ""}


class LiveView:
    """A Rich Live table of the DAG while it runs, fed by pipeline events (from any thread)."""

    def __init__(self, console):
        from rich.live import Live

        self.console = console
        self.lock = threading.Lock()
        self.stage = "starting"
        self.stage_started = time.perf_counter()
        self.plan: Plan | None = None
        self.routes: dict[int, Route] = {}
        self.nodes: dict[int, dict[str, Any]] = {}
        self.answer_tokens = 0
        self.sources: dict[int, list] = {}  # a knowledge step's passages, by node
        self.answer = ""  # the aggregator's text as it streams; printed for good as Markdown at the end
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False, get_renderable=self._render)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        with self.lock:
            now = time.perf_counter()
            if isinstance(event, Stage):
                self.stage, self.stage_started = f"{event.name} ({event.detail})" if event.detail else event.name, now
            elif isinstance(event, StepPlanned):
                self.routes[event.node.id] = event.route
                self.nodes[event.node.id] = _entry(event.node)
            elif isinstance(event, PlanReady):
                self.plan, self.routes = event.plan, event.routes
                # A step streamed earlier keeps its state; one the final plan changed or dropped starts over or goes.
                self.nodes = {n.id: self.nodes[n.id] if self.nodes.get(n.id, {}).get("step") == (n.question, n.depends_on)
                              else _entry(n) for n in event.plan.nodes}
            elif isinstance(event, NodeStarted) and event.node_id in self.nodes:
                self.nodes[event.node_id].update(status="running", question=event.question, start=now)
            elif isinstance(event, NodeToken) and event.node_id in self.nodes:
                self.nodes[event.node_id]["tokens"] += 1
            elif isinstance(event, NodeDone) and event.node_id in self.nodes:
                self.nodes[event.node_id].update(status="done", end=now, answer=event.answer)
            elif isinstance(event, NodeFailed) and event.node_id in self.nodes:
                self.nodes[event.node_id].update(status="skipped" if event.skipped else "failed", end=now, reason=event.reason)
            elif isinstance(event, NodeSources):
                self.sources[event.node_id] = event.sources
            elif isinstance(event, AnswerToken):
                self.answer_tokens += 1
                self.answer += event.text
            elif isinstance(event, AnswerDone):
                self.stage = "done"

    def _render(self):
        from rich.console import Group
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            now = time.perf_counter()
            parts = []
            if self.stage != "done":
                label = f"{self.stage} {now - self.stage_started:4.1f} s"
                if self.answer_tokens:
                    label += f", {self.answer_tokens} tokens"
                parts.append(Spinner("dots", text=Text(label, style="cyan")))
            if self.plan is not None and self.plan.fallback:
                parts.append(Text(f"plan fell back to a single node: {self.plan.fallback}", style="yellow"))
            if self.nodes:
                table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
                for col, kw in (("id", {"justify": "right"}), ("sub-query", {"max_width": 60}), ("needs", {}), ("expert (score)", {}),
                                ("status", {}), ("time", {"justify": "right"}), ("tok/s", {"justify": "right"})):
                    table.add_column(col, **kw)
                for node_id, n in self.nodes.items():
                    route = self.routes.get(node_id)
                    expert = route.label() if route else ""
                    start, end = n["start"], n["end"]
                    seconds = (end or now) - start if start else 0.0
                    rate = f"{n['tokens'] / seconds:.1f}" if seconds > 0 and n["tokens"] else ""
                    status = n["status"] if not n["reason"] else f"{n['status']}: {_clip(n['reason'], 40)}"
                    deps = n["step"][1]
                    table.add_row(str(node_id), _clip(n["question"], 60), ",".join(map(str, deps)) or "-", expert,
                                  Text(status, style=STATUS_STYLE.get(n["status"], "")), f"{seconds:.1f}s" if start else "", rate)
                parts.append(table)
            for node_id, hits in self.sources.items():
                for h in hits:
                    parts.append(Text(f"  {node_id} ← {h.corpus} {h.where()} {_clip(h.title, 40)} ({h.score:.2f})", style="dim"))
            if self.answer and self.stage != "done":
                parts.append(Text(self.answer[-2000:]))
            return Group(*parts)


def summary_line(result) -> str:
    t = result.timings
    line = f"{result.mode} · {len(result.nodes)} node{'s' if len(result.nodes) != 1 else ''} · {t['wall_s']:.1f} s"
    if result.mode != "monolithic":
        line += f" (plan {t['plan_s']:.1f} s, nodes {t['execute_s']:.1f} s, answer {t['aggregate_s']:.1f} s)"
        if len(result.nodes) > 1 and result.mode == "parallel":
            saved = t["nodes_sum_s"] - t["execute_s"]
            line += f" · nodes one after another: {t['nodes_sum_s']:.1f} s ({'saved' if saved >= 0 else 'lost'} {abs(saved):.1f} s)"
    if t.get("overlap_s"):
        line += f" · steps ran {t['overlap_s']:.1f} s while planning"
    if result.plan is not None and result.plan.fallback:
        line += " · plan fell back to one node"
    if result.plan is not None and result.plan.votes:
        line += f" · {vote_words(result.plan.votes)}"
    if result.status != "ok":
        line += f" · {result.status}"
    return line


def print_answer(console, result) -> None:
    from rich.markdown import Markdown

    console.print(Markdown(result.answer or "_(no answer)_"))
    if result.sources:
        console.print(sources_text(result.sources), style="dim", highlight=False, markup=False)


def sources_text(hits) -> str:
    """The passages an answer rests on, one line each: what a piped answer ends with."""
    lines = [f"[{i}] {h.corpus}: {h.where()}{' (' + h.title + ')' if h.title else ''}" for i, h in enumerate(hits, 1)]
    return "Sources:\n" + "\n".join(lines)


# --- graph formats ------------------------------------------------------------


def graph_dict(plan: Plan, routes: dict[int, Route]) -> dict:
    return {
        "question": plan.question,
        "fallback": plan.fallback,
        "repairs": plan.repairs,
        "votes": plan.votes,
        "levels": plan.levels(),
        "width": plan.width,
        "plan_seconds": round(plan.seconds, 3),
        "nodes": [
            {"id": n.id, "question": readable(n.question), "depends_on": list(n.depends_on), **routes[n.id].to_dict()}
            for n in plan.nodes
        ],
    }


def _label(text: str) -> str:
    return _clip(text, 70).replace('"', "'")


def _edges(plan: Plan) -> list[tuple[int, int]]:
    """Every arrow from a parent step to its child."""
    return [(d, n.id) for n in plan.nodes for d in n.depends_on]


def mermaid(plan: Plan, routes: dict[int, Route]) -> str:
    lines = ["flowchart TD", f'    Q["{_label(plan.question)}"]']
    lines += [f'    N{n.id}["{n.id}. {_label(readable(n.question))}<br/><i>{_label(routes[n.id].label())}</i>"]'
              for n in plan.nodes]
    lines += [f"    N{a} --> N{b}" for a, b in _edges(plan)]
    lines.append('    A(["answer"])')
    lines += [f"    N{s} --> A" for s in plan.sinks()]
    return "\n".join(lines)


def dot(plan: Plan, routes: dict[int, Route]) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"')

    lines = ["digraph complm {", "  rankdir=TB;", "  node [shape=box];", f'  q [label="{esc(_clip(plan.question, 80))}", shape=plaintext];']
    lines += [f'  n{n.id} [label="{n.id}. {esc(_clip(readable(n.question), 70))}\\n{esc(routes[n.id].label())}"];'
              for n in plan.nodes]
    lines += [f"  n{a} -> n{b};" for a, b in _edges(plan)]
    lines.append('  answer [shape=oval];')
    lines += [f"  n{s} -> answer;" for s in plan.sinks()]
    lines.append("}")
    return "\n".join(lines)


def tree(plan: Plan, routes: dict[int, Route]):
    from rich.text import Text
    from rich.tree import Tree

    root = Tree(Text(plan.question, style="bold"))
    for depth, level in enumerate(plan.levels(), 1):
        branch = root.add(Text(f"level {depth}" + (" (run at the same time)" if len(level) > 1 else ""), style="cyan"))
        for node_id in level:
            n, r = plan.node(node_id), routes[node_id]
            line = Text(f"{n.id}. {readable(n.question)}  ")
            line.append(f"→ {r.expert}", style="magenta")
            line.append(f" = {r.formula}" if r.formula else f" {r.score:.2f}", style="dim")
            if r.reason == "fallback":
                line.append(" (below threshold: fallback)", style="yellow")
            if n.depends_on:
                line.append(f"  needs {', '.join(map(str, n.depends_on))}", style="dim")
            branch.add(line)
    if plan.fallback:
        root.add(Text(f"single-node fallback: {plan.fallback}", style="yellow"))
    for repair in plan.repairs:
        root.add(Text(f"repaired: {repair}", style="dim"))
    if plan.votes:
        root.add(Text(vote_words(plan.votes), style="dim"))
    return root


def vote_words(votes: dict) -> str:
    """'3 of 5 plans computed 18': how a word problem's plan was chosen (compose/votes.py)."""
    value = votes["values"][votes["chosen"]]
    if value is None:
        return f"none of {votes['plans']} plans could be computed"
    words = f"{votes['agreed']} of {votes['plans']} plans computed {value}"
    others = [v for v in votes["values"] if v is not None]
    if max(others.count(v) for v in others) > votes["agreed"]:  # a value more plans computed lost on weight
        words += " (more plans computed a doubtful value, or used fewer of the question's numbers)"
    return words


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
