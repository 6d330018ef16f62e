"""Response Aggregator: the final answer from the sub-answers, keeping every part.

A model call is made only where the sub-answers must be combined. When one
node's answer is the answer (a chain, or a calculation) it is used as is;
when the question asks independent things (a fan-out, nothing to compare)
the answers are joined. Otherwise the aggregator model writes the answer,
and a part it dropped is put back from its node.
"""

from __future__ import annotations

from complm_cli.compose import prompts
from complm_cli.compose.dag import Plan
from complm_cli.compose.records import NodeResult
from complm_cli.compose.facts import key_facts
from complm_cli.numbers import find_numbers


def must_combine(plan: Plan) -> bool:
    """Whether the final steps' answers must be combined by the aggregator model, not taken or listed.

    Two or more final steps are combined, unless they are a fan-out that is only
    listed. Steps added later never undo that (the scheduler relies on it while the
    plan streams in): a final step either stays one of two or more, or gains a dependent."""
    if len(plan.sinks()) < 2:
        return False
    return any(n.depends_on for n in plan.nodes) or prompts.combines_parts(plan.question)


def direct_answer(plan: Plan, results: dict[int, NodeResult]) -> str | None:
    """The final answer without a model call, or None when the parts must be combined."""
    sinks = plan.sinks()
    last = results[plan.nodes[-1].id] if plan.nodes else None
    if last is not None and last.calculation and last.status == "done" and all(results[s].calculation for s in sinks):
        return last.shown  # a plan that ends in a calculation asks for its result (others are unused working)
    if not sinks or any(results[s].status != "done" for s in sinks):
        return None
    if len(sinks) == 1:
        return results[sinks[0]].shown
    if not must_combine(plan):
        return join([results[s].shown or "" for s in sinks])
    return None


def join(answers: list[str]) -> str:
    parts = [a.strip() for a in answers if a and a.strip()]
    if any("\n" in a for a in parts):
        return "\n\n".join(parts)
    return " ".join(a if a[-1] in ".!?)\"'`" else a + "." for a in parts)


def aggregation_messages(plan: Plan, results: dict[int, NodeResult]) -> list[dict]:
    parts = [(results[n.id].question, results[n.id].shown if results[n.id].status == "done" else None) for n in plan.nodes]
    return prompts.aggregator_messages(plan.question, parts)


def _mentions(text: str, facts: set[str]) -> bool:
    numbers = {str(v) for _, v, _ in find_numbers(text)}
    lowered = text.lower()
    return any(f in numbers or f.lower() in lowered for f in facts)


def missing_parts(answer: str, plan: Plan, results: dict[int, NodeResult]) -> list[int]:
    """Final nodes whose answer the final answer does not mention."""
    out = []
    for s in plan.sinks():
        res = results[s]
        if res.status != "done" or not res.answer:
            continue
        facts = key_facts(res.answer, res.question)
        if facts and not _mentions(answer, facts):
            out.append(s)
    return out


def repair(answer: str, plan: Plan, results: dict[int, NodeResult]) -> tuple[str, list[int]]:
    """The answer with every dropped part put back from its node; and which parts were."""
    missing = missing_parts(answer, plan, results)
    if not missing:
        return answer, []
    return join([answer, *(results[s].shown or "" for s in missing)]), missing


class Aggregator:
    """The stage: the final answer of a composed run, and whether a model wrote it."""

    def __init__(self, expert, pool, settings):
        self.expert, self.pool, self.settings = expert, pool, settings

    def answer(self, plan: Plan, results: dict[int, NodeResult], on_event, cancel) -> tuple[str, int, bool, list[int]]:
        """(answer, the aggregator's tokens, aggregated by a model, final nodes put back); "" when nothing was answered."""
        from complm_cli.compose.generate import generate_text
        from complm_cli.events import AnswerToken, Stage

        direct = direct_answer(plan, results)
        if direct is not None:
            return direct, 0, False, []
        if not any(r.status == "done" for r in results.values()):
            return "", 0, False, []
        on_event(Stage("aggregate", self.expert.name))
        gen = self.expert.generation
        answer, tokens = generate_text(self.pool, self.settings, self.expert, aggregation_messages(plan, results),
                                       max_tokens=gen.max_tokens, temperature=gen.temperature,
                                       on_token=lambda p: on_event(AnswerToken(p)), cancel=cancel, prefix=1)
        restored: list[int] = []
        if answer.strip():  # an empty answer stays a failure: there is nothing to repair
            answer, restored = repair(answer, plan, results)
        return answer, tokens, True, restored
