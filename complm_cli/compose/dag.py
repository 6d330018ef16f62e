"""Plans as dependency graphs: nodes, validation, levels, and answer substitution.

Node ids are 1-based and a node may only depend on lower ids, so a plan is
acyclic by construction (as in LLMCompiler); networkx still checks it, since
plans come from a small model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REF_RE = re.compile(r"\{(\d+)\}|#(\d+)\b")


@dataclass
class Node:
    id: int
    question: str  # as planned, with {k} references to earlier nodes
    depends_on: tuple[int, ...] = ()


@dataclass
class Plan:
    question: str
    nodes: list[Node]
    fallback: str | None = None  # why the plan is the single-node fallback, if it is
    repairs: list[str] = field(default_factory=list)  # what was fixed in the planner's output
    raw: str = ""  # what the planner generated
    seconds: float = 0.0
    tokens: int = 0
    votes: dict | None = None  # how the plan was chosen among several (votes.Tally), when it was

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def graph(self):
        import networkx as nx

        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id)
            for d in n.depends_on:
                g.add_edge(d, n.id)
        return g

    def levels(self) -> list[list[int]]:
        """Nodes grouped by depth: each level can run at the same time."""
        import networkx as nx

        return [sorted(level) for level in nx.topological_generations(self.graph())]

    def sinks(self) -> list[int]:
        """Nodes no other node depends on: their answers feed the final answer directly."""
        g = self.graph()
        return [n.id for n in self.nodes if g.out_degree(n.id) == 0]

    @property
    def width(self) -> int:
        return max((len(level) for level in self.levels()), default=0)

    def descendants(self, node_id: int) -> set[int]:
        import networkx as nx

        return set(nx.descendants(self.graph(), node_id))

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "nodes": [{"id": n.id, "question": readable(n.question), "depends_on": list(n.depends_on)} for n in self.nodes],
            "fallback": self.fallback,
            "repairs": self.repairs,
            "votes": self.votes,
        }


# Braces and "#N" the user typed ("ranked #1", a regex like \d{3}) must never read as
# references to earlier answers: they are swapped for look-alike characters before
# planning, and swapped back when a step is sent to an expert or shown.
_USER_MARKS = {"{": "\uff5b", "}": "\uff5d", "#": "\uff03"}
_UNESCAPE = str.maketrans({v: k for k, v in _USER_MARKS.items()})


def escape_user(text: str) -> str:
    text = text.replace("{", _USER_MARKS["{"]).replace("}", _USER_MARKS["}"])
    return re.sub(r"#(?=\d)", _USER_MARKS["#"], text)


def readable(text: str) -> str:
    """A step's text as the user wrote it: their own braces and #N back."""
    return text.translate(_UNESCAPE)


def references(text: str) -> set[int]:
    return {int(a or b) for a, b in REF_RE.findall(text)}


def validate(plan: Plan, max_nodes: int) -> list[str]:
    """Problems that make a plan unusable; empty when it is a valid DAG."""
    import networkx as nx

    problems = []
    if not plan.nodes:
        return ["the plan has no steps"]
    if len(plan.nodes) > max_nodes:
        problems.append(f"the plan has {len(plan.nodes)} steps, more than the cap of {max_nodes}")
    ids = [n.id for n in plan.nodes]
    if len(set(ids)) != len(ids):
        problems.append("step ids are not unique")
    known = set(ids)
    for n in plan.nodes:
        if not n.question.strip():
            problems.append(f"step {n.id} is empty")
        for d in n.depends_on:
            if d not in known:
                problems.append(f"step {n.id} depends on unknown step {d}")
            elif d >= n.id:
                problems.append(f"step {n.id} depends on step {d}, which does not come before it")
        refs = references(n.question)
        if refs != set(n.depends_on) and len(plan.nodes) > 1:  # a lone node has nothing to refer to
            problems.append(f"step {n.id} refers to {sorted(refs)} in its text but lists {sorted(n.depends_on)} as dependencies")
    if not problems and not nx.is_directed_acyclic_graph(plan.graph()):
        cycle = [u for u, _ in nx.find_cycle(plan.graph())]
        problems.append("the plan has a cycle: steps " + " -> ".join(map(str, cycle + cycle[:1])))
    return problems


def short_answer(answer: str, limit: int = 120) -> str:
    """The part of an answer that goes inline into a child's question."""
    text = " ".join(answer.strip().split())
    text = re.sub(r"^(the answer is|answer:)\s*", "", text, flags=re.I)
    if len(text) > limit:
        cut = text[:limit]
        text = cut[: cut.rfind(" ")] + "…" if " " in cut else cut + "…"
    return text.rstrip(".") or "(no answer)"


def substitute(question: str, answers: dict[int, str], limit: int = 120) -> str:
    """Replace {k} (or #k) with parent k's answer, bounded so one long answer cannot crowd a prompt."""

    def repl(m: re.Match) -> str:
        k = int(m.group(1) or m.group(2))
        return short_answer(answers[k], limit) if k in answers else m.group(0)

    return readable(REF_RE.sub(repl, question))
