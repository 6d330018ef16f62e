"""The Scheduler: ready-set order, concurrency, failures, answers flowing to children, cancel, and nodes fed while the planner writes; driven by fake workers (tests/helpers.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from complm_cli.compose import prompts
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.execute import run_plan
from complm_cli.compose.pool import ModelPool
from complm_cli.compose.records import RunOptions
from complm_cli.errors import ModelError
from complm_cli.events import NodeDone, NodeFailed, NodeStarted, NodeToken
from tests.helpers import (WAIT, Fake, expert, independent,
                           overlaps, plan_of, pool_for, run)

DIAMOND = plan_of(("Who painted the Mona Lisa?", ()), ("Where was {1} born?", (1,)), ("When did {1} die?", (1,)),
                  ("How far is {2} from Rome, and what happened in {3}?", (2, 3)))


# --- scheduling order and concurrency ---------------------------------------------------------


MIXED = plan_of(("A?", ()), ("B?", ()), ("C {1}?", (1,)), ("D {1} {2}?", (1, 2)), ("E {4}?", (4,)), ("F?", ()))


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("plan", [DIAMOND, MIXED], ids=["diamond", "mixed"])
def test_a_child_starts_only_after_all_its_parents_end(plan: Plan, workers: int) -> None:
    fake = Fake(sleep=0.002)
    execution = run(plan, fake, workers=workers)
    assert {r.status for r in execution.results.values()} == {"done"}
    order = [(kind, node) for _, kind, node in execution.events]
    assert sorted(order) == sorted([(k, n.id) for n in plan.nodes for k in ("start", "end")])
    times = {(kind, node): t for t, kind, node in execution.events}
    stream = {i: fake.stream_for(res.question) for i, res in execution.results.items()}
    for n in plan.nodes:
        assert order.index(("start", n.id)) < order.index(("end", n.id))
        for parent in n.depends_on:
            assert order.index(("end", parent)) < order.index(("start", n.id)), f"{n.id} started before {parent} ended"
            assert times[("end", parent)] <= times[("start", n.id)]
            assert stream[parent].end <= stream[n.id].start


@pytest.mark.parametrize(("workers", "nodes"), [(1, 3), (2, 5), (3, 3), (3, 6)])
def test_the_workers_limit_is_respected_and_reached(workers: int, nodes: int) -> None:
    fake = Fake(tokens=5, sleep=0.02)
    execution = run(independent(nodes), fake, workers=workers)
    assert {r.status for r in execution.results.values()} == {"done"}
    assert fake.max_active == workers
    assert execution.max_concurrency == workers


def gated(plan: Plan, workers: int, while_held) -> tuple:
    """(execution, fake): every stream waits at its first token while `while_held(fake)` looks at what runs."""
    gate = threading.Event()
    fake = Fake(block={n.question: gate for n in plan.nodes})
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(x=run(plan, fake, workers=workers)))
    thread.start()
    try:
        while_held(fake)
    finally:
        gate.set()
        thread.join(WAIT)
    return out["x"], fake


def test_busy_workers_hold_back_the_other_ready_nodes() -> None:
    def three_run(fake: Fake) -> None:
        fake.wait_started(3)
        assert not fake.started.acquire(timeout=0.2), "a fourth node started while three were running"
        assert fake.active == 3

    execution, fake = gated(independent(5), 3, three_run)
    assert {r.status for r in execution.results.values()} == {"done"}
    assert fake.max_active == 3 and len(fake.streams) == 5


def test_independent_nodes_really_overlap() -> None:
    # Every stream waits at its first token until all three have started: one after another, they never would.
    def all_three_run(fake: Fake) -> None:
        fake.wait_started(3)
        assert fake.active == 3

    execution, _ = gated(independent(3), 3, all_three_run)
    assert all(r.status == "done" for r in execution.results.values())
    starts = sorted(r.started for r in execution.results.values())
    assert starts[-1] < min(r.started + r.seconds for r in execution.results.values())


def test_sequential_never_overlaps() -> None:
    fake = Fake(tokens=4, sleep=0.01)
    run(independent(4), fake, workers=1)
    streams = sorted(fake.streams, key=lambda s: s.start)
    assert len(streams) == 4
    assert fake.max_active == 1
    for a, b in zip(streams, streams[1:]):
        assert a.end <= b.start
    assert not any(overlaps(a, b) for a in streams for b in streams if a is not b)


def test_threads_are_shared_among_the_nodes_that_start_together() -> None:
    fake = Fake()
    execution = run(independent(2), fake, workers=2, threads=8)
    assert [r.threads for r in execution.results.values()] == [4, 4]
    assert all(s.kwargs["threads"] == 4 for s in fake.streams)


def test_a_resident_idle_model_goes_first() -> None:
    # Two ready nodes, one slot: the node whose model is loaded and idle runs before the other.
    fake = Fake()
    pool = pool_for(fake)
    warm = expert("warm")
    pool.release(pool.acquire(warm))
    plan = independent(2)
    run(plan, fake, workers=1, pool=pool, experts={1: expert("cold"), 2: warm})
    assert [s.expert for s in sorted(fake.streams, key=lambda s: s.start)] == ["warm", "cold"]
    assert fake.loads == ["warm", "cold"]


# --- failures ---------------------------------------------------------------------------------


def test_a_failed_node_skips_its_descendants_and_spares_other_branches() -> None:
    fake = Fake(fail={"Who painted it?": RuntimeError("the model crashed")})
    plan = plan_of(("Who painted it?", ()), ("Where was {1} born?", (1,)), ("What is the capital of {2}?", (2,)),
                   ("What is 17 times 3?", ()), ("What is {4} plus 1?", (4,)))
    events = []
    execution = run(plan, fake, workers=2, on_event=events.append)
    r = execution.results
    assert r[1].status == "failed" and r[1].reason == "RuntimeError: the model crashed" and r[1].answer is None
    assert r[2].status == "skipped" and r[2].reason == "depends on step 1, which failed"
    assert r[3].status == "skipped" and "step 2" in r[3].reason
    assert (r[4].status, r[5].status) == ("done", "done")
    assert r[5].question == "What is Answer to What is 17 times 3? plus 1?"
    asked = {s.question for s in fake.streams}
    assert not any("born" in q or "capital" in q for q in asked), "a skipped node was run"
    failed = [e for e in events if isinstance(e, NodeFailed)]
    assert sorted((e.node_id, e.skipped) for e in failed) == [(1, False), (2, True), (3, True)]
    assert next(e for e in failed if e.node_id == 1).reason == r[1].reason


def test_a_grandchild_reason_reads_well() -> None:
    fake = Fake(fail={"A?": RuntimeError("boom")})
    execution = run(plan_of(("A?", ()), ("B {1}?", (1,)), ("C {2}?", (2,))), fake)
    assert execution.results[3].reason == "depends on step 2, which was skipped"


def test_a_complm_error_gives_its_message_as_the_reason() -> None:
    fake = Fake(fail={"A?": ModelError("The model 'general' ran out of context.")})
    execution = run(plan_of(("A?", ()),), fake)
    assert execution.results[1].reason == "The model 'general' ran out of context."


def test_a_model_that_cannot_load_fails_its_node() -> None:
    fake = Fake(load_error={"broken": ModelError("The model 'broken' could not be loaded.")})
    execution = run(independent(2), fake, experts={1: expert("broken"), 2: expert()})
    assert execution.results[1].status == "failed"
    assert execution.results[1].reason == "The model 'broken' could not be loaded."
    assert execution.results[2].status == "done"
    assert [e[2] for e in execution.events] == [2, 2]  # a node that never started has no interval


def test_node_timeout_fails_a_slow_node() -> None:
    fake = Fake(tokens=200, sleep=0.01)  # a node that would stream for about 2 s
    execution = run(plan_of(("Slow?", ()), ("Child {1}?", (1,))), fake, node_timeout=0.1)
    r = execution.results
    assert r[1].status == "failed" and "timed out" in r[1].reason
    assert r[2].status == "skipped"
    assert fake.stream_for("Slow?").yielded < 100  # it was stopped, not run to the end
    assert fake.stream_for("Slow?").end is not None  # and the stream was closed


# --- answers flow from parents to children --------------------------------------------------


def test_parent_answers_are_substituted_and_given_as_context() -> None:
    fake = Fake(answers={"Who wrote Don Quixote?": "The answer is Miguel de Cervantes.",
                         "In which country was Miguel de Cervantes born?": "Spain",
                         "What is the capital of Spain?": "Madrid"})
    plan = plan_of(("Who wrote Don Quixote?", ()), ("In which country was {1} born?", (1,)),
                   ("What is the capital of {2}?", (2,)))
    execution = run(plan, fake, workers=2, seed=7, max_tokens=33, temperature=0.5)
    r = execution.results
    assert r[2].question == "In which country was Miguel de Cervantes born?"
    assert r[3].question == "What is the capital of Spain?"
    assert [r[i].answer for i in (1, 2, 3)] == ["The answer is Miguel de Cervantes.", "Spain", "Madrid"]

    first = fake.stream_for("Who wrote Don Quixote?")
    assert first.messages == prompts.expert_messages("Who wrote Don Quixote?", [])
    second = fake.stream_for(r[2].question)
    assert second.messages == prompts.expert_messages(r[2].question, [("Who wrote Don Quixote?", "Miguel de Cervantes")])
    assert "- Who wrote Don Quixote? Miguel de Cervantes" in second.messages[-1]["content"]
    third = fake.stream_for(r[3].question)
    # The parent's question is shown with its own references filled in.
    assert "- In which country was Miguel de Cervantes born? Spain" in third.messages[-1]["content"]
    assert "{1}" not in third.messages[-1]["content"]
    assert all(s.kwargs == dict(max_tokens=33, temperature=0.5, seed=7, threads=2) for s in fake.streams)


def test_the_experts_own_generation_settings_apply_by_default() -> None:
    fake = Fake()
    run(plan_of(("A?", ()),), fake, experts={1: expert("coder", max_tokens=99, temperature=0.0)})
    assert fake.streams[0].kwargs["max_tokens"] == 99 and fake.streams[0].kwargs["temperature"] == 0.0


def test_context_is_bounded() -> None:
    fake = Fake(answers={"A?": "word " * 400}, sleep=0)
    execution = run(plan_of(("A?", ()), ("B given {1}?", (1,))), fake, context_chars=50)
    child = fake.stream_for(execution.results[2].question)
    facts = child.messages[-1]["content"].split("<<<\n", 1)[1].split("\n>>>", 1)[0]
    assert len(facts) <= len("- A? ") + 51


def test_events_tell_the_story_of_each_node() -> None:
    fake = Fake(answers={"Who wrote Don Quixote?": "Miguel de Cervantes"})
    events = []
    lock = threading.Lock()

    def listen(event) -> None:
        with lock:
            events.append(event)

    plan = plan_of(("Who wrote Don Quixote?", ()), ("Where was {1} born?", (1,)), ("What is 2 + 2?", ()))
    execution = run(plan, fake, workers=2, on_event=listen)
    for node_id, res in execution.results.items():
        mine = [e for e in events if getattr(e, "node_id", None) == node_id]
        assert isinstance(mine[0], NodeStarted) and isinstance(mine[-1], NodeDone)
        assert mine[0] == NodeStarted(node_id, "general", res.question)
        tokens = [e for e in mine[1:-1]]
        assert all(isinstance(e, NodeToken) for e in tokens)
        assert "".join(e.text for e in tokens).strip() == res.answer == mine[-1].answer
        assert mine[-1].tokens == len(tokens) == res.tokens
        assert mine[-1].seconds == res.seconds > 0
    assert NodeStarted(2, "general", "Where was Miguel de Cervantes born?") in events
    done_1 = events.index(next(e for e in events if isinstance(e, NodeDone) and e.node_id == 1))
    start_2 = events.index(next(e for e in events if isinstance(e, NodeStarted) and e.node_id == 2))
    assert done_1 < start_2


# --- cancellation ------------------------------------------------------------------------------


def test_cancel_stops_streaming_nodes_promptly() -> None:
    fake = Fake(tokens=1000, sleep=0.005)  # each node would stream for about 5 s
    plan = plan_of(("A?", ()), ("B?", ()), ("C?", ()), ("D {1}?", (1,)))
    cancel = threading.Event()
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(x=run(plan, fake, workers=3, cancel=cancel)))
    thread.start()
    fake.wait_started(3)
    cancel.set()
    thread.join(WAIT)
    assert not thread.is_alive(), "run_plan did not return after cancel"
    r = out["x"].results
    assert [r[i].status for i in (1, 2, 3)] == ["cancelled"] * 3
    assert r[4].status in ("cancelled", "skipped") and r[4].answer is None
    assert len(fake.streams) == 3
    assert all(s.end is not None and s.yielded < 1000 for s in fake.streams)


def test_cancel_before_the_run_starts_nothing() -> None:
    fake = Fake()
    cancel = threading.Event()
    cancel.set()
    execution = run(independent(3), fake, cancel=cancel)
    assert fake.streams == [] and fake.loads == []
    assert {r.status for r in execution.results.values()} == {"cancelled"}


def test_cancel_while_waiting_for_memory() -> None:
    # One model fits; the second node waits in acquire() for memory and is cancelled there.
    fake = Fake(tokens=1000, sleep=0.005)
    cancel = threading.Event()
    out: dict = {}
    pool = pool_for(fake, budget=150)
    experts = {1: expert("a"), 2: expert("b")}
    thread = threading.Thread(target=lambda: out.update(x=run(independent(2), fake, workers=2, pool=pool,
                                                            experts=experts, cancel=cancel)))
    thread.start()
    fake.wait_started(1)
    cancel.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    statuses = {res.expert: (res.status, res.reason) for res in out["x"].results.values()}
    running = fake.streams[0].expert
    waiting = ({"a", "b"} - {running}).pop()
    assert statuses[running] == ("cancelled", "cancelled")
    assert statuses[waiting] == ("cancelled", "cancelled before it started")
    assert len(fake.streams) == 1


class InterruptingPool(ModelPool):
    """Raises KeyboardInterrupt in the scheduler's thread (as Ctrl-C would) once `armed` is set."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.armed = threading.Event()

    def has_idle(self, expert_name: str) -> bool:
        if self.armed.is_set():
            self.armed.clear()
            raise KeyboardInterrupt
        return super().has_idle(expert_name)


