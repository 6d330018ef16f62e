"""Response Aggregator: one model writes the final answer from the sub-answers."""

from __future__ import annotations

from complm_cli import prompts
from complm_cli.dag import Plan
from complm_cli.execute import NodeResult


def needs_aggregation(plan: Plan, results: dict[int, NodeResult]) -> bool:
    """A single node that answered already answers the question."""
    return not (len(plan.nodes) == 1 and results[plan.nodes[0].id].status == "done")


def aggregation_messages(plan: Plan, results: dict[int, NodeResult]) -> list[dict]:
    parts = [(results[n.id].question, results[n.id].answer if results[n.id].status == "done" else None) for n in plan.nodes]
    return prompts.aggregator_messages(plan.question, parts)
