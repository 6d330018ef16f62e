"""The scheduler (run_plan) and the ModelPool, driven by fake workers.

The fake worker records when each stream starts and ends and how many streams
run at once, so the tests assert on what happened (order, overlap, counts),
never on how long the whole run took.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from complm_cli.compose import prompts
from complm_cli.cache.catalog import Expert, Generation, PathSource
from complm_cli.compose.dag import Node, Plan
from complm_cli.errors import ModelError, UsageError
from complm_cli.events import NodeDone, NodeFailed, NodeStarted, NodeToken
from complm_cli.experts.base import Worker
from complm_cli.compose.cancel import Cancelled
from complm_cli.compose.execute import run_plan
from complm_cli.compose.pool import ModelPool
from complm_cli.compose.records import RunOptions

WAIT = 10.0  # a safety limit for joins and waits that should end long before it


def expert(name: str = "general", max_tokens: int = 64, temperature: float = 0.2) -> Expert:
    return Expert(name=name, description=name, file=f"{name}.gguf", sources=(PathSource(f"/models/{name}.gguf"),),
                  roles=("expert",), generation=Generation(max_tokens=max_tokens, temperature=temperature))


def question_of(messages: list[dict]) -> str:
    """The node's question, from the user message the scheduler built."""
    content = messages[-1]["content"]
    return content.rsplit("Question: ", 1)[1] if content.startswith("Facts from earlier steps") else content


@dataclass
class Stream:
    expert: str
    question: str
    messages: list[dict]
    kwargs: dict
    start: float = 0.0
    end: float | None = None
    yielded: int = 0


@dataclass
class Fake:
    """What every fake worker shares: the script of answers and the record of what happened."""

    answers: dict[str, str] = field(default_factory=dict)  # question -> reply; default "Answer to <question>"
    respond: Callable[[list[dict]], str | None] | None = None  # consulted first, for replies keyed on more than the question
    fail: dict[str, BaseException] = field(default_factory=dict)  # question -> raised after the first token
    block: dict[str, threading.Event] = field(default_factory=dict)  # question -> wait for it before each token
    tokens: int = 4
    sleep: float = 0.01  # per token
    memory: dict[str, int] = field(default_factory=dict)  # expert -> bytes; default 100
    load_error: dict[str, BaseException] = field(default_factory=dict)  # expert -> raised by load()
    streams: list[Stream] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # experts a worker was made for
    loads: list[str] = field(default_factory=list)
    unloads: list[str] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    started: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))  # released per stream start
    lock: threading.Lock = field(default_factory=threading.Lock)

    def factory(self, exp: Expert, path: Path) -> "FakeWorker":
        with self.lock:
            self.created.append(exp.name)
        return FakeWorker(self, exp, path)

    def stream_for(self, question: str) -> Stream:
        return next(s for s in self.streams if s.question == question)

    def wait_started(self, n: int) -> None:
        for _ in range(n):
            assert self.started.acquire(timeout=WAIT), "a stream did not start"


class FakeWorker(Worker):
    def __init__(self, fake: Fake, exp: Expert, path: Path):
        super().__init__(exp)
        self.fake, self.path = fake, path
        self.memory = fake.memory.get(exp.name, 100)
        self.loaded = False

    def load(self) -> None:
        if self.expert.name in self.fake.load_error:
            raise self.fake.load_error[self.expert.name]
        self.loaded = True
        with self.fake.lock:
            self.fake.loads.append(self.expert.name)

    def unload(self) -> None:
        self.loaded = False
        with self.fake.lock:
            self.fake.unloads.append(self.expert.name)

    def stream(self, messages, *, max_tokens, temperature, seed, threads, prefix=0):
        assert self.loaded, "stream() on a worker that is not loaded"
        fake, question = self.fake, question_of(messages)
        rec = Stream(self.expert.name, question, messages,
                     dict(max_tokens=max_tokens, temperature=temperature, seed=seed, threads=threads))
        reply = (fake.respond and fake.respond(messages)) or fake.answers.get(question, f"Answer to {question}")
        words = reply.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        pieces += [""] * max(0, fake.tokens - len(pieces))  # at least `tokens` pieces, so streams last a while

        def gen():
            with fake.lock:
                rec.start = time.perf_counter()
                fake.streams.append(rec)
                fake.active += 1
                fake.max_active = max(fake.max_active, fake.active)
            fake.started.release()
            try:
                for i, piece in enumerate(pieces):
                    if question in fake.block:
                        assert fake.block[question].wait(WAIT)
                    time.sleep(fake.sleep)
                    if i == 1 and question in fake.fail:
                        raise fake.fail[question]
                    rec.yielded += 1
                    yield piece
            finally:
                with fake.lock:
                    rec.end = time.perf_counter()
                    fake.active -= 1

        return gen()


def plan_of(*steps: tuple[str, tuple[int, ...]]) -> Plan:
    return Plan(question="Q?", nodes=[Node(i, q, tuple(d)) for i, (q, d) in enumerate(steps, 1)])


def independent(n: int) -> Plan:
    return plan_of(*[(f"Independent question {i}?", ()) for i in range(1, n + 1)])