def test_ctrl_c_in_the_scheduler_cancels_running_nodes() -> None:
    fake = Fake(tokens=1000, sleep=0.005)
    pool = InterruptingPool(fake.factory, lambda e: Path(f"/models/{e.file}"), 10_000)
    cancel = threading.Event()
    plan = independent(3)
    arm = threading.Thread(target=lambda: (fake.wait_started(1), pool.armed.set()))
    arm.start()
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, {n.id: expert() for n in plan.nodes}, pool, RunOptions(workers=1), cancel=cancel)
    arm.join(WAIT)
    assert cancel.is_set()
    assert len(fake.streams) == 1 and fake.streams[0].end is not None and fake.streams[0].yielded < 1000
    assert fake.active == 0  # run_plan waited for the running node to stop


def test_threads_freed_by_an_engine_that_finished_go_to_the_ones_still_working() -> None:
    """The CPU is divided among the engines that have sequences, between decode steps."""
    from complm_cli.experts.llama import Engines

    class Busy:
        def __init__(self, busy):
            self.busy = busy

    engines = Engines(threads=4, slots=3)
    engines.cpu = type("Quiet", (), {"cores": 2, "free": lambda self: 2})()  # no other process takes a core
    a, b = Busy(True), Busy(True)
    engines._engines = {("a",): (a, 1), ("b",): (b, 1)}
    assert engines.threads_for(a) == 2 and engines.threads_for(b) == 2  # split while both decode
    a.busy = False
    assert engines.threads_for(b) == 4  # once one is idle, the other takes all four


