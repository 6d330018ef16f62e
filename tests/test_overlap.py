"""Planning and execution at once: Session.ask runs steps while a (fake) planner is still writing."""

from __future__ import annotations

import threading

import pytest

from complm_cli.compose.cancel import Cancelled

from complm_cli.compose import prompts
from complm_cli.events import NodeFailed, NodeStarted, PlanReady, StepPlanned
from complm_cli.compose.records import Execution, NodeResult
from complm_cli.compose.overlap import overlap_seconds
from tests.helpers import WAIT, Fake, FakeWorker, fake_session

QUESTION = "What is the capital of France, and in which country was Picasso born?"
CAPITAL, COUNTRY = "What is the capital of France?", "In which country was Picasso born?"
PLAN = f'capital = ask("{CAPITAL}")\ncountry = ask("{COUNTRY}")'
LAST = "planner: last token"  # put in the event list just before the planner's last piece


class Script:
    """The planner's replies, one per call, line by line; after `hold` lines it waits for `go`."""

    def __init__(self, events: list, *replies: str, hold: int = 2, patience: float = WAIT, interrupt: bool = False):
        self.events, self.replies, self.hold, self.patience = events, list(replies), hold, patience
        self.interrupt = interrupt  # Ctrl-C in the planner's thread once it may go on
        self.go = threading.Event()
        self.calls: list[list[dict]] = []
        self.waited: list[bool] = []

    def stream(self, messages):
        reply = self.replies[len(self.calls)]
        first = not self.calls
        self.calls.append(messages)
        pieces = [line + "\n" for line in reply.split("\n")] + ["\n"]  # a blank line ends the plan

        def gen():
            for i, piece in enumerate(pieces):
                if first and i == self.hold:
                    self.waited.append(self.go.wait(self.patience))
                    if self.interrupt:
                        raise KeyboardInterrupt
                if i == len(pieces) - 1:
                    self.events.append(LAST)
                yield piece

        return gen()


def session_with(tmp_path, fake: Fake, script: Script, **settings):
    class Worker(FakeWorker):
        def stream(self, messages, **kwargs):
            if messages[0]["content"] == prompts.PLANNER_SYSTEM:
                return script.stream(messages)
            return super().stream(messages, **kwargs)

    fake.factory = lambda exp, path: Worker(fake, exp, path)
    session = fake_session(tmp_path, fake)
    session.settings = session.settings.replace(**settings)
    return session


def first(events: list, kind, node_id=None, question=None) -> int:
    return next(i for i, e in enumerate(events) if isinstance(e, kind) and (node_id is None or e.node_id == node_id)
                and (question is None or e.question == question))


def test_a_step_starts_before_the_planner_has_finished(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: "Paris", COUNTRY: "Spain"}, sleep=0.01)
    script = Script(events, PLAN)

    listen = go_on(events, script, NodeStarted)

    with session_with(tmp_path, fake, script) as session:
        result = session.ask(QUESTION, on_event=listen)
    assert script.waited == [True], "no step started while the planner was writing"
    assert first(events, StepPlanned) < first(events, NodeStarted) < events.index(LAST) < first(events, PlanReady)
    assert [n.question for n in result.nodes] == [CAPITAL, COUNTRY] and [n.answer for n in result.nodes] == ["Paris", "Spain"]
    assert result.status == "ok" and result.answer == "Paris. Spain."
    assert result.streamed == {"released": 2, "kept": 2, "discarded": [], "stopped": None}
    assert result.timings["overlap_s"] > 0
    assert result.to_dict()["plan_stream"]["kept"] == 2
    assert [s.question for s in fake.streams].count(CAPITAL) == 1  # a kept step is not run again
    planned = [e for e in events if isinstance(e, StepPlanned)]
    assert [(e.node.id, e.route.expert) for e in planned] == [(1, "smollm2-135m"), (2, "smollm2-135m")]


def test_sequential_mode_plans_first_then_runs_one_step_at_a_time(tmp_path) -> None:
    # The baseline overlaps nothing: no step may start while the planner writes.
    events: list = []
    fake = Fake(answers={CAPITAL: "Paris", COUNTRY: "Spain"}, sleep=0.01)
    script = Script(events, PLAN, hold=99)

    with session_with(tmp_path, fake, script) as session:
        result = session.ask(QUESTION, on_event=events.append, mode="sequential")
    assert events.index(LAST) < first(events, PlanReady) < first(events, NodeStarted)
    assert not any(isinstance(e, StepPlanned) for e in events)
    assert result.streamed is None and result.timings["overlap_s"] == 0.0
    assert result.answer == "Paris. Spain." and fake.max_active == 1


