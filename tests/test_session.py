"""A whole Session over fake workers and a fake embedder: partial and failed answers, the direct answer, timeouts, the user's braces."""

from __future__ import annotations

import json
import re
import time

import pytest

from complm_cli.compose import prompts
from complm_cli.errors import UsageError
from tests.helpers import (Fake, FakeWorker, ask_with_plan, fake_session, independent)



CHAIN_QUESTION = "What is the capital of the country where Picasso was born, and what is 17 times 3?"
CHAIN_PLAN = json.dumps({"steps": [{"q": "In which country was Picasso born?", "deps": []},
                                   {"q": "What is the capital of {1}?", "deps": [1]},
                                   {"q": "What is 17 times 3?", "deps": []}]})


def test_a_failed_node_gives_a_partial_answer_that_names_what_is_missing(tmp_path) -> None:
    fake = Fake(answers={CHAIN_QUESTION: CHAIN_PLAN, "In which country was Picasso born?": "Spain",
                         "What is 17 times 3?": "51"},
                fail={"In which country was Picasso born?": RuntimeError("the expert crashed")})
    fake.tokens, fake.sleep = 2, 0.0
    fake.respond = lambda messages: "the capital is Paris" if messages[0]["content"] == prompts.AGGREGATOR_SYSTEM else None
    with fake_session(tmp_path, fake) as session:
        result = session.ask(CHAIN_QUESTION)
    assert result.status == "partial" and "step 1 did not finish" in result.reason
    assert [n.status for n in result.nodes] == ["failed", "skipped", "done"]
    assert "crashed" in result.nodes[0].reason and "step 1" in result.nodes[1].reason
    # No model is asked to fill the gap (it made missing values up): what finished, then what could not be done.
    assert not result.aggregated and all(s.messages[0]["content"] != prompts.AGGREGATOR_SYSTEM for s in fake.streams)
    assert result.answer.startswith("17 * 3 = 51.") and "Paris" not in result.answer
    assert "Step 1 (In which country was Picasso born?) could not be answered: RuntimeError: the expert crashed." in result.answer


def test_a_refused_calculation_is_said_not_done_by_a_model(tmp_path) -> None:
    question = "Who wrote Hamlet, and what is 10 to the power of 10 to the power of 10?"
    result, fake = ask_with_plan(tmp_path, question, 'author = ask("Who wrote Hamlet?")\nbig = 10 ** 10 ** 10',
                                 {"Who wrote Hamlet?": "William Shakespeare wrote Hamlet."})
    assert result.answer == ("William Shakespeare wrote Hamlet. "
                             "Step 2 (10 ** 10 ** 10) could not be computed: the power is too large.")
    assert result.status == "partial" and len(fake.streams) == 2  # the planner and step 1: no aggregator


def test_a_failed_calculation_over_earlier_steps_keeps_their_answers(tmp_path) -> None:
    question = "What are 3 stacks of gold bars worth, times ten to the thousandth power?"
    plan = ('price = ask("What is the price of a gold bar?")\n'
            'bars = ask("How many bars are in a stack?")\ntotal = 3 * bars * price * 10 ** 1000')
    result, _ = ask_with_plan(tmp_path, question, plan, {"What is the price of a gold bar?": "About 700,000 dollars.",
                                                         "How many bars are in a stack?": "10 bars."})
    assert result.answer == ("About 700,000 dollars. 10 bars. "
                             "Step 3 (3 * step 2 * step 1 * 10 ** 1000) could not be computed: the result is too large.")


def test_an_empty_final_answer_is_a_failure_not_ok(tmp_path) -> None:
    fake = Fake(answers={CHAIN_QUESTION: CHAIN_PLAN, "In which country was Picasso born?": "Spain",
                         "What is the capital of Spain?": "Madrid", "What is 17 times 3?": "51"})
    fake.tokens, fake.sleep = 1, 0.0
    fake.respond = lambda messages: " " if messages[0]["content"] == prompts.AGGREGATOR_SYSTEM else None
    with fake_session(tmp_path, fake) as session:
        result = session.ask(CHAIN_QUESTION)
    assert all(n.status == "done" for n in result.nodes)
    assert result.answer == "" and result.status == "failed"