def pool_for(fake: Fake, budget: int = 10_000) -> ModelPool:
    return ModelPool(fake.factory, lambda e: Path(f"/models/{e.file}"), budget)


def run(plan: Plan, fake: Fake, *, workers: int = 2, experts: dict[int, Expert] | None = None, pool: ModelPool | None = None,
        on_event=None, cancel: threading.Event | None = None, **options):
    experts = experts or {n.id: expert() for n in plan.nodes}
    pool = pool or pool_for(fake)
    kwargs = {"on_event": on_event} if on_event else {}
    return run_plan(plan, experts, pool, RunOptions(workers=workers, **options), cancel=cancel, **kwargs)


def overlaps(a: Stream, b: Stream) -> bool:
    return a.start < b.end and b.start < a.end


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


def test_busy_workers_hold_back_the_other_ready_nodes() -> None:
    gate = threading.Event()
    plan = independent(5)
    fake = Fake(block={n.question: gate for n in plan.nodes})
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(x=run(plan, fake, workers=3)))
    thread.start()
    try:
        fake.wait_started(3)
        assert not fake.started.acquire(timeout=0.2), "a fourth node started while three were running"
        assert fake.active == 3
    finally:
        gate.set()
        thread.join(WAIT)
    assert {r.status for r in out["x"].results.values()} == {"done"}
    assert fake.max_active == 3 and len(fake.streams) == 5


def test_independent_nodes_really_overlap() -> None:
    fake = Fake(tokens=10, sleep=0.02)  # each node streams for about 0.2 s
    execution = run(independent(3), fake, workers=3)
    assert len(fake.streams) == 3
    latest_start = max(s.start for s in fake.streams)
    earliest_end = min(s.end for s in fake.streams)
    assert latest_start < earliest_end, "the three streams were never all running at once"
    starts = sorted(r.started for r in execution.results.values())
    assert all(r.status == "done" for r in execution.results.values())
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


# --- the model pool -----------------------------------------------------------------------------


def test_pool_reuses_an_idle_worker_of_the_same_expert() -> None:
    fake = Fake()
    pool = pool_for(fake)
    a = pool.acquire(expert("a"))
    pool.release(a)
    again = pool.acquire(expert("a"))
    assert again is a
    assert pool.loads == 1 and fake.loads == ["a"] and fake.created == ["a"]
    pool.release(again)


def test_pool_loads_a_second_worker_when_the_first_is_busy() -> None:
    fake = Fake()
    pool = pool_for(fake)
    one, two = pool.acquire(expert("a")), pool.acquire(expert("a"))
    assert one is not two
    assert fake.created == ["a", "a"]
    assert pool.loads == 2 and pool.used == 200 and pool.peak == 200
    assert pool.resident() == ["a", "a"]


def test_a_shared_part_counts_once_and_stays_counted_after_its_first_holder_goes() -> None:
    """Two handles on one engine charge the engine once; evicting the handle that brought it
    in must not leave the other one counted as if the engine were gone."""
    fake = Fake()
    made = []

    def factory(exp, path):
        w = FakeWorker(fake, exp, path)
        w.memory, w.shared = 10, ("engine-a", 1000)
        made.append(w)
        return w

    pool = ModelPool(factory, lambda e: Path("/models") / e.name, budget=1030)
    one, two = pool.acquire(expert("a")), pool.acquire(expert("a"))
    assert pool.used == 1020
    pool.release(one)
    with pool._cond:  # evict the first holder, as the LRU rule would
        del pool._idle[id(one)]
        one.unload()
    assert pool.used == 1010  # the engine is still resident through `two`
    three = pool.acquire(expert("a"))  # fits: 1000 + 10 + 10
    assert pool.used == 1020
    pool.release(two)
    pool.release(three)


def test_pool_evicts_the_least_recently_used_idle_worker() -> None:
    fake = Fake()
    pool = pool_for(fake, budget=250)
    for name in ("a", "b", "a"):  # a was used last, so b is the least recently used
        pool.release(pool.acquire(expert(name)))
    assert fake.loads == ["a", "b"]
    c = pool.acquire(expert("c"))
    assert fake.unloads == ["b"]
    assert pool.evictions == 1
    assert sorted(pool.resident()) == ["a", "c"]
    assert pool.used == 200 <= pool.budget
    pool.release(c)
    pool.close()
    assert sorted(fake.unloads) == ["a", "b", "c"] and pool.resident() == []


def test_pool_refuses_a_model_larger_than_the_budget() -> None:
    fake = Fake(memory={"huge": 1_000})
    pool = pool_for(fake, budget=500)
    with pytest.raises(ModelError, match="more than the memory budget"):
        pool.acquire(expert("huge"))
    assert fake.loads == [] and pool.used == 0
    pool.release(pool.acquire(expert("small")))  # the pool is still usable
    assert fake.loads == ["small"]


