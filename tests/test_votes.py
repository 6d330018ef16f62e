"""Plans that vote (compose/votes.py): which plans take part, which value wins, and what a run shows of it."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from complm_cli.compose import prompts, votes
from complm_cli.compose.dag import Node, Plan
from complm_cli.experts.plugins import tools as registered
from helpers import Fake, fake_session

TOOLS = [(None, registered()["calculator"])]


def plan(*steps: tuple[str, tuple[int, ...]], fallback: str | None = None) -> Plan:
    return Plan("Q?", [Node(i, q, tuple(d)) for i, (q, d) in enumerate(steps, 1)], fallback=fallback, tokens=10)


def test_a_plan_of_calculations_alone_computes_its_last_steps_value() -> None:
    assert votes.value_of(plan(("3 * 4", ()), ("{1} + 2", (1,)), ("20 - {2}", (2,))), TOOLS) == "6"


@pytest.mark.parametrize("p", [
    plan(("How many legs does a spider have?", ()), ("3 * {1}", (1,))),  # a step a model answers
    plan(("3 * 4", ()), fallback="the planner's plan was invalid"),
    plan(("1 / 0", ()),),  # the calculator refuses it
    Plan("Q?", []),
])
def test_any_other_plan_has_no_value_to_vote_with(p: Plan) -> None:
    assert votes.value_of(p, TOOLS) is None


class Samples:
    """sample(k) for vote(): the plans to hand out in the order asked for, counting the calls (from threads)."""

    def __init__(self, *formulas: str):
        self.formulas, self.asked, self.lock = list(formulas), [], threading.Lock()

    def __call__(self, k: int) -> Plan:
        with self.lock:
            self.asked.append(k)
        return plan((self.formulas[k - 1], ()))


def test_two_samples_that_agree_confirm_the_greedy_plan_and_no_more_are_written() -> None:
    greedy, samples = plan(("6 * 7", ())), Samples("7 * 6", "21 * 2", "0 + 1", "0 + 1")
    chosen, tally = votes.vote(greedy, samples, 5, TOOLS)
    assert chosen is greedy and sorted(samples.asked) == [1, 2]
    assert tally.to_dict() == {"plans": 3, "agreed": 3, "values": ["42", "42", "42"], "chosen": 0,
                                "weights": [1.0, 1.0, 1.0]}
    assert tally.tokens == 30


def test_a_disagreement_brings_the_rest_of_the_votes_and_the_majority_wins() -> None:
    greedy, samples = plan(("6 * 8", ())), Samples("6 * 7", "12 * 4", "21 * 2", "40 + 2")
    chosen, tally = votes.vote(greedy, samples, 5, TOOLS)
    assert sorted(samples.asked) == [1, 2, 3, 4]
    assert chosen.nodes[0].question == "6 * 7"  # the earliest plan that computed the winning value
    assert tally.values == ["48", "42", "48", "42", "42"] and tally.agreed == 3 and tally.chosen == 1


def test_a_tie_goes_to_the_earlier_plan_and_plans_without_a_value_do_not_count() -> None:
    greedy, samples = plan(("6 * 8", ())), Samples("1 / 0", "6 * 7", "12 * 4", "21 * 2")
    chosen, tally = votes.vote(greedy, samples, 5, TOOLS)
    assert chosen is greedy and tally.values == ["48", None, "42", "48", "42"] and tally.agreed == 2


def test_seven_votes_stop_once_four_agree_and_go_on_while_the_rest_could_turn_it() -> None:
    settled = Samples("6 * 8", "21 * 2", "42 + 0", "40 + 2", "0 + 1", "0 + 1")  # 42 four times among five
    chosen, tally = votes.vote(plan(("6 * 7", ())), settled, 7, TOOLS)
    assert sorted(settled.asked) == [1, 2, 3, 4] and tally.agreed == 4 and tally.chosen == 0
    open_ = Samples("6 * 8", "21 * 2", "12 * 4", "42 + 0", "48 + 0", "48 - 0")  # 42 three, 48 two, of five
    chosen, tally = votes.vote(plan(("6 * 7", ())), open_, 7, TOOLS)
    assert sorted(open_.asked) == [1, 2, 3, 4, 5, 6]
    assert tally.values == ["42", "48", "42", "48", "42", "48", "48"] and chosen.nodes[0].question == "6 * 8"


def test_votes_of_three_stop_after_the_first_round() -> None:
    samples = Samples("0 + 1", "0 + 2", "0 + 3", "0 + 4")
    chosen, tally = votes.vote(plan(("2 + 3", ()),), samples, 3, TOOLS)
    assert sorted(samples.asked) == [1, 2] and len(tally.values) == 3 and chosen.nodes[0].question == "2 + 3"


def test_a_greedy_plan_whose_arithmetic_fails_still_votes_and_the_samples_decide() -> None:
    greedy, samples = plan(("1 / 0", ())), Samples("6 * 7", "21 * 2", "0 + 1", "0 + 1")
    assert votes.calculations_alone(greedy, TOOLS) and votes.value_of(greedy, TOOLS) is None
    chosen, tally = votes.vote(greedy, samples, 5, TOOLS)
    assert sorted(samples.asked) == [1, 2, 3, 4]  # no value to confirm: every vote is written
    assert chosen.nodes[0].question == "6 * 7" and tally.values == [None, "42", "42", "1", "1"] and tally.chosen == 1


@pytest.mark.parametrize("greedy, n", [(plan(("Who wrote Hamlet?", ())), 5), (plan(("6 * 7", ())), 1)])
def test_no_vote_for_a_plan_that_asks_a_model_or_with_votes_off(greedy: Plan, n: int) -> None:
    samples = Samples("0 + 1", "0 + 2", "0 + 3", "0 + 4")
    assert votes.vote(greedy, samples, n, TOOLS) == (greedy, None) and samples.asked == []


# --- through a Session: the planner samples, the winning plan runs, the run shows the vote -------------------

QUESTION = "Tom has 3 boxes of 4 pens and gives away 2 pens. How many pens does he keep?"
WRONG, RIGHT = "boxes = 3 + 4\nkept = boxes - 2", "pens = 3 * 4\nkept = pens - 2"


def planner_replies(*replies: str):
    """A Fake `respond` that gives the planner's calls these replies in turn (then the last one again)."""
    count, lock = itertools.count(), threading.Lock()
    calls: list[dict] = []

    def respond(messages: list[dict]) -> str | None:
        if messages[0]["content"] != prompts.PLANNER_SYSTEM:
            return None
        with lock:
            i = next(count)
        calls.append(i)
        return replies[min(i, len(replies) - 1)]

    respond.calls = calls
    return respond