def test_session_ask_end_to_end_with_fakes(tmp_path) -> None:
    from complm_cli.events import AnswerDone, PlanReady, Stage

    question = CHAIN_QUESTION
    fake = Fake(answers={question: CHAIN_PLAN, "In which country was Picasso born?": "Spain",
                         "What is the capital of Spain?": "Madrid", "What is 17 times 3?": "51"})
    fake.tokens, fake.sleep = 1, 0.0
    fake.respond = lambda messages: "Madrid; 51" if messages[0]["content"] == prompts.AGGREGATOR_SYSTEM else None

    session = fake_session(tmp_path, fake)
    embedder = session.embedder
    events = []
    try:
        result = session.ask(question, on_event=events.append)
    finally:
        session.close()

    assert result.status == "ok" and result.answer == "Madrid; 51" and result.aggregated
    assert result.plan.fallback is None and len(result.plan.nodes) == 3
    # "What is 17 times 3?" is arithmetic: the calculator answers it, exactly and without a model
    assert {i: result.routes[i].expert for i in (1, 2, 3)} == {1: "smollm2-135m", 2: "smollm2-135m", 3: "calculator"}
    assert [n.answer for n in result.nodes] == ["Spain", "Madrid", "51"]
    assert result.nodes[2].calculation == {"formula": "17 * 3", "expression": "17 * 3", "result": "51"}
    assert "What is 17 times 3?" not in [c.messages[-1]["content"] for c in fake.streams]
    assert result.nodes[1].question == "What is the capital of Spain?"
    planner_call = fake.streams[0]
    assert planner_call.expert == "qwen2.5-coder-1.5b"
    assert planner_call.messages == prompts.planner_messages(question)
    aggregator_call = fake.streams[-1]
    assert aggregator_call.messages[0]["content"] == prompts.AGGREGATOR_SYSTEM
    assert "Answer: Madrid" in aggregator_call.messages[-1]["content"]
    assert embedder.started >= 1
    assert [e.name for e in events if isinstance(e, Stage)] == ["plan", "route", "execute", "aggregate"]
    assert any(isinstance(e, PlanReady) for e in events)
    assert isinstance(events[-1], AnswerDone) and events[-1].result is result
    assert sorted(set(fake.unloads)) == sorted(set(fake.loads))  # close() unloaded every model


def test_braces_and_hash_numbers_the_user_typed_are_never_references(tmp_path) -> None:
    from complm_cli.compose.dag import escape_user

    question = "Which team is ranked #1 in the FIFA ranking, and does the regex \\d{3} match 123?"
    # A planner copies the user's words, here as it sees them (escaped).
    steps = [escape_user("Which team is ranked #1 in the FIFA ranking?"), escape_user("Does the regex \\d{3} match 123?")]
    plan = "\n".join(f'p{i} = ask("{q}")' for i, q in enumerate(steps, 1))
    fake = Fake(answers={escape_user(question): plan, "Which team is ranked #1 in the FIFA ranking?": "Argentina",
                         "Does the regex \\d{3} match 123?": "Yes"})
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        result = session.ask(question)
    assert [n.question for n in result.nodes] == ["Which team is ranked #1 in the FIFA ranking?", "Does the regex \\d{3} match 123?"]
    assert [n.depends_on for n in result.nodes] == [(), ()] and result.plan.fallback is None
    assert [n.answer for n in result.nodes] == ["Argentina", "Yes"]
    assert result.plan.to_dict()["nodes"][0]["question"] == "Which team is ranked #1 in the FIFA ranking?"


def test_the_timeout_bounds_planning_too_through_the_one_generation_path(tmp_path) -> None:
    """The planner once generated outside the nodes' loop, with no deadline: a stuck planner ran to
    its token budget. Now every stage goes through generate(), with one deadline and one error."""
    from complm_cli.experts.engine import GenerationTimeout

    fake = Fake(tokens=400, sleep=0.01)  # the planner's reply would take 4 s
    session = fake_session(tmp_path, fake)
    session.settings = session.settings.replace(node_timeout=0.3)
    try:
        with pytest.raises(GenerationTimeout, match="timed out after 0.3 s"):  # without a deadline: no error at all
            session.ask(CHAIN_QUESTION)
    finally:
        session.close()
    assert fake.active == 0 and fake.streams[0].end is not None  # the planner's stream was closed