def test_a_child_starts_only_after_its_parent_released_the_worker() -> None:
    """A parent marked done but still holding its worker must not make its child load a second copy."""
    from complm_cli.events import NodeDone

    def slow_listener(event) -> None:
        if isinstance(event, NodeDone) and event.node_id == 1:
            time.sleep(0.4)  # the parent's thread is between 'done' and releasing its worker

    fake = Fake(sleep=0.0)
    execution = run(plan_of(("Who painted the Mona Lisa?", ()), ("Where was {1} born?", (1,))), fake, workers=2,
                    on_event=slow_listener)
    assert [r.status for r in execution.results.values()] == ["done", "done"]
    assert fake.loads == ["general"]  # one model loaded, reused by the child


# --- nodes fed while the run goes on (a plan that streams in) --------------------------------------


def run_in_thread(fake: Fake, feed, *, cancel: threading.Event | None = None, on_event=None, **options):
    from complm_cli.compose.execute import run_feed

    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(x=run_feed(feed, pool_for(fake), RunOptions(**options),
                                                                   on_event or (lambda e: None), cancel)))
    thread.start()
    return thread, out


def test_a_node_fed_later_runs_and_wakes_the_scheduler(monkeypatch) -> None:
    from complm_cli.compose import scheduler
    from complm_cli.compose.scheduler import NodeFeed

    monkeypatch.setattr(scheduler, "POLL_S", 60.0)  # only a message can wake the scheduler in time
    fake = Fake(sleep=0.0)
    feed = NodeFeed()
    thread, out = run_in_thread(fake, feed, workers=2)
    time.sleep(0.2)  # the scheduler is idle, waiting for a node
    feed.add(Node(1, "Who painted the Mona Lisa?"), expert())
    fake.wait_started(1)
    feed.add(Node(2, "Where was {1} born?", (1,)), expert())
    fake.wait_started(1)
    feed.close([(Node(3, "What is 2 + 2?"), expert())])
    thread.join(WAIT)
    assert not thread.is_alive(), "closing the feed did not end the run"
    r = out["x"].results
    assert [r[i].status for i in (1, 2, 3)] == ["done"] * 3
    assert r[2].question == "Where was Answer to Who painted the Mona Lisa? born?"


