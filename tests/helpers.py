"""Shared fakes of the test suite: fake workers that record what happened, a fake embedder, a Session over them.

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

from complm_cli.cache.catalog import Expert, Generation, PathSource
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.execute import run_plan
from complm_cli.compose.pool import ModelPool
from complm_cli.compose.records import RunOptions
from complm_cli.experts.base import Worker

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
        pieces = pieces[:max_tokens]  # as a model does: a reply longer than its budget stops there

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
        self.closed = False

    def start(self):
        self.started += 1
        return self

    def close(self, wait: bool = True) -> None:
        self.closed = True

    def encode(self, texts):
        rows = []
        for text in texts:
            words = text.lower().replace("?", " ").split()
            v = np.array([sum(w in g for w in words) for g in self.GROUPS] + [0.1], dtype=np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


def fake_session(tmp_path, fake: "Fake", extra: str = ""):
    """A Session over the catalog above (plus `extra` entries), its models 'installed' as fake files."""
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.compose.session import Session

    sha = "ab" * 32
    catalog_file = tmp_path / "models.toml"
    catalog_file.write_text(CATALOG.format(sha=sha) + extra)
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


def ask_with_plan(tmp_path, question: str, plan: str, answers: dict[str, str] | None = None, respond=None,
                  mode: str = "sequential"):
    """(result, fake): `question` asked of a fake session whose planner writes `plan` and whose experts give `answers`."""
    fake = Fake(answers={question: plan, **(answers or {})}, respond=respond)
    fake.tokens, fake.sleep = 1, 0.0
    with fake_session(tmp_path, fake) as session:
        return session.ask(question, mode=mode), fake