def test_pool_forgets_a_worker_whose_load_failed() -> None:
    fake = Fake(load_error={"bad": ModelError("cannot load")})
    pool = pool_for(fake, budget=100)
    with pytest.raises(ModelError, match="cannot load"):
        pool.acquire(expert("bad"))
    assert pool.used == 0 and pool.resident() == []
    pool.release(pool.acquire(expert("good")))  # its memory was given back
    assert fake.loads == ["good"]


def test_pool_acquire_waits_for_a_busy_worker_to_be_released() -> None:
    fake = Fake()
    pool = pool_for(fake, budget=150)  # one model at a time
    a = pool.acquire(expert("a"))
    got = threading.Event()
    out: dict = {}

    def take_b() -> None:
        out["b"] = pool.acquire(expert("b"))
        got.set()

    thread = threading.Thread(target=take_b)
    thread.start()
    assert not got.wait(0.3), "acquire did not wait for memory"
    assert fake.loads == ["a"] and fake.unloads == []
    pool.release(a)
    assert got.wait(WAIT)
    thread.join(WAIT)
    assert fake.unloads == ["a"] and fake.loads == ["a", "b"]
    assert pool.resident() == ["b"] and pool.used == 100
    pool.release(out["b"])


def test_pool_acquire_gives_up_waiting_when_cancelled() -> None:
    fake = Fake()
    pool = pool_for(fake, budget=150)
    a = pool.acquire(expert("a"))
    cancel = threading.Event()
    raised = threading.Event()

    def take_b() -> None:
        with pytest.raises(Cancelled):
            pool.acquire(expert("b"), cancel)
        raised.set()

    thread = threading.Thread(target=take_b)
    thread.start()
    cancel.set()
    thread.join(WAIT)
    assert raised.is_set()
    assert fake.loads == ["a"] and pool.resident() == ["a"]
    pool.release(a)


# --- a whole Session with fake workers and a fake embedder ----------------------------------------

CATALOG = """
[defaults]
embedder = "fake-embedder"
planner = "qwen2.5-coder-1.5b"
aggregator = "qwen2.5-coder-1.5b"
fallback = "qwen2.5-coder-1.5b"
route_threshold = 0.5

[experts."qwen2.5-coder-1.5b"]
roles = ["planner", "aggregator", "fallback"]
description = "plans and general questions"
domains = []
examples = ["Write a Python function that reverses a list."]
size = 4
sha256 = "{sha}"

[experts."smollm2-135m"]
description = "geography"
domains = []
examples = ["In which country is Paris?", "What is the capital of a country?"]
size = 4
sha256 = "{sha}"

[experts."qwen2.5-coder-0.5b"]
description = "arithmetic"
domains = []
examples = ["What is 17 times 3?", "What is 2 plus 2?"]
size = 4
sha256 = "{sha}"

[embedders."fake-embedder"]
description = "keyword vectors"
check_file = "weights.bin"
size = 4
sha256 = "{sha}"
sources = [{{ type = "path", path = "/nowhere" }}]
"""


class KeywordEmbedder:
    """Unit vectors over a few keyword groups: enough to route deterministically."""

    GROUPS = (("country", "capital", "paris", "geography", "born"), ("times", "plus", "arithmetic", "17", "2"))

    def __init__(self) -> None:
        self.started = 0

    def start(self):
        self.started += 1
        return self

    def encode(self, texts):
        rows = []
        for text in texts:
            words = text.lower().replace("?", " ").split()
            v = np.array([sum(w in g for w in words) for g in self.GROUPS] + [0.1], dtype=np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


def fake_session(tmp_path, fake: "Fake"):
    """A Session over the catalog above, its models 'installed' as fake files."""
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.compose.session import Session

    sha = "ab" * 32
    catalog_file = tmp_path / "models.toml"
    catalog_file.write_text(CATALOG.format(sha=sha))
    catalog = load_catalog([catalog_file])
    settings = Settings(cache_dir=tmp_path / "cache", config_dir=tmp_path / "config", threads=2, workers=2,
                        max_memory=10_000, node_timeout=30)
    for name in ("qwen2.5-coder-1.5b", "smollm2-135m", "qwen2.5-coder-0.5b"):
        e = catalog.get(name)
        folder = settings.models_dir / name
        folder.mkdir(parents=True)
        (folder / e.file).write_bytes(b"GGUF")
        (folder / "complm.json").write_text(json.dumps({"name": name, "file": e.file, "size": 4, "sha256": sha}))
    return Session(settings, catalog, pull=False, factory=fake.factory, embedder=KeywordEmbedder())


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


def test_threads_freed_by_an_engine_that_finished_go_to_the_ones_still_working() -> None:
    """The CPU is divided among the engines that have sequences, between decode steps."""
    from complm_cli.experts.llama import Engines

    class Busy:
        def __init__(self, busy):
            self.busy = busy

    engines = Engines(threads=4, slots=3)
    a, b = Busy(True), Busy(True)
    engines._engines = {("a",): (a, 1), ("b",): (b, 1)}
    assert engines.threads_for(a) == 2 and engines.threads_for(b) == 2  # split while both decode
    a.busy = False
    assert engines.threads_for(b) == 4  # once one is idle, the other takes all four


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