def test_feeding_is_checked_and_ends_with_the_plan() -> None:
    from complm_cli.compose.execute import run_feed
    from complm_cli.compose.scheduler import NodeFeed

    feed = NodeFeed()
    feed.add(Node(1, "A?"), expert())
    with pytest.raises(ValueError, match="fed twice"):
        feed.add(Node(1, "A?"), expert())
    with pytest.raises(ValueError, match="not fed before it"):
        feed.add(Node(3, "C {2}?", (2,)), expert())
    feed.close()
    with pytest.raises(RuntimeError, match="after the plan was closed"):
        feed.add(Node(2, "B?"), expert())
    assert list(run_feed(feed, pool_for(Fake()), RunOptions()).results) == [1]


def test_a_cancelled_run_ends_before_the_plan_is_closed_and_refuses_later_nodes() -> None:
    from complm_cli.compose.scheduler import NodeFeed

    fake = Fake(tokens=1000, sleep=0.005)
    cancel = threading.Event()
    feed = NodeFeed()
    feed.add(Node(1, "A?"), expert())
    thread, out = run_in_thread(fake, feed, cancel=cancel)
    fake.wait_started(1)
    feed.add(Node(2, "B {1}?", (1,)), expert())
    cancel.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        feed.add(Node(3, "C?"), expert())
    assert feed.retract(1).is_set()  # nothing runs any more: nothing to wait for
    r = out["x"].results
    assert r[1].status == "cancelled" and r[2].status in ("cancelled", "skipped")
    assert fake.streams[0].yielded < 1000