def test_a_session_runs_the_plan_most_samples_agree_on_and_records_the_vote(tmp_path) -> None:
    respond = planner_replies(WRONG, RIGHT, RIGHT, RIGHT, RIGHT)
    fake = Fake(respond=respond)
    fake.tokens, fake.sleep = 1, 0.0
    events = []
    with fake_session(tmp_path, fake) as session:
        result = session.ask(QUESTION, mode="parallel", on_event=events.append)
    assert len(respond.calls) == 5
    stages = [(e.name, e.detail) for e in events if type(e).__name__ == "Stage"]
    assert stages[:3] == [("plan", "qwen2.5-coder-1.5b"), ("vote", "2 more plans"), ("vote", "2 more plans")]
    planner_streams = [s for s in fake.streams if s.messages[0]["content"] == prompts.PLANNER_SYSTEM]
    assert sorted(s.kwargs["temperature"] for s in planner_streams) == [0.0] + [votes.TEMPERATURE] * 4
    assert sorted(s.kwargs["seed"] for s in planner_streams) == [0, 1, 2, 3, 4]  # each sample its own, from --seed
    assert result.answer.endswith("10") and result.status == "ok"
    assert [n.calculation["formula"] for n in result.nodes] == ["3 * 4", "{1} - 2"]
    data = result.to_dict()
    assert data["plan_votes"] == {"plans": 5, "agreed": 4, "values": ["5", "10", "10", "10", "10"], "chosen": 1,
                                  "weights": [1.0, 1.0, 1.0, 1.0, 1.0]}
    assert data["tokens"]["plan"] == sum(s.yielded for s in planner_streams)  # every plan written counts
    from complm_cli import render

    assert "4 of 5 plans computed 10" in render.summary_line(result)
    json.dumps(data)