def go_on(events: list, script, kind):
    """A listener that records every event and lets the scripted planner go on at the first `kind`."""

    def listen(event) -> None:
        events.append(event)
        if isinstance(event, kind):
            script.go.set()

    return listen


def test_a_streamed_step_the_final_plan_changed_is_discarded(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: " ".join(["word"] * 400), QUESTION: "Paris; Spain"}, sleep=0.01)
    # A plan of one step runs the whole question instead: the step already started gives way.
    script = Script(events, f'capital = ask("{CAPITAL}")', hold=1)
    listen = go_on(events, script, NodeStarted)

    with session_with(tmp_path, fake, script) as session:
        result = session.ask(QUESTION, on_event=listen)
    assert script.waited == [True] and len(script.calls) == 1
    assert [n.question for n in result.nodes] == [QUESTION] and result.answer == "Paris; Spain"
    assert result.streamed["kept"] == 0 and result.streamed["discarded"] == [1]
    discarded = fake.stream_for(CAPITAL)
    assert discarded.end is not None and discarded.yielded < 400  # cancelled, not run to the end
    assert first(events, NodeStarted, 1, CAPITAL) < first(events, PlanReady) < first(events, NodeStarted, 1, QUESTION)


def test_a_plan_that_falls_back_discards_every_streamed_step(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: "Paris", COUNTRY: " ".join(["word"] * 400), QUESTION: "Paris; Spain"}, sleep=0.01)
    script = Script(events, PLAN + '\nmuseum = ask("Which museum is in {city}?")')

    listen = go_on(events, script, NodeStarted)

    with session_with(tmp_path, fake, script) as session:
        result = session.ask(QUESTION, on_event=listen)
    assert result.plan.fallback and [n.question for n in result.nodes] == [QUESTION]
    assert result.answer == "Paris; Spain" and result.streamed["kept"] == 0 and result.streamed["discarded"] == [1, 2]
    assert all(s.end is not None for s in fake.streams)


def test_a_failed_step_does_not_stop_the_planner(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: "Paris"}, fail={COUNTRY: RuntimeError("the expert crashed")}, sleep=0.01)
    fake.respond = lambda messages: "Paris; unknown" if messages[0]["content"] == prompts.AGGREGATOR_SYSTEM else None
    script = Script(events, PLAN + '\ncity = ask("What is the capital of {country}?")')

    listen = go_on(events, script, NodeFailed)

    with session_with(tmp_path, fake, script) as session:
        result = session.ask(QUESTION, on_event=listen)
    assert script.waited == [True]
    assert first(events, NodeFailed) < events.index(LAST) < first(events, PlanReady)
    assert [n.status for n in result.nodes] == ["done", "failed", "skipped"] and result.status == "partial"
    assert result.nodes[2].reason == "depends on step 2, which failed"


def test_ctrl_c_while_planning_cancels_the_streamed_steps(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: " ".join(["word"] * 1000), COUNTRY: " ".join(["word"] * 1000)}, sleep=0.005)
    script = Script(events, PLAN + f'\nmore = ask("{CAPITAL} Really?")')
    cancel = threading.Event()

    def listen(event) -> None:
        events.append(event)
        if isinstance(event, NodeStarted):
            cancel.set()  # as Ctrl-C does
            script.go.set()

    with session_with(tmp_path, fake, script) as session:
        with pytest.raises(Cancelled):  # a library caller's cancel is an error it can catch, not a KeyboardInterrupt
            session.ask(QUESTION, on_event=listen, cancel=cancel)
    assert LAST not in events  # the planner was stopped too
    assert fake.streams and all(s.end is not None and s.yielded < 1000 for s in fake.streams)
    assert fake.active == 0 and not any(isinstance(e, PlanReady) for e in events)


def test_ctrl_c_in_the_planner_stops_the_streamed_steps(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: " ".join(["word"] * 1000), COUNTRY: " ".join(["word"] * 1000)}, sleep=0.005)
    script = Script(events, PLAN + f'\nmore = ask("{CAPITAL} Really?")', interrupt=True)

    listen = go_on(events, script, NodeStarted)

    with session_with(tmp_path, fake, script) as session:
        with pytest.raises(KeyboardInterrupt):
            session.ask(QUESTION, on_event=listen)
    assert script.waited == [True]
    assert fake.streams and all(s.end is not None and s.yielded < 1000 for s in fake.streams)
    assert fake.active == 0