def test_a_retracted_node_is_cancelled_and_its_id_fed_again() -> None:
    from complm_cli.compose.scheduler import NodeFeed

    fake = Fake(answers={"Slow step?": " ".join(["word"] * 500)}, sleep=0.005)
    feed = NodeFeed()
    feed.add(Node(1, "Kept step?"), expert())
    feed.add(Node(2, "Slow step?"), expert())
    feed.add(Node(3, "Child of {2}?", (2,)), expert())
    thread, out = run_in_thread(fake, feed, workers=2)
    fake.wait_started(2)
    assert feed.retract(2).wait(WAIT)
    slow = fake.stream_for("Slow step?")
    assert slow.end is not None and slow.yielded < 500  # stopped, not run to the end
    feed.close([(Node(2, "New step?"), expert())])
    thread.join(WAIT)
    execution = out["x"]
    r = execution.results
    assert list(r) == [1, 2] and (r[1].status, r[2].status) == ("done", "done") and r[2].question == "New step?"
    assert sorted((d.question, d.status) for d in execution.discarded) == [("Child of {2}?", "pending"), ("Slow step?", "cancelled")]
    assert [e[2] for e in execution.events].count(2) == 2  # the new node's interval only
    assert not any("Child of" in s.question for s in fake.streams)


def test_a_node_fed_after_its_parent_failed_is_skipped() -> None:
    from complm_cli.compose.scheduler import NodeFeed

    fake = Fake(fail={"A?": RuntimeError("boom")})
    failed = threading.Event()
    feed = NodeFeed()
    feed.add(Node(1, "A?"), expert())
    thread, out = run_in_thread(fake, feed, on_event=lambda e: isinstance(e, NodeFailed) and failed.set())
    assert failed.wait(WAIT)
    feed.add(Node(2, "B?"), expert())  # a failure stops nothing else
    feed.close([(Node(3, "C {1}?", (1,)), expert())])
    thread.join(WAIT)
    r = out["x"].results
    assert [r[i].status for i in (1, 2, 3)] == ["failed", "done", "skipped"]
    assert r[3].reason == "depends on step 1, which failed"