def test_by_default_a_three_part_fan_out_runs_all_at_once_on_two_cores(tmp_path) -> None:
    # Nodes of one model share a batch, so the default is not the core count: the
    # third node of a level must not wait for a worker (bench/latency.py).
    fake = Fake(tokens=10, sleep=0.02)
    plan = independent(3)
    with fake_session(tmp_path, fake) as session:
        session.settings = session.settings.replace(workers=0)
        assert session.settings.threads == 2 and session.settings.worker_count() == 4
        result = session.ask("Three independent questions?", plan=plan, routes=session.route(plan))
    assert result.status == "ok" and fake.max_active == 3


def test_a_direct_answer_that_is_empty_fails_as_a_composed_one_does(tmp_path) -> None:
    fake = Fake(answers={"Say nothing.": "   ", "Say hi.": "Hi there."})
    with fake_session(tmp_path, fake) as session:
        empty = session.ask("Say nothing.", mode="monolithic")
        fine = session.ask("Say hi.", mode="monolithic")
    assert empty.status == "failed" and empty.nodes[0].status == "failed" and "empty answer" in empty.nodes[0].reason
    assert fine.status == "ok" and fine.answer == "Hi there."
    record = fine.to_dict()  # every mode's record has the same timing keys, and the run's memory where it belongs
    assert record["timings"]["overlap_s"] == 0.0 and record["restored_parts"] == [] and record["memory_bytes"] > 0


def test_the_direct_answer_must_come_from_a_model(tmp_path) -> None:
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.compose.session import Session

    settings = Settings(cache_dir=tmp_path / "cache", config_dir=tmp_path / "config")
    for name in ("calculator", "all-minilm-l6-v2"):
        with pytest.raises(UsageError, match=f"'{name}' is not a model that can answer"):
            Session(settings, load_catalog(), pull=False, modes=("monolithic",), monolithic=name)


def test_a_step_that_never_ran_shows_the_users_braces_as_written(tmp_path) -> None:
    from complm_cli.compose.dag import escape_user

    question = "Who wrote the regex \\d{3}, and what does {3} match in it?"
    escaped = f"What does {escape_user('{3}')} match in {{1}}?"  # the planner sees the user's braces escaped
    plan = json.dumps({"steps": [{"q": "Who wrote the regex?", "deps": []}, {"q": escaped, "deps": [1]}]})
    fake = Fake(answers={escape_user(question): plan}, fail={"Who wrote the regex?": RuntimeError("the expert crashed")})
    fake.tokens, fake.sleep = 2, 0.0
    with fake_session(tmp_path, fake) as session:
        result = session.ask(question)
    assert [n.status for n in result.nodes] == ["failed", "skipped"]
    assert result.to_dict()["nodes"][1]["question"] == "What does {3} match in {1}?"


def test_a_direct_answers_node_time_leaves_the_model_load_out_as_a_composed_nodes_does(tmp_path, monkeypatch) -> None:
    load = FakeWorker.load

    def slow_load(self) -> None:
        time.sleep(1.0)
        load(self)

    monkeypatch.setattr(FakeWorker, "load", slow_load)
    fake = Fake(answers={"Say hi.": "Hi there."}, sleep=0.0)
    with fake_session(tmp_path, fake) as session:
        result = session.ask("Say hi.", mode="monolithic")
    node = result.nodes[0]
    assert node.started >= 1.0  # it starts once its model is loaded
    assert result.timings["execute_s"] - node.seconds >= 1.0  # the phase still counts the load
    assert result.timings["nodes_sum_s"] == node.seconds


