"""Steps that may run while the planner is still writing the plan (LLMCompiler's task-fetching unit).

After each complete line of the planner's reply, the plan so far is parsed
exactly as the final reply will be (`parse_plan`: references, the anaphora
rule, repeats dropped). Those rules only look backwards, so a step of a
clean prefix is the same step in the whole plan, with one exception: a plan
of one step becomes the whole question. The first step is released anyway,
as soon as its line is complete: most plans go on to a second step, and
starting the first one while the planner writes the second is what makes a
two-part question cheap (bench/latency.py); when the plan stays one step,
the caller discards the speculative step (unless it is the question itself)
and runs the question. A step is released only

- while the plan so far has no problem and every step is grounded (a problem
  sends the whole plan to the one-node fallback, so nothing more is released
  after one);
- in order, so its references point to steps released before it.

A JSON reply is read only once it is complete: nothing is released early.
What was released and what the final plan holds are compared by the caller
(`overlap.py`); a released step the final plan does not have is discarded.
"""

from __future__ import annotations

from complm_cli.compose.dag import Node
from complm_cli.compose.plan import MAX_NODES, NO_PLAN_LINES, parse_lines, parse_plan, ungrounded


def stable_steps(question: str, text: str, max_nodes: int = MAX_NODES) -> tuple[list[Node], str | None]:
    """The steps of `text` (complete lines only) that no later line can change,
    and why no step after them can be released (None: more may come)."""
    if text.lstrip().startswith(("{", "[")):
        return [], "a JSON plan is read once it is complete"
    steps, problems = parse_lines(question, text)
    if not steps:  # nothing written yet, or prose where the plan should start
        return [], None if problems in ([], [NO_PLAN_LINES]) else problems[0]
    if problems:
        return [], problems[0]
    parsed = parse_plan(question, text, max_nodes, lone_step_is_question=False)
    if parsed.problems:
        return [], parsed.problems[0]
    nodes = parsed.plan.nodes
    bad = ungrounded(parsed.plan, question)
    if bad:
        return [], f"step {bad[0]} is not about the question"
    return nodes, None


class StepRelease:
    """Feed it the planner's text as it grows; it returns the steps that just became final."""

    def __init__(self, question: str, max_nodes: int = MAX_NODES):
        self.question, self.max_nodes = question, max_nodes
        self.released: list[Node] = []
        self.stopped: str | None = None  # why nothing more is released
        self._lines = 0

    def feed(self, partial: str) -> list[Node]:
        """`partial`: the whole reply so far. Only complete lines count; a step comes out at most once."""
        if self.stopped is not None:
            return []
        complete = partial[: partial.rfind("\n") + 1]
        lines = complete.count("\n")
        if lines == self._lines:  # called per token: parse only when a line was completed
            return []
        self._lines = lines
        nodes, why = stable_steps(self.question, complete, self.max_nodes)
        if why is not None:
            self.stopped = why
            return []
        if nodes[: len(self.released)] != self.released:  # cannot happen with backward-only rules; never run a changed step
            self.stopped = "a released step changed"
            return []
        new = nodes[len(self.released):]
        self.released += new
        return new