def test_a_question_that_asks_a_model_is_planned_once(tmp_path) -> None:
    question = "How many legs do three spiders have?"
    respond = planner_replies('legs = ask("How many legs does a spider have?")\ntotal = 3 * legs')
    fake = Fake(respond=respond, answers={"How many legs does a spider have?": "A spider has 8 legs."})
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        result = session.ask(question, mode="parallel")
    assert len(respond.calls) == 1 and result.plan.votes is None and result.answer.endswith("24")
    assert result.to_dict()["plan_votes"] is None


def test_votes_one_plans_a_word_problem_once(tmp_path) -> None:
    respond = planner_replies(WRONG, RIGHT)
    fake = Fake(respond=respond)
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        session.settings = session.settings.replace(votes=1)
        result = session.ask(QUESTION, mode="parallel")
    assert len(respond.calls) == 1 and result.answer.endswith("5") and result.plan.votes is None


def test_a_vote_where_no_plan_could_be_computed_says_so() -> None:
    from complm_cli import render

    samples = Samples("1 / 0", "2 / 0", "3 / 0", "4 / 0", "5 / 0", "6 / 0")
    chosen, tally = votes.vote(plan(("0 / 0", ())), samples, 7, TOOLS)
    # Three plans and no value: the rest are not written (the planner cannot compute this one).
    assert tally.agreed == 0 and tally.chosen == 0 and len(tally.values) == 3 and sorted(samples.asked) == [1, 2]
    assert render.vote_words(tally.to_dict()) == "none of 3 plans could be computed"


# --- which votes weigh more: plans that use the question's numbers, values the question could have ------------

WORDS = "Tom buys 3 boxes of 4 pens and gives away 2 pens. How many pens does he keep?"


def written(raw: str, question: str = WORDS) -> Plan:
    """A plan of calculations as the planner writes it (its raw text is what `weight` reads)."""
    lines = [line.split(" = ", 1)[1] for line in raw.splitlines()]
    steps, names = [], {}
    for i, (line, formula) in enumerate(zip(raw.splitlines(), lines), 1):
        deps = tuple(n for name, n in names.items() if name in formula.split())
        for name, n in names.items():
            formula = " ".join(f"{{{n}}}" if part == name else part for part in formula.split())
        steps.append(Node(i, formula, deps))
        names[line.split(" = ", 1)[0]] = i
    return Plan(question, steps, raw=raw, tokens=10)


@pytest.mark.parametrize("raw, share", [
    ("pens = 3 * 4\nkept = pens - 2", 1.0),
    ("boxes = 3 + 4\nkept = boxes", 2 / 3),  # the 2 pens given away are left out
    ("kept = 12 - 2", 1 / 3),  # {N}-free arithmetic done in the head uses only the 2
])
def test_a_plan_weighs_the_share_of_the_questions_numbers_it_writes(raw: str, share: float) -> None:
    assert votes.weight(written(raw), WORDS) == pytest.approx(share)


@pytest.mark.parametrize("question, raw", [
    ("The budget is $32 million; half goes to schools. How much is left, in millions?", "left = 32 / 2"),
    ("A $80 coat is 25% off. What does it cost?", "cost = 80 * (1 - 0.25)"),
    ("Tea costs $1,200 a ton. What do 3 tons cost?", "cost = 1200 * 3"),
])
def test_a_number_may_be_written_another_way_and_still_count(question: str, raw: str) -> None:
    assert votes.weight(written(raw, question), question) == 1.0


def test_a_number_written_from_its_point_counts_only_as_itself() -> None:
    question = "A cup holds .5 liters. How much do 3 cups hold?"
    assert votes.weight(written("total = 0.5 * 3", question), question) == 1.0
    assert votes.weight(written("total = 5 * 3", question), question) == 0.5  # 5 is not the question's .5