@pytest.mark.parametrize("question, answer", [
    ("How many days are there between 2024-01-15 and 2024-03-01?", "days('2024-01-15', '2024-03-01') = 46 days"),
    ("What day of the week was 1 March 2024?", "weekday('2024-03-01') = Friday"),
    ("What is 15% of 80?", "15 / 100 * 80 = 12"),
])
def test_a_question_the_calculator_computes_whole_is_not_planned(tmp_path, question, answer) -> None:
    # The planner model split the first into look-ups of the two dates and answered 14 days; no model is asked now.
    fake = Fake()
    with fake_session(tmp_path, fake) as session:
        result = session.ask(question)
    assert fake.streams == [] and fake.created == []
    assert [(result.routes[n.id].expert, n.status) for n in result.nodes] == [("calculator", "done")]
    assert result.status == "ok" and result.answer == answer and result.plan.seconds == 0


def test_a_plan_counts_from_a_date_an_expert_gives(tmp_path) -> None:
    question = "How old was Neil Armstrong when he walked on the Moon on 1969-07-20?"
    result, fake = ask_with_plan(tmp_path, question, 'born = ask("On what date was Neil Armstrong born?")\nage = years(born, "1969-07-20")',
                                 {"On what date was Neil Armstrong born?": "Neil Armstrong was born on August 5, 1930."})
    assert [result.routes[n.id].expert for n in result.nodes] == ["smollm2-135m", "calculator"]
    assert (result.nodes[1].question, result.nodes[1].answer) == ("years('1930-08-05', '1969-07-20')", "38 years")
    # The step the calculation counts from was asked for the whole date, not a number.
    asked = next(s for s in fake.streams if s.messages[-1]["content"] == "On what date was Neil Armstrong born?")
    assert asked.messages[0]["content"].endswith(prompts.DATE_HINT)


LONG_REPLY = " ".join(f"word{i}" for i in range(300))


@pytest.mark.parametrize("mode", ["parallel", "monolithic"])
def test_an_answer_that_runs_out_of_tokens_is_never_ok(tmp_path, mode) -> None:
    question = "Tell me about Rome."
    fake = Fake(answers={question: LONG_REPLY})
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        result = session.ask(question, mode=mode)
    assert result.answer.startswith("word0") and result.status == "partial"
    assert result.nodes[0].cut and "token limit" in result.reason
    assert result.to_dict()["reason"] == result.reason and result.to_dict()["nodes"][0]["cut"] is True


def test_an_answer_that_ends_within_its_budget_is_ok(tmp_path) -> None:
    fake = Fake(answers={"Tell me about Rome.": "Rome is the capital of Italy."})
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        result = session.ask("Tell me about Rome.", mode="monolithic")
    assert result.status == "ok" and result.reason is None and not result.nodes[0].cut


def _aggregator_says(text: str):
    return lambda messages: text if messages[0]["content"].startswith(prompts.AGGREGATOR_SYSTEM) else None


def test_a_cut_aggregation_makes_the_run_partial(tmp_path) -> None:
    question = "Who was born first, Mozart or Beethoven?"
    result, _ = ask_with_plan(tmp_path, question, 'a = ask("When was Mozart born?")\nb = ask("When was Beethoven born?")',
                              {"When was Mozart born?": "1756", "When was Beethoven born?": "1770"},
                              respond=_aggregator_says(LONG_REPLY))
    assert result.aggregated and result.status == "partial" and result.reason == "the answer stopped at its token limit"
    assert all(n.status == "done" and not n.cut for n in result.nodes)


COUNTRIES = ["Ghana", "Kenya", "Nigeria", "Egypt", "Peru", "Chile", "Brazil", "France", "Spain", "Italy", "Japan", "China",
             "India", "Nepal", "Iran", "Iraq", "Cuba", "Mali", "Chad", "Niger", "Laos", "Fiji", "Oman", "Qatar", "Yemen",
             "Togo", "Benin", "Gabon", "Sudan", "Norway"]