def test_a_step_that_asks_for_a_quantity_before_the_plan_is_final_is_asked_for_its_number() -> None:
    from complm_cli.compose.scheduler import NodeFeed

    fake = Fake(sleep=0.0)
    feed = NodeFeed()
    feed.add(Node(1, "How many legs does a spider have?"), expert())
    feed.add(Node(2, "Who wrote Hamlet?"), expert())
    thread, _ = run_in_thread(fake, feed, workers=2)
    fake.wait_started(2)
    feed.close()
    thread.join(WAIT)

    def hinted(f: Fake, question: str) -> bool:
        return prompts.NUMERIC_HINT in f.stream_for(question).messages[0]["content"]

    assert hinted(fake, "How many legs does a spider have?") and not hinted(fake, "Who wrote Hamlet?")
    final = Fake(sleep=0.0)  # once the plan is known, only a calculation's parents are
    run(plan_of(("How many legs does a spider have?", ())), final)
    assert not hinted(final, "How many legs does a spider have?")


def test_a_retracted_node_that_already_ended_gives_way_to_the_new_one() -> None:
    from complm_cli.compose.scheduler import NodeFeed

    fake = Fake(sleep=0.0)
    ended = threading.Event()
    feed = NodeFeed()
    feed.add(Node(1, "Old step?"), expert())
    thread, out = run_in_thread(fake, feed, on_event=lambda e: isinstance(e, NodeDone) and ended.set())
    assert ended.wait(WAIT)
    assert feed.retract(1).wait(WAIT)
    feed.close([(Node(1, "New step?"), expert()), (Node(2, "After {1}?", (1,)), expert())])
    thread.join(WAIT)
    execution = out["x"]
    assert [(r.question, r.status) for r in execution.results.values()] == [
        ("New step?", "done"), ("After Answer to New step??", "done")]
    assert [(d.question, d.status) for d in execution.discarded] == [("Old step?", "done")]