def test_references_to_earlier_steps_are_not_numbers_of_the_question() -> None:
    p = Plan(WORDS, [Node(1, "3 * 5", ()), Node(2, "{1} - 4", (1,))])  # no raw: the steps are read
    assert votes.weight(p, WORDS) == pytest.approx(2 / 3)  # 3 and 4 are used; {1} is not the question's 1


@pytest.mark.parametrize("value, question, ok", [
    ("10", WORDS, True),
    ("7.333333", WORDS, False),  # more decimal places than any number the question gives: a wrong division
    ("-5", WORDS, False),  # the question gives no negative number
    ("2.5", "A pen costs $1.5 and a pad $1. What do both cost?", True),
    ("6.25", "He has $10 and spends $3.75. What is left?", True),
    ("-8", "It is -3 degrees and falls 5 more. How cold is it?", True),
    ("2024-04-24 (Wednesday)", "What date is 100 days after 2024-01-15?", True),  # not a number: not doubted
])
def test_a_value_is_plain_when_the_question_could_have_it(value: str, question: str, ok: bool) -> None:
    assert votes.plain(value, question) is ok


def test_a_plan_that_leaves_a_given_number_out_weighs_less_and_loses_a_tie_of_counts() -> None:
    greedy = written("kept = 3 + 4")  # 7, but the 2 pens given away are left out: weight 2/3
    plans = [written("pens = 3 * 4\nkept = pens - 2"), written("kept = 4 + 3"),  # 10 (weight 1), 7 (2/3)
             written("pens = 4 * 3\nkept = pens - 2"), written("kept = 3 / 0")]  # 10 (1), no value
    chosen, tally = votes.vote(greedy, lambda k: plans[k - 1], 5, TOOLS)
    assert tally.values == ["7", "10", "7", "10", None]  # two each: counted alone, the greedy plan's 7 would win
    assert chosen is plans[0] and tally.chosen == 1 and tally.weights == pytest.approx([2 / 3, 1, 2 / 3, 1, 1 / 3])


def test_a_doubtful_value_loses_to_a_plain_one_that_fewer_plans_compute() -> None:
    greedy = written("each = 3 * 4 / 5\nkept = each - 2")  # 0.4: more places than the question's numbers
    plans = [written("each = 3 * 4 / 5\nkept = each - 2"), written("pens = 3 * 4\nkept = pens - 2"),
             written("kept = 2 - 3 * 4"), written("each = 4 * 3 / 5\nkept = each - 2")]  # 0.4, 10, -10, 0.4
    chosen, tally = votes.vote(greedy, lambda k: plans[k - 1], 5, TOOLS)
    assert tally.values == ["0.4", "0.4", "10", "-10", "0.4"]
    assert tally.chosen == 2 and tally.agreed == 1 and chosen.nodes[-1].question == "{1} - 2"
    from complm_cli import render

    assert render.vote_words(tally.to_dict()) == ("1 of 5 plans computed 10 (more plans computed a doubtful value, "
                                                  "or used fewer of the question's numbers)")


def test_doubtful_values_still_vote_when_no_plan_computed_a_plain_one() -> None:
    plans = [written("each = 3 * 4 / 5\nkept = each - 2"), written("kept = 2 - 3 * 4"),
             written("each = 4 * 3 / 5\nkept = each - 2"), written("kept = 2 - 12")]
    chosen, tally = votes.vote(written("kept = 2 - 4 * 3"), lambda k: plans[k - 1], 5, TOOLS)
    assert tally.values == ["-10", "0.4", "-10", "0.4", "-10"] and tally.chosen == 0 and tally.agreed == 3


# --- a planner that wrote no usable plan, for a question with numbers ---------------------------------------

