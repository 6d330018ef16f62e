"""Plans that vote: a word problem is planned more than once, and the value most plans compute wins.

The 1.5B planner writes a wrong formula for about a third of GSM8K word
problems, but seldom the same wrong formula twice, while right plans agree
(self-consistency, Wang et al. 2022). Only a plan that is calculations
alone takes part: the tools compute its value here, with no model call, so
a vote costs only the extra plans' tokens, and those decode in one batch.

Not every vote weighs the same. A plan counts by the share of the
question's numbers it uses (a word problem's plan seldom leaves a given
number out; wrong plans often do), and a value the question makes
doubtful (negative when the question gives no negative number, or with
more decimal places than any number it gives: the mark of a wrong
division) wins only when no plan computed a plain one. Chosen on GSM8K
tuning problems (bench/votes.py), measured on held-out ones
(docs/benchmarks.md).

The greedy plan is written first (and streams into execution as usual).
Sampled plans follow two at a time until the vote is settled: the first
three agree on a plain value, or the leading value's weight is more than
the runner-up's and every vote still to come together, or three plans
computed nothing, or every vote is in; then the value with the most
weight wins, ties going to the earlier plan (the greedy one first). The
winning plan is the one that runs, so every step of the answer is shown
as it was computed. When the planner wrote no usable plan for a word
problem (the question would go whole to one model), the sampled plans vote
without it.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Callable

from complm_cli.compose.dag import Plan, escape_user
from complm_cli.numbers import digits_of, find_numbers

ROUND = 2  # sampled plans written at once (one batch)
TEMPERATURE = 0.7


@dataclass
class Tally:
    """How a plan was chosen: the value each plan computed (None: it could not be computed), in the order planned."""

    values: list[str | None] = field(default_factory=list)
    chosen: int = 0  # index of the plan that runs
    tokens: int = 0  # every plan's, the greedy one's too
    weights: list[float] = field(default_factory=list)  # each plan's vote: the share of the question's numbers it uses

    @property
    def agreed(self) -> int:
        """How many plans computed the winning value (0: no plan's value could be computed)."""
        won = self.values[self.chosen]
        return 0 if won is None else self.values.count(won)

    def to_dict(self) -> dict:
        return {"plans": len(self.values), "agreed": self.agreed, "values": self.values, "chosen": self.chosen,
                "weights": [round(w, 2) for w in self.weights]}


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


_REFERENCE = re.compile(r"\{\d+\}")  # {2}: an earlier step's answer, not a number of the question


@lru_cache(maxsize=64)  # a vote asks this of the same question for every plan, and again each round
def _given(text: str) -> tuple[tuple[Fraction, str], ...]:
    """The numbers written in digits in `text` ("two" in "his two daughters" is seldom a quantity)."""
    return tuple((value, source) for _, value, source in find_numbers(_REFERENCE.sub(" ", text))
                 if any(c.isdigit() for c in source))


def _figures(text: str) -> set[tuple[Fraction, Fraction]]:
    """`_given`'s values, each with its digits alone: "$32 million" may be planned as 32 (millions)."""
    found = set()
    for value, source in _given(text):
        digits = digits_of(source)
        found.add((value, -digits if value < 0 else digits))
    return found


def weight(plan: Plan, question: str) -> float:
    """The share of the question's numbers that `plan` writes (50% may be written 0.5); 1 when it gives none."""
    asked = _figures(question)
    if not asked:
        return 1.0
    written = {v for pair in _figures(plan.raw or "\n".join(n.question for n in plan.nodes)) for v in pair}
    written |= {v * 100 for v in written}
    return sum(1 for pair in asked if written.intersection(pair)) / len(asked)


def _places(source: str) -> int:
    digits = re.sub(r"[^\d.]", "", source)
    return len(digits.split(".", 1)[1].rstrip("0")) if "." in digits else 0


def plain(value: str, question: str) -> bool:
    """Whether `value` is one the question could have: no more decimal places than the numbers it gives,
    and not negative unless one of them is. A value that is not a number (a date) is not doubted."""
    given = _given(question)
    try:
        number = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return True
    if number < 0 and not any(v < 0 for v, _ in given):
        return False
    return _places(value) <= max((_places(source) for _, source in given), default=0)


def _tally(values: list[str | None], weights: list[float], question: str) -> tuple[Counter, list[int]]:
    """Each value's weight, counting plain values only when any plan has one; and the plans that count."""
    computed = [i for i, v in enumerate(values) if v is not None]
    counted = [i for i in computed if plain(values[i], question)] or computed
    tally: Counter = Counter()
    for i in counted:
        tally[values[i]] += weights[i]
    return tally, counted


def _winner(values: list[str | None], weights: list[float], question: str) -> int:
    tally, counted = _tally(values, weights, question)
    if not tally:
        return 0
    best = max(tally.values())
    return next(i for i in counted if tally[values[i]] == best)


def _settled(values: list[str | None], weights: list[float], question: str, votes: int) -> bool:
    """No more plans are needed: three or more agree on a plain value and none differs, or the rest of the
    votes could not overturn the leading plain value (each plan weighs at most 1)."""
    if not any(v is not None and plain(v, question) for v in values):
        return False
    if len(values) >= 3 and len(set(values)) == 1:
        return True
    ranked = sorted(_tally(values, weights, question)[0].values(), reverse=True) + [0.0]
    return ranked[0] > ranked[1] + (votes - len(values))


def _unplanned(plan: Plan) -> bool:
    """A plan that hands the whole question to one model: the planner wrote no usable plan (or copied the
    question). If the question is a word problem (`_counts`), sampled plans may compute it."""
    return (len(plan.nodes) == 1 and not plan.nodes[0].depends_on
            and plan.nodes[0].question == escape_user(plan.question))


_HOW_MUCH = re.compile(r"\bhow (?:many|much)\b", re.I)


def _counts(question: str) -> bool:
    """A word problem: it asks how many or how much, and gives two or more numbers. A question that only
    names years ("From 1945-1949, who ...?") is not one: a sampled plan subtracting them would be wrong."""
    return bool(_HOW_MUCH.search(question)) and len(_figures(question)) >= 2


def _hopeless(values: list[str | None]) -> bool:
    """Three plans and none could be computed: this is not a problem the planner computes; stop paying."""
    return len(values) >= 3 and all(v is None for v in values)


def vote(greedy: Plan, sample: Callable[[int], Plan], votes: int, tools: list,
         on_round: Callable[[int], None] = lambda count: None) -> tuple[Plan, Tally | None]:
    """The plan to run, and how it was chosen (None: no vote: `greedy` is neither calculations alone nor a
    word problem the planner could not plan, or votes are off). `sample(k)` writes the k-th sampled plan
    (k from 1); `votes` counts the greedy plan; `on_round(count)` is told before each round of `count`
    sampled plans."""
    if votes < 2:
        return greedy, None
    alone, first = _computed(greedy, tools)  # first is None when its arithmetic fails: then the others decide
    question = greedy.question
    if not alone and not (_unplanned(greedy) and _counts(question)):
        return greedy, None
    plans, values, weights = [greedy], [first], [weight(greedy, question)]

    def more(ks: range) -> None:
        on_round(len(ks))
        with ThreadPoolExecutor(max_workers=len(ks), thread_name_prefix="complm-vote") as ex:
            for plan in ex.map(sample, ks):  # in the order asked: ties go to the earlier plan
                plans.append(plan)
                values.append(value_of(plan, tools))
                weights.append(weight(plan, question))

    while len(plans) < votes and not _settled(values, weights, question, votes) and not _hopeless(values):
        more(range(len(plans), min(len(plans) + ROUND, votes)))
    chosen = _winner(values, weights, question)
    return plans[chosen], Tally(values, chosen, sum(p.tokens for p in plans), weights)