PAINTER, BORN = "Who painted The Starry Night?", "In which country was {1} born?"
PAINTER_REPLY = "Vincent van Gogh painted it in 1889. It is an oil painting on canvas that hangs in New York, " + " ".join(["and"] * 60)


def test_an_answer_that_feeds_a_later_step_ends_once_it_states_a_fact() -> None:
    fake = Fake(answers={PAINTER: PAINTER_REPLY,
                         "In which country was Vincent van Gogh painted it in 1889 born?": "He was born in the Netherlands. He was a pastor's son."})
    execution = run(plan_of((PAINTER, ()), (BORN, (1,))), fake)
    first, last = execution.results[1], execution.results[2]
    assert first.answer == "Vincent van Gogh painted it in 1889."
    assert fake.stream_for(PAINTER).yielded < 12 and first.tokens == fake.stream_for(PAINTER).yielded
    # the child reads the short answer, and its own answer (the one shown) is kept whole
    assert last.question == "In which country was Vincent van Gogh painted it in 1889 born?"
    assert last.answer == "He was born in the Netherlands. He was a pastor's son."


@pytest.mark.parametrize(("question", "cut"), [
    ("Who painted The Starry Night, and who wrote Hamlet?", False),  # listed as they are: shown whole
    ("Did the painter of The Starry Night and the author of Hamlet live in the same century?", True),  # combined
])
def test_fan_out_answers_are_cut_only_where_the_aggregator_combines_them(question, cut) -> None:
    fake = Fake(answers={PAINTER: PAINTER_REPLY, "Who wrote Hamlet?": "William Shakespeare wrote it in 1600. It is long."})
    plan = plan_of((PAINTER, ()), ("Who wrote Hamlet?", ()))
    plan.question = question
    execution = run(plan, fake)
    answers = [execution.results[i].answer for i in (1, 2)]
    if cut:
        assert answers == ["Vincent van Gogh painted it in 1889.", "William Shakespeare wrote it in 1600."]
    else:
        assert answers == [PAINTER_REPLY, "William Shakespeare wrote it in 1600. It is long."]


def test_remote_nodes_have_their_endpoints_capacity_not_the_local_workers() -> None:
    import dataclasses

    from complm_cli.cache.catalog import RemoteSpec

    far = dataclasses.replace(expert("far"), remote=RemoteSpec("http://127.0.0.1:9/v1", "m", max_parallel=2))
    fake = Fake(tokens=5, sleep=0.03)
    plan = independent(4)
    # --workers 1 is this machine's: one local node at a time, and beside it the endpoint's two requests.
    execution = run(plan, fake, workers=1, experts={1: far, 2: far, 3: far, 4: expert()})
    assert {r.status for r in execution.results.values()} == {"done"}
    assert execution.max_concurrency == 3 and fake.max_active == 3
    busy_far = max(sum(1 for s in fake.streams if s.expert == "far" and s.start <= t < (s.end or t + 1))
                   for t in (s.start for s in fake.streams))
    assert busy_far == 2  # never more than the endpoint's max_parallel