def test_streaming_can_be_turned_off(tmp_path) -> None:
    events: list = []
    fake = Fake(answers={CAPITAL: "Paris", COUNTRY: "Spain"}, sleep=0.0)
    script = Script(events, PLAN, patience=0.3)

    listen = go_on(events, script, NodeStarted)

    with session_with(tmp_path, fake, script, stream_plan=False) as session:
        result = session.ask(QUESTION, on_event=listen)
    assert script.waited == [False] and not any(isinstance(e, StepPlanned) for e in events)
    assert first(events, PlanReady) < first(events, NodeStarted)
    assert result.streamed is None and result.timings["overlap_s"] == 0.0 and result.answer == "Paris. Spain."


def test_a_given_plan_is_not_streamed(tmp_path) -> None:
    from complm_cli.compose.dag import Node, Plan

    fake = Fake(answers={CAPITAL: "Paris"}, sleep=0.0)
    script = Script([], PLAN)
    with session_with(tmp_path, fake, script) as session:
        plan = Plan(QUESTION, [Node(1, CAPITAL)])
        result = session.ask(QUESTION, plan=plan, routes=session.route(plan))
    assert script.calls == [] and result.streamed is None and result.timings["overlap_s"] == 0.0
    assert result.answer == "Paris"


def test_overlap_counts_the_union_of_node_runs_before_the_plan_was_final() -> None:
    def res(node_id, started, seconds):
        return NodeResult(node_id, "q", (), "x", "done", "a", started=started, seconds=seconds)

    execution = Execution({1: res(1, 0.0, 2.0), 2: res(2, 1.0, 3.0), 3: res(3, 5.0, 1.0), 4: res(4, None, 0.0)}, 6.0, t0=100.0)
    assert overlap_seconds(execution, plan_end=103.0) == pytest.approx(3.0)  # [0, 3] of node 1 and 2, counted once
    assert overlap_seconds(execution, plan_end=100.0) == 0.0
    assert overlap_seconds(execution, plan_end=110.0) == pytest.approx(5.0)


@pytest.mark.model
def test_streamed_steps_run_on_the_real_model(models) -> None:
    """The 135M model answers the steps; only the planner's reply is scripted (the 135M model plans at random)."""
    from complm_cli.experts import default_factory
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session
    from tests.conftest import TINY_CATALOG

    settings = load_settings(flags={"catalog": TINY_CATALOG, "seed": 1})
    real = default_factory(settings)
    events: list = []
    script = Script(events, PLAN, patience=300)  # the first step waits for the embedder to load

    class Scripted:
        def __init__(self, inner) -> None:
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def stream(self, messages, **kwargs):
            if messages[0]["content"] == prompts.PLANNER_SYSTEM:
                return script.stream(messages)
            return self.inner.stream(messages, **kwargs)

    listen = go_on(events, script, NodeStarted)

    with Session(settings, pull=False, factory=lambda e, p: Scripted(real(e, p))) as session:
        result = session.ask(QUESTION, on_event=listen)
    assert script.waited == [True]
    assert first(events, NodeStarted) < events.index(LAST) < first(events, PlanReady)
    assert [n.status for n in result.nodes] == ["done", "done"] and all(n.answer for n in result.nodes)
    assert result.streamed["kept"] == 2 and result.timings["overlap_s"] > 0
    assert {n.expert for n in result.nodes} == {"smollm2-135m"}


def test_a_running_step_that_a_later_line_uses_ends_once_it_states_a_fact(tmp_path) -> None:
    # The planner writes step 1, which starts at once; then step 2, which uses step 1's answer: from then
    # on step 1's answer only feeds step 2, so it ends at its first sentence that states a fact.
    events: list = []
    painter = "Who painted The Starry Night?"
    long_reply = "Vincent van Gogh painted it. " + " ".join(["word"] * 300)
    fake = Fake(answers={painter: long_reply}, sleep=0.01)
    script = Script(events, f'painter = ask("{painter}")\ncountry = ask("In which country was {{painter}} born?")', hold=1)

    with session_with(tmp_path, fake, script) as session:
        result = session.ask("In which country was the painter of The Starry Night born?", on_event=go_on(events, script, NodeStarted))
    assert script.waited == [True] and result.streamed["kept"] == 2
    assert result.nodes[0].answer == "Vincent van Gogh painted it."
    assert fake.stream_for(painter).yielded < 300
    assert result.nodes[1].question == "In which country was Vincent van Gogh painted it born?"
