"""Plans that vote: a word problem is planned more than once, and the value most plans compute wins.

The 1.5B planner writes a wrong formula for about a third of GSM8K word
problems, but seldom the same wrong formula twice, while right plans agree
(self-consistency, Wang et al. 2022). Only a plan that is calculations
alone takes part: the tools compute its value here, with no model call, so
a vote costs only the extra plans' tokens, and those decode in one batch.

The greedy plan is written first (and streams into execution as usual).
Sampled plans follow two at a time until the vote is settled: the first
three agree, or one value has more than half of all the votes there can
be, or every vote is in; then the value most plans compute wins, ties
going to the earlier plan (the greedy one first). The winning plan is the
one that runs, so every step of the answer is shown as it was computed.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from complm_cli.compose.dag import Plan

ROUND = 2  # sampled plans written at once (one batch)
TEMPERATURE = 0.7


@dataclass
class Tally:
    """How a plan was chosen: the value each plan computed (None: it could not be computed), in the order planned."""

    values: list[str | None] = field(default_factory=list)
    chosen: int = 0  # index of the plan that runs
    tokens: int = 0  # every plan's, the greedy one's too

    @property
    def agreed(self) -> int:
        """How many plans computed the winning value (0: no plan's value could be computed)."""
        won = self.values[self.chosen]
        return 0 if won is None else self.values.count(won)

    def to_dict(self) -> dict:
        return {"plans": len(self.values), "agreed": self.agreed, "values": self.values, "chosen": self.chosen}


def calculations_alone(plan: Plan, tools: list) -> bool:
    """Whether every step of `plan` is one a tool computes (a word problem's plan). `tools`: (expert, Tool)
    pairs, in the order routing asks them."""
    return _computed(plan, tools)[0]


def value_of(plan: Plan, tools: list) -> str | None:
    """What a plan of calculations alone computes (its last step's result); None for any other plan, or one
    a tool refuses (that plan votes for nothing; if it is the one that runs, its step fails as usual)."""
    return _computed(plan, tools)[1]


def _computed(plan: Plan, tools: list) -> tuple[bool, str | None]:
    """(calculations_alone, value_of) in one pass: each step is claimed once."""
    if plan.fallback or not plan.nodes:
        return False, None
    answers: dict[int, tuple[str, str]] = {}
    result: str | None = None
    failed = False
    for node in plan.nodes:
        tool = next((t for _, t in tools if t.claims(node.question)), None)
        if tool is None:
            return False, None
        if failed:
            continue  # the rest is still looked at: whether the plan is calculations alone
        parents = {d: answers[d] for d in node.depends_on if d in answers}
        try:
            result = tool.run(node.question, parents).result
        except Exception:  # noqa: BLE001 - whatever the tool raises, this plan has no value
            failed = True
            continue
        answers[node.id] = (node.question, result)
    return True, None if failed else result


def _winner(values: list[str | None]) -> int:
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return 0
    best = max(counts.values())
    return next(i for i, v in enumerate(values) if v is not None and counts[v] == best)


def _settled(values: list[str | None], votes: int) -> bool:
    """No more plans are needed: three or more agree and none differs, or one value has more than half of
    every vote there can be, so the rest could not overturn it."""
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return False
    lead = max(counts.values())
    return (len(values) >= 3 and lead == len(values)) or lead > votes / 2


def vote(greedy: Plan, sample: Callable[[int], Plan], votes: int, tools: list,
         on_round: Callable[[int], None] = lambda count: None) -> tuple[Plan, Tally | None]:
    """The plan to run, and how it was chosen (None: `greedy` does not vote: it is not calculations alone,
    or votes are off). `sample(k)` writes the k-th sampled plan (k from 1); `votes` counts the greedy plan;
    `on_round(count)` is told before each round of `count` sampled plans."""
    if votes < 2:
        return greedy, None
    alone, first = _computed(greedy, tools)  # first is None when its arithmetic fails: then the others decide
    if not alone:
        return greedy, None
    plans, values = [greedy], [first]

    def more(ks: range) -> None:
        on_round(len(ks))
        with ThreadPoolExecutor(max_workers=len(ks), thread_name_prefix="complm-vote") as ex:
            for plan in ex.map(sample, ks):  # in the order asked: ties go to the earlier plan
                plans.append(plan)
                values.append(value_of(plan, tools))

    while len(plans) < votes and not _settled(values, votes):
        more(range(len(plans), min(len(plans) + ROUND, votes)))
    chosen = _winner(values)
    return plans[chosen], Tally(values, chosen, sum(p.tokens for p in plans))