@pytest.mark.parametrize("count", [8, 13, 30])
def test_a_long_list_is_split_into_steps_that_cover_every_item_without_the_planner(tmp_path, count) -> None:
    items = COUNTRIES[:count]
    question = f"What are the capitals of {', '.join(items[:-1])}, and {items[-1]}?"
    fake = Fake(respond=lambda messages: "Capitals of " + messages[-1]["content"].split(" of ", 1)[1])
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        result = session.ask(question)
    assert all(question not in s.messages[-1]["content"] for s in fake.streams)  # no planner call
    steps = [n.question for n in result.nodes]
    assert 2 <= len(steps) <= 6 and all(s.startswith("What are the capitals of ") for s in steps)
    # Every item in exactly one step, in the order asked; the answers listed in that order, no aggregator.
    covered = [c for s in steps for c in items if c in s.replace(",", " ").replace("?", " ").split()]
    assert covered == items
    assert result.status == "ok" and not result.aggregated
    places = [re.search(rf"\b{c}\b", result.answer).start() for c in items]
    assert places == sorted(places)


def test_a_question_that_lists_many_things_gets_room_to_answer_them(tmp_path) -> None:
    items = COUNTRIES[:20]
    question = f"What are the capitals of {', '.join(items[:-1])} and {items[-1]}?"
    fake = Fake()
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        session.ask(question, mode="monolithic")
        session.ask("What is the capital of Ghana?", mode="monolithic")
    assert [s.kwargs["max_tokens"] for s in fake.streams] == [24 * 20 + 64, 256]


@pytest.mark.parametrize("question, plan, answers, said", [
    # A comparison: the calculation found the larger number; the answer must name the animal.
    ("Which is heavier, an elephant or a hippo?",
     'e = ask("How much does an elephant weigh in kg?")\nh = ask("How much does a hippo weigh in kg?")\nheavier = max(e, h)',
     {"How much does an elephant weigh in kg?": "About 6000 kg.", "How much does a hippo weigh in kg?": "About 1500 kg."},
     "An elephant is heavier: about 6000 kg against 1500 kg."),
    # A yes/no question over a calculation: yes or no, not the number.
    ("Do three spiders have more than 20 legs in total?",
     'legs = ask("How many legs does a spider have?")\ntotal = 3 * legs',
     {"How many legs does a spider have?": "A spider has 8 legs."},
     "Yes: three spiders have 24 legs."),
])
def test_a_choice_or_yes_no_over_a_calculation_is_answered_in_words(tmp_path, question, plan, answers, said) -> None:
    result, _ = ask_with_plan(tmp_path, question, plan, answers, respond=_aggregator_says(said))
    assert result.nodes[-1].calculation and result.aggregated
    assert result.answer.startswith(said) and result.status == "ok"


def test_a_plan_that_ends_in_a_calculation_still_answers_with_it_when_a_number_is_asked(tmp_path) -> None:
    question = "How many legs do three spiders have?"
    result, _ = ask_with_plan(tmp_path, question, 'legs = ask("How many legs does a spider have?")\ntotal = 3 * legs',
                              {"How many legs does a spider have?": "A spider has 8 legs."}, respond=_aggregator_says("Twelve."))
    assert result.answer == "3 * 8 = 24" and not result.aggregated


@pytest.mark.parametrize("question", ["What is the tallest mountain in Africa, and how tall is it in meters?",
                                      "Which is the tallest mountain in Africa? How tall is it in meters?"])
def test_a_chain_asked_for_each_of_its_steps_answers_every_one(tmp_path, question) -> None:
    result, _ = ask_with_plan(tmp_path, question,
                              'm = ask("What is the tallest mountain in Africa?")\nh = ask("How tall is {m} in meters?")',
                              {"What is the tallest mountain in Africa?": "Mount Kilimanjaro.",
                               "How tall is Mount Kilimanjaro in meters?": "It is 5,895 meters tall."},
                              respond=_aggregator_says("5,895 meters."))
    assert "Kilimanjaro" in result.answer and "5,895" in result.answer and not result.aggregated


def test_a_chain_asked_for_its_end_only_answers_with_the_end(tmp_path) -> None:
    question = "In which country was the author of Don Quixote born?"
    result, _ = ask_with_plan(tmp_path, question, 'a = ask("Who wrote Don Quixote?")\nc = ask("In which country was {a} born?")',
                              {"Who wrote Don Quixote?": "Miguel de Cervantes.",
                               "In which country was Miguel de Cervantes born?": "In Spain."})
    assert result.answer == "In Spain."