def test_when_the_planner_wrote_no_plan_for_a_word_problem_sampled_plans_vote() -> None:
    from complm_cli.compose.plan import single_node

    greedy = single_node(WORDS, "the planner's plan was invalid (no plan lines)")
    greedy.question = WORDS
    plans = [written("pens = 3 * 4\nkept = pens - 2"), written("pens = 4 * 3\nkept = pens - 2"),
             written("kept = 12 - 2"), written("kept = 3 + 4")]
    chosen, tally = votes.vote(greedy, lambda k: plans[k - 1], 5, TOOLS)
    assert tally.values == [None, "10", "10", "10", "7"] and chosen is plans[0]


def test_a_whole_question_plan_stops_after_one_round_when_no_sample_computes() -> None:
    from complm_cli.compose.plan import single_node

    greedy = single_node(WORDS)  # the planner copied the question: one model answers it
    samples = Samples("Who wrote Hamlet?", "Who wrote Hamlet?", "6 * 7", "6 * 7")
    chosen, tally = votes.vote(greedy, samples, 7, TOOLS)
    assert chosen is greedy and sorted(samples.asked) == [1, 2] and tally.values == [None, None, None]


def test_plans_that_agree_on_a_date_settle_the_vote() -> None:
    question = "What date is 100 days after 2024-01-15?"
    greedy = Plan(question, [Node(1, 'add_days("2024-01-15", 100)', ())], raw='day = add_days("2024-01-15", 100)')
    samples = Samples('add_days("2024-01-15", 100)', 'add_days("2024-01-15", 100)', "6 * 7", "6 * 7")
    chosen, tally = votes.vote(greedy, samples, 7, TOOLS)
    assert chosen is greedy and sorted(samples.asked) == [1, 2] and len(set(tally.values)) == 1
    assert tally.values[0].startswith("2024-04-24")


@pytest.mark.parametrize("question", [
    "Who painted the Mona Lisa?",
    "From 1945-1949 Dick Humbert played for an NFL team based in what state?",  # numbers, but no word problem
    "How many moons does Mars have?",  # how many, but the question gives no numbers
])
def test_a_whole_question_that_is_no_word_problem_is_not_voted_on(question: str) -> None:
    from complm_cli.compose.plan import single_node

    samples = Samples("1949 - 1945", "1949 - 1945")
    assert votes.vote(single_node(question), samples, 7, TOOLS) == (single_node(question), None)
    assert samples.asked == []


def test_the_graph_and_the_summary_say_how_the_plan_was_chosen() -> None:
    from complm_cli import render
    from rich.console import Console

    p = plan(("3 * 4", ()), ("{1} - 2", (1,)))
    p.votes = {"plans": 5, "agreed": 4, "values": ["5", "10", "10", "10", "10"], "chosen": 1}
    console = Console(width=120, record=True)
    console.print(render.tree(p, {1: _calc_route("3 * 4"), 2: _calc_route("{1} - 2")}))
    assert "4 of 5 plans computed 10" in console.export_text()
    assert render.graph_dict(p, {1: _calc_route("3 * 4"), 2: _calc_route("{1} - 2")})["votes"] == p.votes


def _calc_route(formula: str):
    from complm_cli.compose.route import Route

    return Route("calculator", 1.0, {}, "calculation", formula)


# --- on the real engine (the 135M model as planner) ------------------------------------------------------------

def test_sampled_plans_decode_together_on_the_real_engine_and_follow_the_seed(models) -> None:
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session
    from tests.conftest import TINY_CATALOG

    question = "A shop sells 6 boxes of 7 pens. How many pens does it sell?"
    with Session(load_settings(flags={"catalog": TINY_CATALOG, "threads": 2}), modes=("parallel",)) as session:
        planning = session.planning
        greedy = plan(("6 * 7", ()))
        chosen, tally = votes.vote(greedy, lambda k: planning._sample(question, question, k, None), 5,
                                   session.routing.tools)
        again = [planning._sample(question, question, 3, None).raw for _ in range(2)]
    assert tally.values[0] == "42" and len(tally.values) in (3, 5) and tally.tokens > greedy.tokens
    assert again[0] == again[1] and again[0]  # a sample is repeatable: its seed is --seed plus its number
