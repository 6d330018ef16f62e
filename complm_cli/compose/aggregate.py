"""Response Aggregator: the final answer from the sub-answers, keeping every part.

A model call is made only where the sub-answers must be combined. When one
node's answer is the answer (a chain, or a calculation) it is used as is;
when the question asks independent things (a fan-out, nothing to compare)
the answers are joined. Otherwise the aggregator model writes the answer,
and a part it dropped is put back from its node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
        if prompts.asks_for_choice(plan.question):
            return None  # "max(6000, 1500) = 6000" names no winner and says no yes or no: the aggregator does
        return last.shown  # a plan that ends in a calculation asks for its result (others are unused working)
    if not sinks or any(results[s].status != "done" for s in sinks):
        return None
    if len(sinks) == 1:
        if prompts.asks_several(plan.question) and all(results[n.id].status == "done" for n in plan.nodes):
            # A chain asked for more than its end ("the tallest mountain, and how tall is it?"): every step's answer.
            return join([results[n.id].shown or "" for n in plan.nodes])
        return results[sinks[0]].shown
    if not must_combine(plan):
        return join([results[s].shown or "" for s in sinks])
    return None


def partial_answer(plan: Plan, results: dict[int, NodeResult]) -> str:
    """The answer of a run where a step failed, made of what is known: no model is asked to fill the gap.

    Given the sub-answers with a gap, the aggregator made the missing value up ("the total value of
    x * 10 ** 1000 is 0") or did the refused arithmetic itself, wrongly. This keeps the answer of every
    step that finished and is not only an input to another finished step, then says what could not be done."""
    done = {n.id for n in plan.nodes if results[n.id].status == "done"}
    used = {d for n in plan.nodes if n.id in done for d in n.depends_on}
    known = [results[n.id].shown or "" for n in plan.nodes if n.id in done and n.id not in used]
    gaps = []
    for n in plan.nodes:
        res = results[n.id]
        if res.status in ("failed", "cancelled"):
            verb = "computed" if res.calculation is not None or res.expert == "calculator" else "answered"
            asked = re.sub(r"\{(\d+)\}", r"step \1", res.question)  # a formula over earlier steps
            gaps.append(f"Step {n.id} ({asked}) could not be {verb}: {res.reason or res.status}.")
    return join([*known, *gaps])


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


@dataclass
class Final:
    """The final answer of a composed run ("" when nothing was answered)."""

    answer: str
    tokens: int = 0  # the aggregator's
    aggregated: bool = False  # written by the aggregator model
    restored: list[int] = field(default_factory=list)  # final nodes the aggregator left out, put back
    cut: bool = False  # the aggregator's answer stopped at its token limit


class Aggregator:
    """The stage: the final answer of a composed run, and whether a model wrote it."""

    def __init__(self, expert, pool, settings):
        self.expert, self.pool, self.settings = expert, pool, settings

    def answer(self, plan: Plan, results: dict[int, NodeResult], on_event, cancel) -> Final:
        from complm_cli.compose.generate import generate_text
        from complm_cli.compose.lists import room
        from complm_cli.events import AnswerToken, Stage

        direct = direct_answer(plan, results)
        if direct is not None:
            return Final(direct)
        if not any(r.status == "done" for r in results.values()):
            return Final("")
        if any(r.status != "done" for r in results.values()):
            return Final(partial_answer(plan, results))
        on_event(Stage("aggregate", self.expert.name))
        gen = self.expert.generation
        out = generate_text(self.pool, self.settings, self.expert, aggregation_messages(plan, results),
                            max_tokens=room(plan.question, gen.max_tokens), temperature=gen.temperature,
                            on_token=lambda p: on_event(AnswerToken(p)), cancel=cancel, prefix=1)
        answer, restored = out.text, []
        if answer.strip():  # an empty answer stays a failure: there is nothing to repair
            answer, restored = repair(answer, plan, results)
        return Final(answer, out.tokens, True, restored, out.cut)
