"""A whole Session over fake workers and a fake embedder: partial and failed answers, the direct answer, timeouts, the user's braces."""

from __future__ import annotations

import json
import time

import pytest

from complm_cli.compose import prompts
from complm_cli.errors import UsageError
from tests.helpers import (Fake, FakeWorker, fake_session, independent)



CHAIN_QUESTION = "What is the capital of the country where Picasso was born, and what is 17 times 3?"
CHAIN_PLAN = json.dumps({"steps": [{"q": "In which country was Picasso born?", "deps": []},
                                   {"q": "What is the capital of {1}?", "deps": [1]},
                                   {"q": "What is 17 times 3?", "deps": []}]})


def test_a_failed_node_gives_a_partial_answer_that_names_what_is_missing(tmp_path) -> None:
    fake = Fake(answers={CHAIN_QUESTION: CHAIN_PLAN, "In which country was Picasso born?": "Spain",
                         "What is 17 times 3?": "51"},
                fail={"In which country was Picasso born?": RuntimeError("the expert crashed")})
    fake.tokens, fake.sleep = 2, 0.0
    fake.respond = lambda messages: "51, and the capital is unknown" if messages[0]["content"] == prompts.AGGREGATOR_SYSTEM else None
    with fake_session(tmp_path, fake) as session:
        result = session.ask(CHAIN_QUESTION)
    assert result.status == "partial" and result.answer
    assert [n.status for n in result.nodes] == ["failed", "skipped", "done"]
    assert "crashed" in result.nodes[0].reason and "step 1" in result.nodes[1].reason
    aggregator_call = fake.streams[-1]
    assert aggregator_call.messages[-1]["content"].count("(missing") == 2


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
